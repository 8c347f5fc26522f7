//! In-memory `Host` for tests and tools: a settable clock, counters by name, captured logs.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::host::{Host, Level};

#[derive(Debug, Default)]
pub struct MemHost {
    pub now_ms: Cell<u64>,
    names: Vec<String>,
    counts: RefCell<BTreeMap<String, u64>>,
    logs: RefCell<Vec<(Level, String)>>,
}

impl MemHost {
    /// `names` is `Guard::counter_names()`, so counters can be read back by name.
    pub fn new(names: &[String], now_ms: u64) -> MemHost {
        MemHost {
            now_ms: Cell::new(now_ms),
            names: names.to_vec(),
            ..MemHost::default()
        }
    }

    pub fn count(&self, name: &str) -> u64 {
        self.counts.borrow().get(name).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.borrow().clone()
    }

    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }
}

impl Host for MemHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    fn increment(&self, counter: usize) {
        let name = self
            .names
            .get(counter)
            .cloned()
            .unwrap_or_else(|| format!("<undefined counter {counter}>"));
        *self.counts.borrow_mut().entry(name).or_insert(0) += 1;
    }

    fn log(&self, level: Level, line: &str) {
        self.logs.borrow_mut().push((level, line.to_string()));
    }
}
