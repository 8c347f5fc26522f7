//! Replay protection in Envoy shared data (or, in the native build, in this process's memory:
//! `memory`): exactly-once admission that follows the backend.
//!
//! Envoy's shared data has no insert-if-absent, no delete and no key listing, so the store is a
//! fixed set of pre-created shard keys, each holding a compact set of (key hash, expiry, state)
//! entries, updated with read-then-CAS loops. A delivery is *claimed* (`in_flight`) when it
//! verifies, *committed* (`done`) when the backend answers 2xx, and *released* (removed) when it
//! fails, so the provider's retry is admitted. Expired entries never count as present; they are
//! pruned by a periodic sweep that one root context at a time performs (elected by a CAS lease),
//! and by a claim that finds its shard full, so the request path never scans to prune.
#![deny(clippy::arithmetic_side_effects)]

pub mod key;
mod layout;
pub mod memory;
pub mod shard;

use std::sync::Arc;

use crate::host::{Host, SetError};
use crate::stats;
use memory::Memory;
use shard::{Entries, Entry, KeyHash, Shard, State};

/// CAS attempts before giving up with `store_unavailable`.
pub const MAX_CAS_ATTEMPTS: usize = 64;

#[derive(Clone)]
pub struct Store {
    shard_keys: Vec<String>,
    lease_key: String,
    /// By policy index: the shards its keys live in (a policy without replay protection has
    /// none). One policy filling its share never makes another answer `store_full`.
    partitions: Vec<Option<Partition>>,
    backing: Backing,
}

/// Where the shards are.
#[derive(Clone, Debug)]
enum Backing {
    /// Envoy shared data, through the host (wasm): read, change, compare-and-swap.
    Shared,
    /// This process's memory (native): locked and changed in place.
    Memory(Arc<Memory>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Partition {
    first: usize,
    shards: usize,
    per_shard_capacity: usize,
    /// `<prefix>/v3/<share name>`: its shard keys are `<base>/<shards>/shard/<i>` (a new
    /// layout never reads entries filed under another), and `<base>/layout` records the shard
    /// count in use so a changed layout can move them (`layout.rs`).
    base: String,
}

/// One policy's share of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Names the shard keys, so a reload that reorders policies keeps each one's entries.
    pub name: String,
    pub shards: usize,
    /// Live entries (in flight or done) this policy may hold.
    pub capacity: usize,
}

// A thousand key names are noise in debug output.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shard_keys.len())
            .field("lease_key", &self.lease_key)
            .field("partitions", &self.partitions)
            .field("backing", &self.backing)
            .finish()
    }
}

/// What a sweep did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    pub removed: usize,
    /// By policy index: its live entries after the sweep (`None`: no share).
    pub per_policy: Vec<Option<usize>>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Claim),
    /// Another request holds it; it may retry after this many seconds.
    InFlight {
        retry_after_s: u64,
    },
    Done,
    Full,
    Unavailable,
}

/// A claim held by one request until its upstream answer settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub policy: usize,
    shard: usize,
    hash: KeyHash,
    /// Also identifies this claim: a later claimer of the same key (after ours expired) always
    /// has a later expiry, so a release never removes someone else's claim.
    claim_expiry_ms: u64,
    done_expiry_ms: u64,
}

/// Whether a shard can take one more entry; only a shard that looks full pays for a prune.
fn has_room(s: &mut dyn Entries, capacity: usize, now_ms: u64) -> bool {
    s.len() < capacity || {
        s.prune(now_ms);
        s.len() < capacity
    }
}

/// Hashing spreads keys unevenly: a shard holds its share plus four standard deviations of
/// headroom (Poisson), so `store_full` means the store really is about full, not that one
/// shard got unlucky. The hard bound is `shards x per-shard capacity` entries.
pub fn per_shard_capacity(capacity: usize, shards: usize) -> usize {
    let share = capacity.div_ceil(shards.max(1)).max(1);
    if shards <= 1 {
        return share;
    }
    // ceil(4 * sqrt(share)) without floats: the smallest r with r*r >= 16*share.
    let target = share.saturating_mul(16);
    let mut root = 1usize;
    while root.saturating_mul(root) < target {
        root = root.saturating_add(1);
    }
    share.saturating_add(root)
}

impl Claim {
    /// When this claim lapses if never settled; also what tells it from later claims.
    pub fn claim_expiry_ms(&self) -> u64 {
        self.claim_expiry_ms
    }

