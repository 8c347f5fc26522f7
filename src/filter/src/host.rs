//! `webhook_guard_core::Host` over proxy-wasm hostcalls.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};
use webhook_guard_core::{Host, Level, RemoteTask, SetError};

/// Filter-state property read by access logs as `%FILTER_STATE(wasm.webhook_verdict:PLAIN)%`.
/// One per request: each property write costs several microseconds in Envoy.
const VERDICT_PROPERTY: &str = "webhook_verdict";
/// Leftover remote-store tasks a worker keeps at most (beyond: dropped, and the claims lapse
/// with their leases).
const MAX_DEFERRED: usize = 4096;

/// One per worker (the VM is single-threaded): hostcalls act on the current context.
// No log-level caching: proxy-wasm 0.2.5's get_log_level reads Envoy's "off" (6) into an enum
// without that variant, so every line is handed to Envoy, which filters it.
pub struct WasmHost {
    /// Metric ids in the order of `Guard::counter_names()`; `None` where the define failed.
    pub metrics: Vec<Option<u32>>,
    /// Remote-store work whose stream ended first, for the root context to finish.
    deferred: RefCell<Vec<RemoteTask>>,
}

impl WasmHost {
    pub fn new(metrics: Vec<Option<u32>>) -> WasmHost {
        WasmHost {
            metrics,
            deferred: RefCell::new(Vec::new()),
        }
    }

    pub fn take_deferred(&self) -> Vec<RemoteTask> {
        std::mem::take(&mut *self.deferred.borrow_mut())
    }
}

fn property(path: Vec<&str>) -> Option<Vec<u8>> {
    hostcalls::get_property(path).ok().flatten()
}

fn number(path: Vec<&str>) -> Option<u64> {
    property(path).and_then(|b| b.first_chunk::<8>().map(|n| u64::from_le_bytes(*n)))
}

fn to_wasm_level(level: Level) -> LogLevel {
    match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        // A host clock failure gives 0, which puts every timestamp out of window: fail closed.
        since_epoch()
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .unwrap_or(0)
    }

    fn now_us(&self) -> u64 {
        since_epoch()
            .and_then(|d| u64::try_from(d.as_micros()).ok())
            .unwrap_or(0)
    }

    fn add(&self, metric: usize, delta: i64) {
        if let Some(Some(id)) = self.metrics.get(metric) {
            let _ = hostcalls::increment_metric(*id, delta);
        }
    }

    fn set_gauge(&self, metric: usize, value: u64) {
        if let Some(Some(id)) = self.metrics.get(metric) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    fn log(&self, level: Level, line: &str) {
        log(level, line);
    }

    fn client_address(&self) -> Option<String> {
        // Envoy's downstream remote address (the XFF-derived one when the connection manager
        // trusts XFF), as `ip:port`.
        property(vec!["source", "address"]).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn set_verdict(&self, verdict: &str) {
        let _ = hostcalls::set_property(vec![VERDICT_PROPERTY], Some(verdict.as_bytes()));
    }

    fn defer(&self, task: RemoteTask) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.len() < MAX_DEFERRED {
            deferred.push(task);
        }
    }

    fn response_from_upstream(&self) -> bool {
        property(vec!["response", "code_details"]).as_deref() == Some(&b"via_upstream"[..])
    }

    fn response_flags(&self) -> Option<u64> {
        number(vec!["response", "flags"])
    }

    fn upstream_attempts(&self) -> Option<u64> {
        number(vec!["upstream", "request_attempt_count"])
    }

    fn upstream_connection_ready(&self) -> bool {
        // proxy-wasm hands back an empty property as none: a set duration is 8 bytes.
        property(vec!["upstream", "cx_pool_ready_duration"]).is_some()
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Ok((_, None)) => Ok(None),
            Err(_) => Err(SetError::Failed),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

fn since_epoch() -> Option<Duration> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
}

pub fn log(level: Level, line: &str) {
    let _ = hostcalls::log(to_wasm_level(level), line);
}
