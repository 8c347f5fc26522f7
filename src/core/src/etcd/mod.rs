//! Replay claims in etcd, shared by every Envoy replica that points at the same cluster.
//!
//! The same protocol as the local store, made of etcd primitives reached over its v3 JSON
//! gateway: a claim is one transaction that creates the key (`in_flight`, under a lease that
//! lapses with the claim) only if it does not exist and otherwise reads it, so two replicas can
//! never both claim a key. A commit overwrites it with `done` under a lease that lapses with the
//! retention; a release deletes it only while it still holds our claim's value. Leases are
//! shared per time bucket: a key lives at most one bucket width (a tenth of its nominal
//! lifetime, 1 to 60 s) longer than asked, and a worker grants one lease per bucket, not per
//! request; its root context grants the next buckets' leases ahead (`prepare`), so requests
//! rarely wait for a grant.
//!
//! Nothing here performs I/O: an `Op` says which call to make next and is fed the reply, so
//! the proxy glue does the dispatching and tests drive it against a model of etcd.
#![deny(clippy::arithmetic_side_effects)]

pub mod wire;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::dedup::shard::KeyHash;
use wire::{Reply, WireError};

/// Lease ids a worker keeps (a few buckets per lifetime class are live at once).
const MAX_CACHED_LEASES: usize = 32;
/// Bucket widths, by lifetime: the largest not above a tenth of it.
const BUCKET_WIDTHS_MS: [u64; 6] = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000];

#[derive(Debug)]
pub struct EtcdStore {
    /// Envoy cluster that reaches etcd's client port.
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
    /// `on_error: allow`.
    pub fail_open: bool,
    prefix: String,
    /// Shared by the policies that use the same cluster (a lease is not tied to a key).
    leases: Arc<Leases>,
    token_seed: u64,
    next_token: AtomicU64,
}

impl Clone for EtcdStore {
    fn clone(&self) -> Self {
        EtcdStore::new(
            &self.cluster,
            &self.authority,
            &self.prefix,
            self.timeout_ms,
            self.fail_open,
        )
    }
}

/// Lease ids a worker holds. (Wasm VMs are single-threaded: the locks are never contended;
/// they keep the compiled config `Sync` for host-side users.)
#[derive(Debug, Default)]
struct Leases {
    /// (bucket end ms, lease id).
    granted: Mutex<Vec<(u64, i64)>>,
    /// Bucket ends whose lease `prepare` is granting (not to ask twice).
    preparing: Mutex<Vec<u64>>,
}

/// One HTTP call to make to etcd (POST, JSON body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub path: &'static str,
    pub body: Vec<u8>,
}

/// `lifetime_ms` is the nominal lifetime of the entry's kind (the claim timeout, the
/// retention): it sets the bucket width, so entries of one kind share buckets even when their
/// exact lifetimes differ a little.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Claim {
        claim_expiry_ms: u64,
        lifetime_ms: u64,
        value: Vec<u8>,
    },
    Commit {
        done_expiry_ms: u64,
        lifetime_ms: u64,
    },
    Release {
        value: Vec<u8>,
    },
    /// A lease granted ahead of the requests that will use it.
    Grant {
        bucket_end_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Granting { bucket_end_ms: u64 },
    Main { lease: Option<i64> },
}

/// One claim, commit or release in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    key: Vec<u8>,
    kind: Kind,
    stage: Stage,
    lease_retried: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// We hold the claim; settle it with `commit` or `release` using this value.
    Claimed {
        value: Vec<u8>,
    },
    /// Already delivered, a duplicate until `expiry_ms`.
    Done {
        expiry_ms: u64,
    },
    /// Another request (on any replica) holds it.
    InFlight {
        retry_after_s: u64,
    },
    Committed,
    /// Whether our claim was still there to delete.
    Released(bool),
    Granted,
    Failed(WireError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Call(Call),
    /// Nothing more to call.
    Finished(Outcome),
}

fn in_flight_value(claim_expiry_ms: u64, token: u64) -> Vec<u8> {
    format!("f:{claim_expiry_ms}:{token:016x}").into_bytes()
}

fn done_value(expiry_ms: u64) -> Vec<u8> {
    format!("d:{expiry_ms}").into_bytes()
}

