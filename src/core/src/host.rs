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

    /// Records one value in the histogram at `index` of `Guard::counter_names()`.
    fn record(&self, _metric: usize, _value: u64) {}

    /// The downstream client's address (`ip:port`) of the current request, for rejection log
    /// lines; asked only when one is written.
    fn client_address(&self) -> Option<String> {
        None
    }

    /// Whether a line at `level` would be kept: lets callers skip building it.
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }

    /// Records the request's verdict where access logs read it (filter state).
    fn set_verdict(&self, _verdict: &str) {}

    /// Hands remote-store work whose stream is ending (or that must be retried later) to
    /// something that outlives the stream (the wasm root context, the native module's main
    /// thread).
    fn defer(&self, _task: crate::guard::RemoteTask) {}

    /// The current value of the `index`th SDS secret the configuration subscribed to
    /// (`Guard::sds_secrets`), if the host delivers SDS secrets and has it.
    fn sds_secret(&self, _index: usize) -> Option<Vec<u8>> {
        None
    }

    /// What the proxy recorded about a forwarded request (asked only when it did not end in a
    /// 2xx): whether the response came from the upstream (Envoy: `response.code_details ==
    /// "via_upstream"`) ...
    fn response_from_upstream(&self) -> bool {
        false
    }

    /// ... the response flags (`response.flags`; `None`: unknown) ...
    fn response_flags(&self) -> Option<u64> {
        None
    }

    /// ... how many upstream attempts were made (`upstream.request_attempt_count`) ...
    fn upstream_attempts(&self) -> Option<u64> {
        None
    }

    /// ... and whether an upstream connection was ever ready for it
    /// (`upstream.cx_pool_ready_duration` set).
    fn upstream_connection_ready(&self) -> bool {
        true
    }
}
