//! Raw plugin configuration as users write it (the wasm filter's `configuration` JSON).
//! Only shape is checked here (serde, unknown fields rejected); `compile` checks meaning.

use std::collections::BTreeMap;

use serde::Deserialize;

pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// What happens to a request no policy matches.
    #[serde(default)]
    pub default: DefaultAction,
    pub policies: Vec<RawPolicy>,
    /// The replay store shared by all policies.
    #[serde(default)]
    pub store: RawStore,
    /// Native build: where `{"sds": "name"}` secrets come from, as the JSON of an Envoy
    /// `ConfigSource`, with `{name}` standing for the secret's name (e.g.
    /// `{"path_config_source": {"path": "/etc/envoy/secrets/{name}.yaml"}}`: a file holds one
    /// secret), or `{"ads": {}}`; absent: secrets in the bootstrap's `static_resources.secrets`.
    #[serde(default)]
    pub sds_config: Option<serde_json::Value>,
}

pub const DEFAULT_CAPACITY: u64 = 100_000;
pub const DEFAULT_SWEEP_INTERVAL_SECONDS: u64 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Prefix of the shared-data keys; defaults to `webhook_guard/<plugin name>` so two
    /// plugins sharing a `vm_id` never collide.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// Shard keys in all, split among the policies in proportion to their shares. Unset: each
    /// policy gets one shard per `ENTRIES_PER_SHARD` entries of its share (bounded).
    #[serde(default)]
    pub shards: Option<u64>,
    /// Most live entries (in flight or done) across all shards; beyond it: `store_full`.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    #[serde(default = "default_sweep")]
    pub sweep_interval_seconds: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            key_prefix: None,
            shards: None,
            capacity: DEFAULT_CAPACITY,
            sweep_interval_seconds: DEFAULT_SWEEP_INTERVAL_SECONDS,
        }
    }
}

fn default_capacity() -> u64 {
    DEFAULT_CAPACITY
}