    /// Until when a commit keeps the delivery a duplicate.
    pub fn done_expiry_ms(&self) -> u64 {
        self.done_expiry_ms
    }
}

impl Store {
    /// One share (for policy 0) of `capacity` entries over `shards` shards.
    pub fn new(prefix: &str, shards: usize, capacity: usize) -> Store {
        Store::with_shares(
            prefix,
            &[Some(Share {
                name: "0".into(),
                shards,
                capacity,
            })],
        )
    }

    /// A store whose `shares[i]` belongs to policy `i` (`None`: no replay protection).
    /// Policies whose shares have one name (a `dedup.scope`) share its shards.
    pub fn with_shares(prefix: &str, shares: &[Option<Share>]) -> Store {
        let mut shard_keys = Vec::new();
        let mut laid_out: Vec<(&str, Partition)> = Vec::new();
        let partitions = shares
            .iter()
            .map(|share| {
                let share = share.as_ref()?;
                if let Some((_, p)) = laid_out.iter().find(|(name, _)| *name == share.name) {
                    return Some(p.clone());
                }
                let shards = share.shards.max(1);
                let first = shard_keys.len();
                let base = format!("{prefix}/v3/{}", share.name);
                shard_keys.extend((0..shards).map(|i| layout::shard_key(&base, shards, i)));
                let partition = Partition {
                    first,
                    shards,
                    per_shard_capacity: per_shard_capacity(share.capacity, shards),
                    base,
                };
                laid_out.push((&share.name, partition.clone()));
                Some(partition)
            })
            .collect();
        Store {
            shard_keys,
            lease_key: format!("{prefix}/v3/sweep-lease"),
            partitions,
            backing: Backing::Shared,
        }
    }

    /// The same store kept in this process's memory instead of the host's shared data.
    pub fn in_memory(mut self) -> Store {
        self.backing = Backing::Memory(Arc::new(Memory::attach(&self.shard_keys, &self.lease_key)));
        self
    }

