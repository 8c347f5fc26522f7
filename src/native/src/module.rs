//! The module's objects: a `Config` per Envoy filter configuration (the compiled core, metric
//! ids, SDS subscriptions, and the main-thread upkeep that outlives streams), a `Filter` per
//! stream (the core's `Stream` plus the callout it waits on), and a `RouteConfig` per route
//! that names its policy. Every decision is the core's; this only translates.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;
use webhook_guard_core::stream::internal_error as core_internal_error;
use webhook_guard_core::{
    compile_with, stats, Background, BodyStep, Build, Direction, Guard, Level, Options, RemoteCall,
    RemoteReply, RemoteTask, Reply, RequestInfo, RouteInfo, Step, Stream,
};

use crate::ffi::{self, status, Attribute, CalloutReply, ConfigEnv, LogLevel, Scheduler};
use crate::host::{ConfigHost, StreamHost};

/// Leftover remote-store tasks kept for the main thread at most (beyond: dropped, and the
/// claims lapse with their leases).
const MAX_DEFERRED: usize = 4096;
/// How often the main thread picks up leftover remote work, grants leases and sweeps.
const TICK_MS: u64 = 1_000;

pub fn init() {
    // A bug shows in Envoy's log before the barrier answers 503.
    std::panic::set_hook(Box::new(|info| {
        ffi::log(LogLevel::Critical, &format!("webhook-guard: panic: {info}"));
    }));
}

pub fn internal_error() -> Reply {
    core_internal_error()
}

/// Sends a local reply; the response-code details carry the reason.
pub fn send(stream: ffi::Stream<'_>, reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let details = format!("webhook_guard_{}", reply.details);
    stream.send_response(reply.status, &headers, reply.body.as_bytes(), &details);
}

fn remote_headers(call: &RemoteCall) -> [(&str, &str); 4] {
    [
        (":method", "POST"),
        (":path", call.path),
        ("host", call.authority.as_str()),
        ("content-type", "application/json"),
    ]
}

fn remote_reply(reply: CalloutReply) -> RemoteReply {
    RemoteReply {
        status: reply.status,
        body: reply.body,
    }
}

/// A route's per-route configuration: the policy that verifies its requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub policy: String,
}

impl RouteConfig {
    pub fn parse(json: &[u8]) -> Option<RouteConfig> {
        match serde_json::from_slice::<RouteConfig>(json) {
            Ok(route) => Some(route),
            Err(e) => {
                ffi::log(
                    LogLevel::Error,
                    &format!(
                        "invalid webhook-guard per-route configuration: {e} (expected {{\"policy\": \"<name>\"}})"
                    ),
                );
                None
            }
        }
    }
}

/// One Envoy filter configuration, shared by every stream (and worker) that uses it.
pub struct Config {
    pub guard: Guard,
    /// Metric ids in the order of `Guard::counter_names()`; `None` where the define failed.
    pub metrics: Vec<Option<usize>>,
    /// Envoy's ids of the guard's SDS secrets, in `Guard::sds_secrets()` order.
    pub secrets: Vec<usize>,
    /// Remote-store work whose stream ended first, for the main thread.
    pub deferred: Mutex<Vec<RemoteTask>>,
    /// Deferred tasks waiting on a config callout, by callout id (main thread).
    in_flight: Mutex<HashMap<u64, RemoteTask>>,
    last_sweep_ms: Mutex<u64>,
    ticker: Mutex<Option<Ticker>>,
}

