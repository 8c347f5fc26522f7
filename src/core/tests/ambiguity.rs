// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Requests that can be read two ways: signed text re-cut at a separator so that the same
//! signature carries a new dedup key, a key taken from bytes the signature does not cover, and
//! a path that names one policy as Envoy routes it and another as a backend resolves it.

use base64::Engine;
use serde_json::{json, Value};
use webhook_guard_core::config::Algorithm;
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::{compile, Guard, Reason, RequestInfo, Route, RouteInfo, Upstream};

const NOW: u64 = 1_700_000_000;
const KEY_B64: &str = "c3VwZXItc2VjcmV0LXZhbHVl";

fn guard(doc: Value) -> Guard {
    compile(doc.to_string().as_bytes(), &|_| None).unwrap()
}

fn info(path: &str) -> RequestInfo {
    RequestInfo {
        route_name: None,
        method: "POST".into(),
        path: path.into(),
    }
}

/// Sends one request to policy 0; a 2xx from the backend commits what was admitted.
fn deliver(g: &Guard, h: &MemHost, hs: &[(&str, &[u8])], body: &[u8]) -> Result<(), Reason> {
    let hs: Vec<(String, Vec<u8>)> = hs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    let pending = g.begin(h, 0, info("/hook"), &hs).map_err(|r| r.reason)?;
    let accepted = g.finish(h, &pending, body).map_err(|r| r.reason)?;
    if let Some(claim) = accepted.claim {
        g.settle(h, claim, Upstream::Answered(200));
    }
    Ok(())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    compute_mac(Algorithm::HmacSha256, key, parts).unwrap()
}

/// The signed text `id + sep + ts + sep + body` cut again at `.{later}.` inside the body:
/// (new id, new timestamp, new body), the same bytes under the same signature.
fn recut(id: &[u8], ts: &[u8], body: &[u8], later: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let marker = format!(".{later}.");
    let at = body
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    let id2 = [id, b".", ts, b".", &body[..at]].concat();
    let body2 = body[at + marker.len()..].to_vec();
    assert_eq!(
        [&id2[..], b".", later.as_bytes(), b".", &body2].concat(),
        [id, b".", ts, b".", body].concat()
    );
    (id2, later.as_bytes().to_vec(), body2)
}

#[test]
fn a_standard_webhooks_id_cannot_be_re_cut_into_a_new_key_and_a_fresh_timestamp() {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY_B64)
        .unwrap();
    for (provider, prefix) in [("standard-webhooks", "webhook"), ("svix", "svix")] {
        let g = guard(
            json!({"policies": [{"name": "std", "match": {"path_prefix": "/"},
            "provider": provider, "secrets": [{"inline": format!("whsec_{KEY_B64}")}]}]}),
        );
        let h = MemHost::new(g.counter_names(), NOW * 1000);
        let (id_h, ts_h, sig_h) = (
            format!("{prefix}-id"),
            format!("{prefix}-timestamp"),
            format!("{prefix}-signature"),
        );
        let later = (NOW + 6 * 3600).to_string();
        let id = b"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".to_vec();
        let ts = NOW.to_string().into_bytes();
        let body =
            format!(r#"{{"type":"user.updated","data":{{"name":"eve.{later}.x"}}}}"#).into_bytes();
        let sig = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD
                .encode(mac(&key, &[&id, b".", &ts, b".", &body]))
        )
        .into_bytes();
        let send = |id: &[u8], ts: &[u8], body: &[u8]| {
            deliver(&g, &h, &[(&id_h, id), (&ts_h, ts), (&sig_h, &sig)], body)
        };
        assert_eq!(send(&id, &ts, &body), Ok(()), "{provider}");
        assert_eq!(send(&id, &ts, &body), Err(Reason::Replayed));
        h.advance(6 * 3600 * 1000);
        assert_eq!(send(&id, &ts, &body), Err(Reason::TimestampOutOfWindow));
        // Six hours on, the copy re-cut at ".{later}." carries a new id and a fresh timestamp.
        let (id2, ts2, body2) = recut(&id, &ts, &body, &later);
        assert_eq!(
            send(&id2, &ts2, &body2),
            Err(Reason::MalformedSignature),
            "{provider}"
        );
        assert_eq!(
            h.count("webhook_guard.policy.std.reason.malformed_signature"),
            1
        );
    }
}

