//! Per-request glue: pause on headers, buffer the body, let the core decide, then either
//! continue or send the core's local reply.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use webhook_guard_core::{
    Accepted, Drive, Hold, Pending, Reason, Rejection, RemoteReply, RemoteTask, RequestInfo, Route,
    RouteInfo, Upstream,
};

use crate::remote;
use crate::root::Loaded;

/// Filter-state property read by access logs as `%FILTER_STATE(wasm.webhook_verdict:PLAIN)%`.
/// One per request: each property write costs several microseconds in Envoy.
const VERDICT_PROPERTY: &str = "webhook_verdict";

enum Phase {
    /// Not (yet) under a policy.
    Idle,
    /// Headers checked, waiting for the end of the body.
    Buffering { pending: Pending, buffered: usize },
    /// Verified; the request waits for the remote store's answer to its claim.
    Admitting(RemoteTask),
    /// Forwarded upstream holding a replay-store claim, settled by the upstream's answer.
    Forwarded(Hold),
    /// The response waits while a remote claim is committed or released.
    Settling(RemoteTask),
    /// A verdict was reached; later callbacks pass through.
    Decided,
}

pub struct Http {
    loaded: Option<Rc<Loaded>>,
    phase: Phase,
}

impl Http {
    pub fn new(loaded: Option<Rc<Loaded>>) -> Http {
        Http {
            loaded,
            phase: Phase::Idle,
        }
    }

    fn respond(&mut self, rejection: &Rejection) -> Action {
        self.phase = Phase::Decided;
        set_property(VERDICT_PROPERTY, rejection.reason.code());
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(rejection.headers.iter().map(|(k, v)| (*k, v.as_str())));
        let _ = hostcalls::send_http_response(
            u32::from(rejection.status),
            headers,
            Some(rejection.body.as_bytes()),
        );
        Action::Pause
    }

    /// Runs the request's claim in the remote store until it needs an answer or is decided.
    fn admit(&mut self, loaded: &Loaded, mut task: RemoteTask, reply: Option<RemoteReply>) -> Flow {
        match remote::run(&loaded.guard, &loaded.host, &mut task, reply) {
            remote::Next::Waiting(_) => {
                self.phase = Phase::Admitting(task);
                Flow::Wait
            }
            remote::Next::Done(Drive::Admit(accepted)) => {
                self.phase = match accepted.claim {
                    Some(hold) => Phase::Forwarded(hold),
                    None => Phase::Decided,
                };
                set_property(VERDICT_PROPERTY, "accepted");
                Flow::Continue
            }
            remote::Next::Done(Drive::PassUnprotected) => {
                self.phase = Phase::Decided;
                set_property(VERDICT_PROPERTY, "accepted_unprotected");
                defer_orphan(loaded, task);
                Flow::Continue
            }
            remote::Next::Done(Drive::Reject(r)) => {
                self.respond(&r);
                defer_orphan(loaded, task);
                Flow::Replied
            }
            // Not an outcome of a claim: fail closed.
            remote::Next::Done(Drive::Settled | Drive::RetryLater | Drive::Call(_)) => {
                self.respond(&fail_closed(Reason::StoreUnavailable));
                Flow::Replied
            }
        }
    }