impl Config {
    pub fn new(env: ConfigEnv<'_>, name: &str, json: &[u8]) -> Option<Arc<Config>> {
        let options = Options {
            plugin_name: name,
            build: Build::Native,
        };
        let guard = match compile_with(json, &|var| std::env::var(var).ok(), options) {
            Ok(guard) => guard,
            Err(e) => {
                // Returning no config makes Envoy refuse the filter; this line says why.
                ffi::log(LogLevel::Error, &e.to_string());
                return None;
            }
        };
        for (level, notice) in guard.notices() {
            ffi::log(to_ffi(*level), &format!("webhook-guard: {notice}"));
        }
        let metrics = guard
            .counter_names()
            .iter()
            .map(|name| match stats::kind(name) {
                stats::Kind::Gauge => env.define_gauge(name),
                stats::Kind::Histogram => env.define_histogram(name),
                stats::Kind::Counter => env.define_counter(name),
            })
            .collect();
        // A secret Envoy cannot subscribe to now is never picked up later: refuse the config.
        let mut secrets = Vec::with_capacity(guard.sds_secrets().len());
        for secret in guard.sds_secrets() {
            match env.subscribe_secret(secret, &guard.sds_source(secret)) {
                Some(id) => secrets.push(id),
                None => {
                    ffi::log(
                        LogLevel::Error,
                        &format!(
                            "invalid webhook-guard configuration: Envoy could not subscribe to the SDS secret '{secret}' (is the bootstrap's node id and cluster set, and does sds_config point to an existing source?)"
                        ),
                    );
                    return None;
                }
            }
        }
        let policies = guard.policies().len();
        let config = Arc::new(Config {
            guard,
            metrics,
            secrets,
            deferred: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
            last_sweep_ms: Mutex::new(0),
            ticker: Mutex::new(None),
        });
        // Validation runs this hook too: no thread there, and no store to carry over.
        if !env.is_validation_mode() {
            let host = ConfigHost {
                env,
                config: &config,
            };
            config.guard.init_store(&host);
        }
        if !env.is_validation_mode() && config.guard.uses_store() {
            if let Some(scheduler) = env.scheduler() {
                *lock(&config.ticker) = Some(Ticker::start(scheduler, tick_ms(&config.guard)));
            }
        }
        ffi::log(
            LogLevel::Info,
            &format!("webhook-guard (native) configured with {policies} policies"),
        );
        Some(config)
    }

    /// The config is being destroyed: stop the ticker (and delete its scheduler) first.
    pub fn shutdown(&self) {
        if let Some(ticker) = lock(&self.ticker).take() {
            ticker.stop();
        }
    }

    pub fn defer(&self, task: RemoteTask) {
        let mut deferred = lock(&self.deferred);
        if deferred.len() < MAX_DEFERRED {
            deferred.push(task);
        }
    }

    /// Main thread, once a tick: sweep the store when due, then run what streams left behind
    /// and the lease grants for the coming seconds.
    pub fn on_scheduled(&self, env: ConfigEnv<'_>) {
        let host = ConfigHost { env, config: self };
        let now = webhook_guard_core::Host::now_ms(&host);
        {
            let mut last = lock(&self.last_sweep_ms);
            if now.saturating_sub(*last) >= self.guard.sweep_interval_ms() {
                *last = now;
                let owner = self as *const Config as u64;
                self.guard.sweep(&host, owner);
            }
        }
        let tasks = std::mem::take(&mut *lock(&self.deferred));
        for task in tasks.into_iter().chain(self.guard.remote_upkeep(&host)) {
            self.run(env, &host, task, None);
        }
    }

    pub fn on_callout_done(&self, env: ConfigEnv<'_>, id: u64, reply: CalloutReply) {
        let Some(task) = lock(&self.in_flight).remove(&id) else {
            return;
        };
        let host = ConfigHost { env, config: self };
        self.run(env, &host, task, Some(&remote_reply(reply)));
    }

    fn run(
        &self,
        env: ConfigEnv<'_>,
        host: &ConfigHost<'_>,
        mut task: RemoteTask,
        reply: Option<&RemoteReply>,
    ) {
        let dispatch = |call: &RemoteCall| {
            env.callout(
                &call.cluster,
                &remote_headers(call),
                &call.body,
                call.timeout_ms,
            )
        };
        match self.guard.run_background(host, &mut task, reply, dispatch) {
            Background::Waiting(id) => {
                lock(&self.in_flight).insert(id, task);
            }
            // A release etcd could not take yet: again on the next tick.
            Background::RetryLater => self.defer(task),
            Background::Done => {}
        }
    }
}

fn tick_ms(guard: &Guard) -> u64 {
    if guard.uses_remote_store() {
        TICK_MS.min(guard.sweep_interval_ms())
    } else {
        guard.sweep_interval_ms()
    }
}

