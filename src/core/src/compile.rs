//! Raw config -> `Guard`: every check that can be made at load time is made here, and each
//! error names the offending field so Envoy's log says exactly what to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{
    DecryptCipher, DefaultAction, KeyEncoding, OnDuplicate, OnStoreError, OnUnknownOutcome,
    Provider, RawConfig, RawCustom, RawDecrypt, RawDedup, RawDedupKey, RawPolicy, RawPolicyStore,
    RawSecret, RawStore, TimestampUnit, DEFAULT_CIPHERTEXT_FIELD, DEFAULT_ETCD_PREFIX,
    DEFAULT_NONCE_FIELD, DEFAULT_UNTIMED_RETENTION_SECONDS,
};
use crate::decrypt::{Cipher, NonceSource};
use crate::dedup::key::{IdBytes, KeySource};
use crate::dedup::{Share, Store};
use crate::etcd::EtcdStore;
use crate::guard::{Challenge, Decrypt, DedupPolicy, Guard, Policy, Retention, SecretSlot};
use crate::host::Level;
use crate::policy::{is_header_name, is_policy_name, Matcher};
use crate::reason::Reason;
use crate::scheme::{DeliveryId, Scheme, SigFormat, SigSource, TimestampSource, TimestampSpec};
use crate::template::{self, Part};
use crate::{presets, stats};

