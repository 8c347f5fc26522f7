//! The request flow the proxy glue drives: route -> begin (headers) -> finish (body).
//! Every rejection is counted, logged as one JSON line and turned into a reply here, so the
//! glue only moves bytes.

use crate::dedup::key::KeySource;
use crate::dedup::shard::KeyHash;
use crate::dedup::{self, Claim, ClaimOutcome, Store};
use crate::etcd::wire::Reply;
use crate::etcd::{self, EtcdStore, Outcome, Step};
use crate::host::{Host, Level};
use crate::policy::{Matcher, RouteInfo};
use crate::reason::Reason;
use crate::scheme::{DeliveryId, Scheme, TimestampSource};
use crate::stats;
use crate::verify::{self, lookup, Extracted, HeaderList, Lookup, Skew};

/// Longest value copied from a request into a log line.
const MAX_LOGGED_VALUE: usize = 128;

/// How long a committed delivery stays a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// From the moment of acceptance.
    Fixed(u64),
    /// Until the signed timestamp leaves the window, plus this margin: after that the window
    /// check alone rejects a replay.
    AfterWindow(u64),
}

#[derive(Debug, Clone)]
pub struct DedupPolicy {
    pub source: KeySource,
    pub retention: Retention,
    pub claim_timeout_ms: u64,
    pub acknowledge: bool,
    pub commit_statuses: Vec<u16>,
    /// Claims live in etcd (shared by replicas); this proxy's store only caches `done` keys.
    pub remote: Option<EtcdStore>,
}

/// A provider's endpoint handshake the filter answers itself (it is signed like a delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Zoom `endpoint.url_validation`: reply `{"plainToken", "encryptedToken": hex(HMAC)}`.
    ZoomUrlValidation,
    /// Twitch `webhook_callback_verification`: reply the `challenge` as text.
    TwitchCallbackVerification,
}

pub struct Policy {
    pub name: String,
    pub dedup: Option<DedupPolicy>,
    pub challenge: Option<Challenge>,
    pub(crate) matcher: Matcher,
    pub scheme: Scheme,
    pub(crate) keys: Vec<Vec<u8>>,
    pub secrets_configured: usize,
    pub tolerance_ms: u64,
    pub max_body_bytes: u64,
    pub(crate) statuses: [u16; Reason::ALL.len()],
    pub(crate) counter_base: usize,
}

// Keys are secret: never in debug output.
impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("keys", &format_args!("[{} REDACTED]", self.keys.len()))
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Secrets that loaded (the others were unset or undecodable `env` secrets).
    pub fn usable_secrets(&self) -> usize {
        self.keys.len()
    }

    /// The current (first usable) key: for tools that sign, never for logs.
    pub fn first_key(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }

    pub fn status(&self, reason: Reason) -> u16 {
        self.statuses
            .get(reason.index())
            .copied()
            .unwrap_or_else(|| reason.default_status())
    }
}

/// The compiled configuration: built once per configure, shared by every request.
#[derive(Debug)]
pub struct Guard {
    default_deny: bool,
    policies: Vec<Policy>,
    counters: Vec<String>,
    notices: Vec<(Level, String)>,
    store: Store,
    sweep_interval_ms: u64,
}

/// What to do with a request once its route is known.
#[derive(Debug)]
pub enum Route {
    /// No policy and the default is allow: untouched.
    Pass,
    /// Verify with `policies[i]`.
    Verify(usize),
    Reject(Rejection),
}

/// A local reply the proxy sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: Reason,
    /// `{"error": "<reason>", "policy": "<name>"}`: never any secret or expected MAC.
    pub body: String,
    /// Extra response headers (e.g. `retry-after` for `in_flight`).
    pub headers: Vec<(&'static str, String)>,
}

/// Request facts kept for decisions and log lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub route_name: Option<String>,
    pub method: String,
    pub path: String,
}

/// State carried from the headers callback to the end of the body.
#[derive(Debug, Clone)]
pub struct Pending {
    policy: usize,
    extracted: Extracted,
    info: RequestInfo,
    delivery_id: Option<String>,
    /// Twitch marks its handshake in a header (read before the headers are gone).
    challenge_header: bool,
}

