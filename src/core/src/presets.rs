//! Provider presets as data. Each returns the `Scheme` its provider documents
//! (see docs/providers.md for sources); adding a preset is a table entry plus vectors.

use crate::config::{
    Algorithm, Encoding, KeyEncoding, Provider, TimestampUnit, DEFAULT_TOLERANCE_SECONDS,
};
use crate::dedup::key::{IdBytes, KeySource};
use crate::scheme::{DeliveryId, Scheme, SigFormat, SigSource, TimestampSource, TimestampSpec};
use crate::template::Part;

/// The `mailgun` SDK's `SecurityGuard.verify_webhook(max_age_seconds=900)`.
const MAILGUN_TOLERANCE_SECONDS: u64 = 900;

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

/// Where a preset's dedup key comes from (signed material only); `None` where nothing that
/// identifies a delivery is signed (GitLab's token signs nothing).
pub fn dedup_key(provider: Provider) -> Option<KeySource> {
    let json = |p: &str| Some(KeySource::JsonPointer(p.into()));
    let header = |name: &str| {
        Some(KeySource::SignedHeader {
            name: name.into(),
            index: 0,
            bytes: IdBytes::Token,
        })
    };
    match provider {
        // Unsigned delivery ids (X-GitHub-Delivery, Shopify's, Bitbucket's, Jira's): the MAC is
        // the signed material.
        Provider::Github
        | Provider::Slack
        | Provider::Shopify
        | Provider::Zoom
        | Provider::Linear
        | Provider::Bitbucket
        | Provider::Jira
        | Provider::Custom => Some(KeySource::Signature),
        // Stripe re-signs every retry with a new `t`; the event id in the body is stable.
        Provider::Stripe => json("/id"),
        // Retries change the body's attempt counter; the notification id is stable.
        Provider::Intercom => json("/id"),
        Provider::Paddle => json("/notification_id"),
        Provider::Pagerduty => json("/event/id"),
        // Signed ids, the same on every retry (the template's first header).
        Provider::StandardWebhooks => header("webhook-id"),
        Provider::Svix => header("svix-id"),
        Provider::Twitch => header("twitch-eventsub-message-id"),
        Provider::Gitlab => None,
        Provider::Square => json("/event_id"),
        // Interactions are not retried; the (strictly verified) signature identifies one.
        Provider::Discord => Some(KeySource::Signature),
        // The body is an array of events; ECDSA signatures are malleable, so the key is the
        // canonical hash of the signed bytes (see verify::canonical_mac), never the signature.
        Provider::Sendgrid => Some(KeySource::Signature),
        // Nothing but the URL and the parameters is signed: the signature is the key (status
        // callbacks for one call differ in their parameters, so they stay distinct).
        Provider::Twilio => Some(KeySource::Signature),
        Provider::StandardWebhooksV1a => header("webhook-id"),
        // Body MACs whose delivery ids (x-razorpay-event-id, X-WC-Webhook-Delivery-ID,
        // Request-ID, ...) are unsigned headers, or whose bodies carry no delivery id: the MAC.
        Provider::Paystack
        | Provider::Razorpay
        | Provider::LemonSqueezy
        | Provider::Vercel
        | Provider::Woocommerce
        | Provider::Sentry
        | Provider::Calendly
        | Provider::Meta => Some(KeySource::Signature),
        // Signed event ids in the body, the same on every retry.
        Provider::Typeform => json("/event_id"),
        // Mux re-signs each retry with a new `t` (and its body lists the attempts); `id` is the
        // event's.
        Provider::Mux => json("/id"),
        // Retries carry a new timestamp and `meta.attempt`; `data.id` is the event's.
        Provider::Telnyx => json("/data/id"),
        // A retry is signed anew (new timestamp, new `attemptNumber` in the body) and a batch
        // holds many events: only the exact request is identified, by its signature.
        Provider::Hubspot => Some(KeySource::Signature),
        // The signed `token` of the body's signature block (not the body, which is unsigned).
        Provider::Mailgun => Some(KeySource::Token),
        // The signed fields of the notification's one item (pspReference, eventCode, success,
        // amount...): the same item sent again, in any notification, is the same key (see
        // verify::adyen_match; batches are refused, verify::MAX_ADYEN_ITEMS).
        Provider::Adyen => Some(KeySource::Signature),
        // The JWT's signed `jti` (unique per token): a captured request is admitted once.
        Provider::Vonage => Some(KeySource::Token),
        // Not the nonce: only a `.` separates it from the signed parameters, so a value holding
        // a dot lets a captured callback be re-cut (the tail of its parameters moved into the
        // nonce header) into the same signed string under a new nonce. The signature key is the
        // hash of that string: every re-cut is the same key.
        Provider::Plivo => Some(KeySource::Signature),
        // Lark asks receivers to dedup on the event id inside the encrypted payload (schema
        // 2.0 `header.event_id`, 1.0 `uuid`); nothing says a retry keeps its signature or IV.
        Provider::Lark => Some(KeySource::Plaintext(vec![
            "/header/event_id".into(),
            "/uuid".into(),
        ])),
    }
}

