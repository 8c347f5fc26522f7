//! Dedup keys come only from material the signature covers, namespaced by policy and hashed
//! (SHA-256, first 16 bytes stored): the store never holds ids, bodies or MACs.

use sha2::{Digest, Sha256};

use super::shard::{KeyHash, HASH_BYTES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The signed bytes, hashed (`verify::canonical_mac`): the same whichever listed secret
    /// or algorithm verified them.
    Signature,
    /// A header the signed template covers (e.g. Standard Webhooks' `webhook-id`); the index
    /// is its position among the template's `{header:..}` parts. Its value must hold only
    /// `bytes` (`id_is_delimited`).
    SignedHeader {
        name: String,
        index: usize,
        bytes: IdBytes,
    },
    /// A value in the (signed) JSON body, e.g. Stripe's event `/id`; falls back to the
    /// signature when the body has no such value.
    JsonPointer(String),
    /// Mailgun: the signed `token` of the body's signature block.
    Token,
    /// The first of these values found in the decrypted payload (Lark: `/header/event_id`,
    /// then `/uuid`): signed through the ciphertext, the same whatever IV a retry was sealed
    /// with. Falls back to the signature. The payload is opened before the claim.
    Plaintext(Vec<String>),
}

/// The bytes a signed id may hold when it is the dedup key, so that the signed text splits into
/// id, timestamp and body one way only. Otherwise a captured delivery can be re-cut: with
/// `{id}.{timestamp}.{body}` and a body holding `.1733600000.`, the id, timestamp and start of
/// the body become a new id, those digits a new timestamp and the rest the body: the same
/// signed bytes under a new key and a fresh timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdBytes {
    /// ASCII letters, digits, `-` and `_` (Standard Webhooks' and Svix's `msg_...`, Twitch's
    /// UUIDs).
    Token,
    /// Visible ASCII except these (the separators around the id in a custom template).
    Except(Vec<u8>),
}

impl IdBytes {
    fn allows(&self, b: u8) -> bool {
        match self {
            IdBytes::Token => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
            IdBytes::Except(separators) => b.is_ascii_graphic() && !separators.contains(&b),
        }
    }
}

/// Whether the delivery's signed id (when it is the key) holds only the bytes that keep the
/// signed text unambiguous. Other key sources have nothing to check.
pub fn id_is_delimited(source: &KeySource, signed_headers: &[Vec<u8>]) -> bool {
    match source {
        KeySource::SignedHeader { index, bytes, .. } => signed_headers
            .get(*index)
            .is_some_and(|v| !v.is_empty() && v.iter().all(|b| bytes.allows(*b))),
        _ => true,
    }
}

impl KeySource {
    pub fn describe(&self) -> String {
        match self {
            KeySource::Signature => "signature".into(),
            KeySource::SignedHeader { name, .. } => format!("header:{name}"),
            KeySource::JsonPointer(p) => format!("json:{p}"),
            KeySource::Token => "token".into(),
            KeySource::Plaintext(pointers) => format!("plaintext:{}", pointers.join("|")),
        }
    }
}

/// The material for `source`, with the kind that was actually used. `mac` (the signature's
/// material, which hashes the signed bytes again) is computed only when it is the key.
pub fn material<'a>(
    source: &KeySource,
    mac: &dyn Fn() -> Vec<u8>,
    signed_headers: &'a [Vec<u8>],
    token: &'a [u8],
    body: &[u8],
) -> (&'static str, std::borrow::Cow<'a, [u8]>) {
    let sig = || ("sig", mac().into());
    match source {
        KeySource::Signature => sig(),
        KeySource::SignedHeader { index, .. } => match signed_headers.get(*index) {
            Some(v) => ("hdr", v.as_slice().into()),
            None => sig(),
        },
        KeySource::Token if !token.is_empty() => ("token", token.into()),
        KeySource::Token => sig(),
        KeySource::JsonPointer(pointer) => match json_value(body, pointer) {
            Some(v) => ("json", v.into_bytes().into()),
            None => sig(),
        },
        // `body` is the plaintext here (see `guard::flow`).
        KeySource::Plaintext(pointers) => match pointers.iter().find_map(|p| json_value(body, p)) {
            Some(v) => ("plain", v.into_bytes().into()),
            None => sig(),
        },
    }
}

fn json_value(body: &[u8], pointer: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    match doc.pointer(pointer)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        v @ serde_json::Value::Number(_) => Some(v.to_string()),
        _ => None,
    }
}

pub fn hash(policy: &str, kind: &str, material: &[u8]) -> KeyHash {
    let mut h = Sha256::new();
    h.update(b"webhook-guard/dedup/v1\0");
    h.update(policy.as_bytes());
    h.update(b"\0");
    h.update(kind.as_bytes());
    h.update(b"\0");
    h.update(material);
    let digest = h.finalize();
    let mut out = [0u8; HASH_BYTES];
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_by_policy_and_kind() {
        assert_ne!(hash("a", "sig", b"x"), hash("b", "sig", b"x"));
        assert_ne!(hash("a", "sig", b"x"), hash("a", "hdr", b"x"));
        assert_eq!(hash("a", "sig", b"x"), hash("a", "sig", b"x"));
    }

    #[test]
    fn json_pointer_with_signature_fallback() {
        let src = KeySource::JsonPointer("/id".into());
        let (kind, m) = material(
            &src,
            &|| b"MAC".to_vec(),
            &[],
            &[],
            br#"{"id":"evt_1","x":2}"#,
        );
        assert_eq!((kind, m.as_ref()), ("json", &b"evt_1"[..]));
        let (kind, m) = material(&src, &|| b"MAC".to_vec(), &[], &[], br#"{"id":7}"#);
        assert_eq!((kind, m.as_ref()), ("json", &b"7"[..]));
        for body in [
            &b"not json"[..],
            br#"{"id":""}"#,
            br#"{"id":null}"#,
            br#"[1]"#,
        ] {
            assert_eq!(material(&src, &|| b"MAC".to_vec(), &[], &[], body).0, "sig");
        }
    }

    #[test]
    fn signed_header_by_template_index() {
        let src = KeySource::SignedHeader {
            name: "webhook-id".into(),
            index: 1,
            bytes: IdBytes::Token,
        };
        let headers = vec![b"a".to_vec(), b"msg_1".to_vec()];
        assert_eq!(
            material(&src, &|| b"M".to_vec(), &headers, &[], b"")
                .1
                .as_ref(),
            b"msg_1"
        );
    }
}
