// Test code: a panic is a test failure, which is what we want here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

//! Lark / Feishu: the plain SHA-256 signature over `timestamp + nonce + encrypt_key + body`,
//! the AES-256-CBC envelope opened before the claim (the event id inside is the dedup key),
//! and the unsigned `url_verification` answered only when it opens and carries the token.

mod common;

use serde_json::{json, Value};
use sha2::Digest;
use webhook_guard_core::decrypt::seal_lark;
use webhook_guard_core::memhost::MemHost;
use webhook_guard_core::{compile, Accepted, Guard, Reason, Rejection};

const NOW_S: u64 = 1_700_000_000;
/// The Encrypt Key of Lark's Java SDK test (`TestDecryptor.java`).
const KEY: &str = "1212121212";
const NEXT: &str = "the-next-encrypt-key";
const TOKEN: &str = "verification-token-1";

/// larksuite/oapi-sdk-java, larksuite-oapi/src/test/java/com/lark/oapi/core/utils/
/// TestDecryptor.java: sealed under "1212121212", opens to a schema 2.0 event.
const SDK_CIPHERTEXT: &str = "4T4ivT/PR2APX9OYkhRKtu54s1rtIpj9xJU69Hs1yWQ/1RutbufsBs9xjx5YC3u/0hMRF49sN0kevQiEL8iB3bVEdpfyJXzXGDfKUjvKQTmG64GbMdTW6qRpadVPem3f32jHuT6fc+4TRg4BigwoUId+l/D+vcIwu3mDgAEbaqzWfmvccmpiRMfQbh9JhdK/akmrRjo/CXPLM+hZciFXJMSpKueV3SjZJoSls5y0ZTHC8zak/Mp/DSl1wa4mYe5laP367Lnl4ylGiXBKx3Ku29oWv79rYcO/5QT63H4rkl8bwYmAzScpb2KNnV11L3xiDzJp3hFdfXczUvm93FXu4Lw8eDAsRzIWCccKrqHh0UvtDJD95tNn6LvYew4+Xbk1RD4k7UzWJS9AMobOK778NLNxfQ+Kn7MKzBHilXnSIVY5V+dcsOOdfqJviW4yWmT73JHYKq1qJip7Cw7lbkmRMUmettUwdVFWxeXH6iTex3YXCgqoriCx/MzeQhdNEycipooB/vHItRt1CF44uFWj9tf8n3TdbdH4dNMD0hw8ejHJSbEHb9HAGCugUniN8BzL9wxE959JU4cu3BKjDuIk5oS9hLR1mSc3vKBuSa3VKOE=";
const SDK_PLAINTEXT: &str = r#"{"schema":"2.0","header":{"event_id":"f7984f25108f8137722bb63cee927e66","event_type":"contact.user.created_v3","app_id":"cli_xxxxxxxx","tenant_key":"xxxxxxx","create_time":"1603977298000000","token":"v"},"event":{"object":{"open_id":"ou_7dab8a3d3cdcc9da365777c7ad535d62","union_id":"on_576833b917gda3d939b9a3c2d53e72c8","user_id":"e33ggbyz","name":"张三","employee_no":"employee_no"}},"challenge":"1212","type":"url_verification1"}"#;

fn guard_with(extra: Value) -> Guard {
    let mut policy = json!({
        "name": "lark",
        "match": {"path_prefix": "/lark"},
        "provider": "lark",
        "secrets": [{"inline": KEY}],
    });
    for (k, v) in extra.as_object().unwrap() {
        policy[k] = v.clone();
    }
    let doc = json!({"policies": [policy]}).to_string();
    compile(doc.as_bytes(), &|_| None).unwrap()
}

fn guard() -> Guard {
    guard_with(json!({"answer_challenges": true, "verify_token": {"inline": TOKEN}}))
}

