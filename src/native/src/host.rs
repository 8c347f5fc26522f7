//! The core's `Host` for the native module: per stream (a worker hook's Envoy handle) and per
//! configuration (the main thread's upkeep).

use std::time::{SystemTime, UNIX_EPOCH};

use webhook_guard_core::{Host, Level, RemoteTask, SetError};

use crate::ffi::{self, Attribute, ConfigEnv, LogLevel};
use crate::module::Config;

/// The filter-state key access logs read as `%FILTER_STATE(wasm.webhook_verdict:PLAIN)%`: the
/// name the wasm build's property gets, so one access-log format serves both builds.
const VERDICT_KEY: &str = "wasm.webhook_verdict";

fn since_epoch() -> Option<std::time::Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

fn now_ms() -> u64 {
    // A clock before 1970 gives 0, which puts every timestamp out of window: fail closed.
    since_epoch()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

fn now_us() -> u64 {
    since_epoch()
        .and_then(|d| u64::try_from(d.as_micros()).ok())
        .unwrap_or(0)
}

fn level(level: Level) -> LogLevel {
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

fn metric(config: &Config, index: usize) -> Option<usize> {
    config.metrics.get(index).copied().flatten()
}

/// A stream's host: valid for the hook it was made in.
pub struct StreamHost<'a> {
    pub stream: ffi::Stream<'a>,
    pub config: &'a Config,
}

impl Host for StreamHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn now_us(&self) -> u64 {
        now_us()
    }

    fn add(&self, index: usize, delta: i64) {
        if let (Some(id), Ok(delta)) = (metric(self.config, index), u64::try_from(delta)) {
            self.stream.increment(id, delta);
        }
    }

    fn set_gauge(&self, index: usize, value: u64) {
        if let Some(id) = metric(self.config, index) {
            self.stream.set_gauge(id, value);
        }
    }

    fn record(&self, index: usize, value: u64) {
        if let Some(id) = metric(self.config, index) {
            self.stream.record(id, value);
        }
    }

    fn log(&self, level_: Level, line: &str) {
        ffi::log(level(level_), line);
    }

    fn log_enabled(&self, level_: Level) -> bool {
        ffi::log_enabled(level(level_))
    }

    /// The native store lives in the module's memory: there is no shared data to reach.
    fn shared_get(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        Err(SetError::Failed)
    }

    fn shared_set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), SetError> {
        Err(SetError::Failed)
    }

    fn client_address(&self) -> Option<String> {
        self.stream
            .attribute_string(Attribute::SourceAddress)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn set_verdict(&self, verdict: &str) {
        self.stream.set_filter_state(VERDICT_KEY, verdict);
    }

    fn defer(&self, task: RemoteTask) {
        self.config.defer(task);
    }

    fn sds_secret(&self, index: usize) -> Option<Vec<u8>> {
        self.stream.secret(*self.config.secrets.get(index)?)
    }

    fn response_from_upstream(&self) -> bool {
        self.stream
            .attribute_string(Attribute::ResponseCodeDetails)
            .as_deref()
            == Some(&b"via_upstream"[..])
    }

    fn response_flags(&self) -> Option<u64> {
        self.stream.attribute_int(Attribute::ResponseFlags)
    }

    fn upstream_attempts(&self) -> Option<u64> {
        self.stream
            .attribute_int(Attribute::UpstreamRequestAttemptCount)
    }

    fn upstream_connection_ready(&self) -> bool {
        // The module ABI does not serve `upstream.cx_pool_ready_duration` (measured): a local
        // address means a connection was bound to the request. A unix-socket upstream has none,
        // so any pipe upstream counts as ready (never under-reports a send).
        if self
            .stream
            .attribute_string(Attribute::UpstreamLocalAddress)
            .is_some()
        {
            return true;
        }
        self.stream
            .attribute_string(Attribute::UpstreamAddress)
            .is_some_and(|a| a.first().is_some_and(|b| *b == b'/' || *b == b'@'))
    }
}

/// The main thread's host, for upkeep (sweeps, deferred remote work, lease grants).
pub struct ConfigHost<'a> {
    pub env: ConfigEnv<'a>,
    pub config: &'a Config,
}

impl Host for ConfigHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn now_us(&self) -> u64 {
        now_us()
    }

    fn add(&self, index: usize, delta: i64) {
        if let (Some(id), Ok(delta)) = (metric(self.config, index), u64::try_from(delta)) {
            self.env.increment(id, delta);
        }
    }

    fn set_gauge(&self, index: usize, value: u64) {
        if let Some(id) = metric(self.config, index) {
            self.env.set_gauge(id, value);
        }
    }

    fn log(&self, level_: Level, line: &str) {
        ffi::log(level(level_), line);
    }

    fn log_enabled(&self, level_: Level) -> bool {
        ffi::log_enabled(level(level_))
    }

    fn shared_get(&self, _key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        Err(SetError::Failed)
    }

    fn shared_set(&self, _key: &str, _value: &[u8], _cas: Option<u32>) -> Result<(), SetError> {
        Err(SetError::Failed)
    }

    fn defer(&self, task: RemoteTask) {
        self.config.defer(task);
    }
}