impl Pending {
    pub fn policy(&self) -> usize {
        self.policy
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub policy: usize,
    /// Which configured secret matched (0 = the first listed).
    pub key_index: usize,
    /// Held until the upstream answers: pass it to `Guard::settle`.
    pub claim: Option<Hold>,
    /// Verified, but admission waits on the remote store: run it with `Guard::drive` and
    /// forward only on `Drive::Admit` (nothing is counted as accepted before that).
    pub remote: Option<RemoteTask>,
    /// A verified handshake the filter answers itself instead of forwarding.
    pub reply: Option<LocalReply>,
}

/// A dedup claim held while the upstream handles the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Local(Claim),
    Remote(RemoteClaim),
}

/// A claim in the remote store: the value we wrote identifies it for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteClaim {
    policy: usize,
    hash: KeyHash,
    value: Vec<u8>,
    claim_expiry_ms: u64,
    done_expiry_ms: u64,
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
    fn new(policy: usize, op: etcd::Op, purpose: Purpose) -> RemoteTask {
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
enum Purpose {
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

/// A success answered by the filter (a challenge response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Guard {
    pub(crate) fn new(
        default_deny: bool,
        policies: Vec<Policy>,
        counters: Vec<String>,
        notices: Vec<(Level, String)>,
        store: Store,
        sweep_interval_ms: u64,
    ) -> Guard {
        Guard {
            default_deny,
            policies,
            counters,
            notices,
            store,
            sweep_interval_ms,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sweep_interval_ms(&self) -> u64 {
        self.sweep_interval_ms
    }

    /// Whether any policy matches on the Envoy route name (the glue fetches it only then).
    pub fn uses_route_names(&self) -> bool {
        self.policies.iter().any(|p| p.matcher.uses_route_name())
    }

    /// Whether any policy uses the replay store (no store work otherwise).
    pub fn uses_store(&self) -> bool {
        self.policies.iter().any(|p| p.dedup.is_some())
    }

    /// Configure-time: pre-create the store's keys (keeping existing entries).
    pub fn init_store(&self, host: &dyn Host) {
        if self.uses_store() {
            self.store.init(host);
        }
    }

    /// Periodic: prune expired entries if this root wins the sweep lease.
    pub fn sweep(&self, host: &dyn Host, owner: u64) -> Option<usize> {
        if !self.uses_store() {
            return None;
        }
        // The lease outlives two periods so a slow sweep is not taken over mid-way.
        self.store
            .sweep(host, owner, self.sweep_interval_ms.saturating_mul(2))
    }

    /// The upstream answered with `status` (`None`: the stream ended without an answer):
    /// commit the claim on success, release it otherwise so a retry is admitted. A remote
    /// claim returns the task to run with `Guard::drive`.
    pub fn settle(&self, host: &dyn Host, hold: &Hold, status: Option<u16>) -> Option<RemoteTask> {
        let policy = match hold {
            Hold::Local(c) => c.policy,
            Hold::Remote(r) => r.policy,
        };
        let commit_extra = self
            .policies
            .get(policy)
            .and_then(|p| p.dedup.as_ref())
            .map_or(&[][..], |d| d.commit_statuses.as_slice());
        let success = status.is_some_and(|s| (200..300).contains(&s) || commit_extra.contains(&s));
        let claim = match hold {
            Hold::Local(claim) => claim,
            Hold::Remote(r) => {
                let store = self.remote_store(r.policy)?;
                let (op, purpose) = if success {
                    let lifetime = self.policies.get(r.policy).map_or(0, done_lifetime_ms);
                    (
                        store.commit(&r.hash, r.done_expiry_ms, lifetime),
                        Purpose::Commit {
                            hash: r.hash,
                            done_expiry_ms: r.done_expiry_ms,
                        },
                    )
                } else {
                    (
                        store.release(&r.hash, &r.value),
                        Purpose::Release {
                            until_ms: r.claim_expiry_ms,
                        },
                    )
                };
                return Some(RemoteTask::new(r.policy, op, purpose));
            }
        };
        // No counter on commit: it is the common path, and every host call costs (the
        // `accepted` counter already counts it).
        if success {
            if !self.store.commit(host, claim) {
                // The claim stays in flight until it lapses; after that a replay inside the
                // window would be admitted again. Rare (CAS exhaustion), but never silent.
                host.increment(stats::STORE_COMMIT_FAILED);
                host.log(
                    Level::Warn,
                    "webhook-guard: could not commit a delivery to the replay store (store_unavailable)",
                );
            }
        } else if self.store.release(host, claim) {
            host.increment(stats::STORE_RELEASED);
        }
        None
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

    fn remote_store(&self, policy: usize) -> Option<&EtcdStore> {
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
                    self.store.remember_done(host, now, *hash, *done_expiry_ms);
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
                    claim: Some(Hold::Remote(RemoteClaim {
                        policy: task.policy,
                        hash: *hash,
                        value,
                        claim_expiry_ms: *claim_expiry_ms,
                        done_expiry_ms: *done_expiry_ms,
                    })),
                    reply: None,
                    remote: None,
                }));
            }
            Outcome::Done { expiry_ms } => {
                self.store.remember_done(host, now, *hash, expiry_ms);
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

    fn count_accepted(&self, host: &dyn Host, policy: &Policy, key_index: usize) {
        host.increment(policy.counter_base.saturating_add(stats::ACCEPTED));
        if key_index > 0 {
            host.increment(
                policy
                    .counter_base
                    .saturating_add(stats::ACCEPTED_SECONDARY_SECRET),
            );
        }
    }

    /// The rejection for what a claim found in a store.
    fn store_rejection(
        &self,
        host: &dyn Host,
        policy_index: usize,
        found: Found,
        info: &RequestInfo,
        delivery_id: Option<&str>,
    ) -> Rejection {
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject(host, policy_index, reason, detail, info, delivery_id)
        };
        let acknowledge = self
            .policies
            .get(policy_index)
            .and_then(|p| p.dedup.as_ref())
            .is_some_and(|d| d.acknowledge);
        match found {
            Found::Done if acknowledge => {
                let mut r = fail(Reason::Replayed, Some("acknowledged"));
                r.status = 200;
                let name = self.policies.get(policy_index).map_or("", |p| &p.name);
                r.body = format!(r#"{{"status":"duplicate","policy":{}}}"#, json_str(name));
                r
            }
            Found::Done => fail(Reason::Replayed, None),
            Found::InFlight(retry_after_s) => {
                let mut r = fail(Reason::InFlight, None);
                r.headers.push(("retry-after", retry_after_s.to_string()));
                r
            }
            Found::Full => fail(Reason::StoreFull, None),
            Found::Unavailable => fail(Reason::StoreUnavailable, None),
        }
    }

    /// Counter names, to be defined by the host in this order (`Host::increment` indexes it).
    pub fn counter_names(&self) -> &[String] {
        &self.counters
    }

    /// Facts worth a log line at load time that do not make the config invalid
    /// (e.g. an unset secret variable).
    pub fn notices(&self) -> &[(Level, String)] {
        &self.notices
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn policy(&self, index: usize) -> Option<&Policy> {
        self.policies.get(index)
    }

    pub fn route(&self, host: &dyn Host, req: &RouteInfo) -> Route {
        if let Some(i) = self.policies.iter().position(|p| p.matcher.matches(req)) {
            return Route::Verify(i);
        }
        if !self.default_deny {
            host.increment(stats::UNMATCHED_PASSED);
            return Route::Pass;
        }
        host.increment(stats::UNMATCHED_DENIED);
        let reason = Reason::NoMatchingPolicy;
        log_rejection(
            host,
            None,
            reason,
            reason.default_status(),
            None,
            req.route_name,
            req.path,
            None,
        );
        Route::Reject(Rejection {
            status: reason.default_status(),
            reason,
            body: reply_body(reason, None),
            headers: Vec::new(),
        })
    }

    /// Header phase: everything that can be decided before the body is read.
    pub fn begin(
        &self,
        host: &dyn Host,
        policy_index: usize,
        info: RequestInfo,
        headers: &HeaderList,
    ) -> Result<Pending, Rejection> {
        let Some(policy) = self.policies.get(policy_index) else {
            // Only reachable through a glue bug; fail closed.
            return Err(self.reject_unknown(host));
        };
        let delivery_id = match &policy.scheme.delivery_id {
            Some(DeliveryId::Header(name)) => match lookup(headers, name) {
                Lookup::One(v) => Some(loggable(v)),
                _ => None,
            },
            _ => None,
        };
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject(
                host,
                policy_index,
                reason,
                detail,
                &info,
                delivery_id.as_deref(),
            )
        };
        if policy.keys.is_empty() {
            return Err(fail(Reason::SecretUnavailable, None));
        }
        if let Lookup::One(v) = lookup(headers, "content-length") {
            let declared = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if declared.is_some_and(|n| n > policy.max_body_bytes) {
                return Err(fail(Reason::BodyTooLarge, Some("content-length")));
            }
        }
        let extracted = verify::extract(
            &policy.scheme,
            headers,
            info.method.as_bytes(),
            info.path.as_bytes(),
        )
        .map_err(|reason| fail(reason, None))?;
        let challenge_header = policy.challenge == Some(Challenge::TwitchCallbackVerification)
            && matches!(
                lookup(headers, "twitch-eventsub-message-type"),
                Lookup::One(v) if v == b"webhook_callback_verification"
            );
        Ok(Pending {
            policy: policy_index,
            extracted,
            info,
            delivery_id,
            challenge_header,
        })
    }

    /// Called as body chunks arrive with the total buffered so far.
    pub fn check_body_size(
        &self,
        host: &dyn Host,
        pending: &Pending,
        buffered: usize,
    ) -> Result<(), Rejection> {
        let Some(policy) = self.policies.get(pending.policy) else {
            return Err(self.reject_unknown(host));
        };
        if u64::try_from(buffered).map_or(true, |n| n > policy.max_body_bytes) {
            return Err(self.reject(
                host,
                pending.policy,
                Reason::BodyTooLarge,
                Some("body"),
                &pending.info,
                pending.delivery_id.as_deref(),
            ));
        }
        Ok(())
    }

    /// End of the request: verify the MAC over the whole body, then the time window.
    pub fn finish(
        &self,
        host: &dyn Host,
        pending: &Pending,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        self.check_body_size(host, pending, body.len())?;
        let Some(policy) = self.policies.get(pending.policy) else {
            return Err(self.reject_unknown(host));
        };
        let fail = |reason: Reason, detail: Option<&str>| {
            self.reject_with_body(host, pending, policy, body, reason, detail)
        };
        let Some((key_index, mac)) =
            verify::matching_key(&policy.scheme, &pending.extracted, &policy.keys, body)
        else {
            return Err(fail(Reason::InvalidSignature, None));
        };
        if policy.scheme.body_sha256_query && !verify::body_hash_matches(&pending.extracted, body) {
            return Err(fail(Reason::InvalidSignature, Some("body")));
        }
        let now = host.now_ms();
        let ts_ms = match (&pending.extracted.timestamp, &policy.scheme.timestamp) {
            (Some(ts), _) => Some(ts.ms),
            (None, Some(spec)) => match &spec.source {
                TimestampSource::BodyJson(field) => {
                    match verify::body_timestamp(field, spec.unit, body) {
                        Ok(ms) => Some(ms),
                        Err(reason) => return Err(fail(reason, Some("body"))),
                    }
                }
                _ => None,
            },
            (None, None) => None,
        };
        if let Some(ts) = ts_ms {
            if let Err(skew) = verify::check_window(ts, now, policy.tolerance_ms) {
                let detail = match skew {
                    Skew::Stale => "stale",
                    Skew::Future => "future",
                };
                return Err(fail(Reason::TimestampOutOfWindow, Some(detail)));
            }
        }
        if let Some(reply) = self.challenge_reply(policy, pending, key_index, body) {
            host.increment(policy.counter_base.saturating_add(stats::CHALLENGES));
            return Ok(Accepted {
                policy: pending.policy,
                key_index,
                claim: None,
                reply: Some(reply),
                remote: None,
            });
        }
        let mut accepted = Accepted {
            policy: pending.policy,
            key_index,
            claim: None,
            reply: None,
            remote: None,
        };
        if let Some(dedup) = &policy.dedup {
            let key = policy.keys.get(key_index).map_or(&[][..], Vec::as_slice);
            let mac = verify::canonical_mac(&policy.scheme, &pending.extracted, key, body, mac);
            match self.claim(
                host, policy, pending, dedup, &mac, body, now, ts_ms, key_index,
            )? {
                Claimed::Held(hold) => accepted.claim = Some(hold),
                Claimed::Ask(task) => {
                    // Counted as accepted once the remote store admits it.
                    accepted.remote = Some(task);
                    return Ok(accepted);
                }
            }
        }
        self.count_accepted(host, policy, key_index);
        Ok(accepted)
    }

    /// The answer to a verified handshake, when the policy answers them and this is one.
    fn challenge_reply(
        &self,
        policy: &Policy,
        pending: &Pending,
        key_index: usize,
        body: &[u8],
    ) -> Option<LocalReply> {
        match policy.challenge? {
            Challenge::ZoomUrlValidation => {
                if crate::json::top_level_string(body, "event")? != "endpoint.url_validation" {
                    return None;
                }
                let payload = crate::json::top_level(body, "payload")?;
                let token = payload.get("plainToken")?.as_str()?;
                let key = policy.keys.get(key_index)?;
                let mac = verify::compute_mac(
                    crate::config::Algorithm::HmacSha256,
                    key,
                    &[token.as_bytes()],
                )?;
                Some(LocalReply {
                    status: 200,
                    content_type: "application/json",
                    body: format!(
                        r#"{{"plainToken":{},"encryptedToken":"{}"}}"#,
                        json_str(token),
                        hex::encode(mac)
                    ),
                })
            }
            Challenge::TwitchCallbackVerification if pending.challenge_header => Some(LocalReply {
                status: 200,
                content_type: "text/plain",
                body: crate::json::top_level_string(body, "challenge")?,
            }),
            Challenge::TwitchCallbackVerification => None,
        }
    }

    /// Claims the delivery's dedup key; a duplicate, an in-flight twin or a store problem
    /// becomes the rejection to send. With a remote store, a delivery this proxy already saw
    /// committed is answered here; anything else becomes a task for `Guard::drive`.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        host: &dyn Host,
        policy: &Policy,
        pending: &Pending,
        dedup: &DedupPolicy,
        mac: &[u8],
        body: &[u8],
        now: u64,
        ts_ms: Option<u64>,
        key_index: usize,
    ) -> Result<Claimed, Rejection> {
        let (kind, material) =
            dedup::key::material(&dedup.source, mac, &pending.extracted.signed_headers, body);
        let hash = dedup::key::hash(&policy.name, kind, &material);
        let done_expiry_ms = match dedup.retention {
            Retention::Fixed(ms) => now.saturating_add(ms),
            Retention::AfterWindow(margin) => ts_ms
                .unwrap_or(now)
                .max(now)
                .saturating_add(policy.tolerance_ms)
                .saturating_add(margin),
        };
        let claim_expiry_ms = now.saturating_add(dedup.claim_timeout_ms);
        let found = if let Some(remote) = &dedup.remote {
            if !self.store.is_done(host, now, &hash) {
                return Ok(Claimed::Ask(RemoteTask::new(
                    pending.policy,
                    remote.claim(&hash, claim_expiry_ms, dedup.claim_timeout_ms),
                    Purpose::Admit {
                        key_index,
                        hash,
                        claim_expiry_ms,
                        done_expiry_ms,
                        info: pending.info.clone(),
                        delivery_id: delivery_id(pending, policy, body),
                    },
                )));
            }
            host.increment(stats::ETCD_CACHE_HITS);
            Found::Done
        } else {
            match self.store.claim(
                host,
                now,
                pending.policy,
                hash,
                dedup.claim_timeout_ms,
                done_expiry_ms,
            ) {
                ClaimOutcome::Claimed(c) => return Ok(Claimed::Held(Hold::Local(c))),
                ClaimOutcome::Done => Found::Done,
                ClaimOutcome::InFlight { retry_after_s } => Found::InFlight(retry_after_s),
                ClaimOutcome::Full => Found::Full,
                ClaimOutcome::Unavailable => Found::Unavailable,
            }
        };
        Err(self.store_rejection(
            host,
            pending.policy,
            found,
            &pending.info,
            delivery_id(pending, policy, body).as_deref(),
        ))
    }

    fn reject(
        &self,
        host: &dyn Host,
        policy_index: usize,
        reason: Reason,
        detail: Option<&str>,
        info: &RequestInfo,
        delivery_id: Option<&str>,
    ) -> Rejection {
        let Some(policy) = self.policies.get(policy_index) else {
            return self.reject_unknown(host);
        };
        let status = policy.status(reason);
        host.increment(policy.counter_base.saturating_add(stats::REJECTED));
        host.increment(
            policy
                .counter_base
                .saturating_add(stats::reason_offset(reason)),
        );
        log_rejection(
            host,
            Some(&policy.name),
            reason,
            status,
            detail,
            info.route_name.as_deref(),
            &info.path,
            delivery_id,
        );
        Rejection {
            status,
            reason,
            body: reply_body(reason, Some(&policy.name)),
            headers: Vec::new(),
        }
    }

    /// A rejection once the body is known: the delivery id may come from it (Stripe's `id`).
    fn reject_with_body(
        &self,
        host: &dyn Host,
        pending: &Pending,
        policy: &Policy,
        body: &[u8],
        reason: Reason,
        detail: Option<&str>,
    ) -> Rejection {
        let id = delivery_id(pending, policy, body);
        self.reject(
            host,
            pending.policy,
            reason,
            detail,
            &pending.info,
            id.as_deref(),
        )
    }

    fn reject_unknown(&self, host: &dyn Host) -> Rejection {
        host.log(
            Level::Error,
            "webhook-guard: request refers to an unknown policy",
        );
        let reason = Reason::SecretUnavailable;
        Rejection {
            status: reason.default_status(),
            reason,
            body: reply_body(reason, None),
            headers: Vec::new(),
        }
    }
}

/// What a claim found instead of a free key.
enum Found {
    Done,
    InFlight(u64),
    Full,
    Unavailable,
}

enum Claimed {
    Held(Hold),
    Ask(RemoteTask),
}

/// How long a committed delivery of `policy` typically stays (sets its lease buckets).
fn done_lifetime_ms(policy: &Policy) -> u64 {
    match policy.dedup.as_ref().map(|d| d.retention) {
        Some(Retention::Fixed(ms)) => ms,
        Some(Retention::AfterWindow(margin)) => policy.tolerance_ms.saturating_add(margin),
        None => 0,
    }
}

/// The delivery id for log lines: a header, or (Stripe's `id`) the body.
fn delivery_id(pending: &Pending, policy: &Policy, body: &[u8]) -> Option<String> {
    pending
        .delivery_id
        .clone()
        .or_else(|| body_delivery_id(&policy.scheme, body))
}

/// A JSON string literal (quoted, escaped).
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn json_opt(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), json_str)
}