#[test]
fn a_twitch_message_id_cannot_take_in_a_timestamp_found_in_the_body() {
    // Twitch signs `id + timestamp + body` with no separator; its events carry RFC 3339 times
    // (`followed_at`) close to the delivery's own.
    let secret = "twitch-secret-0123456789";
    let g = guard(
        json!({"policies": [{"name": "tw", "match": {"path_prefix": "/"},
        "provider": "twitch", "secrets": [{"inline": secret}]}]}),
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let id = b"befa7b53-d79d-478f-86b9-120f112b044e".to_vec();
    let ts = b"2023-11-14T22:13:20.000Z".to_vec(); // NOW
    let inner = b"2023-11-14T22:18:20.000Z"; // NOW + 5 min
    let body = [
        &br#"{"event":{"user_name":"eve","followed_at":""#[..],
        inner,
        br#""}}"#,
    ]
    .concat();
    let sig = |parts: &[&[u8]]| {
        format!("sha256={}", hex::encode(mac(secret.as_bytes(), parts))).into_bytes()
    };
    let signature = sig(&[&id, &ts, &body]);
    let send = |id: &[u8], ts: &[u8], body: &[u8]| {
        deliver(
            &g,
            &h,
            &[
                ("twitch-eventsub-message-id", id),
                ("twitch-eventsub-message-timestamp", ts),
                ("twitch-eventsub-message-signature", &signature),
                ("twitch-eventsub-message-type", b"notification"),
            ],
            body,
        )
    };
    assert_eq!(send(&id, &ts, &body), Ok(()));
    assert_eq!(send(&id, &ts, &body), Err(Reason::Replayed));
    // The id takes in the timestamp and the body up to `followed_at`, whose value becomes the
    // timestamp: the same signed bytes.
    let at = body.windows(inner.len()).position(|w| w == inner).unwrap();
    let id2 = [&id[..], &ts, &body[..at]].concat();
    let body2 = body[at + inner.len()..].to_vec();
    assert_eq!(sig(&[&id2, inner, &body2]), signature);
    assert_eq!(send(&id2, inner, &body2), Err(Reason::MalformedSignature));
}

fn custom(template: &str, key_header: &str) -> Value {
    let mut scheme = json!({"signature_header": "X-Sig", "signed_template": template});
    if template.contains("{timestamp}") {
        scheme["timestamp_header"] = json!("X-Ts");
    }
    json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom",
        "secrets": [{"inline": "s"}], "custom": scheme,
        "dedup": {"key": {"source": "header", "name": key_header}}}]})
}

#[test]
fn a_custom_header_key_must_be_delimited_in_the_template() {
    for template in [
        "{header:x-id}{body}",
        "{header:x-a}.{header:x-id}.{body}",
        "{timestamp}{header:x-id}.{body}",
    ] {
        let e = compile(custom(template, "X-Id").to_string().as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.path, "policies[0].dedup.key.name", "{template}");
        assert!(e.message.contains("not delimited"), "{template}: {e}");
    }
    for template in [
        "{header:x-id}.{timestamp}.{body}",
        "{timestamp}.{header:x-id}.{body}",
        "{body}:{timestamp}:{header:x-id}",
        "{body}.{header:x-id}",
        "v1:{timestamp}:{header:x-id}:{body}",
    ] {
        assert!(
            compile(custom(template, "X-Id").to_string().as_bytes(), &|_| None).is_ok(),
            "{template}"
        );
    }

    // A timestamp between free-form parts can be moved to a time found in the text: warned.
    let notices = |template: &str| {
        let mut doc = custom(template, "X-Id");
        doc["policies"][0]["dedup"] = json!({});
        let g = compile(doc.to_string().as_bytes(), &|_| None).unwrap();
        g.notices()
            .iter()
            .any(|(_, m)| m.contains("cut again around a time"))
    };
    assert!(notices("{header:x-event}.{timestamp}.{body}"));
    assert!(notices("{path}.{timestamp}.{body}"));
    assert!(!notices("{method}.{timestamp}.{body}"));
    assert!(!notices("{timestamp}.{header:x-event}.{body}"));
    assert!(!notices("{body}.{timestamp}"));
    assert!(!notices("v1:{timestamp}:{body}"));

    // `{timestamp}.{x-id}.{body}`: an id holding the separator is refused; a plain one is a key.
    let g = guard(custom("{timestamp}.{header:x-id}.{body}", "X-Id"));
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let ts = NOW.to_string().into_bytes();
    let send = |id: &[u8], body: &[u8]| {
        let sig = hex::encode(mac(b"s", &[&ts, b".", id, b".", body])).into_bytes();
        deliver(
            &g,
            &h,
            &[("x-id", id), ("x-ts", &ts), ("x-sig", &sig)],
            body,
        )
    };
    assert_eq!(send(b"evt:42", b"{}"), Ok(()));
    assert_eq!(send(b"evt:42", b"{}"), Err(Reason::Replayed));
    assert_eq!(send(b"evt.43", b"{}"), Err(Reason::MalformedSignature));
    assert_eq!(send(b"", b"{}"), Err(Reason::MalformedSignature));
}

#[test]
fn a_body_value_is_a_key_only_where_the_whole_body_is_signed() {
    let policy = |provider: &str| {
        let mut p = json!({"name": "p", "match": {"path_prefix": "/"}, "provider": provider,
            "secrets": [{"inline": "00112233445566778899aabbccddeeff"}],
            "dedup": {"key": {"source": "json_pointer", "pointer": "/id"}}});
        if provider == "twilio" {
            p["public_origin"] = json!("https://hooks.example.com");
        }
        json!({"policies": [p]})
    };
    for provider in ["mailgun", "adyen", "twilio", "vonage", "gitlab"] {
        let e = compile(policy(provider).to_string().as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.path, "policies[0].dedup.key", "{provider}: {e}");
    }
    for provider in ["stripe", "github", "shopify"] {
        assert!(
            compile(policy(provider).to_string().as_bytes(), &|_| None).is_ok(),
            "{provider}"
        );
    }
}

