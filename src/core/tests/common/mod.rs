//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

pub mod vectors;

use webhook_guard_core::config::Algorithm;
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::{Accepted, Guard, Rejection, RequestInfo, Route, RouteInfo};

/// The headers GitHub sends for `body` signed with `secret`.
pub fn github_headers(secret: &[u8], body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let sig = format!(
        "sha256={}",
        hex::encode(compute_mac(Algorithm::HmacSha256, secret, &[body]).unwrap())
    );
    vec![("x-hub-signature-256".to_string(), sig.into_bytes())]
}

/// A POST to `path` (no route name).
pub fn post(path: &str) -> RequestInfo {
    RequestInfo {
        route_name: None,
        method: "POST".into(),
        path: path.into(),
    }
}

/// A POST to `path` through `g` as the glue drives it: route, headers, then the whole body.
pub fn send(
    g: &Guard,
    host: &MemHost,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Accepted, Rejection> {
    let route = RouteInfo {
        route_name: None,
        authority: "h",
        path,
        route_policy: None,
    };
    let Route::Verify(p) = g.route(host, &route) else {
        panic!("a policy must match {path}");
    };
    let pending = g.begin(host, p, post(path), headers)?;
    g.finish(host, &pending, body)
}

/// Cases per property: `WEBHOOK_GUARD_FUZZ_CASES` when set (the dedicated fuzz run,
/// `scripts/fuzz.sh`, asks for a million), else `default`.
pub fn fuzz_cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("WEBHOOK_GUARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        // A million cases must not stop at the default limit of rejected inputs.
        max_global_rejects: cases.saturating_mul(4),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