fn to_ffi(level: Level) -> LogLevel {
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// A lock poisoned by a panic elsewhere still guards consistent data here (queues and maps
/// changed by single calls): take it over rather than fail forever.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread that wakes the config's scheduled hook on the main thread every period (the ABI has
/// no timer for HTTP filters). It holds only the scheduler, never the config.
struct Ticker {
    state: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(scheduler: Scheduler, period_ms: u64) -> Ticker {
        let state = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("webhook-guard-tick".into())
            .spawn(move || {
                let (stopped, wake) = &*shared;
                let mut stop = lock(stopped);
                while !*stop {
                    let (guard, timeout) = wake
                        .wait_timeout(stop, Duration::from_millis(period_ms.max(10)))
                        .unwrap_or_else(PoisonError::into_inner);
                    stop = guard;
                    if !*stop && timeout.timed_out() {
                        scheduler.commit(0);
                    }
                }
                // The scheduler is deleted here, after the last commit.
                drop(scheduler);
            })
            .ok();
        Ticker { state, thread }
    }

    fn stop(mut self) {
        let (stopped, wake) = &*self.state;
        *lock(stopped) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One stream: the core's state machine and the callout it waits on. Hooks get `&Filter` and
/// may re-enter (a local reply runs stream-complete inside `send_response`): no `RefCell`
/// borrow is ever held across a call into Envoy.
pub struct Filter {
    config: Arc<Config>,
    stream: RefCell<Stream>,
    waiting: Cell<Option<u64>>,
}

impl Filter {
    pub fn new(config: Arc<Config>) -> Filter {
        Filter {
            config,
            stream: RefCell::new(Stream::new()),
            waiting: Cell::new(None),
        }
    }

    fn host<'a>(&'a self, stream: ffi::Stream<'a>) -> StreamHost<'a> {
        StreamHost {
            stream,
            config: &self.config,
        }
    }

    /// Carries out a step; a call Envoy refuses counts as a call that got no answer. Returns
    /// whether the stream may go on (`true`) or is held or answered.
    fn act(&self, stream: ffi::Stream<'_>, mut step: Step) -> bool {
        // Each failed call finishes its task, so this ends within a few rounds; the bound
        // guards against a logic error.
        for _ in 0..8 {
            match step {
                Step::Continue => return true,
                Step::Pause => return false,
                Step::Reply(reply) => {
                    send(stream, &reply);
                    return false;
                }
                Step::Call(call) => {
                    match stream.callout(
                        &call.cluster,
                        &remote_headers(&call),
                        &call.body,
                        call.timeout_ms,
                    ) {
                        Some(id) => {
                            self.waiting.set(Some(id));
                            return false;
                        }
                        None => {
                            let host = self.host(stream);
                            step = self
                                .stream
                                .borrow_mut()
                                .on_call_reply(&self.config.guard, &host, &RemoteReply::default())
                                .1;
                        }
                    }
                }
            }
        }
        send(stream, &internal_error());
        false
    }

    pub fn on_request_headers(&self, stream: ffi::Stream<'_>, end_of_stream: bool) -> u32 {
        let guard = &self.config.guard;
        let headers = stream.request_headers();
        #[cfg(feature = "test-panic")]
        #[allow(clippy::panic)]
        if headers
            .iter()
            .any(|(n, _)| *n == "x-webhook-guard-test-panic")
        {
            panic!("test-panic: a panic inside the module, on request");
        }
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| String::from_utf8_lossy(v))
                .unwrap_or_default()
        };
        let (path, authority, method) = (pseudo(":path"), pseudo(":authority"), pseudo(":method"));
        let route_name = if guard.uses_route_names() {
            stream
                .attribute_string(Attribute::XdsRouteName)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        };
        let route_policy = stream.route_config().map(|r| r.policy.as_str());
        let route = RouteInfo {
            route_name: route_name.as_deref(),
            authority: &authority,
            path: &path,
            route_policy,
        };
        let info = RequestInfo {
            route_name: route_name.clone(),
            method: method.into_owned(),
            path: path.to_string(),
        };
        let host = self.host(stream);
        let step = self.stream.borrow_mut().on_request_headers(
            guard,
            &host,
            &route,
            info,
            &headers,
            end_of_stream,
        );
        if self.act(stream, step) {
            status::HEADERS_CONTINUE
        } else {
            // Hold the headers until the whole body is verified.
            status::HEADERS_STOP
        }
    }

    pub fn on_request_body(&self, stream: ffi::Stream<'_>, end_of_stream: bool) -> u32 {
        let chunks = stream.request_body();
        let buffered = chunks.iter().map(|c| c.len()).sum();
        let host = self.host(stream);
        let step = self.stream.borrow_mut().on_request_body(
            &self.config.guard,
            &host,
            buffered,
            end_of_stream,
        );
        match step {
            BodyStep::Continue => status::BODY_CONTINUE,
            BodyStep::Pause => status::BODY_STOP_AND_BUFFER,
            BodyStep::Reply(reply) => {
                send(stream, &reply);
                status::BODY_STOP_AND_BUFFER
            }
            BodyStep::Read => {
                let verdict = self.complete(stream, &chunks);
                // The slices point into the buffers a decrypted payload replaces.
                drop(chunks);
                if verdict && self.forward_plaintext(stream) {
                    status::BODY_CONTINUE
                } else {
                    status::BODY_STOP_AND_BUFFER
                }
            }
        }
    }

    pub fn on_request_trailers(&self, stream: ffi::Stream<'_>) -> u32 {
        // HTTP/2 requests with trailers never see end_of_stream on a body chunk.
        if !self.stream.borrow().wants_body() {
            return status::TRAILERS_CONTINUE;
        }
        let chunks = stream.request_body();
        let verdict = self.complete(stream, &chunks);
        drop(chunks);
        if verdict && self.forward_plaintext(stream) {
            status::TRAILERS_CONTINUE
        } else {
            status::TRAILERS_STOP
        }
    }

    /// A decrypted payload replaces the body before the request goes on, with
    /// `content-length` and `content-type` to match (the headers are still held). A swap
    /// Envoy refuses fails closed. `false`: a reply was sent instead.
    fn forward_plaintext(&self, stream: ffi::Stream<'_>) -> bool {
        let Some(plaintext) = self.stream.borrow_mut().take_plaintext() else {
            return true;
        };
        let length = plaintext.body.len().to_string();
        if stream.replace_request_body(&plaintext.body)
            && stream.set_request_header("content-length", length.as_bytes())
            && stream.set_request_header("content-type", plaintext.content_type.as_bytes())
        {
            return true;
        }
        send(stream, &internal_error());
        false
    }

    /// The whole body arrived: verify it. One chunk is read where it lies; several are joined.
    fn complete(&self, stream: ffi::Stream<'_>, chunks: &[&[u8]]) -> bool {
        let joined;
        let body: &[u8] = match chunks {
            [] => &[],
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        let host = self.host(stream);
        let step =
            self.stream
                .borrow_mut()
                .on_request_complete(&self.config.guard, &host, Some(body));
        self.act(stream, step)
    }

    pub fn on_response_headers(&self, stream: ffi::Stream<'_>) -> u32 {
        if !self.stream.borrow().awaits_response() {
            return status::HEADERS_CONTINUE;
        }
        let status = stream.response_status();
        let host = self.host(stream);
        let step = self
            .stream
            .borrow_mut()
            .on_response_headers(&self.config.guard, &host, status);
        if self.act(stream, step) {
            status::HEADERS_CONTINUE
        } else {
            // Hold the whole response while the claim settles (headers and body).
            status::HEADERS_STOP_ALL_AND_BUFFER
        }
    }

    pub fn holds_response(&self) -> bool {
        matches!(self.stream.borrow().on_response_data(), Step::Pause)
    }

    pub fn on_callout_done(&self, stream: ffi::Stream<'_>, id: u64, reply: CalloutReply) {
        if self.waiting.get() != Some(id) {
            return;
        }
        self.waiting.set(None);
        let host = self.host(stream);
        let (direction, step) =
            self.stream
                .borrow_mut()
                .on_call_reply(&self.config.guard, &host, &remote_reply(reply));
        if self.act(stream, step) {
            match direction {
                Direction::Request => {
                    if self.forward_plaintext(stream) {
                        stream.continue_request();
                    }
                }
                Direction::Response => stream.continue_response(),
            }
        }
    }

    pub fn on_stream_complete(&self, stream: ffi::Stream<'_>) {
        let host = self.host(stream);
        // A callout still under way is cancelled with the stream (its answer never comes).
        self.waiting.set(None);
        self.stream.borrow_mut().on_end(&self.config.guard, &host);
    }
}
