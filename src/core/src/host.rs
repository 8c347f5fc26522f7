//! What the core needs from the proxy, as a trait: the glue implements it over proxy-wasm
//! hostcalls, tests over in-memory fakes.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Someone wrote the key since we read it: read again and retry.
    CasMismatch,
    /// Any other host failure.
    Failed,
}

pub trait Host {
    /// Wall clock, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Wall clock in microseconds (for latency measurements).
    fn now_us(&self) -> u64 {
        self.now_ms().saturating_mul(1000)
    }
    /// Adds `delta` to the metric at `index` of `Guard::metrics()` (counters only grow).
    fn add(&self, metric: usize, delta: i64);
    /// Sets the gauge at `index` of `Guard::counter_names()`.
    fn set_gauge(&self, metric: usize, value: u64);
    fn log(&self, level: Level, line: &str);
    /// Process-wide shared data (Envoy semantics): `Ok(None)` for a missing key, else the
    /// value and its CAS token.
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError>;
    /// Writes `value` if the key's CAS token is still `cas`. Envoy has no insert-if-absent:
    /// a write to a missing key succeeds whatever `cas` says.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;

    fn increment(&self, metric: usize) {
        self.add(metric, 1);
    }

    /// The downstream client's address (`ip:port`) of the current request, for rejection log
    /// lines; asked only when one is written.
    fn client_address(&self) -> Option<String> {
        None
    }

    /// Whether a line at `level` would be kept: lets callers skip building it.
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
}
