//! One shard's value in shared data: a compact, versioned array of fixed-size entries.
//!
//! Layout: `[VERSION]` then `n` entries of `ENTRY_BYTES`:
//! `[key hash: 16][expiry ms: u64 LE][state: u8]`. Unordered; shards stay small, so a linear
//! scan over the raw bytes beats decoding. (The native build keeps its shards as sorted arrays
//! in fixed-size chunks: `memory::Table`; both are `Entries`.)
#![deny(clippy::arithmetic_side_effects)]

pub const VERSION: u8 = 1;
pub const HASH_BYTES: usize = 16;
pub const ENTRY_BYTES: usize = HASH_BYTES + 8 + 1;

pub type KeyHash = [u8; HASH_BYTES];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Claimed by a request whose upstream answer is pending.
    InFlight,
    /// The backend accepted it: later copies are duplicates.
    Done,
}

impl State {
    fn byte(self) -> u8 {
        match self {
            State::InFlight => 1,
            State::Done => 2,
        }
    }

    fn from_byte(b: u8) -> Option<State> {
        match b {
            1 => Some(State::InFlight),
            2 => Some(State::Done),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub hash: KeyHash,
    pub expiry_ms: u64,
    pub state: State,
}

/// What the store needs of a shard, whichever form it is kept in. Expired entries stay until
/// `prune` (a sweep, or a claim that finds the shard full) but never count as present.
pub trait Entries {
    /// The live entry for `hash`, if any (expired entries count as absent).
    fn get(&self, hash: &KeyHash, now_ms: u64) -> Option<Entry>;
    /// Inserts or replaces the entry for `entry.hash`.
    fn put(&mut self, entry: Entry);
    fn remove(&mut self, hash: &KeyHash) -> bool;
    /// Drops expired entries; returns how many.
    fn prune(&mut self, now_ms: u64) -> usize;
    /// Stored entries, expired ones included until pruned.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn entries(&self) -> Vec<Entry>;
}

/// A shard as stored: the encoded bytes are the working form (no per-entry decoding), so a
/// claim costs one scan and, when it writes, one in-place compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `VERSION` followed by whole entries.
    bytes: Vec<u8>,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            bytes: vec![VERSION],
        }
    }
}

fn read_entry(chunk: &[u8]) -> Option<Entry> {
    let (hash, rest) = chunk.split_first_chunk::<HASH_BYTES>()?;
    let (expiry, rest) = rest.split_first_chunk::<8>()?;
    let state = State::from_byte(*rest.first()?)?;
    Some(Entry {
        hash: *hash,
        expiry_ms: u64::from_le_bytes(*expiry),
        state,
    })
}

fn write_entry(out: &mut [u8], e: &Entry) {
    for (o, b) in out.iter_mut().zip(
        e.hash
            .iter()
            .chain(e.expiry_ms.to_le_bytes().iter())
            .chain(std::iter::once(&e.state.byte())),
    ) {
        *o = *b;
    }
}

impl Shard {
    /// Takes a stored value. An empty value (a pre-created or "removed" key) is an empty
    /// shard; an unknown version or a torn length makes it empty too, so a format change
    /// forgets entries rather than wedging the filter.
    pub fn decode(bytes: &[u8]) -> Shard {
        Shard::from_vec(bytes.to_vec())
    }

    /// Checks the version and that the length is whole entries (O(1)); an entry with an
    /// unknown state byte reads as absent and goes at the next prune.
    pub fn from_vec(bytes: Vec<u8>) -> Shard {
        let valid = match bytes.split_first() {
            Some((&VERSION, body)) => body.len() % ENTRY_BYTES == 0,
            _ => false,
        };
        if valid {
            Shard { bytes }
        } else {
            Shard::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn body(&self) -> &[u8] {
        self.bytes.get(1..).unwrap_or(&[])
    }

    fn chunks(&self) -> std::slice::ChunksExact<'_, u8> {
        self.body().chunks_exact(ENTRY_BYTES)
    }

    fn position(&self, hash: &KeyHash) -> Option<usize> {
        self.chunks()
            .position(|c| c.get(..HASH_BYTES) == Some(&hash[..]))
    }

    fn slot_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        let start = index.checked_mul(ENTRY_BYTES)?.checked_add(1)?;
        self.bytes.get_mut(start..start.checked_add(ENTRY_BYTES)?)
    }
}