/// HubSpot v3 signs `{method}{uri}{body}{timestamp}`, where the URI is the full URL it
/// requested (the policy's origin, then the request's path and query) and the timestamp the
/// `X-HubSpot-Request-Timestamp` header in milliseconds; base64 HMAC-SHA256 under the app's
/// client secret.
pub fn hubspot(public_origin: &str) -> Scheme {
    Scheme {
        sources: vec![single(
            &["x-hubspot-signature-v3"],
            "",
            Algorithm::HmacSha256,
            Encoding::Base64,
        )],
        timestamp: Some(TimestampSpec {
            source: TimestampSource::Header("x-hubspot-request-timestamp".into()),
            unit: TimestampUnit::Milliseconds,
        }),
        template: vec![
            Part::Method,
            lit(public_origin),
            Part::Path,
            Part::Body,
            Part::Timestamp,
        ],
        key_encoding: KeyEncoding::Utf8,
        alternates: Vec::new(),
        delivery_id: None,
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
    }
}

/// Plivo V3 signs `{url}.{nonce}`: the URL it requested (the policy's origin, the request's
/// path, its query parameters sorted, then the sorted form parameters: `Part::PlivoUrl`) and
/// the `X-Plivo-Signature-V3-Nonce` header; base64 HMAC-SHA256 under the auth token, several
/// signatures comma-separated in `X-Plivo-Signature-V3`. No timestamp is signed.
pub fn plivo(public_origin: &str) -> Scheme {
    Scheme {
        sources: vec![SigSource {
            headers: vec!["x-plivo-signature-v3".to_string()],
            format: SigFormat::List { sep: ',' },
            algorithm: Algorithm::HmacSha256,
            encoding: Encoding::Base64,
        }],
        timestamp: None,
        template: vec![
            lit(public_origin),
            Part::PlivoUrl,
            lit("."),
            Part::Header("x-plivo-signature-v3-nonce".into()),
        ],
        key_encoding: KeyEncoding::Utf8,
        alternates: Vec::new(),
        delivery_id: Some(DeliveryId::Header("x-plivo-signature-v3-nonce".into())),
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
    }
}

/// Twilio signs the URL it requested (public origin + path and query) and the sorted form
/// parameters; JSON bodies are covered by a `bodySHA256` URL parameter instead. Its SDKs
/// accept the URL with and without the port (Twilio signs either form), so the other form of
/// the origin is an alternate template.
pub fn twilio(public_origin: &str) -> Scheme {
    let alternates = twilio_other_origin(public_origin)
        .map(|other| vec![lit(&other), Part::Path, Part::FormParams])
        .into_iter()
        .collect();
    Scheme {
        sources: vec![single(
            &["x-twilio-signature"],
            "",
            Algorithm::HmacSha1,
            Encoding::Base64,
        )],
        timestamp: None,
        template: vec![lit(public_origin), Part::Path, Part::FormParams],
        key_encoding: KeyEncoding::Utf8,
        alternates,
        delivery_id: None,
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: true,
    }
}

/// `https://host:port` -> `https://host`; `https://host` -> `https://host:443` (80 for http).
fn twilio_other_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.split_once("://")?;
    // A bracketed IPv6 host has colons of its own: the port follows the `]`.
    let host_end = authority.rfind(']').map_or(0, |i| i.saturating_add(1));
    let (host, port) = match authority.get(host_end..)?.rfind(':') {
        Some(i) => (authority.get(..host_end.saturating_add(i))?, true),
        None => (authority, false),
    };
    if port {
        Some(format!("{scheme}://{host}"))
    } else {
        let default = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        Some(format!("{scheme}://{host}:{default}"))
    }
}

