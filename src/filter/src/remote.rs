//! The core's remote-store calls as Envoy HTTP callouts (`dispatch_http_call`).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use webhook_guard_core::{RemoteCall, RemoteReply};

/// etcd replies are a few hundred bytes; anything larger is read truncated and fails to parse.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Sends `call` to its Envoy cluster; the answer comes to `on_http_call_response` with the
/// returned token.
pub fn dispatch(call: &RemoteCall) -> Result<u32, Status> {
    hostcalls::dispatch_http_call(
        &call.cluster,
        vec![
            (":method", "POST"),
            (":path", call.path),
            (":authority", call.authority.as_str()),
            ("content-type", "application/json"),
        ],
        Some(&call.body),
        vec![],
        Duration::from_millis(call.timeout_ms),
    )
}

/// The callout's answer, read inside `on_http_call_response`. No headers (timeout, reset)
/// gives no status.
pub fn reply(body_size: usize) -> RemoteReply {
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok());
    let body = hostcalls::get_buffer(
        BufferType::HttpCallResponseBody,
        0,
        body_size.min(MAX_REPLY_BYTES),
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    RemoteReply { status, body }
}