pub const MAX_SECRETS: usize = 8;
pub const MAX_TOLERANCE_SECONDS: u64 = 7 * 24 * 3600;
pub const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the document, e.g. `policies[1].secrets[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "invalid webhook-guard configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid webhook-guard configuration at {}: {}",
                self.path, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Looks up an environment variable visible to the VM.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn parse(json: &[u8]) -> Result<RawConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // serde repeats the offending value ("unknown variant `whsec_...`"): under a field that
        // holds secrets (signing secrets, decryption keys, Meta's verify token) that value may
        // be one, so the message is ours there.
        const SECRET_FIELDS: [&str; 3] = ["secrets", "keys", "verify_token"];
        if path
            .split('.')
            .any(|seg| SECRET_FIELDS.iter().any(|f| seg.starts_with(f)))
        {
            return err(
                path,
                "each secret is {\"env\": \"NAME\"}, {\"inline\": \"VALUE\"} or {\"sds\": \"NAME\"} (the value given is not repeated here)",
            );
        }
        // serde_json appends "at line L column C"; keep it, it helps with big documents.
        err(path, e.into_inner().to_string())
    })
}

/// Which front end the configuration is for: what the proxy can do differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Build {
    /// proxy-wasm: the replay store in Envoy shared data; no SDS secrets, no per-route
    /// configuration.
    #[default]
    Wasm,
    /// The Envoy dynamic module: the replay store in the module's memory, SDS secrets, and
    /// policies that routes select by name.
    Native,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// The Envoy plugin (or filter config) name: the default namespace of the store's keys.
    pub plugin_name: &'a str,
    pub build: Build,
}

pub fn compile(json: &[u8], env: EnvLookup) -> Result<Guard, ConfigError> {
    compile_with(json, env, Options::default())
}

/// As `compile`, with the Envoy plugin name (the default namespace of the store's keys).
pub fn compile_for_plugin(
    json: &[u8],
    env: EnvLookup,
    plugin_name: &str,
) -> Result<Guard, ConfigError> {
    compile_with(
        json,
        env,
        Options {
            plugin_name,
            build: Build::Wasm,
        },
    )
}

pub fn compile_with(json: &[u8], env: EnvLookup, options: Options) -> Result<Guard, ConfigError> {
    let raw = parse(json)?;
    compile_raw(raw, env, options)
}

pub const MAX_SHARDS: u64 = 16384;
/// Unset `store.shards`: one shard per this many entries of a policy's share...
pub const ENTRIES_PER_SHARD: u64 = 32;
/// ...and at most this many per policy (a sweep visits every shard in one go).
pub const MAX_AUTO_SHARDS: u64 = 4096;
pub const MAX_CAPACITY: u64 = 10_000_000;
pub const MAX_RETENTION_SECONDS: u64 = 30 * 24 * 3600;

fn store_prefix(raw: &RawStore, plugin_name: &str) -> Result<String, ConfigError> {
    match &raw.key_prefix {
        Some(p) if p.is_empty() || p.len() > 128 => {
            Err(err("store.key_prefix", "must be 1 to 128 characters"))
        }
        Some(p) => Ok(p.clone()),
        None if plugin_name.is_empty() => Ok("webhook_guard".to_string()),
        None => Ok(format!("webhook_guard/{plugin_name}")),
    }
}

fn check_store(raw: &RawStore) -> Result<(), ConfigError> {
    let shards = raw.shards.unwrap_or(1);
    if shards == 0 || shards > MAX_SHARDS {
        return Err(err(
            "store.shards",
            format!("must be between 1 and {MAX_SHARDS}"),
        ));
    }
    if raw.capacity < shards || raw.capacity > MAX_CAPACITY {
        return Err(err(
            "store.capacity",
            format!("must be between store.shards ({shards}) and {MAX_CAPACITY}"),
        ));
    }
    if raw.sweep_interval_seconds == 0 || raw.sweep_interval_seconds > 3600 {
        return Err(err(
            "store.sweep_interval_seconds",
            "must be between 1 and 3600",
        ));
    }
    Ok(())
}

/// Each policy with replay protection gets its own share of the store: its `dedup.capacity`,
/// or an equal split of what the explicit shares leave; shards in proportion to the share.
/// Policies in one `dedup.scope` pool theirs into one share, so a claim under any of them
/// finds the others' deliveries. Fills in each `DedupPolicy::capacity`.
fn compile_shares(
    raw: &RawStore,
    prefix: &str,
    policies: &mut [Policy],
) -> Result<Store, ConfigError> {
    let explicit: u64 = policies
        .iter()
        .filter_map(|p| p.dedup.as_ref())
        .map(|d| d.capacity)
        .fold(0u64, u64::saturating_add);
    let implicit = policies
        .iter()
        .filter(|p| p.dedup.as_ref().is_some_and(|d| d.capacity == 0))
        .count();
    if explicit > raw.capacity {
        return Err(err(
            "store.capacity",
            format!(
                "the policies' dedup.capacity add up to {explicit}, above store.capacity ({})",
                raw.capacity
            ),
        ));
    }
    let each = raw
        .capacity
        .saturating_sub(explicit)
        .checked_div(u64::try_from(implicit).unwrap_or(u64::MAX))
        .unwrap_or(0);
    if implicit > 0 && each == 0 {
        return Err(err(
            "store.capacity",
            "leaves no room for the policies without a dedup.capacity",
        ));
    }
    let mut scopes: BTreeMap<String, u64> = BTreeMap::new();
    for d in policies.iter_mut().filter_map(|p| p.dedup.as_mut()) {
        if d.capacity == 0 {
            d.capacity = each;
        }
        let pooled = scopes.entry(d.scope.clone()).or_default();
        *pooled = pooled.saturating_add(d.capacity);
    }
    let mut shares = Vec::with_capacity(policies.len());
    for d in policies.iter().map(|p| p.dedup.as_ref()) {
        let Some(d) = d else {
            shares.push(None);
            continue;
        };
        let capacity = scopes.get(&d.scope).copied().unwrap_or(d.capacity);
        let shards = match raw.shards {
            // Shards in proportion to the share (at least one), rounded to nearest.
            Some(total) => total
                .saturating_mul(capacity)
                .saturating_add(raw.capacity / 2)
                .checked_div(raw.capacity)
                .unwrap_or(1)
                .clamp(1, total),
            // Small shards: the wasm build copies a whole shard per store read and write.
            None => capacity
                .div_ceil(ENTRIES_PER_SHARD)
                .clamp(1, MAX_AUTO_SHARDS),
        };
        shares.push(Some(Share {
            name: d.scope.clone(),
            shards: usize::try_from(shards).map_err(|_| err("store.shards", "too large"))?,
            capacity: usize::try_from(capacity).map_err(|_| err("store.capacity", "too large"))?,
        }));
    }
    Ok(Store::with_shares(prefix, &shares))
}

fn compile_dedup(
    at: &str,
    name: &str,
    raw: &RawDedup,
    provider: Provider,
    scheme: &Scheme,
    tolerance_ms: u64,
    notices: &mut Vec<(Level, String)>,
) -> Result<Option<DedupPolicy>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let at = format!("{at}.dedup");
    if matches!(
        scheme.sources.first().map(|s| &s.format),
        Some(SigFormat::Token)
    ) {
        // A token authenticates the sender, not the delivery: nothing signed identifies it.
        if raw.key.is_some() {
            return Err(err(
                format!("{at}.key"),
                "this provider signs nothing that identifies a delivery (a token compare): no dedup key is possible",
            ));
        }
        notices.push((
            Level::Info,
            format!("{at}: replay protection is off: the token does not cover the body"),
        ));
        return Ok(None);
    }
    let source = match &raw.key {
        None => match presets::dedup_key(provider) {
            Some(k) => k,
            None => return Ok(None),
        },
        Some(RawDedupKey::Signature) => KeySource::Signature,
        Some(RawDedupKey::Header { name }) => {
            let lower = name.to_ascii_lowercase();
            let index = scheme
                .template
                .iter()
                .filter_map(|p| match p {
                    Part::Header(h) => Some(h),
                    _ => None,
                })
                .position(|h| *h == lower)
                .ok_or_else(|| {
                    err(
                        format!("{at}.key.name"),
                        format!("header '{name}' is not covered by the signature, so it cannot be a dedup key"),
                    )
                })?;
            let separators = scheme
                .template
                .iter()
                .position(|p| *p == Part::Header(lower.clone()))
                .and_then(|pos| delimited_header(&scheme.template, pos, decimal_timestamp(scheme)))
                .ok_or_else(|| {
                    err(
                        format!("{at}.key.name"),
                        format!("header '{name}' is not delimited in the signed template (a literal separator on each side, and only literals or a decimal timestamp between it and one end): a captured delivery could be re-cut into a new value under the same signature"),
                    )
                })?;
            KeySource::SignedHeader {
                name: lower,
                index,
                bytes: IdBytes::Except(separators),
            }
        }
        Some(RawDedupKey::JsonPointer { pointer }) => {
            if !pointer.starts_with('/') {
                return Err(err(
                    format!("{at}.key.pointer"),
                    "a JSON pointer starts with '/', e.g. \"/id\"",
                ));
            }
            // A key from the body needs a signature over the whole body: Mailgun signs only
            // its timestamp and token, Adyen only an item's fields, Twilio the form
            // parameters, Vonage a JWT. Elsewhere the key would be whatever the sender of a
            // copy writes there.
            let body_signed = scheme.template.contains(&Part::Body)
                && !scheme.sources.iter().any(|s| {
                    matches!(
                        s.format,
                        SigFormat::AdyenItems | SigFormat::BodyFields | SigFormat::Token
                    )
                });
            if !body_signed {
                return Err(err(
                    format!("{at}.key"),
                    format!(
                        "'{}' does not sign the whole body, so a value in it cannot be a dedup key",
                        provider.name()
                    ),
                ));
            }
            // The body must start and end in one place in the signed text: with
            // `{header:x-event}.{body}`, `order.paid` + `{"id"..}` re-cut into `order` +
            // `paid.{"id"..}` is no longer JSON and would fall back to another key.
            let last = scheme.template.len().saturating_sub(1);
            let bounded = scheme
                .template
                .iter()
                .position(|p| *p == Part::Body)
                .is_some_and(|b| {
                    let decimal_ts = decimal_timestamp(scheme);
                    (b == last && fixed_before(&scheme.template, b, decimal_ts))
                        || (b == 0 && fixed_after(&scheme.template, b, decimal_ts))
                });
            if !bounded {
                return Err(err(
                    format!("{at}.key"),
                    "the body is not bounded in the signed template (only literals or a decimal timestamp before it, or after it): a captured delivery could be cut again into a body with another key; use the signature or a delimited header as the key",
                ));
            }
            KeySource::JsonPointer(pointer.clone())
        }
    };
    let retention = match raw.retention_seconds {
        Some(s) if s == 0 || s > MAX_RETENTION_SECONDS => {
            return Err(err(
                format!("{at}.retention_seconds"),
                format!("must be between 1 and {MAX_RETENTION_SECONDS}"),
            ))
        }
        Some(s) => Retention::Fixed(s.saturating_mul(1000)),
        None if scheme.timestamp.is_some() => {
            Retention::AfterWindow(raw.retention_margin_seconds.saturating_mul(1000))
        }
        None => Retention::Fixed(DEFAULT_UNTIMED_RETENTION_SECONDS.saturating_mul(1000)),
    };
    if let (Retention::Fixed(ms), Some(_)) = (retention, &scheme.timestamp) {
        if ms < tolerance_ms.saturating_mul(2) {
            notices.push((
                Level::Warn,
                format!(
                    "{at}.retention_seconds is shorter than twice the timestamp tolerance: a replay can still verify after its entry expired"
                ),
            ));
        }
    }
    if raw.retention_margin_seconds > 24 * 3600 {
        return Err(err(
            format!("{at}.retention_margin_seconds"),
            "must be at most 86400",
        ));
    }
    if raw.claim_timeout_seconds == 0 || raw.claim_timeout_seconds > 3600 {
        return Err(err(
            format!("{at}.claim_timeout_seconds"),
            "must be between 1 and 3600",
        ));
    }
    if let Some(bad) = raw
        .commit_statuses
        .iter()
        .find(|s| !(100..=599).contains(*s))
    {
        return Err(err(
            format!("{at}.commit_statuses"),
            format!("{bad} is not an HTTP status"),
        ));
    }
    if raw.capacity.is_some_and(|c| c == 0 || c > MAX_CAPACITY) {
        return Err(err(
            format!("{at}.capacity"),
            format!("must be between 1 and {MAX_CAPACITY}"),
        ));
    }
    let scope = raw.scope.clone().unwrap_or_else(|| name.to_string());
    if !is_policy_name(&scope) {
        return Err(err(
            format!("{at}.scope"),
            format!("'{scope}' must be 1-64 characters of a-z, 0-9, '_' or '-'"),
        ));
    }
    Ok(Some(DedupPolicy {
        source,
        retention,
        claim_timeout_ms: raw.claim_timeout_seconds.saturating_mul(1000),
        acknowledge: raw.on_duplicate == OnDuplicate::Acknowledge,
        commit_statuses: raw.commit_statuses.clone(),
        release_unknown: raw.on_unknown_outcome == OnUnknownOutcome::Release,
        capacity: raw.capacity.unwrap_or(0),
        scope,
        remote: None,
    }))
}

/// Whether a free-form part (header, body, path) precedes `{timestamp}` and another follows
/// it: then the signed text can be cut again around any decimal time that appears in it,
/// giving the same signature a new timestamp. (A method is a verified token: not free.)
fn timestamp_can_move(template: &[Part]) -> bool {
    let free = |p: &Part| !matches!(p, Part::Literal(_) | Part::Timestamp | Part::Method);
    template
        .iter()
        .position(|p| *p == Part::Timestamp)
        .is_some_and(|t| {
            template.iter().take(t).any(free) && template.iter().skip(t.saturating_add(1)).any(free)
        })
}

/// Whether the scheme's timestamp (if any) is written in decimal digits only.
fn decimal_timestamp(scheme: &Scheme) -> bool {
    scheme
        .timestamp
        .as_ref()
        .is_none_or(|t| t.unit != TimestampUnit::Rfc3339)
}

/// Whether the literal at `i` exists and its first (or last) byte is not a digit, so that a
/// decimal timestamp next to it ends (or starts) in one place only.
fn digit_free_edge(template: &[Part], i: Option<usize>, first: bool) -> bool {
    match i.and_then(|i| template.get(i)) {
        Some(Part::Literal(l)) => {
            let edge = if first { l.first() } else { l.last() };
            edge.is_some_and(|b| !b.is_ascii_digit())
        }
        _ => false,
    }
}

/// Whether everything before `pos` has one reading: literals, and decimal timestamps that a
/// non-digit literal ends.
fn fixed_before(template: &[Part], pos: usize, decimal_ts: bool) -> bool {
    (0..pos).all(|i| match template.get(i) {
        Some(Part::Literal(_)) => true,
        Some(Part::Timestamp) => decimal_ts && digit_free_edge(template, i.checked_add(1), true),
        _ => false,
    })
}

/// `fixed_before`, for everything after `pos`.
fn fixed_after(template: &[Part], pos: usize, decimal_ts: bool) -> bool {
    (pos.saturating_add(1)..template.len()).all(|i| match template.get(i) {
        Some(Part::Literal(_)) => true,
        Some(Part::Timestamp) => decimal_ts && digit_free_edge(template, i.checked_sub(1), false),
        _ => false,
    })
}

/// For a template header that is the dedup key: the bytes its value may not hold so that the
/// signed text splits around it one way only, or `None` when no value can be delimited. A
/// literal (or the template's end) must bound it on each side, and everything between it and
/// one end must be fixed: literals, or a decimal timestamp next to a literal that does not
/// start (or end, right of the id) with a digit.
fn delimited_header(template: &[Part], pos: usize, decimal_ts: bool) -> Option<Vec<u8>> {
    let literal_at = |i: Option<usize>| match i.map(|i| template.get(i)) {
        None | Some(None) => Some(&[][..]),
        Some(Some(Part::Literal(l))) => Some(l.as_slice()),
        Some(Some(_)) => None,
    };
    let before = literal_at(pos.checked_sub(1))?;
    let after = literal_at(Some(pos.saturating_add(1)))?;
    if !(fixed_before(template, pos, decimal_ts) || fixed_after(template, pos, decimal_ts)) {
        return None;
    }
    let mut separators: Vec<u8> = before.iter().chain(after).copied().collect();
    separators.sort_unstable();
    separators.dedup();
    Some(separators)
}

const MAX_ETCD_TIMEOUT_MS: u64 = 60_000;

fn compile_policy_store(at: &str, raw: &RawPolicyStore) -> Result<Option<EtcdStore>, ConfigError> {
    let RawPolicyStore::Etcd {
        cluster,
        prefix,
        authority,
        timeout_ms,
        on_error,
    } = raw
    else {
        return Ok(None);
    };
    let at = format!("{at}.store");
    let plain =
        |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
    if !plain(cluster) {
        return Err(err(
            format!("{at}.cluster"),
            "must name an Envoy cluster (1 to 255 visible ASCII characters)",
        ));
    }
    let authority = authority.as_deref().unwrap_or(cluster);
    if !plain(authority) {
        return Err(err(
            format!("{at}.authority"),
            "must be a host[:port] (1 to 255 visible ASCII characters)",
        ));
    }
    let prefix = prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX);
    if !plain(prefix) || prefix.len() > 128 || prefix.trim_matches('/').is_empty() {
        return Err(err(
            format!("{at}.prefix"),
            "must be 1 to 128 visible ASCII characters besides '/'",
        ));
    }
    if *timeout_ms == 0 || *timeout_ms > MAX_ETCD_TIMEOUT_MS {
        return Err(err(
            format!("{at}.timeout_ms"),
            format!("must be between 1 and {MAX_ETCD_TIMEOUT_MS}"),
        ));
    }
    Ok(Some(EtcdStore::new(
        cluster,
        authority,
        prefix,
        *timeout_ms,
        *on_error == OnStoreError::Allow,
    )))
}

pub fn compile_raw(raw: RawConfig, env: EnvLookup, options: Options) -> Result<Guard, ConfigError> {
    check_store(&raw.store)?;
    let prefix = store_prefix(&raw.store, options.plugin_name)?;
    let sds_config = match (&raw.sds_config, options.build) {
        (None, _) => None,
        (Some(_), Build::Wasm) => return Err(err("sds_config", NATIVE_ONLY)),
        (Some(source), Build::Native) => {
            if !source.is_object() {
                return Err(err(
                    "sds_config",
                    "must be an Envoy ConfigSource object, e.g. {\"path_config_source\": {\"path\": \"/etc/envoy/secrets.yaml\"}}",
                ));
            }
            Some(source.to_string())
        }
    };
    let mut sds = Vec::new();
    if raw.policies.is_empty() {
        return Err(err("policies", "must list at least one policy"));
    }
    let mut names = BTreeSet::new();
    let mut policies = Vec::with_capacity(raw.policies.len());
    let mut warnings = shared_secret_warnings(&raw.policies);
    let mut counters = stats::global_counters();
    for (i, p) in raw.policies.into_iter().enumerate() {
        let at = format!("policies[{i}]");
        if !names.insert(p.name.clone()) {
            return Err(err(
                format!("{at}.name"),
                format!("duplicate policy name '{}'", p.name),
            ));
        }
        let mut policy = compile_policy(
            &at,
            p,
            &mut Context {
                env,
                build: options.build,
                warnings: &mut warnings,
                counters: &mut counters,
                sds: &mut sds,
            },
        )?;
        // Policies on one etcd cluster share its lease cache (and its ahead-of-time grants).
        if let Some(remote) = policy.dedup.as_mut().and_then(|d| d.remote.as_mut()) {
            let first = policies
                .iter()
                .filter_map(|q: &Policy| q.dedup.as_ref().and_then(|d| d.remote.as_ref()))
                .find(|r| r.cluster == remote.cluster);
            if let Some(first) = first {
                remote.share_leases(first);
            }
        }
        policies.push(policy);
    }
    check_scopes(&policies)?;
    let mut store = compile_shares(&raw.store, &prefix, &mut policies)?;
    if options.build == Build::Native {
        store = store.in_memory();
    }
    Ok(Guard::new(
        raw.default == DefaultAction::Deny,
        policies,
        counters,
        warnings,
        store,
        raw.store.sweep_interval_seconds.saturating_mul(1000),
        (sds, sds_config),
    ))
}

/// Two replay-protected policies that share a secret but not a `dedup.scope`: a sender that
/// does not sign the URL makes a delivery captured on one route verify on the other, where it
/// is new. Named by policy and secret source, never by value.
fn shared_secret_warnings(policies: &[RawPolicy]) -> Vec<(Level, String)> {
    let scope = |p: &RawPolicy| p.dedup.scope.clone().unwrap_or_else(|| p.name.clone());
    let mut warnings = Vec::new();
    for (i, p) in policies.iter().enumerate().filter(|(_, p)| p.dedup.enabled) {
        let earlier = policies.iter().take(i).enumerate();
        for (j, q) in earlier.filter(|(_, q)| q.dedup.enabled && scope(q) != scope(p)) {
            let Some(shared) = p.secrets.iter().find(|s| q.secrets.contains(s)) else {
                continue;
            };
            let source = match shared {
                RawSecret::Env(name) => format!("env {name}"),
                RawSecret::Sds(name) => format!("sds {name}"),
                RawSecret::Inline(_) => "an inline secret".to_string(),
            };
            warnings.push((
                Level::Warn,
                format!(
                    "policies[{i}] ('{}') and policies[{j}] ('{}') share a secret ({source}) but not a dedup.scope: a delivery admitted on one route can be admitted once more on the other; give each route its own secret, or the same dedup.scope",
                    p.name, q.name
                ),
            ));
        }
    }
    warnings
}

/// Policies in one `dedup.scope` must claim in one store (the local one, or the same etcd
/// cluster and prefix) and keep a delivery as long: otherwise the one that forgets first
/// admits it again.
fn check_scopes(policies: &[Policy]) -> Result<(), ConfigError> {
    for (i, p) in policies.iter().enumerate() {
        let Some(d) = &p.dedup else { continue };
        let first = policies.iter().take(i).find_map(|q| {
            let qd = q.dedup.as_ref()?;
            (qd.scope == d.scope).then_some((q, qd))
        });
        let Some((q, qd)) = first else { continue };
        let same_store = match (&qd.remote, &d.remote) {
            (None, None) => true,
            (Some(a), Some(b)) => a.cluster == b.cluster && a.prefix() == b.prefix(),
            _ => false,
        };
        let same_retention = qd.retention == d.retention
            && (matches!(d.retention, Retention::Fixed(_)) || q.tolerance_ms == p.tolerance_ms);
        let why = match (same_store, same_retention) {
            (false, _) => "replay stores differ: the policies of one scope must use the same store",
            (_, false) => "retention differs: the policies of one scope must keep a delivery as long (the same dedup.retention_seconds, or the same timestamp tolerance and retention margin)",
            _ => continue,
        };
        return Err(err(
            format!("policies[{i}].dedup.scope"),
            format!("'{}' joins policies whose {why}", d.scope),
        ));
    }
    Ok(())
}

const NATIVE_ONLY: &str =
    "only the native build (envoy.filters.http.dynamic_modules) supports this";

/// What compiling a policy adds to the whole configuration.
struct Context<'a, 'e> {
    env: EnvLookup<'e>,
    build: Build,
    warnings: &'a mut Vec<(Level, String)>,
    counters: &'a mut Vec<String>,
    /// SDS secret names, deduplicated across policies.
    sds: &'a mut Vec<String>,
}

fn compile_policy(at: &str, p: RawPolicy, cx: &mut Context) -> Result<Policy, ConfigError> {
    if !is_policy_name(&p.name) {
        return Err(err(
            format!("{at}.name"),
            format!(
                "'{}' must be 1-64 characters of a-z, 0-9, '_' or '-'",
                p.name
            ),
        ));
    }
    let matcher = match (&p.matcher, cx.build) {
        (Some(m), _) => Matcher::compile(m).map_err(|m| err(format!("{at}.match"), m))?,
        // Selected only by routes that name it (per-route configuration).
        (None, Build::Native) => Matcher::never(),
        (None, Build::Wasm) => {
            return Err(err(
                format!("{at}.match"),
                "required: the wasm build has no per-route configuration, so each policy says which requests it handles",
            ))
        }
    };

    if p.accept_legacy_sha1 && p.provider != Provider::Github {
        return Err(err(
            format!("{at}.accept_legacy_sha1"),
            "only applies to provider 'github'",
        ));
    }
    let scheme = match (p.provider, p.custom) {
        (Provider::Custom, Some(c)) => {
            let scheme = custom_scheme(&format!("{at}.custom"), c)?;
            if timestamp_can_move(&scheme.template) {
                cx.warnings.push((
                    Level::Warn,
                    format!("{at}.custom.signed_template: a header, the body or the path precedes {{timestamp}} and another follows it, so a captured delivery can be cut again around a time found in its own text and verify with a fresh timestamp once its replay entry has expired; put {{timestamp}} before every header and the body, or set dedup.retention_seconds to the longest replay you accept"),
                ));
            }
            scheme
        }
        (Provider::Custom, None) => {
            return Err(err(
                format!("{at}.custom"),
                "required when provider is 'custom'",
            ))
        }
        (other, Some(_)) => {
            return Err(err(
                format!("{at}.custom"),
                format!(
                    "only allowed with provider 'custom', not '{}'",
                    other.name()
                ),
            ))
        }
        (Provider::Square, None) => match &p.signed_url {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                presets::square(url)
            }
            _ => return Err(err(
                format!("{at}.signed_url"),
                "square needs the notification URL exactly as registered at Square (http(s)://...)",
            )),
        },
        (Provider::Twilio | Provider::Hubspot | Provider::Plivo, None) => match &p.public_origin {
            Some(origin)
                if (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.trim_start_matches("https://").trim_start_matches("http://").contains('/') =>
            {
                match p.provider {
                    Provider::Twilio => presets::twilio(origin),
                    Provider::Plivo => presets::plivo(origin),
                    _ => presets::hubspot(origin),
                }
            }
            _ => {
                return Err(err(
                    format!("{at}.public_origin"),
                    format!("{} needs the scheme and host the sender used, e.g. \"https://hooks.example.com\" (no path)", p.provider.name()),
                ))
            }
        },
        (other, None) => presets::scheme(other, p.accept_legacy_sha1)
            .ok_or_else(|| err(format!("{at}.provider"), "unknown provider"))?,
    };
    if p.public_origin.is_some()
        && !matches!(
            p.provider,
            Provider::Twilio | Provider::Hubspot | Provider::Plivo
        )
    {
        return Err(err(
            format!("{at}.public_origin"),
            "only applies to providers 'twilio', 'hubspot' and 'plivo'",
        ));
    }
    if p.signed_url.is_some() && p.provider != Provider::Square {
        return Err(err(
            format!("{at}.signed_url"),
            "only applies to provider 'square'",
        ));
    }
    let challenge = match (p.answer_challenges, p.provider) {
        (false, _) => None,
        (true, Provider::Zoom) => Some(Challenge::ZoomUrlValidation),
        (true, Provider::Twitch) => Some(Challenge::TwitchCallbackVerification),
        (true, Provider::Meta) => Some(Challenge::MetaSubscribe),
        (true, Provider::Lark) => Some(Challenge::LarkUrlVerification),
        (true, other) => {
            return Err(err(
                format!("{at}.answer_challenges"),
                format!(
                    "only applies to 'zoom', 'twitch', 'meta' and 'lark', not '{}'",
                    other.name()
                ),
            ))
        }
    };
    let verify_token = match (&p.verify_token, challenge) {
        (Some(raw), Some(Challenge::MetaSubscribe | Challenge::LarkUrlVerification)) => {
            compile_verify_token(&format!("{at}.verify_token"), &p.name, raw, cx)?
        }
        (None, Some(Challenge::MetaSubscribe)) => {
            return Err(err(
                format!("{at}.verify_token"),
                "required when a 'meta' policy answers the subscription handshake (the token set in Meta's dashboard)",
            ))
        }
        (None, Some(Challenge::LarkUrlVerification)) => {
            return Err(err(
                format!("{at}.verify_token"),
                "required when a 'lark' policy answers url_verification (the app's Verification Token)",
            ))
        }
        (Some(_), _) => {
            return Err(err(
                format!("{at}.verify_token"),
                "only applies to providers 'meta' and 'lark' with answer_challenges",
            ))
        }
        (None, _) => None,
    };

    if p.secrets.is_empty() || p.secrets.len() > MAX_SECRETS {
        return Err(err(
            format!("{at}.secrets"),
            format!("must list 1 to {MAX_SECRETS} secrets"),
        ));
    }
    let configured = p.secrets.len();
    let decode_secret = |text: &str| {
        scheme
            .key_encoding
            .decode(text)
            .filter(|k| scheme.key_fits(k))
    };
    let keys = load_secrets(
        &format!("{at}.secrets"),
        &p.name,
        &p.secrets,
        &decode_secret,
        (bad_key_message(scheme.key_encoding), "secret"),
        cx,
    )?;

    let tolerance_s = p
        .timestamp_tolerance_seconds
        .unwrap_or(scheme.default_tolerance_s);
    if tolerance_s == 0 || tolerance_s > MAX_TOLERANCE_SECONDS {
        return Err(err(
            format!("{at}.timestamp_tolerance_seconds"),
            format!("must be between 1 and {MAX_TOLERANCE_SECONDS}"),
        ));
    }
    if p.max_body_bytes == 0 || p.max_body_bytes > MAX_BODY_LIMIT {
        return Err(err(
            format!("{at}.max_body_bytes"),
            format!("must be between 1 and {MAX_BODY_LIMIT}"),
        ));
    }

    let methods = compile_methods(at, p.methods.as_deref())?;
    let mut statuses = Reason::ALL.map(Reason::default_status);
    for (code, status) in &p.status_overrides {
        let sat = format!("{at}.status_overrides.{code}");
        let reason = Reason::from_code(code).ok_or_else(|| {
            let valid: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
            err(
                &sat,
                format!("unknown reason code (valid: {})", valid.join(", ")),
            )
        })?;
        if !(200..=599).contains(status) {
            return Err(err(&sat, "status must be between 200 and 599"));
        }
        if let Some(slot) = statuses.get_mut(reason.index()) {
            *slot = *status;
        }
    }

    let mut dedup = compile_dedup(
        at,
        &p.name,
        &p.dedup,
        p.provider,
        &scheme,
        tolerance_s.saturating_mul(1000),
        cx.warnings,
    )?;
    match (&mut dedup, compile_policy_store(at, &p.store)?) {
        (Some(d), remote) => d.remote = remote,
        (None, Some(_)) => {
            return Err(err(
                format!("{at}.store"),
                "an etcd store holds replay claims, but this policy has no replay protection (dedup is disabled or impossible for its provider)",
            ))
        }
        (None, None) => {}
    }

    let decrypt = if p.provider == Provider::Lark {
        if p.decrypt.is_some() {
            return Err(err(
                format!("{at}.decrypt"),
                "a 'lark' policy always opens Lark's envelope with its secrets (the Encrypt Key): remove decrypt",
            ));
        }
        Some(lark_decrypt(at, &p.name, &p.secrets, cx)?)
    } else {
        compile_decrypt(at, &p.name, p.decrypt.as_ref(), cx)?
    };

    let counter_base = cx.counters.len();
    cx.counters.extend(stats::policy_counters(&p.name));
    Ok(Policy {
        dedup,
        decrypt,
        challenge,
        verify_token,
        name: p.name,
        matcher,
        scheme,
        secrets: keys,
        secrets_configured: configured,
        tolerance_ms: tolerance_s.saturating_mul(1000),
        max_body_bytes: p.max_body_bytes,
        methods,
        statuses,
        counter_base,
    })
}

const BAD_AES_KEY: &str =
    "must be a 32-byte AES-256 key: base64 (default) or hex (key_encoding: \"hex\")";

/// A policy's `decrypt`.
fn compile_decrypt(
    at: &str,
    policy: &str,
    raw: Option<&RawDecrypt>,
    cx: &mut Context,
) -> Result<Option<Decrypt>, ConfigError> {
    let Some(d) = raw else {
        return Ok(None);
    };
    let at = format!("{at}.decrypt");
    let content_type = d
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".to_string());
    if content_type.is_empty()
        || content_type.len() > 128
        || !content_type
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(err(
            format!("{at}.content_type"),
            "must be 1 to 128 printable ASCII characters",
        ));
    }
    let field = |name: &str, value: &Option<String>, default: &str| {
        let v = value.clone().unwrap_or_else(|| default.to_string());
        if v.is_empty() || v.len() > 64 {
            return Err(err(format!("{at}.{name}"), "must be 1 to 64 characters"));
        }
        Ok(v)
    };
    match d.cipher {
        DecryptCipher::Aes256Gcm => {
            if d.keys.is_empty() || d.keys.len() > MAX_SECRETS {
                return Err(err(
                    format!("{at}.keys"),
                    format!("must list 1 to {MAX_SECRETS} keys"),
                ));
            }
            let nonce = match (&d.nonce_field, &d.nonce_header) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("{at}.nonce_header"),
                        "set nonce_field or nonce_header, not both",
                    ))
                }
                (None, Some(h)) => NonceSource::Header(header(&at, "nonce_header", h)?),
                (f, None) => NonceSource::Field(field("nonce_field", f, DEFAULT_NONCE_FIELD)?),
            };
            let ciphertext_field = field(
                "ciphertext_field",
                &d.ciphertext_field,
                DEFAULT_CIPHERTEXT_FIELD,
            )?;
            if nonce == NonceSource::Field(ciphertext_field.clone()) {
                return Err(err(
                    format!("{at}.nonce_field"),
                    "must differ from ciphertext_field",
                ));
            }
            let key_encoding = d.key_encoding.unwrap_or(KeyEncoding::Base64);
            if !matches!(key_encoding, KeyEncoding::Base64 | KeyEncoding::Hex) {
                return Err(err(format!("{at}.key_encoding"), "must be base64 or hex"));
            }
            let cipher = Cipher::AesGcm {
                ciphertext_field,
                nonce,
            };
            let decode = |text: &str| cipher.derive_key(key_encoding, text);
            let keys = load_secrets(
                &format!("{at}.keys"),
                policy,
                &d.keys,
                &decode,
                (BAD_AES_KEY, "decryption key"),
                cx,
            )?;
            Ok(Some(Decrypt {
                cipher,
                keys,
                keys_configured: d.keys.len(),
                key_encoding,
                content_type,
            }))
        }
    }
}

/// Lark's envelope, opened with the policy's own secrets: the Encrypt Key both signs and
/// (hashed) encrypts, so rotation lists the same keys for both.
fn lark_decrypt(
    at: &str,
    policy: &str,
    secrets: &[RawSecret],
    cx: &mut Context,
) -> Result<Decrypt, ConfigError> {
    let cipher = Cipher::LarkCbc;
    let decode = |text: &str| cipher.derive_key(KeyEncoding::Utf8, text);
    let keys = load_secrets(
        &format!("{at}.secrets"),
        policy,
        secrets,
        &decode,
        ("must be the app's Encrypt Key", "encrypt key"),
        cx,
    )?;
    Ok(Decrypt {
        cipher,
        keys,
        keys_configured: secrets.len(),
        key_encoding: KeyEncoding::Utf8,
        content_type: "application/json".to_string(),
    })
}

/// Meta's handshake token: loaded like a secret, kept as text bytes (it is compared, not a
/// key). An unset `env` token is a warning: the handshake then fails closed.
fn compile_verify_token(
    at: &str,
    policy: &str,
    raw: &RawSecret,
    cx: &mut Context,
) -> Result<Option<SecretSlot>, ConfigError> {
    let valid = |t: &str| !t.is_empty() && t.len() <= 256;
    match raw {
        RawSecret::Inline(text) if valid(text) => {
            Ok(Some(SecretSlot::Key(text.as_bytes().to_vec())))
        }
        RawSecret::Inline(_) => Err(err(format!("{at}.inline"), "must be 1 to 256 bytes")),
        RawSecret::Env(name) => match (cx.env)(name).filter(|t| valid(t)) {
            Some(text) => Ok(Some(SecretSlot::Key(text.into_bytes()))),
            None => {
                cx.warnings.push((
                    Level::Warn,
                    format!(
                        "policy '{policy}': verify_token: environment variable {name} is unset, empty or longer than 256 bytes; the subscription handshake is rejected with secret_unavailable"
                    ),
                ));
                Ok(None)
            }
        },
        RawSecret::Sds(name) => sds_slot(at, name, cx).map(Some),
    }
}

/// An SDS secret (native build only) as a slot read per request; one slot per name across
/// the configuration.
fn sds_slot(at: &str, name: &str, cx: &mut Context) -> Result<SecretSlot, ConfigError> {
    if cx.build == Build::Wasm {
        return Err(err(format!("{at}.sds"), NATIVE_ONLY));
    }
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(
            format!("{at}.sds"),
            "must name an Envoy generic secret (1 to 255 visible ASCII characters)",
        ));
    }
    let index = match cx.sds.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            cx.sds.push(name.to_string());
            cx.sds.len().saturating_sub(1)
        }
    };
    Ok(SecretSlot::Sds(index))
}

/// Loads a list of secrets in order: inline ones decoded now (a bad one is a config error),
/// SDS ones as slots read per request, env ones decoded now (an unset or bad one is skipped
/// with a notice: the config may be shared across deployments, and requests then fail closed).
/// `(bad_key, what)`: the message for an undecodable one, and what the list holds.
fn load_secrets(
    at: &str,
    policy: &str,
    secrets: &[RawSecret],
    decode: &dyn Fn(&str) -> Option<Vec<u8>>,
    (bad_key, what): (&str, &str),
    cx: &mut Context,
) -> Result<Vec<SecretSlot>, ConfigError> {
    let mut keys = Vec::with_capacity(secrets.len());
    let mut unusable = Vec::new();
    for (j, secret) in secrets.iter().enumerate() {
        let sat = format!("{at}[{j}]");
        match secret {
            RawSecret::Inline(text) => {
                let key = decode(text).ok_or_else(|| err(&sat, bad_key))?;
                keys.push(SecretSlot::Key(key));
            }
            RawSecret::Sds(name) => keys.push(sds_slot(&sat, name, cx)?),
            RawSecret::Env(name) => {
                if name.is_empty() {
                    return Err(err(
                        format!("{sat}.env"),
                        "environment variable name is empty",
                    ));
                }
                match (cx.env)(name).filter(|v| !v.is_empty()) {
                    None => unusable.push(format!(
                        "policy '{policy}': environment variable {name} is unset or empty (is it in vm_config.environment_variables.host_env_keys?)"
                    )),
                    Some(text) => match decode(&text) {
                        Some(key) => keys.push(SecretSlot::Key(key)),
                        None => unusable.push(format!(
                            "policy '{policy}': environment variable {name}: {bad_key}"
                        )),
                    },
                }
            }
        }
    }
    // An unset rotation slot is routine (info); a policy left with no key is not (warn).
    let level = if keys.is_empty() {
        Level::Warn
    } else {
        Level::Info
    };
    cx.warnings.extend(unusable.into_iter().map(|m| (level, m)));
    if keys.is_empty() {
        cx.warnings.push((
            Level::Warn,
            format!("policy '{policy}': no usable {what}; its requests are rejected with secret_unavailable"),
        ));
    }
    Ok(keys)
}

/// Methods a policy verifies: `POST` unless configured. Upper-cased; a request's method must
/// equal one exactly (HTTP methods are case-sensitive).
fn compile_methods(at: &str, raw: Option<&[String]>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(vec!["POST".to_string()]);
    };
    if raw.is_empty() || raw.len() > 8 {
        return Err(err(format!("{at}.methods"), "must list 1 to 8 methods"));
    }
    let mut methods: Vec<String> = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        if m.is_empty() || m.len() > 32 || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err(
                format!("{at}.methods[{i}]"),
                format!("'{m}' is not an HTTP method"),
            ));
        }
        let upper = m.to_ascii_uppercase();
        if !methods.contains(&upper) {
            methods.push(upper);
        }
    }
    Ok(methods)
}

fn bad_key_message(encoding: KeyEncoding) -> &'static str {
    match encoding {
        KeyEncoding::Utf8 => "secret is empty",
        KeyEncoding::Base64 => {
            "secret is not non-empty standard base64 (for ECDSA: of a P-256 SubjectPublicKeyInfo)"
        }
        KeyEncoding::Whsec => "secret is not 'whsec_' followed by non-empty base64",
        KeyEncoding::Hex => "key is not the hex of a 32-byte public key",
        KeyEncoding::Whpk => "key is not 'whpk_' followed by the base64 of a 32-byte public key",
    }
}

fn header(at: &str, field: &str, name: &str) -> Result<String, ConfigError> {
    if is_header_name(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(err(
            format!("{at}.{field}"),
            format!("'{name}' is not a valid header name"),
        ))
    }
}

fn custom_scheme(at: &str, c: RawCustom) -> Result<Scheme, ConfigError> {
    let sig_header = header(at, "signature_header", &c.signature_header)?;
    if c.signature_prefix.len() > 64 {
        return Err(err(
            format!("{at}.signature_prefix"),
            "at most 64 characters",
        ));
    }
    let template =
        template::parse(&c.signed_template).map_err(|m| err(format!("{at}.signed_template"), m))?;
    if !template.contains(&Part::Body) {
        return Err(err(
            format!("{at}.signed_template"),
            "must include {body}: a signature that does not cover the body protects nothing",
        ));
    }
    let signs_timestamp = template.contains(&Part::Timestamp);
    let timestamp = match (&c.timestamp_header, signs_timestamp) {
        (Some(h), true) => Some(TimestampSpec {
            source: TimestampSource::Header(header(at, "timestamp_header", h)?),
            unit: c.timestamp_unit,
        }),
        (None, false) => None,
        (Some(_), false) => {
            return Err(err(
                format!("{at}.signed_template"),
                "timestamp_header is set but the template has no {timestamp}: an unsigned timestamp cannot bound replays",
            ))
        }
        (None, true) => {
            return Err(err(
                format!("{at}.timestamp_header"),
                "required because signed_template uses {timestamp}",
            ))
        }
    };
    let delivery_id = match &c.delivery_id_header {
        Some(h) => Some(DeliveryId::Header(header(at, "delivery_id_header", h)?)),
        None => None,
    };
    Ok(Scheme {
        sources: vec![SigSource {
            headers: vec![sig_header],
            format: SigFormat::Single {
                prefix: c.signature_prefix,
            },
            algorithm: c.algorithm,
            encoding: c.encoding,
        }],
        timestamp,
        template,
        key_encoding: c.secret_encoding,
        alternates: Vec::new(),
        delivery_id,
        default_tolerance_s: crate::config::DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
    })
}
