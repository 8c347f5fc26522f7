//! The etcd tier's task driver: a `RemoteTask` is a claim, commit, release or lease grant in
//! progress; `Guard::drive` turns each etcd reply into the next call or an outcome the glue
//! acts on (forward, reject, retry later).

use super::{done_lifetime_ms, Accepted, Guard, Held, Hold, Rejection, RequestInfo};
use crate::dedup::shard::KeyHash;
use crate::etcd::wire::Reply;
use crate::etcd::{self, EtcdStore, Outcome, Step};
use crate::host::{Host, Level};
use crate::stats;

use super::reply::{json_str, Found};

/// A claim in the remote store: the value we wrote identifies it for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteClaim {
    pub(super) policy: usize,
    pub(super) hash: KeyHash,
    pub(super) value: Vec<u8>,
    pub(super) claim_expiry_ms: u64,
    pub(super) done_expiry_ms: u64,
}

/// A remote-store operation in progress, with what its outcome is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTask {
    policy: usize,
    op: etcd::Op,
    purpose: Purpose,
    sent_at_us: u64,
    /// The last call failed (a claim it carried may still have been written).
    failed: bool,
    /// Earlier runs of this task (a release is retried; only the first failure is logged).
    attempts: u32,
}

impl RemoteTask {
    pub(super) fn new(policy: usize, op: etcd::Op, purpose: Purpose) -> RemoteTask {
        RemoteTask {
            policy,
            op,
            purpose,
            sent_at_us: 0,
            failed: false,
            attempts: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A verified delivery waiting for its claim.
    Admit {
        key_index: usize,
        hash: KeyHash,
        claim_expiry_ms: u64,
        done_expiry_ms: u64,
        info: RequestInfo,
        delivery_id: Option<String>,
    },
    Commit {
        hash: KeyHash,
        done_expiry_ms: u64,
    },
    /// Until the claim would lapse by itself: a failed release is retried until then.
    Release {
        until_ms: u64,
    },
    /// A lease granted ahead of time.
    Prepare,
}

/// An HTTP call for the glue to dispatch (POST, JSON) to an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCall {
    pub cluster: String,
    pub authority: String,
    pub path: &'static str,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// What the glue does next with a `RemoteTask`.
#[derive(Debug)]
pub enum Drive {
    /// Dispatch this and feed the reply to `Guard::drive`.
    Call(RemoteCall),
    /// The claim is ours: forward, and settle the `Hold` on the upstream's answer.
    Admit(Box<Accepted>),
    Reject(Rejection),
    /// The store failed under `on_error: allow`: forward without protection (counted, logged).
    PassUnprotected,
    /// A commit or release finished (whatever its outcome, already counted).
    Settled,
    /// A release failed before its claim lapses: run the task again later (a root timer).
    RetryLater,
}

/// Where a background task (one that outlived its stream, or a lease grant) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background<T> {
    /// A call is under way; its answer comes back with this dispatch token.
    Waiting(T),
    /// A release etcd could not take yet: run it again later (the glue's next tick).
    RetryLater,
    Done,
}

impl Guard {
    /// Drives a background task until it waits on a call or ends. `dispatch` sends a call and
    /// returns its token, or `None` when the proxy refused it (which counts as a call that got
    /// no answer).
    pub fn run_background<T>(
        &self,
        host: &dyn Host,
        task: &mut RemoteTask,
        reply: Option<&Reply>,
        mut dispatch: impl FnMut(&RemoteCall) -> Option<T>,
    ) -> Background<T> {
        let mut reply = reply.cloned();
        // Each failed call finishes the task (a lease retry needs an answer from etcd), so this
        // ends within a few rounds; the bound guards against a logic error.
        for _ in 0..8 {
            match self.drive(host, task, reply.as_ref()) {
                Drive::Call(call) => match dispatch(&call) {
                    Some(token) => return Background::Waiting(token),
                    None => reply = Some(Reply::default()),
                },
                Drive::RetryLater => return Background::RetryLater,
                _ => return Background::Done,
            }
        }
        Background::Done
    }