/// Square signs the notification URL it was given, then the body: the URL is policy config.
pub fn square(notification_url: &str) -> Scheme {
    Scheme {
        sources: vec![single(
            &["x-square-hmacsha256-signature"],
            "",
            Algorithm::HmacSha256,
            Encoding::Base64,
        )],
        timestamp: None,
        template: vec![lit(notification_url), Part::Body],
        key_encoding: KeyEncoding::Utf8,
        alternates: Vec::new(),
        delivery_id: Some(DeliveryId::JsonField("event_id".into())),
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
    }
}

fn ts(source: TimestampSource, unit: TimestampUnit) -> Option<TimestampSpec> {
    Some(TimestampSpec { source, unit })
}

fn kv(header: &str, sep: char, sig_key: &str, ts_key: Option<&str>) -> SigSource {
    SigSource {
        headers: vec![header.to_string()],
        format: SigFormat::KeyValues {
            item_sep: sep,
            sig_key: sig_key.to_string(),
            ts_key: ts_key.map(str::to_string),
        },
        algorithm: Algorithm::HmacSha256,
        encoding: Encoding::Hex,
    }
}

/// An HMAC over the raw body, hex, with a fixed prefix (GitHub-style).
fn body_hex(header: &str, prefix: &str, algorithm: Algorithm, id_header: Option<&str>) -> Scheme {
    Scheme {
        sources: vec![single(&[header], prefix, algorithm, Encoding::Hex)],
        timestamp: None,
        template: vec![Part::Body],
        key_encoding: KeyEncoding::Utf8,
        alternates: Vec::new(),
        delivery_id: id_header.map(|h| DeliveryId::Header(h.into())),
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
    }
}