    /// Keeps the response buffered while a remote claim settles.
    fn hold_response(&self) -> Action {
        match self.phase {
            Phase::Settling(_) => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// Commits or releases a remote claim before the response goes on.
    fn settle(
        &mut self,
        loaded: &Loaded,
        mut task: RemoteTask,
        reply: Option<RemoteReply>,
    ) -> Flow {
        match remote::run(&loaded.guard, &loaded.host, &mut task, reply) {
            remote::Next::Waiting(_) => {
                self.phase = Phase::Settling(task);
                Flow::Wait
            }
            remote::Next::Done(Drive::RetryLater) => {
                loaded.defer(task);
                self.phase = Phase::Decided;
                Flow::Continue
            }
            remote::Next::Done(_) => {
                self.phase = Phase::Decided;
                Flow::Continue
            }
        }
    }

    fn finish(&mut self, loaded: &Loaded, pending: &Pending, body: &[u8]) -> Action {
        match loaded.guard.finish(&loaded.host, pending, body) {
            Ok(Accepted {
                reply: Some(reply), ..
            }) => {
                self.phase = Phase::Decided;
                set_property(VERDICT_PROPERTY, "challenge_answered");
                let _ = hostcalls::send_http_response(
                    u32::from(reply.status),
                    vec![("content-type", reply.content_type)],
                    Some(reply.body.as_bytes()),
                );
                Action::Pause
            }
            Ok(Accepted {
                remote: Some(task), ..
            }) => match self.admit(loaded, task, None) {
                Flow::Continue => Action::Continue,
                Flow::Wait | Flow::Replied => Action::Pause,
            },
            Ok(Accepted { claim, .. }) => {
                self.phase = match claim {
                    Some(c) => Phase::Forwarded(c),
                    None => Phase::Decided,
                };
                set_property(VERDICT_PROPERTY, "accepted");
                Action::Continue
            }
            Err(r) => self.respond(&r),
        }
    }

    fn finish_buffered(&mut self) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        let Phase::Buffering { pending, buffered } =
            std::mem::replace(&mut self.phase, Phase::Decided)
        else {
            return Action::Continue;
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, buffered) {
            Ok(b) => b.unwrap_or_default(),
            // The body is gone: nothing can be verified, so nothing passes.
            Err(_) => return self.respond(&unverifiable()),
        };
        self.finish(&loaded, &pending, &body)
    }
}

/// A failed claim call may still have been applied by etcd: release it from the root.
fn defer_orphan(loaded: &Loaded, task: RemoteTask) {
    if let Some(release) = loaded.guard.orphaned_claim(task) {
        loaded.defer(release);
    }
}

/// Where a step left the stream.
enum Flow {
    /// Paused until the remote store answers.
    Wait,
    Continue,
    /// A local reply was sent.
    Replied,
}

/// Fail-closed reply for states that should not happen (no config, body unreadable).
fn unverifiable() -> Rejection {
    fail_closed(Reason::SecretUnavailable)
}

fn fail_closed(reason: Reason) -> Rejection {
    Rejection {
        status: reason.default_status(),
        reason,
        body: format!(r#"{{"error":"{}","policy":null}}"#, reason.code()),
        headers: Vec::new(),
    }
}

/// What became of a forwarded request that did not get a 2xx (`status`: none when the stream
/// ended without response headers), from what Envoy recorded. Only read off the common path:
/// an answer from the upstream costs one property read, Envoy's own reply two or three.
fn upstream_outcome(status: Option<u16>) -> Upstream {
    let property = |path: Vec<&str>| hostcalls::get_property(path).ok().flatten();
    let number = |path: Vec<&str>| {
        property(path).and_then(|b| b.first_chunk::<8>().map(|n| u64::from_le_bytes(*n)))
    };
    // Unknown count: assume a retry may have happened (never under-reports a send).
    let attempts = || number(vec!["upstream", "request_attempt_count"]).unwrap_or(u64::MAX);
    match status {
        Some(s) => {
            if property(vec!["response", "code_details"]).as_deref() == Some(&b"via_upstream"[..]) {
                return Upstream::Answered(s);
            }
            // Unreadable flags count as "anything may have happened".
            let flags = number(vec!["response", "flags"]).unwrap_or(u64::MAX);
            Upstream::after_local_reply(flags, attempts())
        }
        None => {
            let pool_ready = property(vec!["upstream", "cx_pool_ready_duration"]).is_some();
            Upstream::after_stream_end(pool_ready, attempts())
        }
    }
}

fn set_property(name: &str, value: &str) {
    let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return self.respond(&unverifiable());
        };
        let headers: Vec<(String, Vec<u8>)> =
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        let pseudo = |name: &str| {
            text(
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_slice()),
            )
        };
        let (path, authority, method) = (pseudo(":path"), pseudo(":authority"), pseudo(":method"));
        // A property lookup is a costly hostcall: only when some policy matches on route names.
        let route_name = if loaded.guard.uses_route_names() {
            hostcalls::get_property(vec!["xds", "route_name"])
                .ok()
                .flatten()
                .map(|b| text(Some(&b)))
        } else {
            None
        };
        let route = loaded.guard.route(
            &loaded.host,
            &RouteInfo {
                route_name: route_name.as_deref(),
                authority: &authority,
                path: &path,
            },
        );
        let policy = match route {
            Route::Pass => {
                self.phase = Phase::Decided;
                set_property(VERDICT_PROPERTY, "unmatched");
                return Action::Continue;
            }
            Route::Reject(r) => return self.respond(&r),
            Route::Verify(i) => i,
        };
        let info = RequestInfo {
            route_name,
            method,
            path,
        };
        match loaded.guard.begin(&loaded.host, policy, info, &headers) {
            Err(r) => self.respond(&r),
            Ok(pending) if end_of_stream => self.finish(&loaded, &pending, &[]),
            Ok(pending) => {
                // Hold the headers until the whole body is verified (needs the plugin's
                // allow_on_headers_stop_iteration: true on Envoy >= 1.35).
                self.phase = Phase::Buffering {
                    pending,
                    buffered: 0,
                };
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        let Phase::Buffering { pending, buffered } = &mut self.phase else {
            return Action::Continue;
        };
        *buffered = body_size;
        if let Err(r) = loaded
            .guard
            .check_body_size(&loaded.host, pending, body_size)
        {
            return self.respond(&r);
        }
        if end_of_stream {
            self.finish_buffered()
        } else {
            // Pause here means StopIterationAndBuffer: Envoy keeps accumulating the body.
            Action::Pause
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // HTTP/2 requests with trailers never see end_of_stream on a body chunk.
        self.finish_buffered()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Upstream answers and Envoy's own local replies (timeouts, resets) both land here.
        // Only a forwarded request settles here; a local reply Envoy sends while a claim call
        // is pending leaves that call to finish (or to on_log).
        let hold = match std::mem::replace(&mut self.phase, Phase::Decided) {
            Phase::Forwarded(hold) => hold,
            other => {
                self.phase = other;
                return Action::Continue;
            }
        };
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        // A 2xx only comes from the upstream here (the router is the only filter after us);
        // anything else may be Envoy's own reply, which says whether the request left.
        let outcome = match status {
            Some(s @ 200..=299) => Upstream::Answered(s),
            other => upstream_outcome(other),
        };
        // A remote claim is committed (or released) before the sender sees the answer, so
        // its retry can never race the release, and a 2xx means "recorded".
        match loaded.guard.settle(&loaded.host, hold, outcome) {
            Some(task) => match self.settle(&loaded, task, None) {
                Flow::Wait => Action::Pause,
                Flow::Continue | Flow::Replied => Action::Continue,
            },
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Pausing the headers alone would let the first body chunk carry them out.
        self.hold_response()
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_response()
    }

    fn on_log(&mut self) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        // The stream ended without response headers (client gone, reset) or while a remote
        // call was under way (Envoy cancels it with the stream). A forwarded request whose
        // answer never came may have been processed: released only if it never left. What is
        // left to do (a remote commit or release) goes to the root context, which outlives
        // the stream.
        let leftover = match std::mem::replace(&mut self.phase, Phase::Decided) {
            Phase::Forwarded(hold) => {
                loaded
                    .guard
                    .settle(&loaded.host, hold, upstream_outcome(None))
            }
            Phase::Admitting(task) | Phase::Settling(task) => loaded.guard.abandon(task),
            Phase::Idle | Phase::Buffering { .. } | Phase::Decided => None,
        };
        if let Some(task) = leftover {
            loaded.defer(task);
        }
    }
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(loaded) = self.loaded.clone() else {
            return;
        };
        let reply = remote::reply(body_size);
        match std::mem::replace(&mut self.phase, Phase::Decided) {
            Phase::Admitting(task) => {
                if let Flow::Continue = self.admit(&loaded, task, Some(reply)) {
                    let _ = hostcalls::resume_http_request();
                }
            }
            Phase::Settling(task) => {
                if let Flow::Continue = self.settle(&loaded, task, Some(reply)) {
                    let _ = hostcalls::resume_http_response();
                }
            }
            other => self.phase = other,
        }
    }
}