fn default_sweep() -> u64 {
    DEFAULT_SWEEP_INTERVAL_SECONDS
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: String,
    /// Which requests the policy handles. Native build: may be left out when routes select
    /// the policy by name in their per-route configuration.
    #[serde(rename = "match", default)]
    pub matcher: Option<RawMatch>,
    pub provider: Provider,
    /// Required when `provider` is `custom`, refused otherwise.
    #[serde(default)]
    pub custom: Option<RawCustom>,
    /// Ordered: the first is the current secret, the others are accepted during rotation.
    pub secrets: Vec<RawSecret>,
    /// Default: the preset's (300 s; Paddle 5 s, Linear 60 s, Twitch 600 s).
    #[serde(default)]
    pub timestamp_tolerance_seconds: Option<u64>,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Reason code -> HTTP status for this policy's rejections.
    #[serde(default)]
    pub status_overrides: BTreeMap<String, u16>,
    /// GitHub only: also accept the legacy `X-Hub-Signature: sha1=` when no sha256 header is sent.
    #[serde(default)]
    pub accept_legacy_sha1: bool,
    /// Replay protection (on by default).
    #[serde(default)]
    pub dedup: RawDedup,
    /// Square only: the notification URL exactly as registered at Square (it is signed, and
    /// Envoy never sees it as the sender did).
    #[serde(default)]
    pub signed_url: Option<String>,
    /// Twilio and HubSpot only: scheme, host (and port) the sender used, e.g.
    /// `https://hooks.example.com`; the request's path and query follow it in the signed URL.
    #[serde(default)]
    pub public_origin: Option<String>,
    /// Zoom, Twitch and Meta only: answer the provider's endpoint challenge in the filter.
    #[serde(default)]
    pub answer_challenges: bool,
    /// Meta with `answer_challenges` only (and required there): the verify token Meta sends in
    /// the GET subscription handshake, as a secret (`env`, `inline` or `sds`).
    #[serde(default)]
    pub verify_token: Option<RawSecret>,
    /// Where this policy's dedup claims live: this Envoy's shared data (default) or etcd,
    /// shared by every replica.
    #[serde(default)]
    pub store: RawPolicyStore,
    /// Methods this policy verifies (default `["POST"]`); any other method on its requests is
    /// answered 405 `method_not_allowed` before the body is read.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Open an encrypted payload once the delivery is verified and forward the plaintext.
    #[serde(default)]
    pub decrypt: Option<RawDecrypt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecryptCipher {
    /// `{"encrypted": b64(ciphertext || tag), "nonce": b64(12 bytes)}`, AES-256-GCM.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

pub const DEFAULT_CIPHERTEXT_FIELD: &str = "encrypted";
pub const DEFAULT_NONCE_FIELD: &str = "nonce";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecrypt {
    pub cipher: DecryptCipher,
    /// Ordered like `secrets`: the first is the current key, the others are tried during
    /// rotation.
    #[serde(default)]
    pub keys: Vec<RawSecret>,
    /// How key text becomes the 32 key bytes: `base64` (default) or `hex`.
    #[serde(default)]
    pub key_encoding: Option<KeyEncoding>,
    /// Envelope field holding the ciphertext (default `encrypted`).
    #[serde(default)]
    pub ciphertext_field: Option<String>,
    /// Envelope field holding the nonce (default `nonce`); exclusive with `nonce_header`.
    #[serde(default)]
    pub nonce_field: Option<String>,
    /// Take the nonce from this request header instead of the envelope.
    #[serde(default)]
    pub nonce_header: Option<String>,
    /// Content type of the forwarded plaintext (default `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
}

pub const DEFAULT_ETCD_TIMEOUT_MS: u64 = 500;
pub const DEFAULT_ETCD_PREFIX: &str = "webhook-guard/dedup";

#[derive(Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPolicyStore {
    /// Envoy shared data: one proxy process.
    #[default]
    Local,
    /// etcd over its v3 JSON gateway, through an Envoy cluster: all replicas.
    Etcd {
        /// Name of the Envoy cluster that reaches etcd's client port.
        cluster: String,
        /// Key prefix in etcd.
        #[serde(default)]
        prefix: Option<String>,
        /// `:authority` of the calls; the cluster name when absent.
        #[serde(default)]
        authority: Option<String>,
        /// Per call; the request waits at most this long for each etcd round trip.
        #[serde(default = "default_etcd_timeout")]
        timeout_ms: u64,
        #[serde(default)]
        on_error: OnStoreError,
    },
}

fn default_etcd_timeout() -> u64 {
    DEFAULT_ETCD_TIMEOUT_MS
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// 503 `store_unavailable`: nothing passes unprotected (fail closed).
    #[default]
    Deny,
    /// Forward without a claim, counted and logged: availability over replay protection.
    Allow,
}

pub const DEFAULT_RETENTION_MARGIN_SECONDS: u64 = 60;
pub const DEFAULT_UNTIMED_RETENTION_SECONDS: u64 = 24 * 3600;
pub const DEFAULT_CLAIM_TIMEOUT_SECONDS: u64 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDedup {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where the key comes from; the preset's choice when absent.
    #[serde(default)]
    pub key: Option<RawDedupKey>,
    /// How long a delivery stays "done". Default: the timestamp tolerance plus
    /// `retention_margin_seconds` after the signed timestamp; 24 h for schemes without one.
    #[serde(default)]
    pub retention_seconds: Option<u64>,
    #[serde(default = "default_margin")]
    pub retention_margin_seconds: u64,
    /// An in-flight claim whose request never finished expires after this.
    #[serde(default = "default_claim_timeout")]
    pub claim_timeout_seconds: u64,
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
    /// Upstream statuses that commit a delivery besides 2xx (e.g. 409 from an idempotent app).
    #[serde(default)]
    pub commit_statuses: Vec<u16>,
    /// Forwarded, but no answer came back (client or upstream reset, upstream timeout): the
    /// backend may have processed it. `keep` (default) keeps it as delivered; `release` lets
    /// the next copy through (for senders that retry and idempotent backends).
    #[serde(default)]
    pub on_unknown_outcome: OnUnknownOutcome,
    /// This policy's share of the local store (`store.capacity`), in entries. Default: an
    /// equal split of what the other policies leave.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Policies naming one scope share their deliveries: one admitted under any of them is a
    /// replay to all (for routes that share a secret, so that a delivery captured on one route
    /// cannot be admitted again on another). Default: the policy's own name.
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnknownOutcome {
    /// Kept as delivered: a replay never gets through; a lost delivery needs reconciling.
    #[default]
    Keep,
    /// Released: the next copy (the sender's retry, or a replay) is forwarded.
    Release,
}

impl Default for RawDedup {
    fn default() -> Self {
        RawDedup {
            enabled: true,
            key: None,
            retention_seconds: None,
            retention_margin_seconds: DEFAULT_RETENTION_MARGIN_SECONDS,
            claim_timeout_seconds: DEFAULT_CLAIM_TIMEOUT_SECONDS,
            on_duplicate: OnDuplicate::Reject,
            commit_statuses: Vec::new(),
            on_unknown_outcome: OnUnknownOutcome::Keep,
            capacity: None,
            scope: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_margin() -> u64 {
    DEFAULT_RETENTION_MARGIN_SECONDS
}

fn default_claim_timeout() -> u64 {
    DEFAULT_CLAIM_TIMEOUT_SECONDS
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// 409 `replayed`.
    #[default]
    Reject,
    /// 200 `{"status":"duplicate"}`, so the provider stops retrying.
    Acknowledge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawDedupKey {
    /// The verified MAC.
    Signature,
    /// A header the signed template covers.
    Header { name: String },
    /// A JSON pointer into the body (falls back to the signature when absent).
    JsonPointer { pointer: String },
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// All given fields must match; at least one is required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Envoy route name (`xds.route_name`), exact.
    #[serde(default)]
    pub route_name: Option<String>,
    /// Prefix of the request path (query string excluded).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Host, case-insensitive; without a port it matches any port.
    #[serde(default)]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Github,
    Stripe,
    Slack,
    Shopify,
    StandardWebhooks,
    Svix,
    Zoom,
    Paddle,
    Twitch,
    Pagerduty,
    Linear,
    Intercom,
    Bitbucket,
    Jira,
    Gitlab,
    Square,
    Discord,
    Sendgrid,
    Twilio,
    #[serde(rename = "standard-webhooks-v1a")]
    StandardWebhooksV1a,
    Paystack,
    Razorpay,
    LemonSqueezy,
    Vercel,
    Woocommerce,
    Typeform,
    Mux,
    Sentry,
    Calendly,
    Meta,
    Telnyx,
    Hubspot,
    Mailgun,
    Adyen,
    Vonage,
    Plivo,
    Lark,
    Custom,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Stripe => "stripe",
            Provider::Slack => "slack",
            Provider::Shopify => "shopify",
            Provider::StandardWebhooks => "standard-webhooks",
            Provider::Svix => "svix",
            Provider::Zoom => "zoom",
            Provider::Paddle => "paddle",
            Provider::Twitch => "twitch",
            Provider::Pagerduty => "pagerduty",
            Provider::Linear => "linear",
            Provider::Intercom => "intercom",
            Provider::Bitbucket => "bitbucket",
            Provider::Jira => "jira",
            Provider::Gitlab => "gitlab",
            Provider::Square => "square",
            Provider::Discord => "discord",
            Provider::Sendgrid => "sendgrid",
            Provider::Twilio => "twilio",
            Provider::StandardWebhooksV1a => "standard-webhooks-v1a",
            Provider::Paystack => "paystack",
            Provider::Razorpay => "razorpay",
            Provider::LemonSqueezy => "lemon-squeezy",
            Provider::Vercel => "vercel",
            Provider::Woocommerce => "woocommerce",
            Provider::Typeform => "typeform",
            Provider::Mux => "mux",
            Provider::Sentry => "sentry",
            Provider::Calendly => "calendly",
            Provider::Meta => "meta",
            Provider::Telnyx => "telnyx",
            Provider::Hubspot => "hubspot",
            Provider::Mailgun => "mailgun",
            Provider::Adyen => "adyen",
            Provider::Vonage => "vonage",
            Provider::Plivo => "plivo",
            Provider::Lark => "lark",
            Provider::Custom => "custom",
        }
    }
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSecret {
    /// Name of an environment variable passed to the VM (`host_env_keys`).
    Env(String),
    /// The secret itself, in the config (prefer `env`).
    Inline(String),
    /// Native build: an Envoy generic secret by name, delivered by SDS (see `sds_config`) and
    /// read per request, so rotating it needs no restart.
    Sds(String),
}

// Never print secret material, even in debug output.
impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawSecret::Env(name) => write!(f, "Env({name})"),
            RawSecret::Sds(name) => write!(f, "Sds({name})"),
            RawSecret::Inline(_) => f.write_str("Inline([REDACTED])"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustom {
    pub signature_header: String,
    /// Text before the encoded MAC in the header value, e.g. `sha256=`.
    #[serde(default)]
    pub signature_prefix: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub encoding: Encoding,
    /// Signed bytes: literal text with `{body}`, `{timestamp}`, `{header:NAME}`, `{method}`,
    /// `{path}`; `{{` and `}}` stand for braces.
    pub signed_template: String,
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    #[serde(default)]
    pub secret_encoding: KeyEncoding,
    /// Header logged as the delivery id (informational only, may be unsigned).
    #[serde(default)]
    pub delivery_id_header: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    HmacSha256,
    HmacSha1,
    HmacSha512,
    /// A public-key signature (Discord, Standard Webhooks `v1a`): the secret is the sender's
    /// 32-byte public key.
    Ed25519,
    /// ECDSA on P-256 with SHA-256, DER signatures (SendGrid): the secret is the sender's public
    /// key as base64 SubjectPublicKeyInfo.
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
    /// Plain SHA-256 over signed bytes that include the secret (Lark: timestamp, nonce, key,
    /// body). Not a MAC (a length extension can append to the body), so only presets whose
    /// body must then parse as one exact envelope use it; never configurable.
    #[serde(skip)]
    Sha256,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    #[default]
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Milliseconds,
    /// RFC 3339 date-time (Twitch), e.g. `2023-07-19T10:11:12.630662Z`.
    #[serde(rename = "rfc3339")]
    Rfc3339,
}

/// How secret text becomes HMAC key bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyEncoding {
    /// The text's UTF-8 bytes (GitHub, Stripe incl. its `whsec_` prefix, Slack, Shopify).
    #[default]
    Utf8,
    /// Standard base64 of the key bytes.
    Base64,
    /// Standard Webhooks: optional `whsec_` prefix, then base64.
    Whsec,
    /// Hex (Discord's application public key).
    Hex,
    /// Standard Webhooks public key: optional `whpk_` prefix, then base64.
    Whpk,
}
