//! Provider presets as data. Each returns the `Scheme` its provider documents
//! (see docs/providers.md for sources); adding a preset is a table entry plus vectors.

use crate::config::{Algorithm, Encoding, KeyEncoding, Provider, TimestampUnit};
use crate::dedup::key::KeySource;
use crate::scheme::{DeliveryId, Scheme, SigFormat, SigSource, TimestampSource, TimestampSpec};
use crate::template::Part;

fn lit(s: &str) -> Part {
    Part::Literal(s.as_bytes().to_vec())
}

fn single(header: &[&str], prefix: &str, algorithm: Algorithm, encoding: Encoding) -> SigSource {
    SigSource {
        headers: header.iter().map(|h| h.to_string()).collect(),
        format: SigFormat::Single {
            prefix: prefix.to_string(),
        },
        algorithm,
        encoding,
    }
}

fn header_ts(name: &str) -> Option<TimestampSpec> {
    Some(TimestampSpec {
        source: TimestampSource::Header(name.to_string()),
        unit: TimestampUnit::Seconds,
    })
}

/// Where a preset's dedup key comes from (signed material only).
pub fn dedup_key(provider: Provider) -> KeySource {
    match provider {
        // X-GitHub-Delivery and Shopify's ids are not signed: the MAC is the signed material.
        Provider::Github | Provider::Slack | Provider::Shopify | Provider::Custom => {
            KeySource::Signature
        }
        // Stripe re-signs every retry with a new `t`; the event id in the body is stable.
        Provider::Stripe => KeySource::JsonPointer("/id".into()),
        // The signed webhook-id is the same on every retry (the template's first header).
        Provider::StandardWebhooks => KeySource::SignedHeader {
            name: "webhook-id".into(),
            index: 0,
        },
    }
}

/// The scheme of a named provider; `None` for `custom` (built from its own config).
pub fn scheme(provider: Provider, accept_legacy_sha1: bool) -> Option<Scheme> {
    let s = match provider {
        Provider::Github => {
            let mut sources = vec![single(
                &["x-hub-signature-256"],
                "sha256=",
                Algorithm::HmacSha256,
                Encoding::Hex,
            )];
            if accept_legacy_sha1 {
                sources.push(single(
                    &["x-hub-signature"],
                    "sha1=",
                    Algorithm::HmacSha1,
                    Encoding::Hex,
                ));
            }
            Scheme {
                sources,
                timestamp: None,
                template: vec![Part::Body],
                key_encoding: KeyEncoding::Utf8,
                delivery_id: Some(DeliveryId::Header("x-github-delivery".into())),
            }
        }
        Provider::Stripe => Scheme {
            sources: vec![SigSource {
                headers: vec!["stripe-signature".into()],
                format: SigFormat::KeyValues {
                    item_sep: ',',
                    sig_key: "v1".into(),
                    ts_key: Some("t".into()),
                },
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Hex,
            }],
            timestamp: Some(TimestampSpec {
                source: TimestampSource::SignatureParam,
                unit: TimestampUnit::Seconds,
            }),
            template: vec![Part::Timestamp, lit("."), Part::Body],
            // Stripe uses the whole `whsec_...` string as the key, prefix included.
            key_encoding: KeyEncoding::Utf8,
            delivery_id: Some(DeliveryId::JsonField("id".into())),
        },
        Provider::Slack => Scheme {
            sources: vec![single(
                &["x-slack-signature"],
                "v0=",
                Algorithm::HmacSha256,
                Encoding::Hex,
            )],
            timestamp: header_ts("x-slack-request-timestamp"),
            template: vec![lit("v0:"), Part::Timestamp, lit(":"), Part::Body],
            key_encoding: KeyEncoding::Utf8,
            delivery_id: None,
        },
        Provider::Shopify => Scheme {
            // The Events product sends the un-prefixed spelling.
            sources: vec![single(
                &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
                "",
                Algorithm::HmacSha256,
                Encoding::Base64,
            )],
            timestamp: None,
            template: vec![Part::Body],
            key_encoding: KeyEncoding::Utf8,
            delivery_id: Some(DeliveryId::Header("x-shopify-webhook-id".into())),
        },
        Provider::StandardWebhooks => Scheme {
            sources: vec![SigSource {
                headers: vec!["webhook-signature".into()],
                format: SigFormat::Versioned {
                    version: "v1".into(),
                },
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Base64,
            }],
            timestamp: header_ts("webhook-timestamp"),
            template: vec![
                Part::Header("webhook-id".into()),
                lit("."),
                Part::Timestamp,
                lit("."),
                Part::Body,
            ],
            key_encoding: KeyEncoding::Whsec,
            delivery_id: Some(DeliveryId::Header("webhook-id".into())),
        },
        Provider::Custom => return None,
    };
    Some(s)
}
