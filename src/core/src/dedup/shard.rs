//! One shard's value in shared data: a compact, versioned array of fixed-size entries.
//!
//! Layout: `[VERSION]` then `n` entries of `ENTRY_BYTES`:
//! `[key hash: 16][expiry ms: u64 LE][state: u8]`. Unordered; shards stay small, so a linear
//! scan over the raw bytes beats decoding.
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

/// A decoded shard: entries only (the version byte is checked on decode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    entries: Vec<Entry>,
}

impl Shard {
    /// Decodes a stored value. An empty value (a pre-created or "removed" key) is an empty
    /// shard; an unknown version or a torn length is treated as empty too, so a format change
    /// forgets entries rather than wedging the filter.
    pub fn decode(bytes: &[u8]) -> Shard {
        let Some((&version, body)) = bytes.split_first() else {
            return Shard::default();
        };
        if version != VERSION || body.len() % ENTRY_BYTES != 0 {
            return Shard::default();
        }
        let entries = body
            .chunks_exact(ENTRY_BYTES)
            .filter_map(|chunk| {
                let (hash, rest) = chunk.split_first_chunk::<HASH_BYTES>()?;
                let (expiry, rest) = rest.split_first_chunk::<8>()?;
                let state = State::from_byte(*rest.first()?)?;
                Some(Entry {
                    hash: *hash,
                    expiry_ms: u64::from_le_bytes(*expiry),
                    state,
                })
            })
            .collect();
        Shard { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.entries
                .len()
                .saturating_mul(ENTRY_BYTES)
                .saturating_add(1),
        );
        out.push(VERSION);
        for e in &self.entries {
            out.extend_from_slice(&e.hash);
            out.extend_from_slice(&e.expiry_ms.to_le_bytes());
            out.push(e.state.byte());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live entry for `hash`, if any (expired entries count as absent).
    pub fn get(&self, hash: &KeyHash, now_ms: u64) -> Option<Entry> {
        self.entries
            .iter()
            .find(|e| &e.hash == hash && e.expiry_ms > now_ms)
            .copied()
    }

    /// Drops expired entries; returns how many.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.expiry_ms > now_ms);
        before.saturating_sub(self.entries.len())
    }

    /// Inserts or replaces the entry for `entry.hash`.
    pub fn put(&mut self, entry: Entry) {
        match self.entries.iter_mut().find(|e| e.hash == entry.hash) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    pub fn remove(&mut self, hash: &KeyHash) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| &e.hash != hash);
        before != self.entries.len()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
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
        assert!(s.is_empty());
    }

    #[test]
    fn garbage_decodes_to_empty() {
        assert!(Shard::decode(&[]).is_empty());
        assert!(Shard::decode(&[9, 1, 2]).is_empty());
        assert!(Shard::decode(&[VERSION, 1, 2]).is_empty());
        let mut bad_state = vec![VERSION];
        bad_state.extend_from_slice(&[0; ENTRY_BYTES]);
        assert!(Shard::decode(&bad_state).is_empty());
    }
}
