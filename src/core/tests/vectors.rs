// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Known-answer vectors (tests/vectors/providers.json, shared with the e2e suite) run
//! through the same flow the filter uses: route -> begin -> finish.

use serde_json::{json, Value};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::{compile, Guard, RequestInfo, Route, RouteInfo};

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/providers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn body_of(v: &Value) -> Vec<u8> {
    if let Some(h) = v["body_hex"].as_str() {
        return hex::decode(h).unwrap();
    }
    if let Some(r) = v.get("body_repeat") {
        return r["text"]
            .as_str()
            .unwrap()
            .repeat(r["count"].as_u64().unwrap() as usize)
            .into_bytes();
    }
    v["body"].as_str().unwrap().as_bytes().to_vec()
}

fn guard_for(v: &Value) -> Guard {
    let provider = v["provider"].as_str().unwrap();
    let mut policy = json!({
        "name": "p",
        "match": {"path_prefix": "/"},
        "provider": provider,
        "secrets": [{"inline": v["secret"]}],
        "max_body_bytes": 2 * 1024 * 1024,
    });
    if provider == "custom" {
        policy["custom"] = v.get("custom").cloned().unwrap_or(json!({
            "signature_header": "X-Webhook-Signature",
            "timestamp_header": "X-Webhook-Timestamp",
            "signed_template": "{timestamp}.{body}",
        }));
    }
    if let Some(extra) = v.get("policy").and_then(Value::as_object) {
        for (k, val) in extra {
            policy[k] = val.clone();
        }
    }
    let doc = json!({"policies": [policy]}).to_string();
    compile(doc.as_bytes(), &|_| None).unwrap()
}

/// Runs one request through the guard; returns "accepted" or the reason code.
pub fn outcome(
    guard: &Guard,
    host: &MemHost,
    headers: &[(String, Vec<u8>)],
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let policy = match guard.route(
        host,
        &RouteInfo {
            route_name: None,
            authority: "h",
            path,
        },
    ) {
        Route::Verify(i) => i,
        other => panic!("unexpected route {other:?}"),
    };
    let info = RequestInfo {
        route_name: None,
        method: method.into(),
        path: path.into(),
    };
    let pending = match guard.begin(host, policy, info, headers) {
        Ok(p) => p,
        Err(r) => return r.reason.code().to_string(),
    };
    match guard.finish(host, &pending, body) {
        Ok(_) => "accepted".into(),
        Err(r) => r.reason.code().to_string(),
    }
}

#[test]
fn every_vector_gives_its_expected_outcome() {
    let mut failures = Vec::new();
    let all = vectors();
    assert!(all.len() >= 30, "vector file looks truncated");
    for v in &all {
        let guard = guard_for(v);
        let now = v["verify_at"].as_u64().unwrap_or(1_700_000_000) * 1000;
        let host = MemHost::new(guard.counter_names(), now);
        let headers: Vec<(String, Vec<u8>)> = v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, val)| (k.clone(), val.as_str().unwrap().as_bytes().to_vec()))
            .collect();
        let method = v["method"].as_str().unwrap_or("POST");
        let path = v["path"].as_str().unwrap_or("/webhooks/x");
        let got = outcome(&guard, &host, &headers, method, path, &body_of(v));
        let want = v["expect"].as_str().unwrap();
        if got != want {
            failures.push(format!("{}: expected {want}, got {got}", v["name"]));
        }
        // The secret must never reach a log line.
        let secret = v["secret"].as_str().unwrap();
        for (_, line) in host.logs() {
            assert!(
                !line.contains(secret),
                "{}: secret in log line {line}",
                v["name"]
            );
        }
    }
    assert!(
        failures.is_empty(),
        "vector failures:\n{}",
        failures.join("\n")
    );
}
