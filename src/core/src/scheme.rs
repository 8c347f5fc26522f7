//! A signature scheme as data: where the signature and timestamp are, which bytes are signed,
//! how the MAC is computed and encoded. Presets and `custom` both compile to a `Scheme`.

use crate::config::{Algorithm, Encoding, KeyEncoding, TimestampUnit};
use crate::template::Part;

#[derive(Debug, Clone)]
pub struct Scheme {
    /// Tried in order: the first whose header is present is the one verified.
    pub sources: Vec<SigSource>,
    pub timestamp: Option<TimestampSpec>,
    pub template: Vec<Part>,
    /// Other signed-byte layouts the sender may have used, tried after `template` (Twilio
    /// signs its URL with or without the default port).
    pub alternates: Vec<Vec<Part>>,
    pub key_encoding: KeyEncoding,
    /// Logged as the delivery id (informational; may be unsigned).
    pub delivery_id: Option<DeliveryId>,
    /// Tolerance when the policy sets none (the provider's own SDK default).
    pub default_tolerance_s: u64,
    /// Twilio: a non-form body is covered only through the URL's `bodySHA256` parameter.
    pub body_sha256_query: bool,
}

#[derive(Debug, Clone)]
pub struct SigSource {
    /// Lower-case header names, alternatives for the same value (e.g. Shopify's two spellings).
    pub headers: Vec<String>,
    pub format: SigFormat,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
}

#[derive(Debug, Clone)]
pub enum SigFormat {
    /// One value: a fixed prefix, then the encoded MAC (GitHub, Slack, Shopify, custom).
    Single { prefix: String },
    /// `key=value` items separated by `item_sep`: every `sig_key` item is a candidate and
    /// `ts_key` carries the signed timestamp (Stripe `t=..,v1=..`).
    KeyValues {
        item_sep: char,
        sig_key: String,
        ts_key: Option<String>,
    },
    /// Space-separated `version,value` entries; only `version` counts (Standard Webhooks).
    Versioned { version: String },
    /// The header carries the secret itself (GitLab's `X-Gitlab-Token`): compared in constant
    /// time; it authenticates the sender, not the body.
    Token,
    /// Mailgun: the signature, the timestamp and a token are fields of the body (JSON
    /// `signature.{timestamp,token,signature}`, or form fields `timestamp`, `token`,
    /// `signature`), read once the body is buffered (`verify::body_fields`). The scheme's
    /// headers are not consulted. The rest of the body is not signed.
    BodyFields,
    /// Adyen: every `notificationItems[].NotificationRequestItem` of the JSON body carries its
    /// own `additionalData.hmacSignature` over some of its fields (`verify::adyen_items`);
    /// one item per request (a batch could carry a delivered item again under a new dedup key).
    /// The scheme's headers and template are not used.
    AdyenItems,
    /// Vonage: `Bearer <JWT>` (HS256 only) whose claims carry `iat` (the signed timestamp),
    /// `jti` (the dedup key) and `payload_hash`, the hex SHA-256 of the body
    /// (`verify::parse_jwt`). The MAC covers the JWT's `header.payload`; the template is
    /// `[Part::Jwt]`.
    Jwt,
    /// Values separated by `sep`, each an encoded MAC (Plivo V3's comma-separated list).
    List { sep: char },
}

#[derive(Debug, Clone)]
pub struct TimestampSpec {
    pub source: TimestampSource,
    pub unit: TimestampUnit,
}

#[derive(Debug, Clone)]
pub enum TimestampSource {
    Header(String),
    /// The `ts_key` item of a `KeyValues` signature header.
    SignatureParam,
    /// A top-level number in the JSON body (Linear's `webhookTimestamp`): read after the body
    /// verified, since the body is what is signed.
    BodyJson(String),
    /// The `timestamp` field next to a `BodyFields` signature (Mailgun), signed as received.
    BodyFields,
}

#[derive(Debug, Clone)]
pub enum DeliveryId {
    Header(String),
    /// Top-level string field of a JSON body (e.g. Stripe's event `id`).
    JsonField(String),
}

impl Algorithm {
    /// Accepted signature sizes in bytes: fixed for MACs and Ed25519, a DER range for ECDSA.
    pub fn signature_lengths(self) -> (usize, usize) {
        match self {
            Algorithm::HmacSha1 => (20, 20),
            Algorithm::HmacSha256 | Algorithm::Sha256 => (32, 32),
            Algorithm::HmacSha512 | Algorithm::Ed25519 => (64, 64),
            Algorithm::EcdsaP256Sha256 => (8, 72),
        }
    }
}

impl Scheme {
    /// The main template, then the alternates.
    pub fn templates(&self) -> impl Iterator<Item = &[Part]> {
        std::iter::once(self.template.as_slice()).chain(self.alternates.iter().map(Vec::as_slice))
    }

    /// Whether `key` can verify this scheme (public keys have a fixed size).
    pub fn key_fits(&self, key: &[u8]) -> bool {
        self.sources.iter().all(|s| match s.algorithm {
            Algorithm::Ed25519 => key.len() == 32,
            Algorithm::EcdsaP256Sha256 => crate::verify::p256_key(key).is_some(),
            _ => true,
        })
    }
}

impl KeyEncoding {
    /// Turns secret text into key bytes; `None` when the text is not valid for the encoding.
    pub fn decode(self, secret: &str) -> Option<Vec<u8>> {
        let bytes = match self {
            KeyEncoding::Utf8 => secret.as_bytes().to_vec(),
            KeyEncoding::Base64 => crate::codec::base64_decode(secret.as_bytes())?,
            KeyEncoding::Whsec => {
                let rest = secret.strip_prefix("whsec_").unwrap_or(secret);
                crate::codec::base64_decode(rest.as_bytes())?
            }
            KeyEncoding::Hex => hex::decode(secret.trim()).ok()?,
            KeyEncoding::Whpk => {
                let rest = secret.strip_prefix("whpk_").unwrap_or(secret);
                crate::codec::base64_decode(rest.as_bytes())?
            }
        };
        (!bytes.is_empty()).then_some(bytes)
    }
}