/// Standard Webhooks under a given header prefix (`webhook` or `svix`).
fn standard(prefix: &str) -> Scheme {
    Scheme {
        sources: vec![SigSource {
            headers: vec![format!("{prefix}-signature")],
            format: SigFormat::Versioned {
                version: "v1".into(),
            },
            algorithm: Algorithm::HmacSha256,
            encoding: Encoding::Base64,
        }],
        timestamp: header_ts(&format!("{prefix}-timestamp")),
        template: vec![
            Part::Header(format!("{prefix}-id")),
            lit("."),
            Part::Timestamp,
            lit("."),
            Part::Body,
        ],
        key_encoding: KeyEncoding::Whsec,
        alternates: Vec::new(),
        delivery_id: Some(DeliveryId::Header(format!("{prefix}-id"))),
        default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
        body_sha256_query: false,
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
                alternates: Vec::new(),
                delivery_id: Some(DeliveryId::Header("x-github-delivery".into())),
                default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
                body_sha256_query: false,
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
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::JsonField("id".into())),
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
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
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
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
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::Header("x-shopify-webhook-id".into())),
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::StandardWebhooks => standard("webhook"),
        // Svix (and Clerk, Resend...) send the Standard Webhooks scheme under svix-* names.
        Provider::Svix => standard("svix"),
        Provider::Zoom => Scheme {
            sources: vec![single(
                &["x-zm-signature"],
                "v0=",
                Algorithm::HmacSha256,
                Encoding::Hex,
            )],
            timestamp: header_ts("x-zm-request-timestamp"),
            template: vec![lit("v0:"), Part::Timestamp, lit(":"), Part::Body],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::Header("x-zm-trackingid".into())),
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::Paddle => Scheme {
            // `ts=..;h1=..[;h1=..]`: several h1 during a secret rotation.
            sources: vec![kv("paddle-signature", ';', "h1", Some("ts"))],
            timestamp: ts(TimestampSource::SignatureParam, TimestampUnit::Seconds),
            template: vec![Part::Timestamp, lit(":"), Part::Body],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::JsonField("notification_id".into())),
            // Paddle's SDKs allow 5 s.
            default_tolerance_s: 5,
            body_sha256_query: false,
        },
        Provider::Twitch => Scheme {
            sources: vec![single(
                &["twitch-eventsub-message-signature"],
                "sha256=",
                Algorithm::HmacSha256,
                Encoding::Hex,
            )],
            timestamp: ts(
                TimestampSource::Header("twitch-eventsub-message-timestamp".into()),
                TimestampUnit::Rfc3339,
            ),
            // Message id, timestamp and body, no separators; the exact timestamp bytes.
            template: vec![
                Part::Header("twitch-eventsub-message-id".into()),
                Part::Timestamp,
                Part::Body,
            ],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::Header("twitch-eventsub-message-id".into())),
            default_tolerance_s: 600,
            body_sha256_query: false,
        },
        Provider::Pagerduty => Scheme {
            // `v1=..,v1=..`: one per active secret.
            sources: vec![kv("x-pagerduty-signature", ',', "v1", None)],
            timestamp: None,
            template: vec![Part::Body],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::Linear => Scheme {
            sources: vec![single(
                &["linear-signature"],
                "",
                Algorithm::HmacSha256,
                Encoding::Hex,
            )],
            // webhookTimestamp (ms) lives in the signed body.
            timestamp: ts(
                TimestampSource::BodyJson("webhookTimestamp".into()),
                TimestampUnit::Milliseconds,
            ),
            template: vec![Part::Body],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::Header("linear-delivery".into())),
            default_tolerance_s: 60,
            body_sha256_query: false,
        },
        Provider::Intercom => body_hex("x-hub-signature", "sha1=", Algorithm::HmacSha1, None),
        Provider::Bitbucket => body_hex(
            "x-hub-signature",
            "sha256=",
            Algorithm::HmacSha256,
            Some("x-request-uuid"),
        ),
        Provider::Jira => body_hex(
            "x-hub-signature",
            "sha256=",
            Algorithm::HmacSha256,
            Some("x-atlassian-webhook-identifier"),
        ),
        Provider::Gitlab => Scheme {
            sources: vec![SigSource {
                headers: vec!["x-gitlab-token".into()],
                format: SigFormat::Token,
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Hex,
            }],
            timestamp: None,
            template: Vec::new(),
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: Some(DeliveryId::Header("idempotency-key".into())),
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::Discord => Scheme {
            sources: vec![single(
                &["x-signature-ed25519"],
                "",
                Algorithm::Ed25519,
                Encoding::Hex,
            )],
            timestamp: header_ts("x-signature-timestamp"),
            template: vec![Part::Timestamp, Part::Body],
            key_encoding: KeyEncoding::Hex,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::Sendgrid => Scheme {
            sources: vec![single(
                &["x-twilio-email-event-webhook-signature"],
                "",
                Algorithm::EcdsaP256Sha256,
                Encoding::Base64,
            )],
            timestamp: header_ts("x-twilio-email-event-webhook-timestamp"),
            template: vec![Part::Timestamp, Part::Body],
            key_encoding: KeyEncoding::Base64,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::StandardWebhooksV1a => {
            let mut s = standard("webhook");
            if let Some(source) = s.sources.first_mut() {
                source.format = SigFormat::Versioned {
                    version: "v1a".into(),
                };
                source.algorithm = Algorithm::Ed25519;
            }
            s.key_encoding = KeyEncoding::Whpk;
            s
        }
        // HMAC-SHA512 of the body with the account's secret key.
        Provider::Paystack => body_hex("x-paystack-signature", "", Algorithm::HmacSha512, None),
        Provider::Razorpay => body_hex(
            "x-razorpay-signature",
            "",
            Algorithm::HmacSha256,
            Some("x-razorpay-event-id"),
        ),
        Provider::LemonSqueezy => body_hex("x-signature", "", Algorithm::HmacSha256, None),
        Provider::Vercel => body_hex("x-vercel-signature", "", Algorithm::HmacSha1, None),
        Provider::Woocommerce => Scheme {
            sources: vec![single(
                &["x-wc-webhook-signature"],
                "",
                Algorithm::HmacSha256,
                Encoding::Base64,
            )],
            delivery_id: Some(DeliveryId::Header("x-wc-webhook-delivery-id".into())),
            ..body_hex("x-wc-webhook-signature", "", Algorithm::HmacSha256, None)
        },
        Provider::Typeform => Scheme {
            sources: vec![single(
                &["typeform-signature"],
                "sha256=",
                Algorithm::HmacSha256,
                Encoding::Base64,
            )],
            delivery_id: Some(DeliveryId::JsonField("event_id".into())),
            ..body_hex("typeform-signature", "", Algorithm::HmacSha256, None)
        },
        // `Sentry-Hook-Timestamp` is sent but not signed: no window.
        Provider::Sentry => body_hex(
            "sentry-hook-signature",
            "",
            Algorithm::HmacSha256,
            Some("request-id"),
        ),
        Provider::Meta => body_hex(
            "x-hub-signature-256",
            "sha256=",
            Algorithm::HmacSha256,
            None,
        ),
        // `t=..,v1=..` over `{t}.{body}`, as Stripe.
        Provider::Mux | Provider::Calendly => Scheme {
            sources: vec![kv(
                if provider == Provider::Mux {
                    "mux-signature"
                } else {
                    "calendly-webhook-signature"
                },
                ',',
                "v1",
                Some("t"),
            )],
            timestamp: ts(TimestampSource::SignatureParam, TimestampUnit::Seconds),
            template: vec![Part::Timestamp, lit("."), Part::Body],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: (provider == Provider::Mux).then(|| DeliveryId::JsonField("id".into())),
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        // Ed25519 over `{timestamp}|{body}`; base64 signature and public key.
        Provider::Telnyx => Scheme {
            sources: vec![single(
                &["telnyx-signature-ed25519"],
                "",
                Algorithm::Ed25519,
                Encoding::Base64,
            )],
            timestamp: header_ts("telnyx-timestamp"),
            template: vec![Part::Timestamp, lit("|"), Part::Body],
            key_encoding: KeyEncoding::Base64,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        // Need a URL from the policy: `square()`, `twilio()`, `hubspot()`.
        // Hex HMAC-SHA256 of `{timestamp}{token}`, all three in the body's signature block
        // (JSON `signature.{..}` or form fields); the event data is not signed. Window: the
        // `mailgun` SDK's `verify_webhook` default, 900 s, two-sided.
        Provider::Mailgun => Scheme {
            sources: vec![SigSource {
                headers: Vec::new(),
                format: SigFormat::BodyFields,
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Hex,
            }],
            timestamp: Some(TimestampSpec {
                source: TimestampSource::BodyFields,
                unit: TimestampUnit::Seconds,
            }),
            template: vec![Part::Timestamp, Part::Token],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: MAILGUN_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        // Base64 HMAC-SHA256 per notification item over
        // `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
        // under the hex-decoded HMAC key; no timestamp is signed.
        Provider::Adyen => Scheme {
            sources: vec![SigSource {
                headers: Vec::new(),
                format: SigFormat::AdyenItems,
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Base64,
            }],
            timestamp: None,
            template: Vec::new(),
            key_encoding: KeyEncoding::Hex,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        // `Authorization: Bearer <JWT>`, HS256 under the signature secret; `iat` (seconds) is
        // the signed timestamp, `payload_hash` the hex SHA-256 of the body, `jti` the dedup key.
        Provider::Vonage => Scheme {
            sources: vec![SigSource {
                headers: vec!["authorization".to_string()],
                format: SigFormat::Jwt,
                algorithm: Algorithm::HmacSha256,
                encoding: Encoding::Base64,
            }],
            timestamp: Some(TimestampSpec {
                source: TimestampSource::SignatureParam,
                unit: TimestampUnit::Seconds,
            }),
            template: vec![Part::Jwt],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        // Plain SHA-256 hex of `timestamp + nonce + encrypt_key + body` (not an HMAC); the body
        // must be exactly the `{"encrypt": ...}` envelope, which the policy always opens. The
        // timestamp is signed but bounds nothing: its unit and whether a retry (up to ~7 h
        // later) keeps it are undocumented, so no window; the event id dedups.
        Provider::Lark => Scheme {
            sources: vec![single(
                &["x-lark-signature"],
                "",
                Algorithm::Sha256,
                Encoding::Hex,
            )],
            timestamp: None,
            template: vec![
                Part::Header("x-lark-request-timestamp".into()),
                Part::Header("x-lark-request-nonce".into()),
                Part::Secret,
                Part::Body,
            ],
            key_encoding: KeyEncoding::Utf8,
            alternates: Vec::new(),
            delivery_id: None,
            default_tolerance_s: DEFAULT_TOLERANCE_SECONDS,
            body_sha256_query: false,
        },
        Provider::Square
        | Provider::Twilio
        | Provider::Hubspot
        | Provider::Plivo
        | Provider::Custom => return None,
    };
    Some(s)
}
