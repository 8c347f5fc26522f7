//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, dead_code)]

use webhook_guard_core::config::Algorithm;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::RequestInfo;

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
