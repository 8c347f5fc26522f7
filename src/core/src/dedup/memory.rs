//! Replay-store shards in this process's memory (the native build): one lock per shard, each a
//! hash table changed in place under its lock, so a claim costs the same with 100 entries or
//! 100 000; no copies, no compare-and-swap. Shards live in a process-wide registry under the
//! same key names the shared-data store uses, so a configuration reload that keeps a policy's
//! keys keeps its entries (as Envoy shared data does under one `vm_id`), and they live as long
//! as the process.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use super::shard::{Entries, Entry, KeyHash, State};

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

static SHARDS: OnceLock<Mutex<HashMap<String, Slot<Table>>>> = OnceLock::new();
static LEASES: OnceLock<Mutex<HashMap<String, Slot<Vec<u8>>>>> = OnceLock::new();

/// A key hash as a table key. Key hashes are SHA-256 output, already uniform: the table hashes
/// them as their last eight bytes (the first eight pick the shard), with no second hash.
#[derive(PartialEq, Eq)]
struct Key(KeyHash);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut tail = [0u8; 8];
        if let Some(t) = self.0.last_chunk::<8>() {
            tail = *t;
        }
        state.write_u64(u64::from_le_bytes(tail));
    }
}

#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `Key` is hashed here, through `write_u64`; fold anything else in regardless.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One shard: key hash -> expiry and state packed in one word (`expiry_ms << 1 | done`), 24
/// bytes a slot.
#[derive(Default)]
pub struct Table {
    map: HashMap<Key, u64, BuildHasherDefault<Identity>>,
}

const MAX_EXPIRY_MS: u64 = u64::MAX >> 1;

fn pack(entry: &Entry) -> u64 {
    let done = u64::from(entry.state == State::Done);
    (entry.expiry_ms.min(MAX_EXPIRY_MS) << 1) | done
}

fn unpack(hash: &KeyHash, word: u64) -> Entry {
    Entry {
        hash: *hash,
        expiry_ms: word >> 1,
        state: if word & 1 == 1 {
            State::Done
        } else {
            State::InFlight
        },
    }
}

impl Entries for Table {
    fn get(&self, hash: &KeyHash, now_ms: u64) -> Option<Entry> {
        let word = *self.map.get(&Key(*hash))?;
        Some(unpack(hash, word)).filter(|e| e.expiry_ms > now_ms)
    }

    fn put(&mut self, entry: Entry) {
        self.map.insert(Key(entry.hash), pack(&entry));
    }

    fn remove(&mut self, hash: &KeyHash) -> bool {
        self.map.remove(&Key(*hash)).is_some()
    }

    fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, word| (*word >> 1) > now_ms);
        // A table emptied by expiry gives its memory back (it grows again on demand).
        if self.map.capacity() > 64 && self.map.len() < self.map.capacity() / 4 {
            self.map.shrink_to(self.map.len().saturating_mul(2));
        }
        before.saturating_sub(self.map.len())
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn entries(&self) -> Vec<Entry> {
        self.map.iter().map(|(k, w)| unpack(&k.0, *w)).collect()
    }
}

/// A small process-wide record (a store layout), changed under its lock.
pub fn with_record<T>(key: &str, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    let slot = registry(&LEASES, key);
    let mut record = slot.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut record)
}

/// Takes every entry of the shard named `key` and forgets the shard (a layout no longer used).
pub fn drain(key: &str) -> Vec<Entry> {
    let slot = {
        let mut map = SHARDS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(key)
    };
    let Some(slot) = slot else {
        return Vec::new();
    };
    let mut table = slot.lock().unwrap_or_else(PoisonError::into_inner);
    let entries = table.entries();
    table.map.clear();
    entries
}

/// One configuration's view of the process's shards, resolved once at configure time.
pub struct Memory {
    shards: Vec<Slot<Table>>,
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
    pub fn shard(&self, index: usize) -> Option<MutexGuard<'_, Table>> {
        self.shards
            .get(index)
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn lease(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(b: u8, expiry_ms: u64, state: State) -> Entry {
        Entry {
            hash: [b; 16],
            expiry_ms,
            state,
        }
    }

    #[test]
    fn table_keeps_expiry_and_state_and_prunes() {
        let mut t = Table::default();
        t.put(e(1, 10, State::InFlight));
        t.put(e(2, 20, State::Done));
        t.put(e(1, 30, State::Done));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&[1; 16], 29), Some(e(1, 30, State::Done)));
        assert_eq!(t.get(&[1; 16], 30), None, "expired at its expiry");
        assert_eq!(t.get(&[2; 16], 0), Some(e(2, 20, State::Done)));
        assert_eq!(t.prune(20), 1);
        assert!(t.remove(&[1; 16]));
        assert!(!t.remove(&[1; 16]));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_far_expiry_is_clamped_not_wrapped() {
        let mut t = Table::default();
        t.put(e(3, u64::MAX, State::InFlight));
        let got = t
            .get(&[3; 16], u64::MAX >> 2)
            .map(|x| (x.state, x.expiry_ms));
        assert_eq!(got, Some((State::InFlight, MAX_EXPIRY_MS)));
    }

    #[test]
    fn an_emptied_table_gives_memory_back() {
        let mut t = Table::default();
        for i in 0..10_000u32 {
            let mut h = [0u8; 16];
            h[12..].copy_from_slice(&i.to_le_bytes());
            t.put(Entry {
                hash: h,
                expiry_ms: 5,
                state: State::Done,
            });
        }
        assert!(t.map.capacity() >= 10_000);
        assert_eq!(t.prune(5), 10_000);
        assert!(t.map.capacity() < 1_000);
    }
}
