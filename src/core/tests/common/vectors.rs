//! The accepted known-answer vectors (tests/vectors/providers.json) as ready-to-run cases,
//! shared by the property and fuzz tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

use serde_json::{json, Value};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::template::Part;
use webhook_guard_core::{compile, Guard, RequestInfo, Route, RouteInfo};

pub struct Case {
    pub guard: Guard,
    pub now_ms: u64,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub method: String,
    pub path: String,
    pub timestamp_header: Option<String>,
    pub signature_header: String,
}

pub fn cases() -> &'static [Case] {
    static CASES: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    CASES.get_or_init(build_cases)
}

/// Every vector in tests/vectors/providers.json.
pub fn all() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/providers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A guard with one policy (`p`, matching every path) for the vector's provider and secret.
pub fn guard_for(v: &Value) -> Guard {
    let provider = v["provider"].as_str().unwrap();
    let mut policy = json!({
        "name": "p", "match": {"path_prefix": "/"}, "provider": provider,
        "secrets": [{"inline": v["secret"]}], "max_body_bytes": 2 * 1024 * 1024,
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

pub fn body_of(v: &Value) -> Vec<u8> {
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

/// Header names lower-cased, as Envoy hands them over.
pub fn headers_of(v: &Value) -> Vec<(String, Vec<u8>)> {
    v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, val)| {
            (
                k.to_ascii_lowercase(),
                val.as_str().unwrap().as_bytes().to_vec(),
            )
        })
        .collect()
}

pub fn now_ms(v: &Value) -> u64 {
    v["verify_at"].as_u64().unwrap_or(1_700_000_000) * 1000
}

pub fn method_of(v: &Value) -> &str {
    v["method"].as_str().unwrap_or("POST")
}

pub fn path_of(v: &Value) -> &str {
    v["path"].as_str().unwrap_or("/webhooks/x")
}

fn build_cases() -> Vec<Case> {
    all()
        .into_iter()
        .filter(|v| v["expect"] == "accepted" && v.get("body_repeat").is_none())
        // Vectors with decoy signatures stay accepted when a decoy changes.
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| !n.contains("rolled") && !n.contains("unknown versions"))
        })
        // GitLab's token covers no body: body changes verify by design (its vectors say so).
        .filter(|v| v["provider"] != "gitlab")
        // Mailgun's signature is a body field and the rest of its body is unsigned (its own
        // properties are in tests/properties.rs, its vectors say so).
        .filter(|v| v["provider"] != "mailgun" && v["provider"] != "adyen")
        .map(|v| {
            let headers = headers_of(&v);
            let names: Vec<&String> = headers.iter().map(|(k, _)| k).collect();
            let find =
                |pred: &dyn Fn(&str) -> bool| names.iter().find(|n| pred(n)).map(|n| n.to_string());
            let guard = guard_for(&v);
            // Only a timestamp the scheme signs (Sentry sends an unsigned one).
            let signs_ts = guard
                .policies()
                .first()
                .is_some_and(|p| p.scheme.timestamp.is_some());
            Case {
                guard,
                now_ms: now_ms(&v),
                timestamp_header: find(&|n| n.contains("timestamp") || n == "x-ts")
                    .filter(|_| signs_ts),
                signature_header: find(&|n| {
                    n.contains("signature")
                        || n.contains("hmac")
                        || n == "x-sig"
                        || n == "authorization"
                })
                .unwrap(),
                body: body_of(&v),
                method: method_of(&v).into(),
                path: path_of(&v).into(),
                headers,
            }
        })
        .collect()
}

pub fn run(c: &Case, headers: &[(String, Vec<u8>)], body: &[u8]) -> String {
    run_as(c, &c.method, &c.path, headers, body)
}

/// The verdict (`accepted` or a reason code) for a request to the case's policy.
pub fn run_as(
    c: &Case,
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> String {
    let host = MemHost::new(c.guard.counter_names(), c.now_ms);
    verdict(&c.guard, &host, method, path, headers, body)
}

/// Runs one request through the flow the filter uses (route -> begin -> finish).
pub fn verdict(
    guard: &Guard,
    host: &MemHost,
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> String {
    let p = match guard.route(
        host,
        &RouteInfo {
            route_name: None,
            authority: "h",
            path,
            route_policy: None,
        },
    ) {
        Route::Verify(p) => p,
        // A path no one policy owns (it climbs out of the routed path once decoded).
        Route::Reject(r) => return r.reason.code().into(),
        Route::Pass => panic!("no policy"),
    };
    let info = RequestInfo {
        route_name: None,
        method: method.to_string(),
        path: path.to_string(),
    };
    match guard.begin(host, p, info, headers) {
        Err(r) => r.reason.code().into(),
        Ok(pending) => match guard.finish(host, &pending, body) {
            Ok(_) => "accepted".into(),
            Err(r) => r.reason.code().into(),
        },
    }
}

impl Case {
    fn scheme(&self) -> &webhook_guard_core::scheme::Scheme {
        &self.guard.policy(0).unwrap().scheme
    }

    /// Headers the signed template covers.
    pub fn signed_headers(&self) -> Vec<String> {
        self.scheme()
            .template
            .iter()
            .filter_map(|p| match p {
                Part::Header(h) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the request path is signed (Twilio's URL, a custom `{path}`).
    pub fn signs_path(&self) -> bool {
        self.scheme().template.contains(&Part::Path)
    }

    /// Whether `other` carries the same signed content as the case's body because the scheme
    /// signs a form body's decoded parameters, not its bytes (Twilio, Plivo V3): "%2B" and
    /// "%2b", reordered parameters, or an empty one added by a trailing "&" sign the same.
    pub fn same_form_params(&self, other: &[u8]) -> bool {
        let template = &self.scheme().template;
        if template.contains(&Part::PlivoUrl) {
            let params = webhook_guard_core::form::plivo_params(other);
            params.is_some() && params == webhook_guard_core::form::plivo_params(&self.body)
        } else {
            template.contains(&Part::FormParams)
                && webhook_guard_core::form::sorted_params(other)
                    == webhook_guard_core::form::sorted_params(&self.body)
        }
    }
}

pub fn h_after(headers: &[(String, Vec<u8>)], name: &str) -> Vec<u8> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub fn mutate(bytes: &mut [u8], at: usize, xor: u8) {
    let i = at % bytes.len();
    bytes[i] ^= xor;
}
