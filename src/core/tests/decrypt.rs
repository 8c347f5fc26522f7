// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! `decrypt`: a verified envelope is opened after the replay check and its plaintext becomes
//! what the glue forwards; failures are told apart and give their claim back.

mod common;

use serde_json::{json, Value};
use webhook_guard_core::decrypt::seal_gcm;
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::verify::compute_mac;
use webhook_guard_core::{compile, config::Algorithm, Accepted, Guard, Reason, Rejection};

const NOW_S: u64 = 1_700_000_000;
const SIGNING: &str = "envelope-signing-secret";
const KEY: [u8; 32] = [0x11; 32];
const NEXT: [u8; 32] = [0x22; 32];

fn b64(k: &[u8]) -> String {
    webhook_guard_core::codec::base64_encode(k)
}

/// The seed's sender: HMAC-SHA256 over `{timestamp}.{body}`, hex, in X-Webhook-Signature.
fn policy(decrypt: Value) -> Value {
    json!([{
        "name": "enc",
        "match": {"path_prefix": "/enc"},
        "provider": "custom",
        "custom": {
            "signature_header": "x-webhook-signature",
            "encoding": "hex",
            "signed_template": "{timestamp}.{body}",
            "timestamp_header": "x-webhook-timestamp"
        },
        "secrets": [{"inline": SIGNING}],
        "decrypt": decrypt
    }])
}

fn guard(policies: Value) -> Guard {
    let doc = json!({"policies": policies}).to_string();
    compile(doc.as_bytes(), &|_| None).unwrap()
}

fn signed(body: &[u8], extra: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let ts = NOW_S.to_string();
    let mac = compute_mac(
        Algorithm::HmacSha256,
        SIGNING.as_bytes(),
        &[ts.as_bytes(), b".", body],
    )
    .unwrap();
    let mut h = vec![
        (
            "x-webhook-signature".to_string(),
            hex::encode(mac).into_bytes(),
        ),
        ("x-webhook-timestamp".to_string(), ts.into_bytes()),
    ];
    h.extend(
        extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
    );
    h
}

fn send(
    g: &Guard,
    host: &MemHost,
    hs: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Accepted, Rejection> {
    common::send(g, host, "/enc", hs, body)
}

fn host(g: &Guard) -> MemHost {
    MemHost::new(g.counter_names(), NOW_S * 1000)
}

fn envelope(key: &[u8], nonce: u8, plaintext: &[u8]) -> Vec<u8> {
    seal_gcm(key, [nonce; 12], plaintext, "encrypted", Some("nonce"))
        .unwrap()
        .0
}

#[test]
fn a_verified_envelope_is_forwarded_as_its_plaintext() {
    let g = guard(policy(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}]}),
    ));
    let h = host(&g);
    let body = envelope(&KEY, 1, br#"{"id":"evt_1","amount":42}"#);
    let a = send(&g, &h, &signed(&body, &[]), &body).unwrap();
    let p = a.plaintext.expect("a plaintext to forward");
    assert_eq!(p.body, br#"{"id":"evt_1","amount":42}"#);
    assert_eq!(p.content_type, "application/json");
    assert!(a.claim.is_some(), "the delivery holds its claim as usual");
    // The debug form never shows the payload.
    assert!(!format!("{p:?}").contains("evt_1"));
}

#[test]
fn a_replay_is_rejected_before_anything_is_decrypted() {
    let g = guard(policy(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}]}),
    ));
    let h = host(&g);
    let body = envelope(&KEY, 2, b"{}");
    let a = send(&g, &h, &signed(&body, &[]), &body).unwrap();
    g.settle(
        &h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
    let again = send(&g, &h, &signed(&body, &[]), &body).unwrap_err();
    assert_eq!(again.reason, Reason::Replayed);
}

#[test]
fn rotation_opens_with_a_later_key_and_counts_it() {
    let keys = json!([{"inline": b64(&NEXT)}, {"inline": b64(&KEY)}]);
    let g = guard(policy(json!({"cipher": "aes-256-gcm", "keys": keys})));
    let h = host(&g);
    let body = envelope(&KEY, 3, b"{\"k\":2}");
    let a = send(&g, &h, &signed(&body, &[]), &body).unwrap();
    assert_eq!(a.plaintext.unwrap().body, b"{\"k\":2}");
    assert_eq!(
        h.count("webhook_guard.policy.enc.decrypted_secondary_key"),
        1
    );
    assert_eq!(h.count("webhook_guard.policy.enc.accepted"), 1);
}

