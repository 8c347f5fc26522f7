//! Replay-store shards in this process's memory (the native build): one lock per shard, each a
//! sorted array of packed entries changed in place under its lock (`Table`), so a claim is a
//! binary search and a short move whether the store holds 1 000 entries or 100 000; no copies,
//! no compare-and-swap. Shards live in a process-wide registry under the same key names the
//! shared-data store uses, so a configuration reload that keeps a policy's keys keeps its
//! entries (as Envoy shared data does under one `vm_id`), and they live as long as the process.
//!
//! Memory, measured with `bench/bench.py --only-store` (Envoy 1.40, which links tcmalloc; 4096
//! shards, 1k then 101k live entries) on 2026-11-29: 30 bytes of RSS per added entry, of which
//! 24 are the entry and the rest each shard's spare room in its last chunk and its chunk list.
//! The hash tables used before took 76 (25-byte slots at 40-80% load, plus the smaller tables
//! each one left behind as it grew by doubling: all shards fill together, so once they have
//! passed a size nobody asks for it again and the allocator keeps those buffers); a sorted
//! array that grew by an eighth took 53 (the same trail of smaller buffers). Fixed-size chunks
//! leave no such trail, and memory a pruned shard frees is the size every shard allocates.

use std::collections::HashMap;
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

/// One stored entry: the key hash and its expiry and state packed in one word
/// (`expiry_ms << 1 | done`), 24 bytes.
#[derive(Clone, Copy)]
struct Packed {
    hash: KeyHash,
    word: u64,
}

/// The order slots are kept in: the key hash's bytes, compared as one big-endian number (two
/// loads and a compare rather than a call to `memcmp`).
fn order(hash: &KeyHash) -> u128 {
    u128::from_be_bytes(*hash)
}

/// One shard: its entries sorted by key hash, packed densely into fixed-size chunks (entry `i`
/// is slot `i % CHUNK` of chunk `i / CHUNK`), found by binary search and inserted or removed by
/// moving the entries after it one place (a shard holds its share plus headroom, a few hundred
/// entries at most; at 100k entries over 4096 shards, about 25).
///
/// Every buffer a shard allocates is one 192-byte chunk, so memory another shard freed is
/// always the right size for reuse, and a shard grows without leaving a trail of smaller
/// buffers behind (a growing array or hash table frees one of each size it passes, and when
/// all shards fill together those sizes are never asked for again). Only the last chunk has
/// room to spare, about 3.5 entries a shard.
#[derive(Default)]
pub struct Table {
    // Boxed on purpose: each chunk its own allocation, all of one size.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<Chunk>>,
    len: usize,
}

/// Entries per chunk.
const CHUNK: usize = 8;

type Chunk = [Packed; CHUNK];

const EMPTY: Packed = Packed {
    hash: [0; 16],
    word: 0,
};

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

