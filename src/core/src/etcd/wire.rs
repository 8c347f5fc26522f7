//! etcd v3 JSON gateway (grpc-gateway) bodies and replies. Keys and values travel as base64,
//! 64-bit integers as decimal strings, and a `false` or empty field is simply absent.

use serde_json::{json, Value};

use crate::codec::{base64_decode, base64_encode};

pub const GRANT_PATH: &str = "/v3/lease/grant";
pub const TXN_PATH: &str = "/v3/kv/txn";
pub const PUT_PATH: &str = "/v3/kv/put";

/// Why a reply is not the one hoped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// No reply at all: timeout, reset, unknown cluster (Envoy's synthetic 503/504 included).
    Unreachable,
    /// etcd answered with an error status.
    Status(u16),
    /// The lease we used has expired or was revoked (etcd: 404, gRPC code 5).
    LeaseNotFound,
    /// 200 but not the shape etcd sends.
    Malformed,
}

impl WireError {
    pub fn code(self) -> &'static str {
        match self {
            WireError::Unreachable => "unreachable",
            WireError::Status(_) => "error_status",
            WireError::LeaseNotFound => "lease_not_found",
            WireError::Malformed => "malformed_reply",
        }
    }
}

/// An HTTP answer from the etcd cluster; `status: None` when there was none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

pub fn grant(ttl_s: u64) -> Vec<u8> {
    json!({ "TTL": ttl_s.to_string() }).to_string().into_bytes()
}

/// Create `key` = `value` under `lease` if it does not exist, else read it: one atomic txn.
pub fn create_or_get(key: &[u8], value: &[u8], lease: i64) -> Vec<u8> {
    let k = base64_encode(key);
    json!({
        "compare": [{"key": k, "target": "CREATE", "create_revision": "0", "result": "EQUAL"}],
        "success": [{"request_put": {"key": k, "value": base64_encode(value), "lease": lease.to_string()}}],
        "failure": [{"request_range": {"key": k}}],
    })
    .to_string()
    .into_bytes()
}

pub fn put(key: &[u8], value: &[u8], lease: i64) -> Vec<u8> {
    json!({"key": base64_encode(key), "value": base64_encode(value), "lease": lease.to_string()})
        .to_string()
        .into_bytes()
}

/// Delete `key` only while it still holds `value` (our claim, not a later one).
pub fn delete_if(key: &[u8], value: &[u8]) -> Vec<u8> {
    let k = base64_encode(key);
    json!({
        "compare": [{"key": k, "target": "VALUE", "value": base64_encode(value), "result": "EQUAL"}],
        "success": [{"request_delete_range": {"key": k}}],
    })
    .to_string()
    .into_bytes()
}