    /// Keys to pre-create at configure time (CAS on a missing key would always "succeed").
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.shard_keys
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.lease_key.as_str()))
    }

    /// Most entries `policy` can hold (its shards times their capacity), if it has a share.
    pub fn bound(&self, policy: usize) -> Option<usize> {
        let p = self.partitions.get(policy)?.as_ref()?;
        Some(p.shards.saturating_mul(p.per_shard_capacity))
    }

    /// Creates missing keys with an empty value; existing ones (a config reload under the same
    /// `vm_id`) keep their entries. Then moves the entries of a policy whose shard count
    /// changed (a new `capacity` or `shards`) into the new layout: a reload never forgets
    /// deliveries. Returns one line per policy moved.
    pub fn init(&self, host: &dyn Host) -> Vec<String> {
        if let Backing::Shared = self.backing {
            for key in self.keys() {
                if let Ok(None) = host.shared_get(key) {
                    let _ = host.shared_set(key, &[shard::VERSION], None);
                }
            }
        }
        self.partitions
            .iter()
            .enumerate()
            .filter_map(|(policy, p)| self.adopt_layout(host, policy, p.as_ref()?))
            .collect()
    }

    /// The shard (index into all keys) holding `hash` of `policy`, and its capacity.
    fn shard_of(&self, policy: usize, hash: &KeyHash) -> Option<(usize, usize)> {
        let p = self.partitions.get(policy)?.as_ref()?;
        let mut first = [0u8; 8];
        first.copy_from_slice(hash.get(..8).unwrap_or(&[0; 8]));
        let n = u64::try_from(p.shards).ok()?;
        let i = usize::try_from(u64::from_le_bytes(first).checked_rem(n)?).ok()?;
        Some((p.first.checked_add(i)?, p.per_shard_capacity))
    }

    /// Read-modify-CAS loop on one shard (in the native build: a change in place under the
    /// shard's lock). `change` says whether to write the shard back.
    fn update<T>(
        &self,
        host: &dyn Host,
        shard: usize,
        mut change: impl FnMut(&mut dyn Entries) -> (bool, T),
    ) -> Option<T> {
        if let Backing::Memory(memory) = &self.backing {
            let mut s = memory.shard(shard)?;
            return Some(change(&mut *s).1);
        }
        let key = self.shard_keys.get(shard)?;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (bytes, cas) = match host.shared_get(key) {
                Ok(Some((bytes, cas))) => (bytes, Some(cas)),
                Ok(None) => (Vec::new(), None),
                Err(_) => return None,
            };
            let mut s = Shard::from_vec(bytes);
            let (write, result) = change(&mut s);
            if !write {
                return Some(result);
            }
            match host.shared_set(key, s.as_bytes(), cas) {
                Ok(()) => return Some(result),
                Err(SetError::CasMismatch) => host.increment(stats::STORE_CAS_RETRIES),
                Err(SetError::Failed) => return None,
            }
        }
        None
    }

    /// Claims `hash` as in flight until `claim_expiry_ms`; `done_expiry_ms` is kept for commit.
    pub fn claim(
        &self,
        host: &dyn Host,
        now_ms: u64,
        policy: usize,
        hash: KeyHash,
        claim_timeout_ms: u64,
        done_expiry_ms: u64,
    ) -> ClaimOutcome {
        let Some((shard, capacity)) = self.shard_of(policy, &hash) else {
            return ClaimOutcome::Unavailable;
        };
        let now = now_ms;
        let outcome = self.update(host, shard, |s| match s.get(&hash, now) {
            Some(Entry {
                state: State::Done, ..
            }) => (false, ClaimOutcome::Done),
            Some(Entry {
                state: State::InFlight,
                expiry_ms,
                ..
            }) => {
                let wait_ms = expiry_ms.saturating_sub(now);
                let retry_after_s = wait_ms.div_ceil(1000).max(1);
                (false, ClaimOutcome::InFlight { retry_after_s })
            }
            None => {
                let stored = s.len();
                if !has_room(s, capacity, now) {
                    // Write back only what pruning changed.
                    return (s.len() < stored, ClaimOutcome::Full);
                }
                let claim_expiry_ms = now.saturating_add(claim_timeout_ms);
                s.put(Entry {
                    hash,
                    expiry_ms: claim_expiry_ms,
                    state: State::InFlight,
                });
                let claim = Claim {
                    policy,
                    shard,
                    hash,
                    claim_expiry_ms,
                    done_expiry_ms,
                };
                (true, ClaimOutcome::Claimed(claim))
            }
        });
        outcome.unwrap_or(ClaimOutcome::Unavailable)
    }

    /// The backend accepted the delivery: later copies are duplicates until `done_expiry_ms`
    /// (or a later expiry another commit of the same key already set). Capacity is not checked:
    /// a commit only replaces a claim that was admitted, and refusing it would forget a
    /// delivery. Returns false only if the store could not be written.
    pub fn commit(&self, host: &dyn Host, claim: &Claim) -> bool {
        self.update(host, claim.shard, |s| {
            let expiry_ms = match s.get(&claim.hash, 0) {
                Some(e) if e.state == State::Done => e.expiry_ms.max(claim.done_expiry_ms),
                _ => claim.done_expiry_ms,
            };
            s.put(Entry {
                hash: claim.hash,
                expiry_ms,
                state: State::Done,
            });
            (true, ())
        })
        .is_some()
    }

    /// The backend failed (or never answered): forget our claim so a retry is admitted.
    /// True when our claim was there and is gone (not when it had lapsed or was replaced).
    pub fn release(&self, host: &dyn Host, claim: &Claim) -> bool {
        self.update(host, claim.shard, |s| {
            let ours = s.get(&claim.hash, 0).is_some_and(|e| {
                e.state == State::InFlight && e.expiry_ms == claim.claim_expiry_ms
            });
            if ours {
                s.remove(&claim.hash);
            }
            (ours, ours)
        })
        .unwrap_or(false)
    }

    /// Every stored entry, expired ones included (for tests and tools).
    pub fn entries(&self, host: &dyn Host) -> Vec<Entry> {
        (0..self.shard_keys.len())
            .flat_map(|i| match &self.backing {
                Backing::Memory(memory) => memory.shard(i).map(|s| s.entries()).unwrap_or_default(),
                Backing::Shared => self
                    .shard_keys
                    .get(i)
                    .and_then(|key| host.shared_get(key).ok().flatten())
                    .map(|(bytes, _)| Shard::from_vec(bytes).entries())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Whether `hash` is a committed delivery here (one read, no write): the first-level
    /// cache in front of a remote store.
    pub fn is_done(&self, host: &dyn Host, now_ms: u64, policy: usize, hash: &KeyHash) -> bool {
        let Some(shard) = self.shard_of(policy, hash).map(|(shard, _)| shard) else {
            return false;
        };
        if let Backing::Memory(memory) = &self.backing {
            return memory
                .shard(shard)
                .and_then(|s| s.get(hash, now_ms))
                .is_some_and(|e| e.state == State::Done);
        }
        let Some(key) = self.shard_keys.get(shard) else {
            return false;
        };
        match host.shared_get(key) {
            Ok(Some((bytes, _))) => Shard::from_vec(bytes)
                .get(hash, now_ms)
                .is_some_and(|e| e.state == State::Done),
            _ => false,
        }
    }

    /// Caches a delivery a remote store holds as done. Best effort: a full shard or a failed
    /// write only means the next replay asks the remote store again.
    pub fn remember_done(
        &self,
        host: &dyn Host,
        now_ms: u64,
        policy: usize,
        hash: KeyHash,
        expiry_ms: u64,
    ) {
        let Some((shard, capacity)) = self.shard_of(policy, &hash) else {
            return;
        };
        let _ = self.update(host, shard, |s| {
            let known = s.get(&hash, now_ms).map(|e| (e.state, e.expiry_ms));
            let write = match known {
                Some((State::Done, e)) if e >= expiry_ms => false,
                Some(_) => true,
                None => has_room(s, capacity, now_ms),
            };
            if write {
                s.put(Entry {
                    hash,
                    expiry_ms,
                    state: State::Done,
                });
            }
            (write, ())
        });
    }

    /// Prunes every shard if this root (`owner`) holds or wins the sweep lease, and publishes
    /// the number of entries left as the `store.entries` gauge (kept off the request path).
    /// Returns the number of entries removed, or `None` when another root holds the lease.
    pub fn sweep(&self, host: &dyn Host, owner: u64, lease_ms: u64) -> Option<usize> {
        self.sweep_report(host, owner, lease_ms).map(|s| s.removed)
    }

    /// `sweep`, also saying how many entries each policy has left.
    pub fn sweep_report(&self, host: &dyn Host, owner: u64, lease_ms: u64) -> Option<Sweep> {
        let now = host.now_ms();
        if !self.acquire_lease(host, owner, now, lease_ms) {
            return None;
        }
        let shards: Vec<(usize, usize)> = (0..self.shard_keys.len())
            .map(|shard| {
                self.update(host, shard, |s| {
                    let pruned = s.prune(now);
                    (pruned > 0, (pruned, s.len()))
                })
                .unwrap_or((0, 0))
            })
            .collect();
        let removed = shards.iter().fold(0usize, |r, (p, _)| r.saturating_add(*p));
        let left = shards.iter().fold(0usize, |l, (_, n)| l.saturating_add(*n));
        let per_policy = self
            .partitions
            .iter()
            .map(|p| {
                let p = p.as_ref()?;
                let end = p.first.checked_add(p.shards)?;
                Some(
                    shards
                        .get(p.first..end)?
                        .iter()
                        .fold(0usize, |l, (_, n)| l.saturating_add(*n)),
                )
            })
            .collect();
        host.increment(stats::STORE_SWEEPS);
        if removed > 0 {
            host.add(
                stats::STORE_SWEPT,
                i64::try_from(removed).unwrap_or(i64::MAX),
            );
        }
        host.set_gauge(
            stats::STORE_ENTRIES,
            u64::try_from(left).unwrap_or(u64::MAX),
        );
        Some(Sweep {
            removed,
            per_policy,
        })
    }

    fn acquire_lease(&self, host: &dyn Host, owner: u64, now: u64, lease_ms: u64) -> bool {
        let value = |held: &[u8]| -> Option<Vec<u8>> {
            if let (Some(exp), Some(holder)) = (
                held.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)),
                held.get(8..16)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes),
            ) {
                if holder != owner && exp > now {
                    return None;
                }
            }
            let mut value = now.saturating_add(lease_ms).to_le_bytes().to_vec();
            value.extend_from_slice(&owner.to_le_bytes());
            Some(value)
        };
        if let Backing::Memory(memory) = &self.backing {
            let mut held = memory.lease();
            return value(&held).map(|v| *held = v).is_some();
        }
        let (bytes, cas) = match host.shared_get(&self.lease_key) {
            Ok(Some((b, c))) => (b, Some(c)),
            Ok(None) => (Vec::new(), None),
            Err(_) => return false,
        };
        value(&bytes).is_some_and(|v| host.shared_set(&self.lease_key, &v, cas).is_ok())
    }
}
