//! Per-request glue: each proxy-wasm callback becomes one `Stream` call, and its `Step` becomes
//! a callback result, a local reply or a callout. Every decision is the core's.

use std::rc::Rc;

use webhook_guard_core::stream::internal_error;
use webhook_guard_core::{
    BodyStep, Direction, RemoteReply, Reply, RequestInfo, RouteInfo, Step, Stream,
};

use crate::abi;
use crate::remote;
use crate::root::Loaded;
use crate::wire;

pub struct Http {
    loaded: Rc<Loaded>,
    stream: Stream,
    /// The body's size when it was read (a decrypted payload replaces exactly that much).
    body_size: usize,
}

/// A local reply; the stream stops here.
pub fn send(reply: &Reply) -> u32 {
    let headers = wire::serialize(reply.headers.iter().map(|(k, v)| (*k, v.as_bytes())));
    let _ = abi::send_local_response(u32::from(reply.status), "", reply.body.as_bytes(), &headers);
    abi::PAUSE
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl Http {
    pub fn new(loaded: Rc<Loaded>) -> Http {
        Http {
            loaded,
            stream: Stream::new(),
            body_size: 0,
        }
    }

    /// Carries out a step; a call Envoy refuses to dispatch counts as a call that got no answer.
    fn act(&mut self, mut step: Step) -> u32 {
        let loaded = Rc::clone(&self.loaded);
        // Each failed call finishes its task (a lease retry needs an answer from etcd), so
        // this ends within a few rounds; the bound guards against a logic error.
        for _ in 0..8 {
            match step {
                Step::Continue => return abi::CONTINUE,
                Step::Pause => return abi::PAUSE,
                Step::Reply(reply) => return send(&reply),
                Step::Call(call) => match remote::dispatch(&call) {
                    Some(_) => return abi::PAUSE,
                    None => {
                        step = self
                            .stream
                            .on_call_reply(&loaded.guard, &loaded.host, &RemoteReply::default())
                            .1;
                    }
                },
            }
        }
        send(&internal_error())
    }

    /// A decrypted payload replaces the body before the request goes on: the whole buffered
    /// body is swapped, and `content-length` / `content-type` follow it (the headers are still
    /// held, so the upstream sees the new ones). A swap Envoy refuses fails closed.
    fn forward(&mut self, verdict: u32) -> u32 {
        if verdict != abi::CONTINUE {
            return verdict;
        }
        let Some(plaintext) = self.stream.take_plaintext() else {
            return verdict;
        };
        let length = plaintext.body.len().to_string();
        if abi::set_buffer(abi::REQUEST_BODY, 0, self.body_size, &plaintext.body)
            && abi::replace_header(abi::REQUEST_HEADERS, "content-length", length.as_bytes())
            && abi::replace_header(
                abi::REQUEST_HEADERS,
                "content-type",
                plaintext.content_type.as_bytes(),
            )
        {
            return verdict;
        }
        send(&internal_error())
    }

    fn finish_body(&mut self, buffered: usize) -> u32 {
        let loaded = Rc::clone(&self.loaded);
        // The body is gone: nothing can be verified, so nothing passes (the core says so).
        // An empty body comes back as no buffer: that one is empty, not gone.
        let body = match abi::buffer(abi::REQUEST_BODY, 0, buffered) {
            Some(b) => Some(b),
            None if buffered == 0 => Some(Vec::new()),
            None => None,
        };
        self.body_size = body.as_ref().map_or(0, Vec::len);
        let step = self
            .stream
            .on_request_complete(&loaded.guard, &loaded.host, body.as_deref());
        let verdict = self.act(step);
        self.forward(verdict)
    }

    pub fn request_headers(&mut self, end_of_stream: bool) -> u32 {
        let loaded = Rc::clone(&self.loaded);
        let raw = abi::header_map(abi::REQUEST_HEADERS).unwrap_or_default();
        // Unreadable headers match nothing: a policy then finds its signature missing.
        let headers = wire::pairs(&raw).unwrap_or_default();
        let pseudo = |name: &str| text(headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v));
        let (path, authority, method) = (pseudo(":path"), pseudo(":authority"), pseudo(":method"));
        // A property lookup is a costly host call: only when some policy matches on route names.
        let route_name = if loaded.guard.uses_route_names() {
            abi::property(&wire::path(&["xds", "route_name"])).map(|b| text(Some(&b)))
        } else {
            None
        };
        let route = RouteInfo {
            route_name: route_name.as_deref(),
            authority: &authority,
            path: &path,
            route_policy: None,
        };
        let info = RequestInfo {
            route_name: route_name.clone(),
            method,
            path: path.clone(),
        };
        let step = self.stream.on_request_headers(
            &loaded.guard,
            &loaded.host,
            &route,
            info,
            &headers,
            end_of_stream,
        );
        self.act(step)
    }

    pub fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> u32 {
        let loaded = Rc::clone(&self.loaded);
        // Pause here means StopIterationAndBuffer: Envoy keeps accumulating the body.
        match self
            .stream
            .on_request_body(&loaded.guard, &loaded.host, body_size, end_of_stream)
        {
            BodyStep::Continue => abi::CONTINUE,
            BodyStep::Pause => abi::PAUSE,
            BodyStep::Reply(reply) => send(&reply),
            BodyStep::Read => self.finish_body(body_size),
        }
    }

    /// HTTP/2 requests with trailers never see end_of_stream on a body chunk.
    pub fn request_trailers(&mut self) -> u32 {
        if !self.stream.wants_body() {
            return abi::CONTINUE;
        }
        self.finish_body(usize::MAX)
    }

    pub fn response_headers(&mut self) -> u32 {
        // Nothing held (unmatched, rejected, no replay protection): the status is not needed.
        if !self.stream.awaits_response() {
            return abi::CONTINUE;
        }
        let loaded = Rc::clone(&self.loaded);
        let status = abi::header(abi::RESPONSE_HEADERS, ":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok());
        let step = self
            .stream
            .on_response_headers(&loaded.guard, &loaded.host, status);
        self.act(step)
    }

    /// Nothing left to do: later callbacks would all pass through.
    pub fn is_decided(&self) -> bool {
        self.stream.is_decided()
    }

    /// Response body or trailers: held while a remote claim settles.
    pub fn response_data(&self) -> u32 {
        match self.stream.on_response_data() {
            Step::Pause => abi::PAUSE,
            _ => abi::CONTINUE,
        }
    }

    pub fn end(&mut self) {
        let loaded = Rc::clone(&self.loaded);
        self.stream.on_end(&loaded.guard, &loaded.host);
    }

    pub fn call_response(&mut self, _token: u32, body_size: usize) {
        let loaded = Rc::clone(&self.loaded);
        let reply = remote::reply(body_size);
        let (direction, step) = self
            .stream
            .on_call_reply(&loaded.guard, &loaded.host, &reply);
        let mut verdict = self.act(step);
        if direction == Direction::Request {
            verdict = self.forward(verdict);
        }
        if verdict == abi::CONTINUE {
            let _ = abi::continue_stream(match direction {
                Direction::Request => abi::HTTP_REQUEST,
                Direction::Response => abi::HTTP_RESPONSE,
            });
        }
    }
}
