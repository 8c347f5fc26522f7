//! One request's life, as both proxy glues (wasm and native) drive it: each proxy callback
//! becomes one call here and comes back as a `Step` the glue carries out. The glues only move
//! bytes; every decision, state change, verdict and deferred task is made here.
//!
//! headers -> (body chunks) -> complete body -> [claim call] -> forwarded -> response
//! -> [commit/release call] -> end. A stream that ends early hands what is left to `Host::defer`.

use crate::guard::{
    Accepted, Drive, Guard, Hold, LocalReply, Pending, Plaintext, RemoteCall, RemoteTask,
    RequestInfo, Route, Upstream,
};
use crate::host::Host;
use crate::policy::RouteInfo;
use crate::reason::Reason;
use crate::verify::Header;
use crate::{Rejection, RemoteReply};

/// What the glue does next.
#[derive(Debug)]
pub enum Step {
    /// Let the request (or response) go on.
    Continue,
    /// Hold it: more body is coming, or a remote call is under way.
    Pause,
    /// Send this local reply; the request never goes upstream.
    Reply(Reply),
    /// Dispatch this call and hold the stream; feed its answer (or its failure) to
    /// `Stream::on_call_reply`.
    Call(RemoteCall),
}

/// A local reply: a rejection, or an endpoint handshake the filter answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// Content type first, then any extra header (`retry-after`, `allow`).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// For response-code details: the reason code, or `challenge_answered`.
    pub details: &'static str,
}

impl Reply {
    fn rejection(r: Rejection) -> Reply {
        let mut headers = vec![("content-type", "application/json".to_string())];
        headers.extend(r.headers);
        Reply {
            status: r.status,
            headers,
            body: r.body,
            details: r.reason.code(),
        }
    }
}

/// What the body callback says.
#[derive(Debug)]
pub enum BodyStep {
    /// Not a stream the filter holds: pass the data on.
    Continue,
    /// Keep buffering.
    Pause,
    /// The body is complete: read it and call `Stream::on_request_complete`.
    Read,
    /// Reject (too large).
    Reply(Reply),
}

/// Which direction a remote call holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

#[derive(Debug, Default)]
enum Phase {
    /// Not (yet) under a policy.
    #[default]
    Idle,
    /// Headers checked, waiting for the end of the body.
    Buffering(Box<Pending>),
    /// Verified; the request waits for the remote store's answer to its claim.
    Admitting(Box<RemoteTask>),
    /// Forwarded upstream holding a claim, settled by what becomes of it.
    Forwarded(Box<Hold>),
    /// The response waits while a remote claim is committed or released.
    Settling(Box<RemoteTask>),
    /// A verdict was reached; later callbacks pass through.
    Decided,
}

#[derive(Debug, Default)]
pub struct Stream {
    phase: Phase,
    /// The policy verifying this request and when it started (µs), until the verdict is
    /// recorded in its latency histogram.
    timing: Option<(usize, u64)>,
    /// A decrypted payload waiting to replace the request's body when it is forwarded.
    plaintext: Option<Plaintext>,
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// Request headers. `route` selects the policy; `end_of_stream` means there is no body.
    pub fn on_request_headers<H: Header>(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        route: &RouteInfo,
        info: RequestInfo,
        headers: &[H],
        end_of_stream: bool,
    ) -> Step {
        let policy = match guard.route(host, route) {
            Route::Pass => {
                self.phase = Phase::Decided;
                host.set_verdict("unmatched");
                return Step::Continue;
            }
            Route::Reject(r) => return self.reject(guard, host, r),
            Route::Verify(i) => i,
        };
        self.timing = Some((policy, host.now_us()));
        match guard.handshake(host, policy, &info) {
            Some(Ok(reply)) => return self.answer(guard, host, reply),
            Some(Err(r)) => return self.reject(guard, host, r),
            None => {}
        }
        match guard.begin(host, policy, info, headers) {
            Err(r) => self.reject(guard, host, r),
            Ok(pending) if end_of_stream => self.finish(guard, host, &pending, &[]),
            Ok(pending) => {
                // Hold the headers until the whole body is verified.
                self.phase = Phase::Buffering(Box::new(pending));
                Step::Pause
            }
        }
    }

