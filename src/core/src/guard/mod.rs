//! The compiled configuration and the request flow the proxy glue drives:
//! route -> begin (headers) -> finish (body) -> settle (the upstream's outcome).
//! Every rejection is counted, logged as one JSON line and turned into a reply here, so the
//! glue only moves bytes.
//!
//! `flow` holds the request path, `remote` the etcd tier's task driver, `reply` the
//! rejections and log lines.

mod flow;
mod remote;
mod reply;

pub use remote::{Background, Drive, RemoteCall, RemoteTask};

use std::borrow::Cow;

use crate::config::KeyEncoding;
use crate::decrypt::Cipher;
use crate::dedup::key::KeySource;
use crate::dedup::{Claim, Store};
use crate::etcd::EtcdStore;
use crate::host::{Host, Level};
use crate::policy::Matcher;
use crate::reason::Reason;
use crate::scheme::Scheme;
use crate::stats;
use crate::verify::Extracted;

use remote::RemoteClaim;

/// Where one of a policy's secrets comes from.
#[derive(Clone)]
pub enum SecretSlot {
    /// Loaded at configure time (`env`, `inline`), decoded.
    Key(Vec<u8>),
    /// The `index`th SDS secret of the configuration (`Guard::sds_secrets`), read per request.
    Sds(usize),
}

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
    /// `on_unknown_outcome: release`: a forwarded delivery that got no answer is released.
    pub release_unknown: bool,
    /// This policy's share of the local store, in entries (its scope's share is the sum).
    pub capacity: u64,
    /// Names the deliveries' keys and the store share they live in: the policy's name, or the
    /// `dedup.scope` it shares with other policies.
    pub scope: String,
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
    /// Meta's GET `hub.mode=subscribe`: the `hub.verify_token` must equal the configured
    /// token (constant time); reply the `hub.challenge` as text. Nothing is signed.
    MetaSubscribe,
    /// Lark's `url_verification`: an encrypted `{"challenge", "token", "type"}` that Lark does
    /// not sign; answered `{"challenge": ..}` once it opens under the Encrypt Key and its
    /// `token` equals the Verification Token (constant time). Never forwarded.
    LarkUrlVerification,
}

/// A policy's `decrypt`: how verified payloads are opened before they are forwarded.
pub struct Decrypt {
    pub cipher: Cipher,
    /// In order of preference (rotation).
    pub(crate) keys: Vec<SecretSlot>,
    /// Keys listed in the configuration (unset `env` ones included).
    pub keys_configured: usize,
    pub key_encoding: KeyEncoding,
    pub content_type: String,
}

// Keys are secret: never in debug output.
impl std::fmt::Debug for Decrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypt")
            .field("cipher", &self.cipher)
            .field("keys", &format_args!("[{} REDACTED]", self.keys.len()))
            .finish_non_exhaustive()
    }
}

impl Decrypt {
    /// The usable keys for this request, in order (SDS ones as the host holds them now).
    pub(crate) fn keys<'a>(&'a self, host: &dyn Host) -> Vec<Cow<'a, [u8]>> {
        resolve(&self.keys, host, &|text| {
            self.cipher.derive_key(self.key_encoding, text)
        })
    }

    /// The current key: for tools that encrypt, never for logs.
    pub fn first_key(&self) -> Option<&[u8]> {
        first(&self.keys)
    }

    /// Keys that loaded at configure time, and keys configured (SDS ones are read per request).
    pub fn key_counts(&self) -> (usize, usize) {
        let loaded = self
            .keys
            .iter()
            .filter(|s| matches!(s, SecretSlot::Key(_)))
            .count();
        (loaded, self.keys_configured)
    }
}

/// A verified payload's plaintext, forwarded in place of the envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext {
    pub body: Vec<u8>,
    pub content_type: String,
}

// The sender's payload is confidential: never in debug output.
impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext")
            .field("bytes", &self.body.len())
            .field("content_type", &self.content_type)
            .finish()
    }
}

fn first(slots: &[SecretSlot]) -> Option<&[u8]> {
    slots.iter().find_map(|s| match s {
        SecretSlot::Key(k) => Some(k.as_slice()),
        SecretSlot::Sds(_) => None,
    })
}

/// Configured keys as they are, SDS ones as the host holds them now (an absent or
/// undecodable SDS secret is skipped).
fn resolve<'a>(
    slots: &'a [SecretSlot],
    host: &dyn Host,
    decode: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Vec<Cow<'a, [u8]>> {
    slots
        .iter()
        .filter_map(|s| match s {
            SecretSlot::Key(k) => Some(Cow::Borrowed(k.as_slice())),
            SecretSlot::Sds(i) => {
                let raw = host.sds_secret(*i)?;
                let text = std::str::from_utf8(&raw).ok()?;
                // A secret file written by an editor ends in a newline the sender never used.
                decode(text.trim_end_matches(['\r', '\n'])).map(Cow::Owned)
            }
        })
        .collect()
}