    /// The task's requester went away while it ran: what is left to do (release a claim
    /// that may have been written; finish a commit or release).
    pub fn abandon(&self, task: RemoteTask) -> Option<RemoteTask> {
        let Purpose::Admit {
            claim_expiry_ms, ..
        } = task.purpose
        else {
            return Some(task);
        };
        let op = self.remote_store(task.policy)?.release_of(&task.op)?;
        Some(RemoteTask::new(
            task.policy,
            op,
            Purpose::Release {
                until_ms: claim_expiry_ms,
            },
        ))
    }

    /// After a claim call failed (the request was refused, or forwarded under
    /// `on_error: allow`): etcd may still have applied it (a timeout after the write), which
    /// would block the provider's retry until the claim lapses. The release to run later.
    pub fn orphaned_claim(&self, task: RemoteTask) -> Option<RemoteTask> {
        if !(task.failed && matches!(task.purpose, Purpose::Admit { .. })) {
            return None;
        }
        let mut release = self.abandon(task)?;
        // The claim's failure was logged; the same outage failing this release is not news.
        release.attempts = 1;
        Some(release)
    }

    /// Periodic: lease grants for the coming seconds' claims and commits, so that requests
    /// find their lease cached instead of waiting for a grant.
    pub fn remote_upkeep(&self, host: &dyn Host) -> Vec<RemoteTask> {
        let now = host.now_ms();
        let mut tasks = Vec::new();
        for (index, policy) in self.policies.iter().enumerate() {
            let Some(dedup) = &policy.dedup else {
                continue;
            };
            let Some(store) = &dedup.remote else {
                continue;
            };
            for lifetime in [dedup.claim_timeout_ms, done_lifetime_ms(policy)] {
                tasks.extend(
                    store
                        .prepare(now, lifetime)
                        .into_iter()
                        .map(|op| RemoteTask::new(index, op, Purpose::Prepare)),
                );
            }
        }
        tasks
    }

    /// Whether any policy keeps its claims in a remote store.
    pub fn uses_remote_store(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.dedup.as_ref().is_some_and(|d| d.remote.is_some()))
    }

    pub(super) fn remote_store(&self, policy: usize) -> Option<&EtcdStore> {
        self.policies.get(policy)?.dedup.as_ref()?.remote.as_ref()
    }

    /// Runs a remote-store task: `reply` is `None` to start it, else the answer to the last
    /// `Drive::Call` (a reply without a status when the call failed or timed out).
    pub fn drive(&self, host: &dyn Host, task: &mut RemoteTask, reply: Option<&Reply>) -> Drive {
        let Some(store) = self.remote_store(task.policy) else {
            // Only reachable through a glue bug; fail closed.
            return match task.purpose {
                Purpose::Admit { .. } => Drive::Reject(self.reject_unknown(host)),
                _ => Drive::Settled,
            };
        };
        let now = host.now_ms();
        let step = match reply {
            None => store.start(&mut task.op, now),
            Some(reply) => {
                host.increment(stats::ETCD_CALLS);
                let took_us = host.now_us().saturating_sub(task.sent_at_us);
                host.increment(stats::etcd_latency_bucket(took_us));
                if let Some(p) = self.policies.get(task.policy) {
                    host.record(
                        p.counter_base.saturating_add(stats::STORE_LATENCY_US),
                        took_us,
                    );
                }
                let granting = EtcdStore::granting(&task.op);
                let step = store.answer(&mut task.op, reply, now);
                if granting && !matches!(step, Step::Finished(Outcome::Failed(_))) {
                    host.increment(stats::ETCD_LEASES_GRANTED);
                }
                step
            }
        };
        match step {
            Step::Call(call) => {
                task.sent_at_us = host.now_us();
                Drive::Call(RemoteCall {
                    cluster: store.cluster.clone(),
                    authority: store.authority.clone(),
                    path: call.path,
                    body: call.body,
                    timeout_ms: store.timeout_ms,
                })
            }
            Step::Finished(outcome) => {
                task.failed = matches!(outcome, Outcome::Failed(_));
                let next = self.remote_outcome(host, store, task, outcome, now);
                task.attempts = task.attempts.saturating_add(1);
                next
            }
        }
    }