/// The 200 body as JSON, or why there is none.
fn ok_body(reply: &Reply) -> Result<Value, WireError> {
    match reply.status {
        None => Err(WireError::Unreachable),
        Some(200) => serde_json::from_slice(&reply.body).map_err(|_| WireError::Malformed),
        Some(status) => {
            let lease_gone = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .is_some_and(|e| e.contains("lease not found"));
            if lease_gone {
                Err(WireError::LeaseNotFound)
            } else {
                Err(WireError::Status(status))
            }
        }
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

pub fn lease_id(reply: &Reply) -> Result<i64, WireError> {
    let v = ok_body(reply)?;
    match int(v.get("ID")) {
        Some(id) if id != 0 => Ok(id),
        _ => Err(WireError::Malformed),
    }
}

/// The outcome of `create_or_get`: `None` when we created the key, else its current value.
pub fn created_or_value(reply: &Reply) -> Result<Option<Vec<u8>>, WireError> {
    let v = ok_body(reply)?;
    if v.get("header").is_none() {
        return Err(WireError::Malformed);
    }
    if v.get("succeeded").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let value = v
        .get("responses")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("response_range"))
        .and_then(|r| r.get("kvs"))
        .and_then(|kvs| kvs.get(0))
        .and_then(|kv| kv.get("value"))
        .and_then(Value::as_str)
        .and_then(|s| base64_decode(s.as_bytes()));
    // The key existed at compare time and the range ran in the same revision, so a missing
    // value means a reply we do not understand.
    value.map(Some).ok_or(WireError::Malformed)
}

/// A put answered with etcd's response header.
pub fn written(reply: &Reply) -> Result<(), WireError> {
    let v = ok_body(reply)?;
    v.get("header").map(|_| ()).ok_or(WireError::Malformed)
}

/// Whether `delete_if` deleted the key (false: it held another value or was gone).
pub fn deleted(reply: &Reply) -> Result<bool, WireError> {
    let v = ok_body(reply)?;
    if v.get("header").is_none() {
        return Err(WireError::Malformed);
    }
    Ok(v.get("succeeded").and_then(Value::as_bool) == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Reply {
        Reply {
            status: Some(200),
            body: body.as_bytes().to_vec(),
        }
    }

    // Replies below are what etcd 3.4.23's gateway sent for these requests.
    const HEADER: &str = r#""header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"}"#;

    #[test]
    fn parses_real_replies() {
        let grant = ok(&format!(
            r#"{{{HEADER},"ID":"2324035578177820421","TTL":"10"}}"#
        ));
        assert_eq!(lease_id(&grant), Ok(2324035578177820421));
        let created = ok(&format!(
            r#"{{{HEADER},"succeeded":true,"responses":[{{"response_put":{{"header":{{"revision":"2"}}}}}}]}}"#
        ));
        assert_eq!(created_or_value(&created), Ok(None));
        let existing = ok(&format!(
            r#"{{{HEADER},"responses":[{{"response_range":{{"header":{{"revision":"2"}},"kvs":[{{"key":"a2V5MQ==","create_revision":"2","mod_revision":"2","version":"1","value":"ZjoxMjM6YWJj","lease":"2324035578177820423"}}],"count":"1"}}}}]}}"#
        ));
        assert_eq!(created_or_value(&existing), Ok(Some(b"f:123:abc".to_vec())));
        let deleted_one = ok(&format!(
            r#"{{{HEADER},"succeeded":true,"responses":[{{"response_delete_range":{{"header":{{"revision":"3"}},"deleted":"1"}}}}]}}"#
        ));
        assert_eq!(deleted(&deleted_one), Ok(true));
        assert_eq!(deleted(&ok(&format!("{{{HEADER}}}"))), Ok(false));
        assert_eq!(written(&ok(&format!("{{{HEADER}}}"))), Ok(()));
    }

    #[test]
    fn errors_are_classified() {
        let gone = Reply {
            status: Some(404),
            body: br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#.to_vec(),
        };
        assert_eq!(written(&gone), Err(WireError::LeaseNotFound));
        let unavailable = Reply {
            status: Some(503),
            body: b"upstream connect error".to_vec(),
        };
        assert_eq!(written(&unavailable), Err(WireError::Status(503)));
        assert_eq!(written(&Reply::default()), Err(WireError::Unreachable));
        assert_eq!(created_or_value(&ok("{}")), Err(WireError::Malformed));
        assert_eq!(created_or_value(&ok("not json")), Err(WireError::Malformed));
        assert_eq!(lease_id(&ok(r#"{"ID":"0"}"#)), Err(WireError::Malformed));
        assert_eq!(
            created_or_value(&ok(&format!(r#"{{{HEADER},"responses":[]}}"#))),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn requests_are_gateway_json() {
        let body: Value = serde_json::from_slice(&create_or_get(b"k", b"v", 7)).unwrap();
        assert_eq!(body["compare"][0]["target"], "CREATE");
        assert_eq!(body["success"][0]["request_put"]["key"], "aw==");
        assert_eq!(body["success"][0]["request_put"]["lease"], "7");
        assert_eq!(body["failure"][0]["request_range"]["key"], "aw==");
        let body: Value = serde_json::from_slice(&delete_if(b"k", b"v")).unwrap();
        assert_eq!(body["compare"][0]["value"], "dg==");
        assert_eq!(body["success"][0]["request_delete_range"]["key"], "aw==");
        let body: Value = serde_json::from_slice(&grant(30)).unwrap();
        assert_eq!(body["TTL"], "30");
    }
}