pub struct Policy {
    pub name: String,
    pub dedup: Option<DedupPolicy>,
    pub decrypt: Option<Decrypt>,
    pub challenge: Option<Challenge>,
    /// Meta's handshake token (`verify_token`), when the policy answers that handshake.
    pub(crate) verify_token: Option<SecretSlot>,
    pub(crate) matcher: Matcher,
    pub scheme: Scheme,
    /// In order of preference: the first usable one is the current secret.
    pub(crate) secrets: Vec<SecretSlot>,
    pub secrets_configured: usize,
    pub tolerance_ms: u64,
    pub max_body_bytes: u64,
    /// Upper-case methods this policy verifies; others get 405 `method_not_allowed`.
    pub methods: Vec<String>,
    pub(crate) statuses: [u16; Reason::ALL.len()],
    pub(crate) counter_base: usize,
}

// Keys are secret: never in debug output.
impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field(
                "secrets",
                &format_args!("[{} REDACTED]", self.secrets.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Secrets that loaded at configure time (the others were unset or undecodable `env`
    /// secrets); SDS secrets are read per request and not counted here.
    pub fn usable_secrets(&self) -> usize {
        self.secrets
            .iter()
            .filter(|s| matches!(s, SecretSlot::Key(_)))
            .count()
    }

    /// SDS secrets this policy reads per request.
    pub fn sds_secrets(&self) -> usize {
        self.secrets.len().saturating_sub(self.usable_secrets())
    }

    /// The current (first loaded) key: for tools that sign, never for logs.
    pub fn first_key(&self) -> Option<&[u8]> {
        first(&self.secrets)
    }

    /// The usable keys for this request, in order: configured ones as they are, SDS ones as
    /// the host holds them now (an absent or undecodable SDS secret is skipped).
    pub(crate) fn keys<'a>(&'a self, host: &dyn Host) -> Vec<Cow<'a, [u8]>> {
        resolve(&self.secrets, host, &|text| {
            self.scheme
                .key_encoding
                .decode(text)
                .filter(|k| self.scheme.key_fits(k))
        })
    }

    /// Meta's handshake token as configured now (an SDS one as the host holds it).
    pub(crate) fn verify_token<'a>(
        &'a self,
        host: &dyn Host,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        match self.verify_token.as_ref()? {
            SecretSlot::Key(k) => Some(std::borrow::Cow::Borrowed(k.as_slice())),
            SecretSlot::Sds(i) => {
                let raw = host.sds_secret(*i)?;
                let text = std::str::from_utf8(&raw).ok()?;
                let text = text.trim_end_matches(['\r', '\n']);
                (!text.is_empty()).then(|| std::borrow::Cow::Owned(text.as_bytes().to_vec()))
            }
        }
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
    /// Names of the SDS secrets the policies read, and where they come from.
    sds: Vec<String>,
    sds_config: Option<String>,
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
    /// The decryption nonce, when the policy takes it from a header.
    nonce_header: Option<Vec<u8>>,
    /// Lark: no signature header, so only an (encrypted) `url_verification` can be answered;
    /// anything else is `missing_signature`.
    unsigned: bool,
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
    /// The decrypted payload, forwarded instead of the request's body.
    pub plaintext: Option<Plaintext>,
}

/// A dedup claim held while the upstream handles the delivery: settle it with
/// `Guard::settle` once the outcome is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    claim: Held,
    /// For the log line of an unknown outcome (operators reconcile by it).
    delivery_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Held {
    Local(Claim),
    Remote(RemoteClaim),
}

impl Hold {
    fn policy(&self) -> usize {
        match &self.claim {
            Held::Local(c) => c.policy,
            Held::Remote(r) => r.policy,
        }
    }
}

/// What became of a request forwarded upstream while holding a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The upstream answered with this status: commit on success, release otherwise.
    Answered(u16),
    /// The request never reached the upstream (no host, connection refused, circuit open,
    /// the stream ended before a connection was made): release.
    NotSent,
    /// Sent upstream, but no answer came back (client or upstream reset, timeout): the backend
    /// may have processed it. Kept as delivered unless the policy says `release`.
    Unknown,
}

/// Envoy response flags (bits of `response.flags`, `1 << CoreResponseFlag`) that are only
/// ever set when no attempt was sent upstream: no healthy host (UH), connection failure (UF),
/// circuit breaker overflow (UO), no route (NR), no cluster (NC), failed local health check
/// (LH), DNS failure (DF), drop overload (DO), unconditional drop overload (UDO). Any other
/// flag (a timeout, a reset, a retry...) may follow a request the backend received.
pub const NOT_SENT_FLAGS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 5)
    | (1 << 7)
    | (1 << 8)
    | (1 << 24)
    | (1 << 26)
    | (1 << 27)
    | (1 << 29);

impl Upstream {
    /// A response that did not come from the upstream (`response.code_details` other than
    /// `via_upstream`): Envoy's own reply. Released only when its flags say no attempt left
    /// and there was at most one attempt (with retries, an earlier attempt may have reached the
    /// backend even when the last one could not connect).
    pub fn after_local_reply(flags: u64, attempts: u64) -> Upstream {
        if flags & !NOT_SENT_FLAGS == 0 && attempts <= 1 {
            Upstream::NotSent
        } else {
            Upstream::Unknown
        }
    }

