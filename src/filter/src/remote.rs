//! The core's remote-store calls as Envoy HTTP callouts.

use webhook_guard_core::{RemoteCall, RemoteReply};

use crate::abi;
use crate::wire;

/// etcd replies are a few hundred bytes; anything larger is read truncated and fails to parse.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Sends `call` to its Envoy cluster; the answer comes to the context's call-response hook with
/// the returned token (`None`: Envoy refused to dispatch it).
pub fn dispatch(call: &RemoteCall) -> Option<u32> {
    let headers = wire::serialize([
        (":method", &b"POST"[..]),
        (":path", call.path.as_bytes()),
        (":authority", call.authority.as_bytes()),
        ("content-type", b"application/json"),
    ]);
    let timeout = u32::try_from(call.timeout_ms).unwrap_or(u32::MAX);
    abi::http_call(&call.cluster, &headers, &call.body, timeout)
}

/// The callout's answer, read inside the call-response hook. No headers (timeout, reset)
/// gives no status.
pub fn reply(body_size: usize) -> RemoteReply {
    let status = abi::header(abi::CALL_RESPONSE_HEADERS, ":status")
        .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
    let body =
        abi::buffer(abi::CALL_RESPONSE_BODY, 0, body_size.min(MAX_REPLY_BYTES)).unwrap_or_default();
    RemoteReply { status, body }
}