#[test]
fn an_envelope_no_key_opens_is_rejected_and_gives_its_claim_back() {
    let g = guard(policy(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&NEXT)}]}),
    ));
    let h = host(&g);
    let body = envelope(&KEY, 4, b"{}");
    let r = send(&g, &h, &signed(&body, &[]), &body).unwrap_err();
    assert_eq!((r.reason, r.status), (Reason::DecryptionFailed, 400));
    assert!(!r.body.contains("nonce") && !r.body.contains(&b64(&NEXT)));
    assert_eq!(
        h.count("webhook_guard.policy.enc.reason.decryption_failed"),
        1
    );
    assert_eq!(h.count("webhook_guard.policy.enc.accepted"), 0);
    // Not a replay: the claim was released, so the same delivery fails the same way again
    // (and a retry after the key is fixed would be admitted).
    let again = send(&g, &h, &signed(&body, &[]), &body).unwrap_err();
    assert_eq!(again.reason, Reason::DecryptionFailed);
}

#[test]
fn a_signed_body_that_is_not_an_envelope_is_malformed_payload() {
    let g = guard(policy(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}]}),
    ));
    let h = host(&g);
    let body = br#"{"id":"plain"}"#;
    let r = send(&g, &h, &signed(body, &[]), body).unwrap_err();
    assert_eq!((r.reason, r.status), (Reason::MalformedPayload, 400));
    let logs = h.logs();
    assert!(logs.iter().any(|(_, l)| l.contains("malformed_payload")));
}

#[test]
fn a_forged_envelope_is_invalid_signature_not_a_decryption_attempt() {
    let g = guard(policy(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}]}),
    ));
    let h = host(&g);
    let body = envelope(&KEY, 5, b"{}");
    let mut hs = signed(&body, &[]);
    hs[0].1 = hex::encode([0u8; 32]).into_bytes();
    let r = send(&g, &h, &hs, &body).unwrap_err();
    assert_eq!(r.reason, Reason::InvalidSignature);
}

#[test]
fn the_nonce_can_come_from_a_header() {
    let doc = json!({"cipher": "aes-256-gcm", "keys": [{"inline": hex::encode(KEY)}],
                     "key_encoding": "hex", "ciphertext_field": "data",
                     "nonce_header": "X-Encryption-Nonce", "content_type": "application/vnd.x+json"});
    let g = guard(policy(doc));
    let h = host(&g);
    let (body, nonce) = seal_gcm(&KEY, [6; 12], b"{\"n\":1}", "data", None).unwrap();
    let a = send(
        &g,
        &h,
        &signed(&body, &[("x-encryption-nonce", &nonce)]),
        &body,
    )
    .unwrap();
    let p = a.plaintext.unwrap();
    assert_eq!(
        (p.body.as_slice(), p.content_type.as_str()),
        (&b"{\"n\":1}"[..], "application/vnd.x+json")
    );
    // Without the header: nothing to open it with (a different delivery, so not in flight).
    let (body, _) = seal_gcm(&KEY, [7; 12], b"{\"n\":2}", "data", None).unwrap();
    let r = send(&g, &h, &signed(&body, &[]), &body).unwrap_err();
    assert_eq!(r.reason, Reason::MalformedPayload);
}

#[test]
fn an_unset_decryption_key_fails_closed() {
    let doc =
        json!({"policies": policy(json!({"cipher": "aes-256-gcm", "keys": [{"env": "ENC_KEY"}]}))})
            .to_string();
    let g = compile(doc.as_bytes(), &|_| None).unwrap();
    assert!(g
        .notices()
        .iter()
        .any(|(_, m)| m.contains("no usable decryption key")));
    let h = host(&g);
    let body = envelope(&KEY, 7, b"{}");
    let r = send(&g, &h, &signed(&body, &[]), &body).unwrap_err();
    assert_eq!((r.reason, r.status), (Reason::SecretUnavailable, 503));
}

#[test]
fn decrypt_config_errors_name_the_field() {
    let err = |d: Value| {
        let doc = json!({"policies": policy(d)}).to_string();
        compile(doc.as_bytes(), &|_| None).unwrap_err().to_string()
    };
    let e = err(json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&[1; 16])}]}));
    assert!(
        e.contains("decrypt.keys[0]") && e.contains("32-byte"),
        "{e}"
    );
    let e = err(json!({"cipher": "aes-256-gcm", "keys": []}));
    assert!(e.contains("decrypt.keys"), "{e}");
    let e = err(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}],
                       "nonce_field": "n", "nonce_header": "x-n"}),
    );
    assert!(e.contains("decrypt.nonce_header"), "{e}");
    let e = err(
        json!({"cipher": "aes-256-gcm", "keys": [{"inline": b64(&KEY)}],
                       "nonce_field": "encrypted"}),
    );
    assert!(e.contains("decrypt.nonce_field"), "{e}");
    let e = err(json!({"cipher": "lark"}));
    assert!(e.contains("decrypt.cipher") && e.contains("lark"), "{e}");
    let e = err(json!({"cipher": "rot13", "keys": []}));
    assert!(e.contains("decrypt"), "{e}");
    // The key never appears in an error.
    assert!(!e.contains(&b64(&KEY)));
}