/// What a value found in etcd means at `now_ms`.
fn read_value(value: &[u8], now_ms: u64) -> Outcome {
    let text = std::str::from_utf8(value).unwrap_or("");
    let expiry = |rest: &str| rest.split(':').next().and_then(|e| e.parse::<u64>().ok());
    match text.split_once(':') {
        Some(("d", rest)) => match expiry(rest) {
            Some(expiry_ms) => Outcome::Done { expiry_ms },
            None => Outcome::Failed(WireError::Malformed),
        },
        Some(("f", rest)) => match expiry(rest) {
            // A lapsed claim stays until its lease ends (at most one bucket later): retry soon.
            Some(e) => Outcome::InFlight {
                retry_after_s: e.saturating_sub(now_ms).div_ceil(1000).max(1),
            },
            None => Outcome::Failed(WireError::Malformed),
        },
        _ => Outcome::Failed(WireError::Malformed),
    }
}

/// Lease bucket width for entries that live `lifetime_ms`.
fn bucket_width(lifetime_ms: u64) -> u64 {
    let tenth = lifetime_ms / 10;
    BUCKET_WIDTHS_MS
        .iter()
        .rev()
        .find(|w| **w <= tenth)
        .copied()
        .unwrap_or(1_000)
}

/// End of the lease bucket holding `expiry_ms` for an entry that lives `lifetime_ms`.
fn bucket_end(expiry_ms: u64, lifetime_ms: u64) -> u64 {
    let width = bucket_width(lifetime_ms);
    expiry_ms.div_ceil(width).saturating_mul(width)
}

/// How far ahead `prepare` grants: a root tick (1 s) and then some.
const PREPARE_AHEAD_MS: u64 = 2_000;

impl EtcdStore {
    pub fn new(
        cluster: &str,
        authority: &str,
        prefix: &str,
        timeout_ms: u64,
        fail_open: bool,
    ) -> EtcdStore {
        EtcdStore {
            cluster: cluster.to_string(),
            authority: authority.to_string(),
            timeout_ms,
            fail_open,
            prefix: prefix.trim_end_matches('/').to_string(),
            leases: Arc::default(),
            // WASI random_get behind std's hasher seed: claim tokens differ between workers.
            token_seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
            next_token: AtomicU64::new(0),
        }
    }