    /// The outcome of a forwarded request whose response has status `status` (a 2xx is only
    /// ever the upstream's: nothing after the filter but the router answers), from what the
    /// host recorded, read lazily: an upstream answer costs one read, Envoy's own reply three.
    pub fn of_response(host: &dyn Host, status: u16) -> Upstream {
        if (200..300).contains(&status) || host.response_from_upstream() {
            return Upstream::Answered(status);
        }
        // Unreadable facts count as "anything may have happened".
        let flags = host.response_flags().unwrap_or(u64::MAX);
        Upstream::after_local_reply(flags, host.upstream_attempts().unwrap_or(u64::MAX))
    }

    /// The outcome of a forwarded request whose stream ended without a response.
    pub fn of_stream_end(host: &dyn Host) -> Upstream {
        let ready = host.upstream_connection_ready();
        Upstream::after_stream_end(ready, host.upstream_attempts().unwrap_or(u64::MAX))
    }

    /// The stream ended before any response (client reset, closed connection): the request
    /// left if an upstream connection was ever ready for it (`upstream.cx_pool_ready_duration`
    /// is set; the address alone is not proof: unix-socket upstreams have none).
    pub fn after_stream_end(pool_ready: bool, attempts: u64) -> Upstream {
        if !pool_ready && attempts <= 1 {
            Upstream::NotSent
        } else {
            Upstream::Unknown
        }
    }
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
        sds: (Vec<String>, Option<String>),
    ) -> Guard {
        Guard {
            default_deny,
            policies,
            sds: sds.0,
            sds_config: sds.1,
            counters,
            notices,
            store,
            sweep_interval_ms,
        }
    }

    /// The SDS secrets to subscribe to (native build), in `SecretSlot::Sds` index order.
    pub fn sds_secrets(&self) -> &[String] {
        &self.sds
    }

    /// The `ConfigSource` JSON the SDS secrets come from (`None`: the bootstrap's static
    /// secrets).
    pub fn sds_config(&self) -> Option<&str> {
        self.sds_config.as_deref()
    }

    /// The `ConfigSource` JSON for the SDS secret `name`: `sds_config` with every `{name}` in
    /// it replaced (a file-based source holds one secret per file), or empty for a static
    /// bootstrap secret. Names are `[A-Za-z0-9._-]`, so they need no JSON escaping.
    pub fn sds_source(&self, name: &str) -> String {
        self.sds_config
            .as_deref()
            .map_or_else(String::new, |source| source.replace("{name}", name))
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

    /// Configure-time: pre-create the store's keys (keeping existing entries), and carry
    /// entries over to a changed layout (logged).
    pub fn init_store(&self, host: &dyn Host) {
        if self.uses_store() {
            for line in self.store.init(host) {
                host.log(Level::Info, &line);
            }
        }
        for policy in &self.policies {
            if let Some(d) = &policy.dedup {
                let gauge = policy
                    .counter_base
                    .saturating_add(stats::STORE_CAPACITY_OF_POLICY);
                host.set_gauge(gauge, d.capacity);
            }
        }
    }

    /// Periodic: prune expired entries if this root wins the sweep lease.
    pub fn sweep(&self, host: &dyn Host, owner: u64) -> Option<usize> {
        if !self.uses_store() {
            return None;
        }
        // The lease outlives two periods so a slow sweep is not taken over mid-way.
        let sweep =
            self.store
                .sweep_report(host, owner, self.sweep_interval_ms.saturating_mul(2))?;
        for (policy, entries) in self.policies.iter().zip(&sweep.per_policy) {
            if let Some(n) = entries {
                let gauge = policy
                    .counter_base
                    .saturating_add(stats::STORE_ENTRIES_OF_POLICY);
                host.set_gauge(gauge, u64::try_from(*n).unwrap_or(u64::MAX));
            }
        }
        Some(sweep.removed)
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

    pub(crate) fn record_verdict_latency(&self, host: &dyn Host, policy: usize, us: u64) {
        if let Some(p) = self.policies.get(policy) {
            host.record(p.counter_base.saturating_add(stats::VERDICT_LATENCY_US), us);
        }
    }

    pub(crate) fn count_accepted(&self, host: &dyn Host, policy: &Policy, key_index: usize) {
        host.increment(policy.counter_base.saturating_add(stats::ACCEPTED));
        if key_index > 0 {
            host.increment(
                policy
                    .counter_base
                    .saturating_add(stats::ACCEPTED_SECONDARY_SECRET),
            );
        }
    }
}

/// How long a committed delivery of `policy` typically stays (sets its lease buckets).
pub(crate) fn done_lifetime_ms(policy: &Policy) -> u64 {
    match policy.dedup.as_ref().map(|d| d.retention) {
        Some(Retention::Fixed(ms)) => ms,
        Some(Retention::AfterWindow(margin)) => policy.tolerance_ms.saturating_add(margin),
        None => 0,
    }
}
