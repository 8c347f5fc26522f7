//! The core's remote-store calls as Envoy HTTP callouts (`dispatch_http_call`).

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use webhook_guard_core::{Drive, Guard, Host, RemoteCall, RemoteReply, RemoteTask};

/// etcd replies are a few hundred bytes; anything larger is read truncated and fails to parse.
const MAX_REPLY_BYTES: usize = 64 * 1024;

pub enum Next {
    /// A callout is under way; its answer arrives in `on_http_call_response` with this token.
    Waiting(u32),
    /// Never `Drive::Call`.
    Done(Drive),
}

/// Drives `task` until it waits on a callout or is done. A call Envoy refuses to dispatch
/// (unknown cluster, bad headers) counts as a call that got no answer.
pub fn run(
    guard: &Guard,
    host: &dyn Host,
    task: &mut RemoteTask,
    reply: Option<RemoteReply>,
) -> Next {
    let mut reply = reply;
    // Each failed call finishes the task (a lease retry needs a reply from etcd), so this
    // ends within a few rounds; the bound is a guard against a logic error, failing closed.
    for _ in 0..8 {
        match guard.drive(host, task, reply.as_ref()) {
            Drive::Call(call) => match dispatch(&call) {
                Ok(token) => return Next::Waiting(token),
                Err(_) => reply = Some(RemoteReply::default()),
            },
            done => return Next::Done(done),
        }
    }
    Next::Done(Drive::Settled)
}

fn dispatch(call: &RemoteCall) -> Result<u32, Status> {
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
