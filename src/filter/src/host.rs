//! `webhook_guard_core::Host` over the proxy-wasm host calls.

use std::cell::RefCell;

use webhook_guard_core::{Host, Level, RemoteTask, SetError};

use crate::abi;
use crate::wire;

/// Filter-state property read by access logs as `%FILTER_STATE(wasm.webhook_verdict:PLAIN)%`.
/// One per request: each property write costs several microseconds in Envoy.
const VERDICT_PROPERTY: &str = "webhook_verdict";
/// Leftover remote-store tasks a worker keeps at most (beyond: dropped, and the claims lapse
/// with their leases).
const MAX_DEFERRED: usize = 4096;

/// One per configuration and worker (the VM is single-threaded): host calls act on the
/// context Envoy is calling.
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

fn property(parts: &[&str]) -> Option<Vec<u8>> {
    abi::property(&wire::path(parts))
}

fn number(parts: &[&str]) -> Option<u64> {
    property(parts).and_then(|b| b.first_chunk::<8>().map(|n| u64::from_le_bytes(*n)))
}

/// proxy-wasm's levels: trace 0, debug 1, info 2, warn 3, error 4 (critical 5, off 6).
fn wasm_level(level: Level) -> u32 {
    match level {
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
    }
}

impl Host for WasmHost {
    fn now_ms(&self) -> u64 {
        // A host clock failure gives 0, which puts every timestamp out of window: fail closed.
        abi::now_nanos().map_or(0, |n| n / 1_000_000)
    }

    fn now_us(&self) -> u64 {
        abi::now_nanos().map_or(0, |n| n / 1_000)
    }

    fn add(&self, metric: usize, delta: i64) {
        if let Some(Some(id)) = self.metrics.get(metric) {
            abi::increment_metric(*id, delta);
        }
    }

    fn set_gauge(&self, metric: usize, value: u64) {
        if let Some(Some(id)) = self.metrics.get(metric) {
            abi::record_metric(*id, value);
        }
    }

    fn record(&self, metric: usize, value: u64) {
        if let Some(Some(id)) = self.metrics.get(metric) {
            abi::record_metric(*id, value);
        }
    }

    fn log(&self, level: Level, line: &str) {
        log(level, line);
    }

    /// One host call: a line Envoy would drop is never built (a rejection line also reads the
    /// client address, another host call).
    fn log_enabled(&self, level: Level) -> bool {
        abi::log_level().is_none_or(|current| wasm_level(level) >= current)
    }

    fn client_address(&self) -> Option<String> {
        // Envoy's downstream remote address (the XFF-derived one when the connection manager
        // trusts XFF), as `ip:port`.
        property(&["source", "address"]).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn set_verdict(&self, verdict: &str) {
        let _ = abi::set_property(VERDICT_PROPERTY.as_bytes(), verdict.as_bytes());
    }

    fn defer(&self, task: RemoteTask) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.len() < MAX_DEFERRED {
            deferred.push(task);
        }
    }

    fn response_from_upstream(&self) -> bool {
        property(&["response", "code_details"]).as_deref() == Some(&b"via_upstream"[..])
    }

    fn response_flags(&self) -> Option<u64> {
        number(&["response", "flags"])
    }

    fn upstream_attempts(&self) -> Option<u64> {
        number(&["upstream", "request_attempt_count"])
    }

    fn upstream_connection_ready(&self) -> bool {
        // An unset duration comes back empty: a set one is 8 bytes.
        property(&["upstream", "cx_pool_ready_duration"]).is_some_and(|b| !b.is_empty())
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        abi::shared_get(key).map_err(|_| SetError::Failed)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match abi::shared_set(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(abi::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}

pub fn log(level: Level, line: &str) {
    abi::log(wasm_level(level), line);
}

/// The counting build's report for the request that just ended (no-op otherwise): its VM
/// entries and host calls in order. `proxy_on_delete` follows the log hook and is not listed.
pub fn report_transitions() {
    if cfg!(feature = "count-transitions") {
        let events = abi::count::take();
        let list = events
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(",");
        let line = format!(r#"{{"event":"webhook_guard_transitions","events":[{list}]}}"#);
        abi::log(3, &line);
        // The report's own call is not the next request's.
        let _ = abi::count::take();
    }
}