impl Table {
    fn at(&self, i: usize) -> Option<&Packed> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn at_mut(&mut self, i: usize) -> Option<&mut Packed> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    fn stored(&self) -> impl Iterator<Item = &Packed> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }

    /// Where `hash` is (`Ok`) or would go to keep the order (`Err`).
    fn find(&self, hash: &KeyHash) -> Result<usize, usize> {
        let key = order(hash);
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo.midpoint(hi);
            match self.at(mid).map(|s| order(&s.hash).cmp(&key)) {
                Some(std::cmp::Ordering::Less) => lo = mid.saturating_add(1),
                Some(std::cmp::Ordering::Greater) => hi = mid,
                Some(std::cmp::Ordering::Equal) => return Ok(mid),
                None => break,
            }
        }
        Err(lo)
    }

    /// Puts `slot` at `at` (at most `len`), moving the entries from there on one place up.
    fn insert_at(&mut self, at: usize, slot: Packed) {
        if self.len >= self.chunks.len().saturating_mul(CHUNK) {
            self.chunks.push(Box::new([EMPTY; CHUNK]));
        }
        let mut carry = slot;
        let mut from = at % CHUNK;
        let last = self.len / CHUNK;
        for chunk in self
            .chunks
            .iter_mut()
            .take(last.saturating_add(1))
            .skip(at / CHUNK)
        {
            // Each chunk takes the entry carried in at `from` and passes its last one on.
            let out = chunk.last().copied().unwrap_or(EMPTY);
            if let Some(tail) = chunk.get_mut(from..) {
                tail.rotate_right(1);
                if let Some(first) = tail.first_mut() {
                    *first = carry;
                }
            }
            carry = out;
            from = 0;
        }
        self.len = self.len.saturating_add(1);
    }

    /// Removes entry `at` (below `len`), moving the entries after it one place down.
    fn remove_at(&mut self, at: usize) {
        let mut from = at % CHUNK;
        for i in at / CHUNK..self.chunks.len() {
            let next = self
                .chunks
                .get(i.saturating_add(1))
                .and_then(|c| c.first().copied());
            if let Some(chunk) = self.chunks.get_mut(i) {
                if let Some(tail) = chunk.get_mut(from..) {
                    tail.rotate_left(1);
                }
                if let (Some(last), Some(next)) = (chunk.last_mut(), next) {
                    *last = next;
                }
            }
            from = 0;
        }
        self.len = self.len.saturating_sub(1);
        self.fit();
    }

    /// Frees the chunks past the last entry.
    fn fit(&mut self) {
        self.chunks.truncate(self.len.div_ceil(CHUNK));
        if self.chunks.len() < self.chunks.capacity() / 4 {
            self.chunks.shrink_to_fit();
        }
    }

    /// Chunks allocated (for tests of the memory kept).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.len().saturating_mul(CHUNK)
    }
}

impl Entries for Table {
    fn get(&self, hash: &KeyHash, now_ms: u64) -> Option<Entry> {
        let slot = self.at(self.find(hash).ok()?)?;
        Some(unpack(hash, slot.word)).filter(|e| e.expiry_ms > now_ms)
    }

    fn put(&mut self, entry: Entry) {
        let word = pack(&entry);
        match self.find(&entry.hash) {
            Ok(i) => {
                if let Some(slot) = self.at_mut(i) {
                    slot.word = word;
                }
            }
            Err(i) => self.insert_at(
                i,
                Packed {
                    hash: entry.hash,
                    word,
                },
            ),
        }
    }

    fn remove(&mut self, hash: &KeyHash) -> bool {
        match self.find(hash) {
            Ok(i) => {
                self.remove_at(i);
                true
            }
            Err(_) => false,
        }
    }

    fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.len;
        // Compacts in place, keeping the order; the chunks left empty are freed.
        let mut kept = 0usize;
        for i in 0..before {
            let Some(slot) = self.at(i).copied() else {
                break;
            };
            if (slot.word >> 1) > now_ms {
                if kept != i {
                    if let Some(to) = self.at_mut(kept) {
                        *to = slot;
                    }
                }
                kept = kept.saturating_add(1);
            }
        }
        self.len = kept;
        self.fit();
        before.saturating_sub(kept)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn entries(&self) -> Vec<Entry> {
        self.stored().map(|s| unpack(&s.hash, s.word)).collect()
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
    *table = Table::default();
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
    use proptest::prelude::*;

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
        assert!(t.capacity() >= 10_000);
        assert_eq!(t.prune(5), 10_000);
        assert_eq!(t.capacity(), 0);
    }

    fn hash_of(i: u32) -> KeyHash {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        h
    }

    /// Chunks held: exactly enough for the entries.
    fn snug(t: &Table) -> bool {
        t.capacity() == t.len().div_ceil(CHUNK).saturating_mul(CHUNK)
    }

