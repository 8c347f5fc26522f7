// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! The request flow and the config validator, through the public API the glue uses.

use serde_json::{json, Value};
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::{
    compile, config::Algorithm, Guard, Level, Reason, Rejection, RequestInfo, Route, RouteInfo,
};

const NOW: u64 = 1_700_000_000;

fn guard(policies: Value, env: &[(&str, &str)]) -> Guard {
    let doc = json!({"policies": policies}).to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    compile(doc.as_bytes(), &move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn github(secrets: Value) -> Value {
    json!([{"name": "gh", "match": {"path_prefix": "/gh"}, "provider": "github", "secrets": secrets}])
}

fn gh_sig(secret: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "sha256={}",
        hex::encode(compute_mac(Algorithm::HmacSha256, secret.as_bytes(), &[body]).unwrap())
    )
    .into_bytes()
}

fn headers(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn info(path: &str) -> RequestInfo {
    RequestInfo {
        route_name: Some("r1".into()),
        method: "POST".into(),
        path: path.into(),
    }
}

fn send(
    g: &Guard,
    host: &MemHost,
    path: &str,
    hs: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<usize, Rejection> {
    let p = match g.route(
        host,
        &RouteInfo {
            route_name: Some("r1"),
            authority: "h",
            path,
            route_policy: None,
        },
    ) {
        Route::Verify(p) => p,
        Route::Reject(r) => return Err(r),
        Route::Pass => return Ok(usize::MAX),
    };
    let pending = g.begin(host, p, info(path), hs)?;
    g.finish(host, &pending, body).map(|a| a.key_index)
}

#[test]
fn rotation_accepts_any_listed_secret_and_counts_the_secondary() {
    let g = guard(
        github(json!([{"env": "NEW"}, {"inline": "old-secret"}])),
        &[("NEW", "new-secret")],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let hs = headers(&[("x-hub-signature-256", &gh_sig("old-secret", b"x"))]);
    assert_eq!(send(&g, &host, "/gh", &hs, b"x"), Ok(1));
    let hs = headers(&[("X-Hub-Signature-256", &gh_sig("new-secret", b"y"))]);
    assert_eq!(send(&g, &host, "/gh", &hs, b"y"), Ok(0));
    // The same body signed under the other secret is the same delivery (here still in flight):
    // which listed secret verifies a body does not make it another one.
    let hs = headers(&[("X-Hub-Signature-256", &gh_sig("new-secret", b"x"))]);
    assert_eq!(
        send(&g, &host, "/gh", &hs, b"x").map_err(|r| r.reason),
        Err(Reason::InFlight)
    );
    assert_eq!(host.count("webhook_guard.policy.gh.accepted"), 2);
    assert_eq!(
        host.count("webhook_guard.policy.gh.accepted_secondary_secret"),
        1
    );
}

/// A sender rotating secrets signs with both (`t=..,v1=<old>,v1=<new>`) while the policy lists
/// both. A copy keeping only one of the signatures is verified by the other listed secret: it
/// must still be the same delivery (the dedup key is the signed bytes, not the MAC that matched).
#[test]
fn a_copy_stripped_of_one_rotation_signature_is_still_a_replay() {
    let g = guard(
        json!([{"name": "cal", "match": {"path_prefix": "/cal"}, "provider": "calendly",
                "secrets": [{"inline": "new-secret"}, {"inline": "old-secret"}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let body = br#"{"event":"invitee.created","payload":{"uri":"u-1"}}"#;
    let sig = |secret: &str| {
        let signed = [NOW.to_string().as_bytes(), b".", body].concat();
        hex::encode(compute_mac(Algorithm::HmacSha256, secret.as_bytes(), &[&signed]).unwrap())
    };
    let run = |value: String| {
        let hs = headers(&[("calendly-webhook-signature", value.as_bytes())]);
        let pending = g.begin(&h, 0, info("/cal"), &hs)?;
        g.finish(&h, &pending, body)
    };
    let (old, new) = (sig("old-secret"), sig("new-secret"));
    let first = run(format!("t={NOW},v1={old},v1={new}")).unwrap();
    assert_eq!(first.key_index, 0);
    g.settle(
        &h,
        first.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    for value in [
        format!("t={NOW},v1={old}"),
        format!("t={NOW},v1={new}"),
        format!("t={NOW},v1={new},v1={old}"),
    ] {
        assert_eq!(run(value).unwrap_err().reason, Reason::Replayed);
    }
}

#[test]
fn missing_env_secret_fails_closed_with_503_and_a_warning() {
    let g = guard(github(json!([{"env": "UNSET"}])), &[]);
    assert!(g
        .notices()
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("UNSET")));
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let hs = headers(&[("x-hub-signature-256", &gh_sig("", b"x"))]);
    let r = send(&g, &host, "/gh", &hs, b"x").unwrap_err();
    assert_eq!((r.status, r.reason), (503, Reason::SecretUnavailable));
    assert_eq!(r.body, r#"{"error":"secret_unavailable","policy":"gh"}"#);
    assert_eq!(
        host.count("webhook_guard.policy.gh.reason.secret_unavailable"),
        1
    );
}

#[test]
fn an_unset_rotation_slot_is_only_informational() {
    let g = guard(github(json!([{"inline": "s"}, {"env": "PREVIOUS"}])), &[]);
    assert!(g.notices().iter().all(|(l, _)| *l == Level::Info));
    assert_eq!(g.notices().len(), 1);
}

#[test]
fn declared_or_streamed_bodies_over_the_limit_get_413() {
    let g = guard(
        json!([{"name": "gh", "match": {"path_prefix": "/gh"}, "provider": "github",
                "secrets": [{"inline": "s"}], "max_body_bytes": 10}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let sig = gh_sig("s", b"0123456789A");
    let hs = headers(&[("x-hub-signature-256", &sig), ("content-length", b"11")]);
    let r = g.begin(&host, 0, info("/gh"), &hs).unwrap_err();
    assert_eq!((r.status, r.reason), (413, Reason::BodyTooLarge));
    // Chunked: no content-length, the size check fires while buffering.
    let hs = headers(&[("x-hub-signature-256", &sig)]);
    let pending = g.begin(&host, 0, info("/gh"), &hs).unwrap();
    assert!(g.check_body_size(&host, &pending, 10).is_ok());
    assert_eq!(
        g.check_body_size(&host, &pending, 11).unwrap_err().reason,
        Reason::BodyTooLarge
    );
    assert_eq!(
        g.finish(&host, &pending, b"0123456789A")
            .unwrap_err()
            .status,
        413
    );
    // Exactly at the limit is fine.
    let sig = gh_sig("s", b"0123456789");
    let hs = headers(&[("x-hub-signature-256", &sig), ("content-length", b"10")]);
    let pending = g.begin(&host, 0, info("/gh"), &hs).unwrap();
    assert!(g.finish(&host, &pending, b"0123456789").is_ok());
}

#[test]
fn status_overrides_apply_per_policy() {
    let g = guard(
        json!([{"name": "gh", "match": {"path_prefix": "/gh"}, "provider": "github",
                "secrets": [{"inline": "s"}], "status_overrides": {"invalid_signature": 403, "missing_signature": 401}}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let r = send(
        &g,
        &host,
        "/gh",
        &headers(&[("x-hub-signature-256", &gh_sig("x", b"b"))]),
        b"b",
    )
    .unwrap_err();
    assert_eq!((r.status, r.reason), (403, Reason::InvalidSignature));
    let r = send(&g, &host, "/gh", &[], b"b").unwrap_err();
    assert_eq!(r.status, 401);
}

#[test]
fn unmatched_requests_pass_by_default_and_are_denied_when_configured() {
    let g = guard(github(json!([{"inline": "s"}])), &[]);
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    assert_eq!(send(&g, &host, "/other", &[], b""), Ok(usize::MAX));
    assert_eq!(host.count("webhook_guard.unmatched.passed"), 1);

    let doc = json!({"default": "deny", "policies": github(json!([{"inline": "s"}]))}).to_string();
    let g = compile(doc.as_bytes(), &|_| None).unwrap();
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let r = send(&g, &host, "/other", &[], b"").unwrap_err();
    assert_eq!((r.status, r.reason), (403, Reason::NoMatchingPolicy));
    assert_eq!(r.body, r#"{"error":"no_matching_policy","policy":null}"#);
    assert_eq!(host.count("webhook_guard.unmatched.denied"), 1);
}

#[test]
fn first_matching_policy_wins() {
    let g = guard(
        json!([
            {"name": "a", "match": {"route_name": "r1", "path_prefix": "/x"}, "provider": "github", "secrets": [{"inline": "a"}]},
            {"name": "b", "match": {"path_prefix": "/"}, "provider": "github", "secrets": [{"inline": "b"}]},
        ]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let r = |path| {
        g.route(
            &host,
            &RouteInfo {
                route_name: Some("r1"),
                authority: "h",
                path,
                route_policy: None,
            },
        )
    };
    assert!(matches!(r("/x/1"), Route::Verify(0)));
    assert!(matches!(r("/y"), Route::Verify(1)));
}

#[test]
fn rejection_log_is_one_json_line_with_ids_and_never_the_secret() {
    let secret = "super-secret-value";
    let g = guard(
        json!([{"name": "std", "match": {"path_prefix": "/"}, "provider": "standard-webhooks",
                "secrets": [{"inline": "whsec_c3VwZXItc2VjcmV0LXZhbHVl"}]}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let hs = headers(&[
        ("webhook-id", b"msg_123"),
        ("webhook-timestamp", NOW.to_string().as_bytes()),
        (
            "webhook-signature",
            b"v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ]);
    let r = send(&g, &host, "/webhooks/standard?x=\"1\"", &hs, b"{}").unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
    let logs = host.logs();
    assert_eq!(logs.len(), 1);
    let line: Value = serde_json::from_str(&logs[0].1).unwrap();
    assert_eq!(line["event"], "webhook_rejected");
    assert_eq!(line["policy"], "std");
    assert_eq!(line["reason"], "invalid_signature");
    assert_eq!(line["status"], 401);
    assert_eq!(line["route"], "r1");
    assert_eq!(line["delivery_id"], "msg_123");
    assert_eq!(
        line["path"], "/webhooks/standard",
        "query strings stay out of logs"
    );
    assert!(!logs[0].1.contains(secret) && !logs[0].1.contains("c3VwZXItc2VjcmV0LXZhbHVl"));
    assert!(!r.body.contains("c3VwZXI"));
}

#[test]
fn stale_and_future_are_told_apart_in_the_log() {
    let g = guard(
        json!([{"name": "sl", "match": {"path_prefix": "/"}, "provider": "slack", "secrets": [{"inline": "k"}],
                "timestamp_tolerance_seconds": 60}]),
        &[],
    );
    for (ts, detail) in [(NOW - 61, "stale"), (NOW + 61, "future")] {
        let host = MemHost::new(g.counter_names(), NOW * 1000);
        let mac = compute_mac(
            Algorithm::HmacSha256,
            b"k",
            &[format!("v0:{ts}:").as_bytes(), b"b"],
        )
        .unwrap();
        let hs = headers(&[
            (
                "x-slack-signature",
                format!("v0={}", hex::encode(mac)).as_bytes(),
            ),
            ("x-slack-request-timestamp", ts.to_string().as_bytes()),
        ]);
        let r = send(&g, &host, "/s", &hs, b"b").unwrap_err();
        assert_eq!((r.status, r.reason), (401, Reason::TimestampOutOfWindow));
        let line: Value = serde_json::from_str(&host.logs()[0].1).unwrap();
        assert_eq!(line["detail"], detail);
    }
}

#[test]
fn duplicate_signature_headers_are_ambiguous_and_rejected() {
    let g = guard(github(json!([{"inline": "s"}])), &[]);
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let sig = gh_sig("s", b"b");
    let hs = headers(&[("x-hub-signature-256", &sig), ("X-Hub-Signature-256", &sig)]);
    assert_eq!(
        send(&g, &host, "/gh", &hs, b"b").unwrap_err().reason,
        Reason::MalformedSignature
    );
}

fn config_error(doc: Value) -> String {
    compile(doc.to_string().as_bytes(), &|_| None)
        .unwrap_err()
        .to_string()
}

#[test]
fn config_errors_name_the_field() {
    let base = || json!({"name": "p", "match": {"path_prefix": "/"}, "provider": "github", "secrets": [{"inline": "s"}]});
    let with = |k: &str, v: Value| {
        let mut p = base();
        p[k] = v;
        json!({"policies": [p]})
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"policies": [base()], "extra": 1}),
            "unknown field `extra`",
        ),
        (with("provider", json!("bogus")), "policies[0].provider"),
        (with("secret", json!([])), "unknown field `secret`"),
        (with("secrets", json!([])), "policies[0].secrets"),
        (
            with("secrets", json!([{"file": "x"}])),
            "policies[0].secrets[0]",
        ),
        (with("name", json!("Bad.Name")), "policies[0].name"),
        (with("match", json!({})), "policies[0].match"),
        (with("match", json!({"path": "/"})), "policies[0].match"),
        (
            with("timestamp_tolerance_seconds", json!(0)),
            "policies[0].timestamp_tolerance_seconds",
        ),
        (
            with("max_body_bytes", json!(-1)),
            "policies[0].max_body_bytes",
        ),
        (
            with("status_overrides", json!({"bogus": 400})),
            "policies[0].status_overrides.bogus",
        ),
        (
            with("status_overrides", json!({"invalid_signature": 99})),
            "policies[0].status_overrides.invalid_signature",
        ),
        (with("custom", json!({})), "policies[0].custom"),
        (json!({"policies": [base(), base()]}), "policies[1].name"),
        (json!({"policies": []}), "policies"),
        (json!({"policies": [base()], "default": "maybe"}), "default"),
        (
            json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom", "secrets": [{"inline": "s"}],
            "custom": {"signature_header": "X-Sig", "signed_template": "{timestamp}"}}]}),
            "policies[0].custom.signed_template",
        ),
        (
            json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom", "secrets": [{"inline": "s"}],
            "custom": {"signature_header": "X-Sig", "signed_template": "{timestamp}.{body}"}}]}),
            "policies[0].custom.timestamp_header",
        ),
        (
            json!({"policies": [{"name": "c", "match": {"path_prefix": "/"}, "provider": "custom", "secrets": [{"inline": "s"}],
            "custom": {"signature_header": "X-Sig", "signed_template": "{body}", "timestamp_header": "X-Ts"}}]}),
            "no {timestamp}",
        ),
        (
            json!({"policies": [{"name": "s", "match": {"path_prefix": "/"}, "provider": "standard-webhooks",
            "secrets": [{"inline": "whsec_!!notbase64"}]}]}),
            "policies[0].secrets[0]",
        ),
        (
            with("accept_legacy_sha1", json!("yes")),
            "policies[0].accept_legacy_sha1",
        ),
    ];
    for (doc, want) in cases {
        let msg = config_error(doc.clone());
        assert!(
            msg.contains(want),
            "{doc}: message {msg:?} should contain {want:?}"
        );
        assert!(!msg.contains("notbase64"), "secret text leaked into {msg}");
    }
    let mut p = base();
    p["provider"] = json!("stripe");
    p["accept_legacy_sha1"] = json!(true);
    assert!(config_error(json!({"policies": [p]})).contains("accept_legacy_sha1"));
    assert!(compile(b"not json", &|_| None).is_err());
    // serde would echo a mis-shaped secret ("unknown variant `whsec_...`"): never in our errors.
    for secrets in [
        json!(["whsec_topsecret"]),
        json!("whsec_topsecret"),
        json!([{"inline": "whsec_topsecret", "x": 1}]),
    ] {
        let msg = config_error(with("secrets", secrets));
        assert!(msg.contains("policies[0].secrets"), "{msg}");
        assert!(!msg.contains("topsecret"), "secret echoed: {msg}");
    }
    // The same for the other secret-bearing fields: a decryption key, Meta's verify token.
    let meta = |token: Value| {
        json!({"policies": [{"name": "m", "match": {"path_prefix": "/"}, "provider": "meta",
                "secrets": [{"inline": "s"}], "answer_challenges": true, "verify_token": token}]})
    };
    let sealed = |keys: Value| {
        let mut p = base();
        p["decrypt"] = json!({"cipher": "aes-256-gcm", "keys": keys});
        json!({"policies": [p]})
    };
    for (doc, field) in [
        (meta(json!("topsecret-token")), "policies[0].verify_token"),
        (
            meta(json!({"inline": "topsecret-token", "x": 1})),
            "policies[0].verify_token",
        ),
        (sealed(json!(["topsecret-key"])), "policies[0].decrypt.keys"),
        (sealed(json!("topsecret-key")), "policies[0].decrypt.keys"),
        (
            sealed(json!([{"inline": "topsecret-key", "x": 1}])),
            "policies[0].decrypt.keys",
        ),
    ] {
        let msg = config_error(doc);
        assert!(msg.contains(field), "{msg}");
        assert!(!msg.contains("topsecret"), "secret echoed: {msg}");
    }
}

#[test]
fn the_shipped_demo_config_compiles() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../envoy/webhook-guard.json"
    );
    // Every signing secret, and the envelope route's AES-256 keys (32 bytes, base64).
    let g = compile(&std::fs::read(path).unwrap(), &|name| {
        Some(if name.contains("ENCRYPTION_KEY") {
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()
        } else {
            "whsec_c2VjcmV0".into()
        })
    })
    .unwrap();
    assert_eq!(g.policies().len(), 7);
    assert!(g.notices().is_empty(), "{:?}", g.notices());
}

#[test]
fn challenges_and_square_need_their_own_settings() {
    let base = |provider: &str, extra: Value| {
        let mut p = json!({"name": "p", "match": {"path_prefix": "/"}, "provider": provider, "secrets": [{"inline": "s"}]});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        compile(json!({"policies": [p]}).to_string().as_bytes(), &|_| None)
            .err()
            .map(|e| e.to_string())
    };
    assert!(base("square", json!({}))
        .unwrap()
        .contains("policies[0].signed_url"));
    assert!(base("square", json!({"signed_url": "https://h/x"})).is_none());
    assert!(base("github", json!({"signed_url": "https://h/x"}))
        .unwrap()
        .contains("only applies to provider 'square'"));
    assert!(base("github", json!({"answer_challenges": true}))
        .unwrap()
        .contains("policies[0].answer_challenges"));
    assert!(base("zoom", json!({"answer_challenges": true})).is_none());
    assert!(base("meta", json!({"answer_challenges": true}))
        .unwrap()
        .contains("policies[0].verify_token"));
    assert!(base("meta", json!({"verify_token": {"inline": "t"}}))
        .unwrap()
        .contains("only applies to providers 'meta' and 'lark' with answer_challenges"));
    assert!(base(
        "meta",
        json!({"answer_challenges": true, "verify_token": {"inline": "t"}})
    )
    .is_none());
}

#[test]
fn metas_subscription_handshake_is_answered_from_the_token() {
    let g = guard(
        json!([{"name": "m", "match": {"path_prefix": "/"}, "provider": "meta", "secrets": [{"inline": "app"}],
                "answer_challenges": true, "verify_token": {"inline": "my token"}}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let get = |path: &str| handshake(&g, &host, path);
    let (status, body, details) =
        get("/hook?hub.mode=subscribe&hub.verify_token=my+token&hub.challenge=1158201444");
    assert_eq!(
        (status, body.as_str(), details),
        (200, "1158201444", "challenge_answered")
    );
    assert_eq!(host.count("webhook_guard.policy.m.challenges_answered"), 1);
    let wrong = get("/hook?hub.mode=subscribe&hub.verify_token=my+tokem&hub.challenge=1");
    assert_eq!((wrong.0, wrong.2), (401, "invalid_signature"));
    let missing = get("/hook?hub.mode=subscribe&hub.challenge=1");
    assert_eq!((missing.0, missing.2), (400, "missing_signature"));
    let twice = get(
        "/hook?hub.mode=subscribe&hub.verify_token=my+token&hub.verify_token=x&hub.challenge=1",
    );
    assert_eq!(twice.2, "malformed_signature");
    // Only short, plain challenges are echoed.
    let script =
        get("/hook?hub.mode=subscribe&hub.verify_token=my+token&hub.challenge=%3Cscript%3E");
    assert_eq!((script.0, script.2), (400, "malformed_signature"));
    let long = format!(
        "/hook?hub.mode=subscribe&hub.verify_token=my+token&hub.challenge={}",
        "1".repeat(129)
    );
    assert_eq!(get(&long).2, "malformed_signature");
    // Not a handshake: a GET is refused like any unverified method.
    assert_eq!(get("/hook?hub.mode=unsubscribe").2, "method_not_allowed");
    assert_eq!(get("/hook").2, "method_not_allowed");
    assert_eq!(host.count("webhook_guard.policy.m.challenges_answered"), 1);
    // The token never reaches a log line.
    assert!(host
        .logs()
        .iter()
        .all(|(_, l)| !l.contains("my") && !l.contains("tokem")));
}

#[test]
fn a_verified_zoom_url_validation_is_answered_not_forwarded() {
    let g = guard(
        json!([{"name": "z", "match": {"path_prefix": "/"}, "provider": "zoom", "secrets": [{"inline": "tok"}],
                "answer_challenges": true}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"abc"}}"#;
    let mac = compute_mac(
        Algorithm::HmacSha256,
        b"tok",
        &[format!("v0:{NOW}:").as_bytes(), body],
    )
    .unwrap();
    let hs = headers(&[
        (
            "x-zm-signature",
            format!("v0={}", hex::encode(mac)).as_bytes(),
        ),
        ("x-zm-request-timestamp", NOW.to_string().as_bytes()),
    ]);
    let pending = g.begin(&host, 0, info("/"), &hs).unwrap();
    let accepted = g.finish(&host, &pending, body).unwrap();
    let reply = accepted.reply.expect("answered by the filter");
    let expected = hex::encode(compute_mac(Algorithm::HmacSha256, b"tok", &[b"abc"]).unwrap());
    assert_eq!(
        reply.body,
        format!(r#"{{"plainToken":"abc","encryptedToken":"{expected}"}}"#)
    );
    assert!(accepted.claim.is_none());
    assert_eq!(host.count("webhook_guard.policy.z.challenges_answered"), 1);
}

/// A body-less GET through the whole stream (Meta's handshake): the local reply it gets.
fn handshake(g: &Guard, host: &MemHost, path: &str) -> (u16, String, &'static str) {
    use webhook_guard_core::{Step, Stream};
    let route = RouteInfo {
        route_name: None,
        authority: "h",
        path: "/",
        route_policy: None,
    };
    let mut s = Stream::new();
    let hs = headers(&[]);
    match s.on_request_headers(g, host, &route, with_method(path, "GET"), &hs, true) {
        Step::Reply(r) => (r.status, r.body, r.details),
        other => panic!("{other:?}"),
    }
}

fn with_method(path: &str, method: &str) -> RequestInfo {
    RequestInfo {
        method: method.into(),
        ..info(path)
    }
}

#[test]
fn other_methods_are_refused_before_the_body_with_405_and_allow() {
    let g = guard(github(json!([{"inline": "s"}])), &[]);
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    // Even with a valid signature: OPTIONS would get a framework's automatic 200, which
    // commits the delivery and loses the sender's real retry.
    let hs = headers(&[("x-hub-signature-256", &gh_sig("s", b"x"))]);
    for method in ["OPTIONS", "GET", "HEAD", "PUT", "DELETE", "post", "PATCH"] {
        let r = g
            .begin(&host, 0, with_method("/gh", method), &hs)
            .unwrap_err();
        assert_eq!(
            (r.status, r.reason),
            (405, Reason::MethodNotAllowed),
            "{method}"
        );
        assert_eq!(r.headers, vec![("allow", "POST".to_string())]);
        assert_eq!(r.body, r#"{"error":"method_not_allowed","policy":"gh"}"#);
    }
    assert_eq!(
        host.count("webhook_guard.policy.gh.reason.method_not_allowed"),
        7
    );
    assert!(g.begin(&host, 0, with_method("/gh", "POST"), &hs).is_ok());

    let g = guard(
        json!([{"name": "gh", "match": {"path_prefix": "/gh"}, "provider": "github",
                "secrets": [{"inline": "s"}], "methods": ["post", "Put"]}]),
        &[],
    );
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let pending = g.begin(&host, 0, with_method("/gh", "PUT"), &hs).unwrap();
    assert!(g.finish(&host, &pending, b"x").is_ok());
    let r = g
        .begin(&host, 0, with_method("/gh", "GET"), &hs)
        .unwrap_err();
    assert_eq!(r.headers, vec![("allow", "POST, PUT".to_string())]);
}

#[test]
fn methods_must_be_http_methods() {
    for (methods, path) in [
        (json!([]), "policies[0].methods"),
        (json!(["PO ST"]), "policies[0].methods[0]"),
        (json!(["POST", ""]), "policies[0].methods[1]"),
    ] {
        let doc = json!({"policies": [{"name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
                                       "secrets": [{"inline": "s"}], "methods": methods}]});
        let e = compile(doc.to_string().as_bytes(), &|_| None).unwrap_err();
        assert_eq!(e.path, path);
    }
}

#[test]
fn one_policy_filling_its_share_never_starves_another() {
    let doc = json!({
        "store": {"shards": 2, "capacity": 6},
        "policies": [
            {"name": "a", "match": {"path_prefix": "/a"}, "provider": "github", "secrets": [{"inline": "s"}]},
            {"name": "b", "match": {"path_prefix": "/b"}, "provider": "github", "secrets": [{"inline": "s"}]},
        ]
    });
    let g = compile(doc.to_string().as_bytes(), &|_| None).unwrap();
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    g.init_store(&host);
    // Each policy gets half: 3 entries on one shard (shards follow the share).
    assert_eq!(g.policy(0).unwrap().dedup.as_ref().unwrap().capacity, 3);
    assert_eq!(g.store().bound(0), Some(3));
    let post = |policy: usize, path: &str, body: &[u8]| {
        let hs = headers(&[("x-hub-signature-256", &gh_sig("s", body))]);
        let pending = g.begin(&host, policy, info(path), &hs)?;
        g.finish(&host, &pending, body)
    };
    for i in 0..3 {
        assert!(post(0, "/a", format!("a{i}").as_bytes()).is_ok());
    }
    let r = post(0, "/a", b"a-full").unwrap_err();
    assert_eq!((r.status, r.reason), (503, Reason::StoreFull));
    // Policy b still has its whole share.
    for i in 0..3 {
        assert!(post(1, "/b", format!("b{i}").as_bytes()).is_ok(), "b{i}");
    }

    // Explicit shares are checked against the total; the rest is split among the others.
    let doc = json!({
        "store": {"shards": 4, "capacity": 100},
        "policies": [
            {"name": "a", "match": {"path_prefix": "/a"}, "provider": "github", "secrets": [{"inline": "s"}], "dedup": {"capacity": 70}},
            {"name": "b", "match": {"path_prefix": "/b"}, "provider": "github", "secrets": [{"inline": "s"}]},
            {"name": "c", "match": {"path_prefix": "/c"}, "provider": "github", "secrets": [{"inline": "s"}]},
        ]
    });
    let g = compile(doc.to_string().as_bytes(), &|_| None).unwrap();
    let caps: Vec<u64> = g
        .policies()
        .iter()
        .map(|p| p.dedup.as_ref().unwrap().capacity)
        .collect();
    assert_eq!(caps, vec![70, 15, 15]);
    let mut over = doc.clone();
    over["policies"][1]["dedup"] = json!({"capacity": 31});
    let e = compile(over.to_string().as_bytes(), &|_| None).unwrap_err();
    assert_eq!(e.path, "store.capacity");
}

#[test]
fn policies_of_one_dedup_scope_admit_a_delivery_once_whichever_route_it_comes_to() {
    let doc = |scope: Option<&str>| {
        let mut b = json!({"name": "b", "match": {"path_prefix": "/b"}, "provider": "github",
                           "secrets": [{"env": "GH"}, {"inline": "old"}]});
        if let Some(s) = scope {
            b["dedup"] = json!({"scope": s});
        }
        json!({"store": {"capacity": 100}, "policies": [
            {"name": "a", "match": {"path_prefix": "/a"}, "provider": "github",
             "secrets": [{"env": "GH"}], "dedup": {"capacity": 30}},
            b,
            {"name": "c", "match": {"path_prefix": "/c"}, "provider": "github", "secrets": [{"inline": "other"}]},
        ]})
    };
    let env = |name: &str| (name == "GH").then(|| "s".to_string());
    for native_build in [false, true] {
        let build = |scope: Option<&str>| {
            webhook_guard_core::compile_with(
                doc(scope).to_string().as_bytes(),
                &env,
                webhook_guard_core::Options {
                    plugin_name: "scope-test",
                    build: if native_build {
                        webhook_guard_core::Build::Native
                    } else {
                        webhook_guard_core::Build::Wasm
                    },
                },
            )
            .unwrap()
        };
        let post = |g: &Guard, host: &MemHost, policy: usize, path: &str, body: &[u8]| {
            let hs = headers(&[("x-hub-signature-256", &gh_sig("s", body))]);
            let pending = g.begin(host, policy, info(path), &hs)?;
            g.finish(host, &pending, body)
        };
        // A guard (b in `scope`) whose policy a admitted `body`, answered 200 by the backend.
        let delivered_on_a = |scope: Option<&str>, body: &[u8]| {
            let g = build(scope);
            let host = MemHost::new(g.counter_names(), NOW * 1000);
            g.init_store(&host);
            let first = post(&g, &host, 0, "/a", body).unwrap();
            g.settle(
                &host,
                first.claim.unwrap(),
                webhook_guard_core::Upstream::Answered(200),
            );
            (g, host)
        };
        // Separate scopes (the default): the delivery captured on /a is new to /b, and the
        // configuration says so, naming the source but never the value.
        let (g, host) = delivered_on_a(None, b"evt-1");
        let warning = g
            .notices()
            .iter()
            .find(|(_, m)| m.contains("share a secret"))
            .map(|(_, m)| m.clone())
            .unwrap();
        assert!(
            warning.contains("policies[1] ('b') and policies[0] ('a')")
                && warning.contains("env GH"),
            "{warning}"
        );
        assert!(!g.notices().iter().any(|(_, m)| m.contains("'c'")));
        assert!(post(&g, &host, 1, "/b", b"evt-1").is_ok());

        // (The native store outlives a guard, as Envoy shared data does: fresh deliveries.)
        // One scope: a replay on /b of what /a admitted, and a twin in flight on /a of what
        // /b holds; the pooled share is the sum of both; other policies keep theirs.
        let (g, host) = delivered_on_a(Some("a"), b"evt-3");
        assert!(!g
            .notices()
            .iter()
            .any(|(_, m)| m.contains("share a secret")));
        let r = post(&g, &host, 1, "/b", b"evt-3").unwrap_err();
        assert_eq!((r.status, r.reason), (409, Reason::Replayed));
        assert!(post(&g, &host, 1, "/b", b"evt-4").is_ok());
        let r = post(&g, &host, 0, "/a", b"evt-4").unwrap_err();
        assert_eq!(r.reason, Reason::InFlight);
        assert_eq!(g.store().bound(0), g.store().bound(1));
        assert!(
            g.store().bound(0).unwrap() >= 65,
            "{:?}",
            g.store().bound(0)
        );
        assert!(
            post(&g, &host, 2, "/c", b"evt-3").is_err(),
            "c has its own secret"
        );
        let c_body = b"evt-3";
        let hs = headers(&[("x-hub-signature-256", &gh_sig("other", c_body))]);
        let pending = g.begin(&host, 2, info("/c"), &hs).unwrap();
        assert!(
            g.finish(&host, &pending, c_body).is_ok(),
            "c's store is its own"
        );
    }

    // A scope's policies claim in one store.
    let mut mixed = doc(Some("a"));
    mixed["policies"][1]["store"] = json!({"type": "etcd", "cluster": "etcd"});
    let e = compile(mixed.to_string().as_bytes(), &|n| {
        (n == "GH").then(|| "s".to_string())
    })
    .unwrap_err();
    assert_eq!(e.path, "policies[1].dedup.scope");
    // ... and keep a delivery as long, or the one that forgets first admits it again.
    let mut shorter = doc(Some("a"));
    shorter["policies"][1]["dedup"]["retention_seconds"] = json!(60);
    let e = compile(shorter.to_string().as_bytes(), &|n| {
        (n == "GH").then(|| "s".to_string())
    })
    .unwrap_err();
    assert_eq!(e.path, "policies[1].dedup.scope");
    assert!(e.message.contains("retention differs"), "{e}");
    let mut bad = doc(Some("Not A Name"));
    bad["policies"][0]["dedup"] = json!({});
    let e = compile(bad.to_string().as_bytes(), &|_| None).unwrap_err();
    assert_eq!(e.path, "policies[1].dedup.scope");
}

fn native(doc: Value) -> Result<Guard, webhook_guard_core::ConfigError> {
    webhook_guard_core::compile_with(
        doc.to_string().as_bytes(),
        &|_| None,
        webhook_guard_core::Options {
            plugin_name: "native-test",
            build: webhook_guard_core::Build::Native,
        },
    )
}

#[test]
fn sds_secrets_per_route_policies_and_sds_config_are_native_only() {
    let sds = json!({"policies": [{"name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
                                    "secrets": [{"sds": "github-current"}]}]});
    let e = compile(sds.to_string().as_bytes(), &|_| None).unwrap_err();
    assert_eq!(e.path, "policies[0].secrets[0].sds");
    assert!(e.message.contains("native build"), "{e}");
    let unmatched =
        json!({"policies": [{"name": "gh", "provider": "github", "secrets": [{"inline": "s"}]}]});
    let e = compile(unmatched.to_string().as_bytes(), &|_| None).unwrap_err();
    assert_eq!(e.path, "policies[0].match");
    let source = json!({"sds_config": {"ads": {}}, "policies": sds["policies"]});
    assert_eq!(
        compile(source.to_string().as_bytes(), &|_| None)
            .unwrap_err()
            .path,
        "sds_config"
    );
    // The native build takes all three.
    let g = native(json!({"sds_config": {"path_config_source": {"path": "/s/{name}.yaml"}},
        "policies": [
            {"name": "gh", "provider": "github", "secrets": [{"sds": "gh-new"}, {"sds": "gh-old"}]},
            {"name": "gh2", "match": {"path_prefix": "/x"}, "provider": "github", "secrets": [{"sds": "gh-old"}]},
        ]}))
    .unwrap();
    assert_eq!(g.sds_secrets(), ["gh-new", "gh-old"]);
    assert_eq!(
        g.sds_source("gh-new"),
        r#"{"path_config_source":{"path":"/s/gh-new.yaml"}}"#
    );
    assert_eq!(g.policy(0).unwrap().sds_secrets(), 2);
}

#[test]
fn sds_secrets_are_read_per_request_so_they_rotate_without_a_reload() {
    let g = native(json!({"default": "deny", "policies": [
        {"name": "gh", "provider": "github", "secrets": [{"sds": "current"}, {"sds": "previous"}]},
    ]}))
    .unwrap();
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let route = |policy| RouteInfo {
        route_name: None,
        authority: "h",
        path: "/anything",
        route_policy: policy,
    };
    // No `match`: only a route that names the policy reaches it.
    assert!(matches!(g.route(&host, &route(None)), Route::Reject(_)));
    let Route::Verify(p) = g.route(&host, &route(Some("gh"))) else {
        panic!()
    };
    let send = |secret: &str, body: &[u8]| {
        let hs = headers(&[("x-hub-signature-256", &gh_sig(secret, body))]);
        let pending = g.begin(&host, p, info("/anything"), &hs)?;
        g.finish(&host, &pending, body).map(|a| a.key_index)
    };
    // Nothing delivered yet: fail closed.
    let r = send("one", b"a").unwrap_err();
    assert_eq!(r.reason, Reason::SecretUnavailable);
    host.sds.borrow_mut().insert(0, b"one\n".to_vec()); // a file's trailing newline is not the secret
    assert_eq!(send("one", b"b"), Ok(0));
    // Rotated: the new value first, the old one still listed.
    host.sds.borrow_mut().insert(0, b"two".to_vec());
    host.sds.borrow_mut().insert(1, b"one".to_vec());
    assert_eq!(send("two", b"c"), Ok(0));
    assert_eq!(send("one", b"d"), Ok(1));
    host.sds.borrow_mut().remove(&1);
    assert_eq!(
        send("one", b"e").unwrap_err().reason,
        Reason::InvalidSignature
    );
    // A route naming a policy that is not configured fails closed.
    let Route::Reject(r) = g.route(&host, &route(Some("nope"))) else {
        panic!()
    };
    assert_eq!((r.status, r.reason), (403, Reason::NoMatchingPolicy));
    assert!(host
        .logs()
        .iter()
        .any(|(_, l)| l.contains("names policy 'nope'") && l.contains("policies: gh")));
}

#[test]
fn each_verdict_is_one_latency_observation_of_its_policy() {
    use webhook_guard_core::{Step, Stream};
    let g = guard(github(json!([{"inline": "s"}])), &[]);
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let route = RouteInfo {
        route_name: Some("r1"),
        authority: "h",
        path: "/gh",
        route_policy: None,
    };
    let run = |body: &[u8], sig: &[u8]| {
        let mut s = Stream::new();
        let hs = headers(&[("x-hub-signature-256", sig)]);
        let step = s.on_request_headers(&g, &host, &route, info("/gh"), &hs, false);
        assert!(matches!(step, Step::Pause));
        host.advance(3);
        s.on_request_complete(&g, &host, Some(body))
    };
    assert!(matches!(run(b"a", &gh_sig("s", b"a")), Step::Continue));
    assert!(matches!(run(b"b", &gh_sig("wrong", b"b")), Step::Reply(_)));
    assert_eq!(host.count("webhook_guard.policy.gh.verdict_latency_us"), 2);
    // MemHost's clock moves in ms: 3 ms from headers to verdict, each time.
    assert_eq!(
        host.count("webhook_guard.policy.gh.verdict_latency_us.sum"),
        6000
    );
    // Requests no policy verifies are not observations.
    let mut s = Stream::new();
    let other = RouteInfo {
        path: "/elsewhere",
        ..route
    };
    let hs = headers(&[]);
    s.on_request_headers(&g, &host, &other, info("/elsewhere"), &hs, true);
    assert_eq!(host.count("webhook_guard.policy.gh.verdict_latency_us"), 2);
}

#[test]
fn metas_verify_token_can_come_from_sds_and_rotates_per_request() {
    let doc = json!({"policies": [{"name": "m", "match": {"path_prefix": "/"}, "provider": "meta",
        "secrets": [{"inline": "app"}], "answer_challenges": true, "verify_token": {"sds": "meta-verify"}}]});
    let e = compile(doc.to_string().as_bytes(), &|_| None).unwrap_err();
    assert_eq!(e.path, "policies[0].verify_token.sds");
    let g = native(doc).unwrap();
    assert_eq!(g.sds_secrets(), ["meta-verify"]);
    let host = MemHost::new(g.counter_names(), NOW * 1000);
    let get = |token: &str| {
        let path = format!("/?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42");
        let (status, _, details) = handshake(&g, &host, &path);
        (status, details)
    };
    // Not delivered yet: fail closed.
    assert_eq!(get("first").1, "secret_unavailable");
    host.sds.borrow_mut().insert(0, b"first\n".to_vec());
    assert_eq!(get("first"), (200, "challenge_answered"));
    host.sds.borrow_mut().insert(0, b"second".to_vec());
    assert_eq!(get("first").1, "invalid_signature");
    assert_eq!(get("second"), (200, "challenge_answered"));
}

fn mailgun_block(key: &str, ts: u64, token: &str) -> Value {
    let mac = compute_mac(
        Algorithm::HmacSha256,
        key.as_bytes(),
        &[ts.to_string().as_bytes(), token.as_bytes()],
    )
    .unwrap();
    json!({"timestamp": ts.to_string(), "token": token, "signature": hex::encode(mac)})
}

fn mailgun_finish(
    g: &Guard,
    h: &MemHost,
    hs: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<webhook_guard_core::Accepted, Rejection> {
    let pending = g.begin(h, 0, info("/mg"), hs)?;
    g.finish(h, &pending, body)
}

#[test]
fn mailgun_dedups_on_the_signed_token_whatever_the_event_data_or_encoding() {
    let key = "mg-signing-key";
    let g = guard(
        json!([{"name": "mg", "match": {"path_prefix": "/mg"}, "provider": "mailgun",
                "secrets": [{"inline": key}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
    let block = mailgun_block(key, NOW, token);
    let json_ct = headers(&[("content-type", b"application/json")]);
    let body = json!({"signature": block, "event-data": {"event": "delivered"}}).to_string();
    let a = mailgun_finish(&g, &h, &json_ct, body.as_bytes()).unwrap();
    g.settle(
        &h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    // Another event under the same (captured) block verifies, since the event data is not
    // signed, but the token was used: replayed. So is the same block sent as form fields.
    let other = json!({"signature": block, "event-data": {"event": "failed"}}).to_string();
    let r = mailgun_finish(&g, &h, &json_ct, other.as_bytes()).unwrap_err();
    assert_eq!(r.reason, Reason::Replayed);
    let form = format!(
        "timestamp={NOW}&token={token}&signature={}&event=failed",
        block["signature"].as_str().unwrap()
    );
    let form_ct = headers(&[("content-type", b"application/x-www-form-urlencoded")]);
    let r = mailgun_finish(&g, &h, &form_ct, form.as_bytes()).unwrap_err();
    assert_eq!(r.reason, Reason::Replayed);
    // A fresh token is a new delivery.
    let block = mailgun_block(key, NOW, "another-token");
    let body = json!({"signature": block, "event-data": {}}).to_string();
    assert!(mailgun_finish(&g, &h, &json_ct, body.as_bytes()).is_ok());
    for (_, line) in h.logs() {
        assert!(!line.contains(key));
    }
}

#[test]
fn mailgun_parent_signature_verifies_under_the_parent_key_and_must_be_well_formed() {
    let (sub, parent) = ("subaccount-key", "parent-key");
    let g = guard(
        json!([{"name": "mg", "match": {"path_prefix": "/mg"}, "provider": "mailgun",
                "secrets": [{"inline": parent}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let json_ct = headers(&[("content-type", b"application/json")]);
    let mut block = mailgun_block(sub, NOW, "t1");
    block["parent-signature"] = mailgun_block(parent, NOW, "t1")["signature"].clone();
    let body = json!({"signature": block, "event-data": {}}).to_string();
    assert!(mailgun_finish(&g, &h, &json_ct, body.as_bytes()).is_ok());
    let mut block = mailgun_block(sub, NOW, "t2");
    block["parent-signature"] = json!("nothex");
    let body = json!({"signature": block, "event-data": {}}).to_string();
    let r = mailgun_finish(&g, &h, &json_ct, body.as_bytes()).unwrap_err();
    assert_eq!(r.reason, Reason::MalformedSignature);
    // Without the parent's signature, the subaccount's does not verify under the parent key.
    let block = mailgun_block(sub, NOW, "t3");
    let body = json!({"signature": block, "event-data": {}}).to_string();
    let r = mailgun_finish(&g, &h, &json_ct, body.as_bytes()).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
}

fn adyen_item(key_hex: &str, psp: &str, event: &str) -> Value {
    use base64::Engine;
    let signed = format!("{psp}::TestMerchant:ref-1:1130:EUR:{event}:true");
    let mac = compute_mac(
        Algorithm::HmacSha256,
        &hex::decode(key_hex).unwrap(),
        &[signed.as_bytes()],
    )
    .unwrap();
    json!({"NotificationRequestItem": {
        "pspReference": psp, "merchantAccountCode": "TestMerchant", "merchantReference": "ref-1",
        "amount": {"value": 1130, "currency": "EUR"}, "eventCode": event, "success": "true",
        "additionalData": {"hmacSignature": base64::engine::general_purpose::STANDARD.encode(mac)}}})
}

#[test]
fn adyen_takes_one_signed_item_dedups_it_and_rotates_keys() {
    let (old, new) = (
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    );
    let g = guard(
        json!([{"name": "ay", "match": {"path_prefix": "/ay"}, "provider": "adyen",
                "secrets": [{"inline": new}, {"inline": old}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let ct = headers(&[("content-type", b"application/json")]);
    let run = |items: Vec<Value>| {
        let body = json!({"live": "false", "notificationItems": items}).to_string();
        let pending = g.begin(&h, 0, info("/ay"), &ct)?;
        g.finish(&h, &pending, body.as_bytes())
    };
    // Signed with the previous key: accepted (key index 1), and the same notification again
    // is a replay once the first was delivered.
    let a = run(vec![adyen_item(old, "psp1", "AUTHORISATION")]).unwrap();
    assert_eq!(a.key_index, 1);
    g.settle(
        &h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    let r = run(vec![adyen_item(old, "psp1", "AUTHORISATION")]).unwrap_err();
    assert_eq!(r.reason, Reason::Replayed);
    // Another event of the same payment is another delivery.
    assert!(run(vec![adyen_item(new, "psp1", "CAPTURE")]).is_ok());
    // A delivered item inside another notification (twice, or next to another signed item) is
    // the same signed event: refused, never a new key. Batches are refused as a whole, as the
    // store claims one key per request.
    let delivered = adyen_item(old, "psp1", "AUTHORISATION");
    let other = adyen_item(new, "psp2", "AUTHORISATION");
    for items in [
        vec![delivered.clone(), delivered.clone()],
        vec![other.clone(), delivered.clone()],
        vec![delivered.clone(), other.clone()],
        vec![other.clone(), adyen_item(new, "psp3", "AUTHORISATION")],
    ] {
        let r = run(items).unwrap_err();
        assert_eq!(r.reason, Reason::MalformedSignature);
    }
    // The other item alone is a delivery of its own; signed with an unknown key, nothing is.
    assert!(run(vec![other]).is_ok());
    let r = run(vec![adyen_item(
        "0123456789abcdef",
        "psp4",
        "AUTHORISATION",
    )])
    .unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
    for (_, line) in h.logs() {
        assert!(!line.contains(old) && !line.contains(new));
    }
}

fn vonage_jwt(secret: &str, iat: u64, jti: &str, body: &[u8]) -> Vec<u8> {
    webhook_guard_core::sign::sign_jwt(secret.as_bytes(), &iat.to_string(), jti, body)
        .unwrap()
        .into_bytes()
}

#[test]
fn vonage_jwt_verifies_hs256_only_the_body_hash_the_window_and_dedups_on_jti() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (old, new) = (
        "previous-signature-secret-0123456789",
        "current-signature-secret-0123456789",
    );
    let g = guard(
        json!([{"name": "vg", "match": {"path_prefix": "/vg"}, "provider": "vonage",
                "secrets": [{"inline": new}, {"inline": old}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let body = br#"{"message_uuid":"m1","status":"delivered"}"#;
    let run = |auth: Option<Vec<u8>>, body: &[u8]| {
        let mut list: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
        if let Some(a) = auth.as_ref() {
            list.push(("authorization", a));
        }
        let pending = g.begin(&h, 0, info("/vg"), &headers(&list))?;
        g.finish(&h, &pending, body)
    };
    // Under the previous secret: accepted (key 1); the same token again is a replay.
    let a = run(Some(vonage_jwt(old, NOW, "jti-1", body)), body).unwrap();
    assert_eq!(a.key_index, 1);
    g.settle(
        &h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    let r = run(Some(vonage_jwt(old, NOW, "jti-1", body)), body).unwrap_err();
    assert_eq!(r.reason, Reason::Replayed);
    // Another jti is another delivery.
    assert!(run(Some(vonage_jwt(new, NOW, "jti-2", body)), body).is_ok());
    // A body the token does not hash, another secret, a stale or future iat.
    let r = run(Some(vonage_jwt(new, NOW, "jti-3", body)), b"{}").unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
    let r = run(
        Some(vonage_jwt(
            "another-secret-xxxxxxxxxxxxxxxx",
            NOW,
            "jti-4",
            body,
        )),
        body,
    )
    .unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
    for iat in [NOW - 301, NOW + 301] {
        let r = run(Some(vonage_jwt(new, iat, "jti-5", body)), body).unwrap_err();
        assert_eq!(r.reason, Reason::TimestampOutOfWindow);
    }
    assert!(run(Some(vonage_jwt(new, NOW - 300, "jti-6", body)), body).is_ok());
    // No header: missing. Not a bearer token, or a token that is not ours: malformed.
    assert_eq!(
        run(None, body).unwrap_err().reason,
        Reason::MissingSignature
    );
    let claims = json!({"iat": NOW, "jti": "jti-7", "payload_hash":
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))})
    .to_string();
    let good = vonage_jwt(new, NOW, "jti-7", body);
    let good = String::from_utf8(good).unwrap();
    let sig = good.rsplit('.').next().unwrap().to_string();
    let forged = |head: &str| {
        format!(
            "Bearer {}.{}.{sig}",
            b64(head.as_bytes()),
            b64(claims.as_bytes())
        )
        .into_bytes()
    };
    for bad in [
        b"Basic dXNlcjpwYXNz".to_vec(),
        good.replacen("Bearer ", "", 1).into_bytes(),
        forged(r#"{"alg":"none","typ":"JWT"}"#),
        format!(
            "Bearer {}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims.as_bytes())
        )
        .into_bytes(),
        forged(r#"{"alg":"HS512","typ":"JWT"}"#),
        forged(r#"{"alg":"RS256","typ":"JWT"}"#),
        forged(r#"{"alg":"HS256","alg":"none"}"#),
        forged(r#"{"alg":"hs256"}"#),
        format!("{good}.x").into_bytes(),
        good.replace('.', "").into_bytes(),
        format!("{good}=").into_bytes(),
    ] {
        let r = run(Some(bad), body).unwrap_err();
        assert_eq!(r.reason, Reason::MalformedSignature);
    }
    // A header `{"alg":"HS256"}` spelt differently changes the signed bytes: invalid, not accepted.
    let r = run(Some(forged(r#"{"typ":"JWT","alg":"HS256"}"#)), body).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
    for (_, line) in h.logs() {
        assert!(!line.contains(old) && !line.contains(new));
    }
}

fn plivo_sig(token: &str, url: &str, nonce: &str) -> Vec<u8> {
    use base64::Engine;
    let mac = compute_mac(
        Algorithm::HmacSha256,
        token.as_bytes(),
        &[url.as_bytes(), b".", nonce.as_bytes()],
    )
    .unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(mac)
        .into_bytes()
}

#[test]
fn plivo_v3_signs_the_url_sorted_params_and_nonce_and_dedups_on_the_signature() {
    let token = "MAXXXXXXXXXXXXXXXXXX-auth-token";
    let g = guard(
        json!([{"name": "pl", "match": {"path_prefix": "/pl"}, "provider": "plivo",
                "public_origin": "https://hooks.example.com",
                "secrets": [{"inline": "new-token-0123456789"}, {"inline": token}]}]),
        &[],
    );
    let h = MemHost::new(g.counter_names(), NOW * 1000);
    let form: &[u8] = b"application/x-www-form-urlencoded";
    let run = |path: &str, sig: Option<&[u8]>, nonce: Option<&str>, ct: &[u8], body: &[u8]| {
        let mut list: Vec<(&str, &[u8])> = vec![("content-type", ct)];
        if let Some(s) = sig {
            list.push(("x-plivo-signature-v3", s));
        }
        if let Some(n) = nonce {
            list.push(("x-plivo-signature-v3-nonce", n.as_bytes()));
        }
        let pending = g.begin(&h, 0, info(path), &headers(&list))?;
        g.finish(&h, &pending, body)
    };
    // As the plivo SDK's construct_post_url builds it (checked against the SDK in tests/e2e).
    let url = "https://hooks.example.com/pl/cb?a=1&a=x y&b=2.CallUUIDu-1Froma bTo+14155550100";
    let path = "/pl/cb?b=2&a=x+y&a=1";
    let body = b"To=%2B14155550100&From=a+b&CallUUID=u-1";
    let sig = plivo_sig(token, url, "n-1");
    // Several comma-separated signatures: any may match (the old key's here).
    let listed = [b"AAAA,".as_slice(), &sig].concat();
    let a = run(path, Some(&listed), Some("n-1"), form, body).unwrap();
    assert_eq!(a.key_index, 1);
    g.settle(
        &h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    assert_eq!(
        run(path, Some(&sig), Some("n-1"), form, body)
            .unwrap_err()
            .reason,
        Reason::Replayed
    );
    // The same signed string re-cut: the form parameters moved after the `.` into the nonce
    // header (an empty body). It verifies, as Plivo's SDK would accept it, but it is the same
    // delivery: the key is the signature, not the nonce.
    assert_eq!(
        run(
            path,
            Some(&sig),
            Some("CallUUIDu-1Froma bTo+14155550100.n-1"),
            form,
            b""
        )
        .unwrap_err()
        .reason,
        Reason::Replayed
    );
    // Another nonce, another parameter value, another path or query: invalid.
    let invalid = |p: &str, s: &[u8], n: &str, ct: &[u8], b: &[u8]| {
        assert_eq!(
            run(p, Some(s), Some(n), ct, b).unwrap_err().reason,
            Reason::InvalidSignature
        );
    };
    invalid(path, &sig, "n-2", form, body);
    invalid(
        path,
        &sig,
        "n-1",
        form,
        b"To=%2B14155550101&From=a+b&CallUUID=u-1",
    );
    invalid("/pl/cb?b=3&a=x+y&a=1", &sig, "n-1", form, body);
    invalid("/pl/other?b=2&a=x+y&a=1", &sig, "n-1", form, body);
    // A repeated form name is ambiguous; a JSON body is not covered (only form parameters are).
    invalid(
        path,
        &sig,
        "n-1",
        form,
        b"To=%2B14155550100&From=a+b&CallUUID=u-1&To=x",
    );
    let url_only = plivo_sig(
        token,
        "https://hooks.example.com/pl/cb?a=1&a=x y&b=2",
        "n-3",
    );
    invalid(path, &url_only, "n-3", b"application/json", br#"{"x":1}"#);
    // No parameters at all: the URL only, with the `;params` of the last segment dropped.
    let bare = plivo_sig(token, "https://hooks.example.com/pl/cb", "n-4");
    assert!(run("/pl/cb;v=1", Some(&bare), Some("n-4"), form, b"").is_ok());
    let with_form = plivo_sig(token, "https://hooks.example.com/pl/cb?Digits1", "n-5");
    assert!(run("/pl/cb", Some(&with_form), Some("n-5"), form, b"Digits=1").is_ok());
    // Missing signature or nonce; a list with nothing that decodes.
    assert_eq!(
        run(path, None, Some("n-6"), form, body).unwrap_err().reason,
        Reason::MissingSignature
    );
    assert_eq!(
        run(path, Some(&sig), None, form, body).unwrap_err().reason,
        Reason::MissingHeader
    );
    assert_eq!(
        run(path, Some(b"not base64!,also not"), Some("n-7"), form, body)
            .unwrap_err()
            .reason,
        Reason::MalformedSignature
    );
    for (_, line) in h.logs() {
        assert!(!line.contains(token));
    }
}