    /// Uses `other`'s lease cache (same cluster: one lease serves both).
    pub fn share_leases(&mut self, other: &EtcdStore) {
        if self.cluster == other.cluster {
            self.leases = Arc::clone(&other.leases);
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The etcd key of a dedup hash (already namespaced by policy).
    fn key(&self, hash: &KeyHash) -> Vec<u8> {
        format!("{}/{}", self.prefix, hex::encode(hash)).into_bytes()
    }

    /// `lifetime_ms`: the claim timeout.
    pub fn claim(&self, hash: &KeyHash, claim_expiry_ms: u64, lifetime_ms: u64) -> Op {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        let token = self.token_seed.wrapping_add(n);
        self.op(
            hash,
            Kind::Claim {
                claim_expiry_ms,
                lifetime_ms,
                value: in_flight_value(claim_expiry_ms, token),
            },
        )
    }

    /// `lifetime_ms`: the policy's nominal retention.
    pub fn commit(&self, hash: &KeyHash, done_expiry_ms: u64, lifetime_ms: u64) -> Op {
        self.op(
            hash,
            Kind::Commit {
                done_expiry_ms,
                lifetime_ms,
            },
        )
    }

    /// Grants for the leases that entries living `lifetime_ms`, created in the next couple of
    /// seconds, will use, where none is cached or being granted. Called from a timer.
    pub fn prepare(&self, now_ms: u64, lifetime_ms: u64) -> Vec<Op> {
        let width = bucket_width(lifetime_ms);
        let first = now_ms.saturating_add(lifetime_ms);
        let last = bucket_end(first.saturating_add(PREPARE_AHEAD_MS), lifetime_ms);
        let ends = std::iter::successors(Some(bucket_end(first, lifetime_ms)), |end| {
            end.checked_add(width)
        })
        .take_while(|end| *end <= last);
        let Ok(mut preparing) = self.leases.preparing.lock() else {
            return Vec::new();
        };
        preparing.retain(|end| *end > now_ms);
        let mut ops = Vec::new();
        for end in ends {
            if preparing.contains(&end) || self.cached_lease(end, now_ms).is_some() {
                continue;
            }
            preparing.push(end);
            ops.push(Op {
                key: Vec::new(),
                kind: Kind::Grant { bucket_end_ms: end },
                stage: Stage::Start,
                lease_retried: false,
            });
        }
        ops
    }

    fn prepared(&self, bucket_end_ms: u64) {
        if let Ok(mut preparing) = self.leases.preparing.lock() {
            preparing.retain(|end| *end != bucket_end_ms);
        }
    }

    pub fn release(&self, hash: &KeyHash, claimed_value: &[u8]) -> Op {
        self.op(
            hash,
            Kind::Release {
                value: claimed_value.to_vec(),
            },
        )
    }

    /// The release of a claim whose outcome is unknown (its requester went away mid-call):
    /// harmless if the claim was never written, since a release deletes only our value.
    pub fn release_of(&self, op: &Op) -> Option<Op> {
        match &op.kind {
            Kind::Claim { value, .. } => Some(Op {
                key: op.key.clone(),
                kind: Kind::Release {
                    value: value.clone(),
                },
                stage: Stage::Start,
                lease_retried: false,
            }),
            _ => None,
        }
    }

    fn op(&self, hash: &KeyHash, kind: Kind) -> Op {
        Op {
            key: self.key(hash),
            kind,
            stage: Stage::Start,
            lease_retried: false,
        }
    }

    fn cached_lease(&self, bucket_end_ms: u64, now_ms: u64) -> Option<i64> {
        let mut leases = self.leases.granted.lock().ok()?;
        // A lease is granted to outlive its bucket by a second; drop those past it.
        leases.retain(|(end, _)| end.saturating_add(1_000) > now_ms);
        leases
            .iter()
            .find(|(end, _)| *end == bucket_end_ms)
            .map(|(_, id)| *id)
    }

    fn remember_lease(&self, bucket_end_ms: u64, id: i64) {
        let Ok(mut leases) = self.leases.granted.lock() else {
            return;
        };
        leases.retain(|(end, _)| *end != bucket_end_ms);
        if leases.len() >= MAX_CACHED_LEASES {
            leases.remove(0);
        }
        leases.push((bucket_end_ms, id));
    }

    fn forget_lease(&self, id: i64) {
        if let Ok(mut leases) = self.leases.granted.lock() {
            leases.retain(|(_, l)| *l != id);
        }
    }

    /// The first call of `op`.
    pub fn start(&self, op: &mut Op, now_ms: u64) -> Step {
        let end = match &op.kind {
            Kind::Claim {
                claim_expiry_ms,
                lifetime_ms,
                ..
            } => bucket_end(*claim_expiry_ms, *lifetime_ms),
            Kind::Commit {
                done_expiry_ms,
                lifetime_ms,
            } => bucket_end(*done_expiry_ms, *lifetime_ms),
            Kind::Grant { bucket_end_ms } => return grant(op, *bucket_end_ms, now_ms),
            Kind::Release { .. } => return self.main(op, None),
        };
        match self.cached_lease(end, now_ms) {
            Some(lease) => self.main(op, Some(lease)),
            None => grant(op, end, now_ms),
        }
    }

    fn main(&self, op: &mut Op, lease: Option<i64>) -> Step {
        op.stage = Stage::Main { lease };
        let lease_id = lease.unwrap_or(0);
        let (path, body) = match &op.kind {
            Kind::Claim { value, .. } => (
                wire::TXN_PATH,
                wire::create_or_get(&op.key, value, lease_id),
            ),
            Kind::Commit { done_expiry_ms, .. } => (
                wire::PUT_PATH,
                wire::put(&op.key, &done_value(*done_expiry_ms), lease_id),
            ),
            Kind::Release { value } => (wire::TXN_PATH, wire::delete_if(&op.key, value)),
            Kind::Grant { .. } => return Step::Finished(Outcome::Granted),
        };
        Step::Call(Call { path, body })
    }

    /// Feeds the reply to the last call; says what to do next.
    pub fn answer(&self, op: &mut Op, reply: &Reply, now_ms: u64) -> Step {
        match op.stage {
            Stage::Start => self.start(op, now_ms),
            Stage::Granting { bucket_end_ms } => {
                if let Kind::Grant { .. } = op.kind {
                    self.prepared(bucket_end_ms);
                }
                match wire::lease_id(reply) {
                    Ok(id) => {
                        self.remember_lease(bucket_end_ms, id);
                        self.main(op, Some(id))
                    }
                    Err(e) => Step::Finished(Outcome::Failed(e)),
                }
            }
            Stage::Main { lease } => {
                let outcome = match &op.kind {
                    Kind::Claim { value, .. } => match wire::created_or_value(reply) {
                        Ok(None) => Ok(Outcome::Claimed {
                            value: value.clone(),
                        }),
                        Ok(Some(existing)) => Ok(read_value(&existing, now_ms)),
                        Err(e) => Err(e),
                    },
                    Kind::Commit { .. } => wire::written(reply).map(|()| Outcome::Committed),
                    Kind::Release { .. } => wire::deleted(reply).map(Outcome::Released),
                    Kind::Grant { .. } => Ok(Outcome::Granted),
                };
                match outcome {
                    Ok(o) => Step::Finished(o),
                    // Our cached lease ended early (etcd restored, revoked): grant once more.
                    Err(WireError::LeaseNotFound) if !op.lease_retried => {
                        if let Some(id) = lease {
                            self.forget_lease(id);
                        }
                        op.lease_retried = true;
                        op.stage = Stage::Start;
                        self.start(op, now_ms)
                    }
                    Err(e) => Step::Finished(Outcome::Failed(e)),
                }
            }
        }
    }

    /// Whether the op is waiting on a lease grant (for the `leases_granted` counter).
    pub fn granting(op: &Op) -> bool {
        matches!(op.stage, Stage::Granting { .. })
    }
}

/// The grant call for the lease of the bucket ending at `bucket_end_ms`, granted to outlive
/// it by a second (TTLs are whole seconds).
fn grant(op: &mut Op, bucket_end_ms: u64, now_ms: u64) -> Step {
    op.stage = Stage::Granting { bucket_end_ms };
    let ttl_s = bucket_end_ms
        .saturating_sub(now_ms)
        .div_ceil(1_000)
        .saturating_add(1);
    Step::Call(Call {
        path: wire::GRANT_PATH,
        body: wire::grant(ttl_s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_by_a_tenth_of_the_lifetime() {
        assert_eq!(bucket_end(30_500, 30_000), 32_000);
        assert_eq!(bucket_end(360_001, 360_000), 390_000);
        assert_eq!(bucket_end(5_000, 5_000), 5_000);
        assert_eq!(bucket_end(86_400_001, 86_400_000), 86_460_000);
        assert_eq!(bucket_end(0, 0), 0);
    }

    #[test]
    fn prepare_grants_the_coming_buckets_once() {
        let store = EtcdStore::new("etcd", "etcd", "p", 500, false);
        // 30 s claims: 2 s buckets; entries made in the next 2 s expire in [now+30 s, now+32 s].
        let ops = store.prepare(1_000_000, 30_000);
        // Being granted: not asked again.
        assert!(store.prepare(1_000_000, 30_000).is_empty());
        let ends: Vec<u64> = ops
            .iter()
            .map(|op| match op.kind {
                Kind::Grant { bucket_end_ms } => bucket_end_ms,
                _ => panic!(),
            })
            .collect();
        assert_eq!(ends, vec![1_030_000, 1_032_000]);
        // Answered: cached, so the request path finds it.
        for mut op in ops {
            let Step::Call(call) = store.start(&mut op, 1_000_000) else {
                panic!()
            };
            assert_eq!(call.path, wire::GRANT_PATH);
            let reply = Reply {
                status: Some(200),
                body: br#"{"header":{},"ID":"42"}"#.to_vec(),
            };
            assert_eq!(
                store.answer(&mut op, &reply, 1_000_000),
                Step::Finished(Outcome::Granted)
            );
        }
        assert!(store.prepare(1_000_000, 30_000).is_empty());
        let mut claim = store.claim(&[7; 16], 1_030_500, 30_000);
        let Step::Call(call) = store.start(&mut claim, 1_000_500) else {
            panic!()
        };
        assert_eq!(call.path, wire::TXN_PATH, "no grant on the request path");
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(
            read_value(&done_value(99), 5),
            Outcome::Done { expiry_ms: 99 }
        );
        assert_eq!(
            read_value(&in_flight_value(10_500, 7), 8_000),
            Outcome::InFlight { retry_after_s: 3 }
        );
        // Lapsed: the key waits for its lease; retry in a second.
        assert_eq!(
            read_value(&in_flight_value(1_000, 7), 8_000),
            Outcome::InFlight { retry_after_s: 1 }
        );
        assert_eq!(read_value(b"zz", 0), Outcome::Failed(WireError::Malformed));
        assert_eq!(read_value(b"d:x", 0), Outcome::Failed(WireError::Malformed));
    }
}