    #[test]
    fn keeps_entries_sorted_in_just_enough_chunks() {
        let mut t = Table::default();
        for i in 0..600u32 {
            t.put(Entry {
                hash: hash_of(i),
                expiry_ms: u64::from(i).saturating_add(1000),
                state: State::Done,
            });
            assert!(snug(&t), "{} in {}", t.len(), t.capacity());
        }
        let hashes: Vec<KeyHash> = t.entries().iter().map(|e| e.hash).collect();
        assert_eq!(hashes.len(), 600);
        assert!(hashes.windows(2).all(|w| w[0] < w[1]));
        assert!((0..600u32).all(|i| t.get(&hash_of(i), 0).is_some()));
        assert_eq!(t.prune(1299), 300);
        assert!(snug(&t));
        assert!(t.remove(&hash_of(450)));
        assert!(snug(&t));
        assert_eq!(t.prune(1499), 199);
        assert_eq!(t.len(), 100);
        assert!(snug(&t));
        assert!((500..600u32).all(|i| t.get(&hash_of(i), 1499).is_some()));
        let hashes: Vec<KeyHash> = t.entries().iter().map(|e| e.hash).collect();
        assert!(hashes.windows(2).all(|w| w[0] < w[1]));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(KeyHash, u64, bool),
        Get(KeyHash, u64),
        Remove(KeyHash),
        Prune(u64),
    }

    /// Few distinct hashes (so operations meet), differing in the first, a middle or the last
    /// byte (so the order compares every part of the hash).
    fn any_hash() -> impl Strategy<Value = KeyHash> {
        (0u8..4, 0usize..16, 0u8..40).prop_map(|(base, at, b)| {
            let mut h = [base.wrapping_mul(85); 16];
            if let Some(x) = h.get_mut(at) {
                *x = b.wrapping_mul(7);
            }
            h
        })
    }

    fn any_expiry() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..120,
            Just(MAX_EXPIRY_MS),
            Just(u64::MAX),
            (u64::MAX >> 2)..u64::MAX
        ]
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any_hash(), any_expiry(), any::<bool>()).prop_map(|(h, x, d)| Op::Put(h, x, d)),
            3 => (any_hash(), 0u64..120).prop_map(|(h, n)| Op::Get(h, n)),
            2 => any_hash().prop_map(Op::Remove),
            1 => (0u64..120).prop_map(Op::Prune),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The table behaves as a plain map from hash to (clamped expiry, state) in which
        /// expired entries read as absent and stay until pruned.
        #[test]
        fn table_matches_a_reference_map(ops in proptest::collection::vec(any_op(), 1..400)) {
            let mut t = Table::default();
            let mut model: HashMap<KeyHash, Entry> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(hash, expiry_ms, done) => {
                        let state = if done { State::Done } else { State::InFlight };
                        t.put(Entry { hash, expiry_ms, state });
                        let expiry_ms = expiry_ms.min(MAX_EXPIRY_MS);
                        model.insert(hash, Entry { hash, expiry_ms, state });
                    }
                    Op::Get(hash, now) => {
                        let want = model.get(&hash).copied().filter(|e| e.expiry_ms > now);
                        prop_assert_eq!(t.get(&hash, now), want);
                    }
                    Op::Remove(hash) => {
                        prop_assert_eq!(t.remove(&hash), model.remove(&hash).is_some());
                    }
                    Op::Prune(now) => {
                        let before = model.len();
                        model.retain(|_, e| e.expiry_ms > now);
                        prop_assert_eq!(t.prune(now), before.saturating_sub(model.len()));
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(snug(&t));
            }
            let mut got = t.entries();
            let mut want: Vec<Entry> = model.into_values().collect();
            prop_assert!(got.windows(2).all(|w| order(&w[0].hash) < order(&w[1].hash)));
            got.sort_by_key(|e| order(&e.hash));
            want.sort_by_key(|e| order(&e.hash));
            prop_assert_eq!(got, want);
        }
    }
}