    fn remote_outcome(
        &self,
        host: &dyn Host,
        store: &EtcdStore,
        task: &RemoteTask,
        outcome: Outcome,
        now: u64,
    ) -> Drive {
        if let Outcome::Failed(e) = &outcome {
            host.increment(stats::ETCD_ERRORS);
            let what = match task.purpose {
                Purpose::Admit { .. } => "claim",
                Purpose::Commit { .. } => "commit",
                Purpose::Release { .. } => "release",
                Purpose::Prepare => "lease",
            };
            // A retried release logs its first failure only (an outage would repeat it).
            if task.attempts == 0 {
                host.log(
                Level::Warn,
                &format!(
                    r#"{{"event":"webhook_store_error","store":"etcd","cluster":{},"operation":"{what}","error":"{}"}}"#,
                    json_str(&store.cluster),
                    e.code()
                ),
                );
            }
        }
        let Purpose::Admit {
            key_index,
            hash,
            claim_expiry_ms,
            done_expiry_ms,
            info,
            delivery_id,
        } = &task.purpose
        else {
            match (&task.purpose, outcome) {
                (Purpose::Release { until_ms }, Outcome::Failed(_)) if now < *until_ms => {
                    return Drive::RetryLater;
                }
                (
                    Purpose::Commit {
                        hash,
                        done_expiry_ms,
                    },
                    Outcome::Committed,
                ) => {
                    self.store
                        .remember_done(host, now, task.policy, *hash, *done_expiry_ms);
                }
                (Purpose::Commit { .. }, _) => host.increment(stats::STORE_COMMIT_FAILED),
                (_, Outcome::Released(true)) => host.increment(stats::STORE_RELEASED),
                _ => {}
            }
            return Drive::Settled;
        };
        let found = match outcome {
            Outcome::Claimed { value } => {
                let Some(policy) = self.policies.get(task.policy) else {
                    return Drive::Reject(self.reject_unknown(host));
                };
                self.count_accepted(host, policy, *key_index);
                return Drive::Admit(Box::new(Accepted {
                    policy: task.policy,
                    key_index: *key_index,
                    claim: Some(Hold {
                        claim: Held::Remote(RemoteClaim {
                            policy: task.policy,
                            hash: *hash,
                            value,
                            claim_expiry_ms: *claim_expiry_ms,
                            done_expiry_ms: *done_expiry_ms,
                        }),
                        delivery_id: delivery_id.clone(),
                    }),
                    reply: None,
                    remote: None,
                    plaintext: None,
                }));
            }
            Outcome::Done { expiry_ms } => {
                self.store
                    .remember_done(host, now, task.policy, *hash, expiry_ms);
                Found::Done
            }
            Outcome::InFlight { retry_after_s } => Found::InFlight(retry_after_s),
            Outcome::Failed(_) if store.fail_open => {
                host.increment(stats::ETCD_FAILED_OPEN);
                if let Some(policy) = self.policies.get(task.policy) {
                    self.count_accepted(host, policy, *key_index);
                }
                host.log(
                    Level::Warn,
                    "webhook-guard: etcd store unavailable, forwarding a verified delivery without replay protection (on_error: allow)",
                );
                return Drive::PassUnprotected;
            }
            Outcome::Failed(_) | Outcome::Committed | Outcome::Released(_) | Outcome::Granted => {
                Found::Unavailable
            }
        };
        Drive::Reject(self.store_rejection(host, task.policy, found, info, delivery_id.as_deref()))
    }
}
