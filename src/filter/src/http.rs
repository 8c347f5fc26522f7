//! Per-request glue: each proxy-wasm callback becomes one `Stream` call, and its `Step` becomes
//! an `Action`, a local reply or a callout. Every decision is the core's.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use webhook_guard_core::stream::internal_error;
use webhook_guard_core::{
    BodyStep, Direction, RemoteReply, Reply, RequestInfo, RouteInfo, Step, Stream,
};

use crate::remote;
use crate::root::Loaded;

pub struct Http {
    loaded: Option<Rc<Loaded>>,
    stream: Stream,
}

impl Http {
    pub fn new(loaded: Option<Rc<Loaded>>) -> Http {
        Http {
            loaded,
            stream: Stream::new(),
        }
    }

    /// Carries out a step; a call Envoy refuses to dispatch counts as a call that got no answer.
    fn act(&mut self, loaded: &Loaded, mut step: Step) -> Action {
        // Each failed call finishes its task (a lease retry needs an answer from etcd), so
        // this ends within a few rounds; the bound guards against a logic error.
        for _ in 0..8 {
            match step {
                Step::Continue => return Action::Continue,
                Step::Pause => return Action::Pause,
                Step::Reply(reply) => return send(&reply),
                Step::Call(call) => match remote::dispatch(&call) {
                    Ok(_) => return Action::Pause,
                    Err(_) => {
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

    fn finish_body(&mut self, loaded: &Loaded, buffered: usize) -> Action {
        // The body is gone: nothing can be verified, so nothing passes (the core says so).
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, buffered)
            .ok()
            .map(Option::unwrap_or_default);
        let step = self
            .stream
            .on_request_complete(&loaded.guard, &loaded.host, body.as_deref());
        self.act(loaded, step)
    }
}

/// A local reply; the stream stops here.
fn send(reply: &Reply) -> Action {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    );
    Action::Pause
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return send(&internal_error());
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
        self.act(&loaded, step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        // Pause here means StopIterationAndBuffer: Envoy keeps accumulating the body.
        match self
            .stream
            .on_request_body(&loaded.guard, &loaded.host, body_size, end_of_stream)
        {
            BodyStep::Continue => Action::Continue,
            BodyStep::Pause => Action::Pause,
            BodyStep::Reply(reply) => send(&reply),
            BodyStep::Read => self.finish_body(&loaded, body_size),
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // HTTP/2 requests with trailers never see end_of_stream on a body chunk.
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        if !self.stream.wants_body() {
            return Action::Continue;
        }
        self.finish_body(&loaded, usize::MAX)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        // Nothing held (unmatched, rejected, no replay protection): the status is not needed.
        if !self.stream.awaits_response() {
            return Action::Continue;
        }
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let step = self
            .stream
            .on_response_headers(&loaded.guard, &loaded.host, status);
        self.act(&loaded, step)
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        match self.stream.on_response_data() {
            Step::Pause => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.stream.on_response_data() {
            Step::Pause => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let Some(loaded) = self.loaded.clone() {
            self.stream.on_end(&loaded.guard, &loaded.host);
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
        let (direction, step) = self
            .stream
            .on_call_reply(&loaded.guard, &loaded.host, &reply);
        if let Action::Continue = self.act(&loaded, step) {
            let _ = match direction {
                Direction::Request => hostcalls::resume_http_request(),
                Direction::Response => hostcalls::resume_http_response(),
            };
        }
    }
}
