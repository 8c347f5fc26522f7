//! Replay-store shards in this process's memory (the native build): one lock per shard, each
//! changed in place under its lock; no copies, no compare-and-swap. Shards live in a
//! process-wide registry under the same key names the shared-data store uses, so a
//! configuration reload that keeps a policy's keys keeps its entries (as Envoy shared data does
//! under one `vm_id`), and they live as long as the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use super::shard::Shard;

type Slot<T> = Arc<Mutex<T>>;

fn registry<T: Default>(
    map: &'static OnceLock<Mutex<HashMap<String, Slot<T>>>>,
    key: &str,
) -> Slot<T> {
    let mut map = map
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Arc::clone(map.entry(key.to_string()).or_default())
}

static SHARDS: OnceLock<Mutex<HashMap<String, Slot<Shard>>>> = OnceLock::new();
static LEASES: OnceLock<Mutex<HashMap<String, Slot<Vec<u8>>>>> = OnceLock::new();

/// One configuration's view of the process's shards, resolved once at configure time.
pub struct Memory {
    shards: Vec<Slot<Shard>>,
    lease: Slot<Vec<u8>>,
}

// A lock per entry in debug output is noise.
impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Memory {
    /// The shards named `keys` (created empty if new) and the sweep lease `lease_key`.
    pub fn attach(keys: &[String], lease_key: &str) -> Memory {
        Memory {
            shards: keys.iter().map(|k| registry(&SHARDS, k)).collect(),
            lease: registry(&LEASES, lease_key),
        }
    }

    /// Shard `index`, locked. A lock poisoned by a panic elsewhere still holds a valid shard
    /// (every change leaves whole entries), so it is taken over rather than failing forever.
    pub fn shard(&self, index: usize) -> Option<MutexGuard<'_, Shard>> {
        self.shards
            .get(index)
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn lease(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