    /// A body chunk arrived; `buffered` is the body's size so far.
    pub fn on_request_body(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        buffered: usize,
        end_of_stream: bool,
    ) -> BodyStep {
        let Phase::Buffering(pending) = &self.phase else {
            return BodyStep::Continue;
        };
        if let Err(r) = guard.check_body_size(host, pending, buffered) {
            let Step::Reply(reply) = self.reject(guard, host, r) else {
                return BodyStep::Pause;
            };
            return BodyStep::Reply(reply);
        }
        if end_of_stream {
            BodyStep::Read
        } else {
            BodyStep::Pause
        }
    }

    /// The decrypted payload to forward instead of the body. The glue takes it when a request
    /// step says `Continue` and, before the request goes on, replaces the body with it and
    /// sets `content-length` and `content-type` to match.
    pub fn take_plaintext(&mut self) -> Option<Plaintext> {
        self.plaintext.take()
    }

    /// Whether the stream waits for its body (request trailers end an HTTP/2 body without
    /// an end-of-stream data frame: read the body then).
    pub fn wants_body(&self) -> bool {
        matches!(self.phase, Phase::Buffering(_))
    }

    /// The whole body (`None`: the proxy could not hand it over, so nothing can be verified).
    pub fn on_request_complete(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        body: Option<&[u8]>,
    ) -> Step {
        let Phase::Buffering(pending) = std::mem::take(&mut self.phase) else {
            return Step::Continue;
        };
        match body {
            Some(body) => self.finish(guard, host, &pending, body),
            None => self.reject(guard, host, fail_closed(Reason::InternalError)),
        }
    }

    fn finish(&mut self, guard: &Guard, host: &dyn Host, pending: &Pending, body: &[u8]) -> Step {
        match guard.finish(host, pending, body) {
            Ok(Accepted {
                reply: Some(reply), ..
            }) => self.answer(guard, host, reply),
            Ok(Accepted {
                remote: Some(task),
                plaintext,
                ..
            }) => {
                self.plaintext = plaintext;
                self.admit(guard, host, task, None)
            }
            Ok(Accepted {
                claim, plaintext, ..
            }) => {
                self.plaintext = plaintext;
                self.forward(guard, host, claim, "accepted")
            }
            Err(r) => self.reject(guard, host, r),
        }
    }

    /// An endpoint handshake the filter answers itself.
    fn answer(&mut self, guard: &Guard, host: &dyn Host, reply: LocalReply) -> Step {
        self.phase = Phase::Decided;
        host.set_verdict("challenge_answered");
        self.record_latency(guard, host);
        Step::Reply(Reply {
            status: reply.status,
            headers: vec![("content-type", reply.content_type.to_string())],
            body: reply.body,
            details: "challenge_answered",
        })
    }

    /// The verdict is in: how long it took, once per request (policy histogram).
    fn record_latency(&mut self, guard: &Guard, host: &dyn Host) {
        if let Some((policy, started_us)) = self.timing.take() {
            let took = host.now_us().saturating_sub(started_us);
            guard.record_verdict_latency(host, policy, took);
        }
    }

    fn forward(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        claim: Option<Hold>,
        verdict: &str,
    ) -> Step {
        self.phase = match claim {
            Some(hold) => Phase::Forwarded(Box::new(hold)),
            None => Phase::Decided,
        };
        host.set_verdict(verdict);
        self.record_latency(guard, host);
        Step::Continue
    }

    fn reject(&mut self, guard: &Guard, host: &dyn Host, r: Rejection) -> Step {
        self.phase = Phase::Decided;
        self.plaintext = None;
        host.set_verdict(r.reason.code());
        self.record_latency(guard, host);
        Step::Reply(Reply::rejection(r))
    }

    /// Runs the request's claim in the remote store until it needs an answer or is decided.
    fn admit(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        mut task: RemoteTask,
        reply: Option<&RemoteReply>,
    ) -> Step {
        match guard.drive(host, &mut task, reply) {
            Drive::Call(call) => {
                self.phase = Phase::Admitting(Box::new(task));
                Step::Call(call)
            }
            Drive::Admit(accepted) => self.forward(guard, host, accepted.claim, "accepted"),
            Drive::PassUnprotected => {
                defer_orphan(guard, host, task);
                self.forward(guard, host, None, "accepted_unprotected")
            }
            Drive::Reject(r) => {
                defer_orphan(guard, host, task);
                self.reject(guard, host, r)
            }
            // Not an outcome of a claim: fail closed.
            Drive::Settled | Drive::RetryLater => {
                self.reject(guard, host, fail_closed(Reason::StoreUnavailable))
            }
        }
    }