impl Entries for Shard {
    fn get(&self, hash: &KeyHash, now_ms: u64) -> Option<Entry> {
        self.chunks()
            .filter(|c| c.get(..HASH_BYTES) == Some(&hash[..]))
            .filter_map(read_entry)
            .find(|e| e.expiry_ms > now_ms)
    }

    fn prune(&mut self, now_ms: u64) -> usize {
        let live = |c: &[u8]| read_entry(c).is_some_and(|e| e.expiry_ms > now_ms);
        if self.chunks().all(live) {
            return 0;
        }
        let before = self.len();
        let mut kept = Vec::with_capacity(self.bytes.len());
        kept.push(VERSION);
        for c in self.chunks().filter(|c| live(c)) {
            kept.extend_from_slice(c);
        }
        self.bytes = kept;
        before.saturating_sub(self.len())
    }

    fn put(&mut self, entry: Entry) {
        let slot = self.position(&entry.hash).and_then(|i| self.slot_mut(i));
        match slot {
            Some(slot) => write_entry(slot, &entry),
            None => {
                let mut record = [0u8; ENTRY_BYTES];
                write_entry(&mut record, &entry);
                self.bytes.extend_from_slice(&record);
            }
        }
    }

    fn remove(&mut self, hash: &KeyHash) -> bool {
        let Some(start) = self
            .position(hash)
            .and_then(|i| i.checked_mul(ENTRY_BYTES))
            .and_then(|o| o.checked_add(1))
        else {
            return false;
        };
        let end = start.saturating_add(ENTRY_BYTES).min(self.bytes.len());
        self.bytes.drain(start..end);
        true
    }

    fn entries(&self) -> Vec<Entry> {
        self.chunks().filter_map(read_entry).collect()
    }

    fn len(&self) -> usize {
        self.body().len() / ENTRY_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(b: u8, expiry_ms: u64, state: State) -> Entry {
        Entry {
            hash: [b; HASH_BYTES],
            expiry_ms,
            state,
        }
    }

    #[test]
    fn round_trips_and_reports_size() {
        let mut s = Shard::default();
        s.put(e(1, 10, State::InFlight));
        s.put(e(2, 20, State::Done));
        s.put(e(1, 30, State::Done));
        let bytes = s.encode();
        assert_eq!(bytes.len(), 1 + 2 * ENTRY_BYTES);
        assert_eq!(ENTRY_BYTES, 25);
        assert_eq!(Shard::decode(&bytes), s);
        assert_eq!(s.get(&[1; 16], 29).map(|x| x.state), Some(State::Done));
        assert_eq!(s.get(&[1; 16], 30), None, "expired at its expiry");
    }

    #[test]
    fn prune_and_remove() {
        let mut s = Shard::default();
        s.put(e(1, 10, State::Done));
        s.put(e(2, 20, State::Done));
        assert_eq!(s.prune(10), 1);
        assert_eq!(s.len(), 1);
        assert!(s.remove(&[2; 16]));
        assert!(!s.remove(&[2; 16]));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn garbage_decodes_to_empty_and_unknown_states_read_as_absent() {
        assert_eq!(Shard::decode(&[]).len(), 0);
        assert_eq!(Shard::decode(&[9, 1, 2]).len(), 0);
        assert_eq!(Shard::decode(&[VERSION, 1, 2]).len(), 0);
        let mut bad_state = vec![VERSION];
        bad_state.extend_from_slice(&[0; ENTRY_BYTES]);
        let mut s = Shard::decode(&bad_state);
        assert_eq!(s.get(&[0; HASH_BYTES], 0), None);
        assert!(s.entries().is_empty());
        assert_eq!(s.prune(0), 1);
        assert_eq!(s.len(), 0);
    }
}
