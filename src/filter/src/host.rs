//! `webhook_guard_core::Host` over proxy-wasm hostcalls.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};
use webhook_guard_core::{Host, Level, SetError};

/// Metric ids in the order of `Guard::counter_names()`; `None` where the define failed.
// No log-level caching: proxy-wasm 0.2.5's get_log_level reads Envoy's "off" (6) into an enum
// without that variant, so every line is handed to Envoy, which filters it.
pub struct WasmHost {
    pub metrics: Vec<Option<u32>>,
}

impl WasmHost {
    pub fn new(metrics: Vec<Option<u32>>) -> WasmHost {
        WasmHost { metrics }
    }
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
        hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
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
