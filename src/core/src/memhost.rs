//! In-memory `Host` for tests and tools: a settable clock, metrics by name, captured logs, and
//! shared data with Envoy's semantics (CAS tokens; a write to a missing key always succeeds;
//! no delete), plus fault injection for CAS races.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::host::{Host, Level, SetError};

#[derive(Default)]
pub struct MemHost {
    pub now_ms: Cell<u64>,
    names: Vec<String>,
    counts: RefCell<BTreeMap<String, i64>>,
    logs: RefCell<Vec<(Level, String)>>,
    shared: RefCell<BTreeMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    /// The next N writes fail with a CAS mismatch (as if another worker wrote first).
    pub cas_failures: Cell<usize>,
    /// Every shared-data call fails.
    pub broken: Cell<bool>,
    /// Runs once, just before the next write: lets a test interleave another worker's whole
    /// operation between our read and our CAS.
    #[allow(clippy::type_complexity)]
    before_next_set: RefCell<Option<Box<dyn FnOnce()>>>,
    /// SDS secrets by index, as a native host would deliver them.
    pub sds: RefCell<BTreeMap<usize, Vec<u8>>>,
    /// Work handed to `defer`.
    pub deferred: RefCell<Vec<crate::guard::RemoteTask>>,
    /// The last verdict set.
    pub verdict: RefCell<Option<String>>,
}

impl MemHost {
    /// `names` is `Guard::counter_names()`, so metrics can be read back by name.
    pub fn new(names: &[String], now_ms: u64) -> MemHost {
        MemHost {
            now_ms: Cell::new(now_ms),
            names: names.to_vec(),
            next_cas: Cell::new(1),
            ..MemHost::default()
        }
    }

    pub fn count(&self, name: &str) -> i64 {
        self.counts.borrow().get(name).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<String, i64> {
        self.counts.borrow().clone()
    }

    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }

    /// Raw value of a shared-data key.
    pub fn shared_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.borrow().get(key).map(|(v, _)| v.clone())
    }

    pub fn before_next_set(&self, f: impl FnOnce() + 'static) {
        *self.before_next_set.borrow_mut() = Some(Box::new(f));
    }
}

impl Host for MemHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn add(&self, metric: usize, delta: i64) {
        let name = self
            .names
            .get(metric)
            .cloned()
            .unwrap_or_else(|| format!("<undefined metric {metric}>"));
        let mut counts = self.counts.borrow_mut();
        let slot = counts.entry(name).or_insert(0);
        *slot = slot.saturating_add(delta);
    }

    fn set_gauge(&self, metric: usize, value: u64) {
        let name = self.names.get(metric).cloned().unwrap_or_default();
        self.counts
            .borrow_mut()
            .insert(name, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn log(&self, level: Level, line: &str) {
        self.logs.borrow_mut().push((level, line.to_string()));
    }

    /// A histogram reads back as the number of values recorded (`count`) and their sum under
    /// `<name>.sum`.
    fn record(&self, metric: usize, value: u64) {
        let name = self.names.get(metric).cloned().unwrap_or_default();
        let mut counts = self.counts.borrow_mut();
        let n = counts.entry(name.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let sum = counts.entry(format!("{name}.sum")).or_insert(0);
        *sum = sum.saturating_add(i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, SetError> {
        if self.broken.get() {
            return Err(SetError::Failed);
        }
        Ok(self.shared.borrow().get(key).cloned())
    }

    fn sds_secret(&self, index: usize) -> Option<Vec<u8>> {
        self.sds.borrow().get(&index).cloned()
    }

    fn defer(&self, task: crate::guard::RemoteTask) {
        self.deferred.borrow_mut().push(task);
    }

    fn set_verdict(&self, verdict: &str) {
        *self.verdict.borrow_mut() = Some(verdict.to_string());
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let hook = self.before_next_set.borrow_mut().take();
        if let Some(f) = hook {
            f();
        }
        if self.broken.get() {
            return Err(SetError::Failed);
        }
        if self.cas_failures.get() > 0 {
            self.cas_failures.set(self.cas_failures.get() - 1);
            return Err(SetError::CasMismatch);
        }
        let mut shared = self.shared.borrow_mut();
        if let (Some((_, current)), Some(expected)) = (shared.get(key), cas) {
            if *current != expected {
                return Err(SetError::CasMismatch);
            }
        }
        let token = self.next_cas.get();
        self.next_cas.set(token.wrapping_add(1).max(1));
        shared.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }
}