/// A request Envoy routed by path alone, on host `h`.
fn host_routed() -> RouteInfo<'static> {
    RouteInfo {
        route_name: None,
        authority: "h",
        path: "/",
        route_policy: None,
    }
}

#[test]
fn a_path_whose_spellings_name_two_policies_is_refused() {
    for default in ["allow", "deny"] {
        let g = guard(json!({"default": default, "policies": [
            {"name": "standard", "match": {"path_prefix": "/webhooks/standard"}, "provider": "github", "secrets": [{"inline": "a"}]},
            {"name": "custom", "match": {"path_prefix": "/webhooks/custom"}, "provider": "github", "secrets": [{"inline": "b"}]},
        ]}));
        let h = MemHost::new(g.counter_names(), NOW * 1000);
        let route = |path: &str| {
            g.route(
                &h,
                &RouteInfo {
                    path,
                    ..host_routed()
                },
            )
        };
        // Envoy routes it under /webhooks/custom; a servlet container serves /webhooks/standard.
        for path in [
            "/webhooks/custom/..;/standard",
            "/webhooks/custom/%2e%2e;/standard",
            "/webhooks/standard/..;/custom/x",
            "/webhooks/custom/%2e%2e;/unprotected",
            "/x/..;/webhooks/custom",
        ] {
            match route(path) {
                Route::Reject(r) => {
                    assert_eq!((r.status, r.reason), (403, Reason::NoMatchingPolicy))
                }
                _ => panic!("{path} was not refused under default {default}"),
            }
        }
        // Spellings that agree keep their policy; one that only the canonical form places
        // takes that policy.
        assert!(matches!(route("/webhooks/custom;x/y"), Route::Verify(1)));
        assert!(matches!(route("/webhooks/standard/./a"), Route::Verify(0)));
        assert!(matches!(route("//webhooks/standard"), Route::Verify(0)));
        assert_eq!(h.count("webhook_guard.unmatched.denied"), 5);
    }
}

#[test]
fn a_climbing_path_is_refused_whatever_chose_the_policy() {
    // Envoy names the route (or the native per-route config names the policy) from the path
    // as it routed it; a backend that decodes `%2e%2e;` serves another route's handler.
    let climbing = "/webhooks/custom/..;/standard";
    for (custom_match, route_name, authority, route_policy) in [
        (json!({"route_name": "custom"}), Some("custom"), "h", None),
        (
            json!({"authority": "a.example.com"}),
            None,
            "a.example.com",
            None,
        ),
        (
            json!({"path_prefix": "/webhooks/custom"}),
            None,
            "h",
            Some("custom"),
        ),
    ] {
        let g = guard(json!({"default": "allow", "policies": [
            {"name": "custom", "match": custom_match, "provider": "github", "secrets": [{"inline": "b"}]},
            {"name": "standard", "match": {"path_prefix": "/webhooks/standard"}, "provider": "github", "secrets": [{"inline": "a"}]},
        ]}));
        let h = MemHost::new(g.counter_names(), NOW * 1000);
        let route = |path: &str| {
            g.route(
                &h,
                &RouteInfo {
                    route_name,
                    authority,
                    path,
                    route_policy,
                },
            )
        };
        match route(climbing) {
            Route::Reject(r) => assert_eq!(r.reason, Reason::NoMatchingPolicy),
            _ => panic!("{climbing} chosen by {route_name:?} {authority} {route_policy:?}"),
        }
        assert!(matches!(route("/webhooks/custom/a;b"), Route::Verify(0)));
    }
}

#[test]
fn a_body_key_needs_a_body_bounded_in_the_template() {
    let doc = |template: &str| {
        let mut scheme = json!({"signature_header": "X-Sig", "signed_template": template});
        if template.contains("{timestamp}") {
            scheme["timestamp_header"] = json!("X-Ts");
        }
        json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom",
            "secrets": [{"inline": "s"}], "custom": scheme,
            "dedup": {"key": {"source": "json_pointer", "pointer": "/id"}}}]})
    };
    for template in [
        "{header:x-event}.{body}",
        "{timestamp}.{body}.{header:x-a}",
        "{path}{body}",
    ] {
        let e = compile(doc(template).to_string().as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.path, "policies[0].dedup.key", "{template}");
    }
    for template in [
        "{timestamp}.{body}",
        "{body}.{timestamp}",
        "v1:{timestamp}:{body}",
        "{body}",
    ] {
        assert!(
            compile(doc(template).to_string().as_bytes(), &|_| None).is_ok(),
            "{template}"
        );
    }
}
