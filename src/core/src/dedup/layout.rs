//! Store layouts: a policy's shard count follows its share of the store, so a reload that
//! changes `capacity` (or `shards`) changes where each key lives. Entries filed under the old
//! count would then never be found and a replay inside the window would be admitted. So each
//! policy records its shard count, and the first configuration to see a new one moves the live
//! entries across (merging with anything already claimed in the new layout) and empties the old
//! shards.
//!
//! Deliveries settled by requests still running under the old configuration while the move
//! happens land in the old shards and are not carried over: the move takes milliseconds.
#![deny(clippy::arithmetic_side_effects)]

use super::memory;
use super::shard::{self, Entries, Entry, Shard, State};
use super::{Backing, Partition, Store};
use crate::host::{Host, SetError};

/// Rounds of read-and-empty on one old shard before giving up on it (writers still using it).
const MAX_DRAIN_ATTEMPTS: usize = 8;

pub(super) fn shard_key(base: &str, shards: usize, index: usize) -> String {
    format!("{base}/{shards}/shard/{index}")
}

fn layout_key(base: &str) -> String {
    format!("{base}/layout")
}

fn decode(bytes: &[u8]) -> Option<usize> {
    let count = u32::from_le_bytes(*bytes.first_chunk::<4>()?);
    usize::try_from(count).ok().filter(|n| *n > 0)
}

fn encode(shards: usize) -> Vec<u8> {
    u32::try_from(shards)
        .unwrap_or(u32::MAX)
        .to_le_bytes()
        .to_vec()
}

/// Whether `incoming` should replace what the shard holds for its key: a delivery known done
/// beats one in flight, and a later expiry beats an earlier one in the same state.
fn wins(held: Option<Entry>, incoming: &Entry) -> bool {
    match held {
        None => true,
        Some(h) => match (h.state, incoming.state) {
            (State::InFlight, State::Done) => true,
            (State::Done, State::InFlight) => false,
            _ => incoming.expiry_ms > h.expiry_ms,
        },
    }
}

impl Store {
    /// Records `p`'s shard count; if another was recorded, claims the move (so one worker does
    /// it) and carries the entries over. Returns a line for the log when entries moved.
    pub(super) fn adopt_layout(
        &self,
        host: &dyn Host,
        policy: usize,
        p: &Partition,
    ) -> Option<String> {
        let key = layout_key(&p.base);
        let previous = match &self.backing {
            Backing::Memory(_) => memory::with_record(&key, |record| {
                let previous = decode(record);
                *record = encode(p.shards);
                previous
            }),
            Backing::Shared => self.swap_shared_layout(host, &key, p.shards)?,
        };
        let old = previous.filter(|n| *n != p.shards)?;
        let now = host.now_ms();
        let mut moved = 0usize;
        for index in 0..old {
            let from = shard_key(&p.base, old, index);
            for entry in self.drain(host, &from) {
                if entry.expiry_ms <= now {
                    continue;
                }
                let Some((target, _)) = self.shard_of(policy, &entry.hash) else {
                    continue;
                };
                // Capacity is not checked: forgetting a delivery is worse than a full shard
                // (new claims get `store_full` until entries expire).
                let wrote = self.update(host, target, |s| {
                    let write = wins(s.get(&entry.hash, now), &entry);
                    if write {
                        s.put(entry);
                    }
                    (write, write)
                });
                if wrote == Some(true) {
                    moved = moved.saturating_add(1);
                }
            }
        }
        Some(format!(
            "webhook-guard: the replay store of '{}' went from {old} to {} shards; {moved} live entries moved",
            p.base, p.shards
        ))
    }

    /// Sets the shared-data layout record to `shards` and returns what it held, or `None` when
    /// another worker changed it first (that worker moves the entries).
    fn swap_shared_layout(
        &self,
        host: &dyn Host,
        key: &str,
        shards: usize,
    ) -> Option<Option<usize>> {
        let (held, cas) = match host.shared_get(key) {
            Ok(Some((bytes, cas))) => (decode(&bytes), Some(cas)),
            Ok(None) => (None, None),
            Err(_) => return None,
        };
        if held == Some(shards) {
            return Some(held);
        }
        match host.shared_set(key, &encode(shards), cas) {
            Ok(()) => Some(held),
            Err(SetError::CasMismatch | SetError::Failed) => None,
        }
    }

    /// Every entry of the shard named `key`, which is left empty.
    fn drain(&self, host: &dyn Host, key: &str) -> Vec<Entry> {
        if let Backing::Memory(_) = self.backing {
            return memory::drain(key);
        }
        let mut entries = Vec::new();
        for _ in 0..MAX_DRAIN_ATTEMPTS {
            let (bytes, cas) = match host.shared_get(key) {
                Ok(Some((bytes, cas))) => (bytes, cas),
                _ => return entries,
            };
            entries = Shard::from_vec(bytes).entries();
            if entries.is_empty() {
                return entries;
            }
            match host.shared_set(key, &[shard::VERSION], Some(cas)) {
                Ok(()) => return entries,
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return entries,
            }
        }
        // Still being written: move what was read (leaving a copy behind is harmless).
        entries
    }
}