    /// Commits or releases a remote claim before the response goes on.
    fn settle(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        mut task: RemoteTask,
        reply: Option<&RemoteReply>,
    ) -> Step {
        match guard.drive(host, &mut task, reply) {
            Drive::Call(call) => {
                self.phase = Phase::Settling(Box::new(task));
                Step::Call(call)
            }
            Drive::RetryLater => {
                host.defer(task);
                self.phase = Phase::Decided;
                Step::Continue
            }
            _ => {
                self.phase = Phase::Decided;
                Step::Continue
            }
        }
    }

    /// The answer to the last `Step::Call` (a reply without a status when the call failed,
    /// timed out or could not be dispatched), and which direction it held. `Step::Continue`
    /// means: resume that direction.
    pub fn on_call_reply(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        reply: &RemoteReply,
    ) -> (Direction, Step) {
        match std::mem::take(&mut self.phase) {
            Phase::Admitting(task) => (
                Direction::Request,
                self.admit(guard, host, *task, Some(reply)),
            ),
            Phase::Settling(task) => (
                Direction::Response,
                self.settle(guard, host, *task, Some(reply)),
            ),
            other => {
                self.phase = other;
                (Direction::Request, Step::Continue)
            }
        }
    }

    /// Response headers with their status (Envoy's own replies land here too). Only a
    /// forwarded delivery settles; a local reply while a claim call is pending leaves that
    /// call to finish (or to `on_end`).
    pub fn on_response_headers(
        &mut self,
        guard: &Guard,
        host: &dyn Host,
        status: Option<u16>,
    ) -> Step {
        let hold = match std::mem::take(&mut self.phase) {
            Phase::Forwarded(hold) => hold,
            other => {
                self.phase = other;
                return Step::Continue;
            }
        };
        self.phase = Phase::Decided;
        let outcome = match status {
            Some(s) => Upstream::of_response(host, s),
            None => Upstream::of_stream_end(host),
        };
        // A remote claim is committed (or released) before the sender sees the answer, so
        // its retry can never race the release, and a 2xx means "recorded".
        match guard.settle(host, *hold, outcome) {
            Some(task) => self.settle(guard, host, task, None),
            None => Step::Continue,
        }
    }

    /// Whether the response headers matter to this stream (a forwarded delivery holds a claim
    /// their status settles). Glue may skip reading them otherwise: each read costs.
    /// A verdict was reached and nothing is held: every later callback passes through (a
    /// pass-through, a rejection, an accepted request without a claim), so the glue may forget
    /// the stream.
    pub fn is_decided(&self) -> bool {
        matches!(self.phase, Phase::Decided) && self.plaintext.is_none()
    }

    pub fn awaits_response(&self) -> bool {
        matches!(self.phase, Phase::Forwarded(_))
    }

    /// Response body or trailers: held while a remote claim settles (pausing the headers
    /// alone would let the first body chunk carry them out).
    pub fn on_response_data(&self) -> Step {
        match self.phase {
            Phase::Settling(_) => Step::Pause,
            _ => Step::Continue,
        }
    }

    /// The stream is over. A forwarded delivery that never got its answer is settled from
    /// what the proxy recorded; remote work still under way (the proxy cancels calls with the
    /// stream) is handed to `Host::defer`.
    pub fn on_end(&mut self, guard: &Guard, host: &dyn Host) {
        let leftover = match std::mem::take(&mut self.phase) {
            Phase::Forwarded(hold) => guard.settle(host, *hold, Upstream::of_stream_end(host)),
            Phase::Admitting(task) | Phase::Settling(task) => guard.abandon(*task),
            Phase::Idle | Phase::Buffering(_) | Phase::Decided => None,
        };
        if let Some(task) = leftover {
            host.defer(task);
        }
    }
}

/// A failed claim call may still have been applied by etcd: release it later.
fn defer_orphan(guard: &Guard, host: &dyn Host, task: RemoteTask) {
    if let Some(release) = guard.orphaned_claim(task) {
        host.defer(release);
    }
}

/// A reply for states that should not happen (no configuration, the body unreadable, a
/// claim call that returned something else): nothing unverified passes.
pub fn fail_closed(reason: Reason) -> Rejection {
    Rejection {
        status: reason.default_status(),
        reason,
        body: format!(r#"{{"error":"{}","policy":null}}"#, reason.code()),
        headers: Vec::new(),
    }
}

/// The reply when the glue has no configuration (or hit a bug): fail closed.
pub fn internal_error() -> Reply {
    Reply::rejection(fail_closed(Reason::InternalError))
}