fn host(g: &Guard) -> MemHost {
    MemHost::new(g.counter_names(), NOW_S * 1000)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn seal(key: &str, iv: u8, plaintext: &[u8]) -> Vec<u8> {
    seal_lark(&sha2::Sha256::digest(key.as_bytes()), [iv; 16], plaintext).unwrap()
}

/// Lark's headers for `body`: its signature over timestamp, nonce, key and body.
fn signed(key: &str, ts: &str, nonce: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let sig = sha256_hex(&[ts.as_bytes(), nonce.as_bytes(), key.as_bytes(), body]);
    vec![
        ("x-lark-request-timestamp".into(), ts.as_bytes().to_vec()),
        ("x-lark-request-nonce".into(), nonce.as_bytes().to_vec()),
        ("x-lark-signature".into(), sig.into_bytes()),
    ]
}

fn send(
    g: &Guard,
    host: &MemHost,
    hs: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Accepted, Rejection> {
    common::send(g, host, "/lark", hs, body)
}

/// Delivered: the backend answered 200, so the claim is committed.
fn deliver(g: &Guard, h: &MemHost, hs: &[(String, Vec<u8>)], body: &[u8]) {
    let a = send(g, h, hs, body).unwrap();
    g.settle(
        h,
        a.claim.unwrap(),
        webhook_guard_core::Upstream::Answered(200),
    );
}

fn reason(r: Result<Accepted, Rejection>) -> Reason {
    r.expect_err("must be rejected").reason
}

fn event(id: &str) -> Vec<u8> {
    json!({"schema": "2.0", "header": {"event_id": id, "event_type": "im.message.receive_v1", "token": TOKEN}, "event": {"n": 1}})
        .to_string()
        .into_bytes()
}

#[test]
fn the_cipher_reproduces_lark_s_documented_example() {
    // open.feishu.cn, "Encrypt Key" decryption example: key "test key", plaintext
    // "hello world". Sealing the same plaintext with its IV gives its ciphertext exactly.
    let published = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=";
    let raw = webhook_guard_core::codec::base64_decode(published.as_bytes()).unwrap();
    let iv: [u8; 16] = raw[..16].try_into().unwrap();
    let body = seal_lark(&sha2::Sha256::digest(b"test key"), iv, b"hello world").unwrap();
    assert_eq!(body, format!(r#"{{"encrypt":"{published}"}}"#).into_bytes());
}

#[test]
fn the_sdk_s_sealed_event_verifies_opens_and_is_forwarded_as_plaintext() {
    let g = guard();
    let h = host(&g);
    let body = format!(r#"{{"encrypt":"{SDK_CIPHERTEXT}"}}"#).into_bytes();
    let a = send(&g, &h, &signed(KEY, "1700000000", "nonce-1", &body), &body).unwrap();
    let p = a.plaintext.expect("the plaintext is forwarded");
    assert_eq!(p.body, SDK_PLAINTEXT.as_bytes());
    assert_eq!(p.content_type, "application/json");
    assert!(a.claim.is_some());
    assert!(
        a.reply.is_none(),
        "type url_verification1 is not the handshake"
    );
}

#[test]
fn a_retry_sealed_and_signed_anew_is_a_replay_of_its_event_id() {
    let g = guard();
    let h = host(&g);
    let first = seal(KEY, 1, &event("ev_1"));
    deliver(&g, &h, &signed(KEY, "1700000000", "n1", &first), &first);
    // Same event, a new IV, timestamp and nonce: every signed byte differs but the event id.
    let retry = seal(KEY, 2, &event("ev_1"));
    assert_ne!(first, retry);
    let r = send(&g, &h, &signed(KEY, "1700000300", "n2", &retry), &retry);
    assert_eq!(reason(r), Reason::Replayed);
    let other = seal(KEY, 3, &event("ev_2"));
    assert!(send(&g, &h, &signed(KEY, "1700000301", "n3", &other), &other).is_ok());
}

#[test]
fn forged_tampered_and_unsigned_events_are_refused() {
    let g = guard();
    let h = host(&g);
    let body = seal(KEY, 4, &event("ev_3"));
    let hs = signed(KEY, "1700000000", "n", &body);
    let mut tampered = body.clone();
    tampered[12] ^= 1;
    assert_eq!(
        reason(send(&g, &h, &hs, &tampered)),
        Reason::InvalidSignature
    );
    let wrong = signed("another-key", "1700000000", "n", &body);
    assert_eq!(
        reason(send(&g, &h, &wrong, &body)),
        Reason::InvalidSignature
    );
    // The nonce and timestamp are signed.
    let mut moved = hs.clone();
    moved[1].1 = b"m".to_vec();
    assert_eq!(
        reason(send(&g, &h, &moved, &body)),
        Reason::InvalidSignature
    );
    // An event without a signature is never forwarded, even one that opens.
    assert_eq!(reason(send(&g, &h, &[], &body)), Reason::MissingSignature);
    // Nothing above took the claim: the genuine delivery still goes through once.
    deliver(&g, &h, &hs, &body);
    assert_eq!(reason(send(&g, &h, &hs, &body)), Reason::Replayed);
}

/// SHA-256 length extension: the digest of `prefix || pad(prefix) || suffix` from the digest
/// of a secret-bearing `prefix` of `len` bytes, without the secret.
fn extend(digest_hex: &str, len: usize, suffix: &[u8]) -> (Vec<u8>, String) {
    let pad = |n: usize| {
        let mut p = vec![0x80u8];
        while (n + p.len()) % 64 != 56 {
            p.push(0);
        }
        p.extend(((n as u64) * 8).to_be_bytes());
        p
    };
    let glue = pad(len);
    let digest = hex::decode(digest_hex).unwrap();
    let mut state = [0u32; 8];
    for (i, s) in state.iter_mut().enumerate() {
        *s = u32::from_be_bytes(digest[i * 4..i * 4 + 4].try_into().unwrap());
    }
    let total = len + glue.len() + suffix.len();
    let mut tail = suffix.to_vec();
    tail.extend(pad(total));
    let blocks: Vec<[u8; 64]> = tail.chunks(64).map(|c| c.try_into().unwrap()).collect();
    sha2::block_api::compress256(&mut state, &blocks);
    let forged: Vec<u8> = state.iter().flat_map(|w| w.to_be_bytes()).collect();
    (glue, hex::encode(forged))
}

#[test]
fn a_length_extended_body_verifies_as_sha256_but_never_passes() {
    let g = guard();
    let h = host(&g);
    let body = seal(KEY, 5, &event("ev_4"));
    let hs = signed(KEY, "1700000000", "n", &body);
    let sig = String::from_utf8(hs[2].1.clone()).unwrap();
    let prefix_len = "1700000000n".len() + KEY.len() + body.len();
    let suffix = br#",{"encrypt":"AAAA"}"#;
    let (glue, forged_sig) = extend(&sig, prefix_len, suffix);
    let mut forged = body.clone();
    forged.extend(&glue);
    forged.extend(suffix);
    // The attack works on the hash: the forged signature is what SHA-256 gives.
    assert_eq!(
        forged_sig,
        sha256_hex(&[b"1700000000", b"n", KEY.as_bytes(), &forged])
    );
    let mut fh = hs.clone();
    fh[2].1 = forged_sig.into_bytes();
    assert_eq!(reason(send(&g, &h, &fh, &forged)), Reason::MalformedPayload);
    // And it held no claim.
    assert!(send(&g, &h, &hs, &body).is_ok());
}

fn challenge(token: &str) -> Vec<u8> {
    json!({"challenge": "ajls384kdjx98XX", "token": token, "type": "url_verification"})
        .to_string()
        .into_bytes()
}

#[test]
fn the_unsigned_url_verification_is_answered_when_it_opens_and_carries_the_token() {
    let g = guard();
    let h = host(&g);
    let body = seal(KEY, 6, &challenge(TOKEN));
    let a = send(&g, &h, &[], &body).unwrap();
    let reply = a.reply.expect("answered in the filter");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, r#"{"challenge":"ajls384kdjx98XX"}"#);
    assert!(a.plaintext.is_none() && a.claim.is_none());
    // A wrong token, another key, a plaintext challenge, or no answer_challenges: refused.
    let wrong = seal(KEY, 7, &challenge("guess"));
    assert_eq!(reason(send(&g, &h, &[], &wrong)), Reason::InvalidSignature);
    let other = seal("another-key", 8, &challenge(TOKEN));
    assert_eq!(reason(send(&g, &h, &[], &other)), Reason::MissingSignature);
    assert_eq!(
        reason(send(&g, &h, &[], &challenge(TOKEN))),
        Reason::MissingSignature
    );
    // A large unsigned body is not even tried (no cipher work for unsigned requests).
    let mut padded = challenge(TOKEN);
    padded.truncate(padded.len() - 1);
    padded.extend(format!(r#","pad":"{}"}}"#, "x".repeat(5000)).bytes());
    let big = seal(KEY, 11, &padded);
    assert_eq!(reason(send(&g, &h, &[], &big)), Reason::MissingSignature);
    let quiet = guard_with(json!({}));
    let qh = host(&quiet);
    assert_eq!(
        reason(send(&quiet, &qh, &[], &body)),
        Reason::MissingSignature
    );
}

#[test]
fn a_signed_url_verification_is_answered_too() {
    let g = guard();
    let h = host(&g);
    let body = seal(KEY, 9, &challenge(TOKEN));
    let a = send(&g, &h, &signed(KEY, "1700000000", "n", &body), &body).unwrap();
    assert_eq!(a.reply.unwrap().body, r#"{"challenge":"ajls384kdjx98XX"}"#);
}

#[test]
fn a_rotated_encrypt_key_opens_with_the_key_that_signed() {
    let g = guard_with(json!({"secrets": [{"inline": NEXT}, {"inline": KEY}]}));
    let h = host(&g);
    let body = seal(KEY, 10, &event("ev_5"));
    let a = send(&g, &h, &signed(KEY, "1700000000", "n", &body), &body).unwrap();
    assert_eq!(a.key_index, 1);
    assert_eq!(a.plaintext.unwrap().body, event("ev_5"));
}

#[test]
fn lark_configuration_errors_are_explained() {
    let bad = |extra: Value| {
        let mut policy = json!({"name": "lark", "match": {"path_prefix": "/l"}, "provider": "lark", "secrets": [{"inline": KEY}]});
        for (k, v) in extra.as_object().unwrap() {
            policy[k] = v.clone();
        }
        compile(
            json!({"policies": [policy]}).to_string().as_bytes(),
            &|_| None,
        )
        .expect_err("must not compile")
        .to_string()
    };
    assert!(
        bad(json!({"decrypt": {"cipher": "aes-256-gcm", "keys": [{"inline": "x"}]}}))
            .contains("remove decrypt")
    );
    assert!(bad(json!({"answer_challenges": true})).contains("Verification Token"));
}