fn reply_body(reason: Reason, policy: Option<&str>) -> String {
    format!(
        r#"{{"error":"{}","policy":{}}}"#,
        reason.code(),
        json_opt(policy)
    )
}

#[allow(clippy::too_many_arguments)]
fn log_rejection(
    host: &dyn Host,
    policy: Option<&str>,
    reason: Reason,
    status: u16,
    detail: Option<&str>,
    route: Option<&str>,
    path: &str,
    delivery_id: Option<&str>,
) {
    if !host.log_enabled(Level::Info) {
        return;
    }
    // Built by hand: a serde_json::Value map costs more than the rest of a rejection.
    let line = format!(
        r#"{{"event":"webhook_rejected","policy":{},"reason":"{}","status":{},"detail":{},"route":{},"path":{},"delivery_id":{}}}"#,
        json_opt(policy),
        reason.code(),
        status,
        json_opt(detail),
        json_opt(route),
        // The query string can carry tokens: logs get the path alone.
        json_str(&loggable(
            path.split_once('?').map_or(path, |(p, _)| p).as_bytes()
        )),
        json_opt(delivery_id),
    );
    host.log(Level::Info, &line);
}

/// Request-controlled text for a log line: bounded, lossily decoded (serde escapes it).
fn loggable(value: &[u8]) -> String {
    let cut = value.get(..MAX_LOGGED_VALUE).unwrap_or(value);
    String::from_utf8_lossy(cut).into_owned()
}

/// The delivery id carried in a JSON body (Stripe's `id`), for log lines only. The body is
/// unauthenticated here: scan for one top-level string without building a document tree.
fn body_delivery_id(scheme: &Scheme, body: &[u8]) -> Option<String> {
    let Some(DeliveryId::JsonField(field)) = &scheme.delivery_id else {
        return None;
    };
    crate::json::top_level_string(body, field).map(|s| loggable(s.as_bytes()))
}
