//! Encrypted payloads opened at the edge. A policy's `decrypt` runs only on a delivery that
//! is already authenticated (signature, window and replay checks passed): the envelope it opens
//! is signed, so an attacker cannot probe the cipher with forged ciphertexts, and the backend
//! receives the plaintext without ever holding the key.
//!
//! `aes-256-gcm`: `{"encrypted": b64(ciphertext || 16-byte tag), "nonce": b64(12 bytes)}`
//! (field names configurable; the nonce may come from a header instead). GCM authenticates,
//! so every configured key is tried in order (rotation) and only the right one opens it.
//!
//! `lark`: `{"encrypt": b64(16-byte IV || AES-256-CBC(PKCS#7))}` under SHA-256 of the app's
//! Encrypt Key. CBC does not authenticate, so the caller passes the one key whose signature
//! verified, and a plaintext counts only if its padding is exact and it is a JSON object.

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::Aes256Gcm;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::config::KeyEncoding;

pub const AES_256_KEY_BYTES: usize = 32;
const GCM_NONCE_BYTES: usize = 12;
const GCM_TAG_BYTES: usize = 16;
const CBC_IV_BYTES: usize = 16;
/// Lark's envelope field.
pub const LARK_FIELD: &str = "encrypt";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceSource {
    /// A string field of the (signed) envelope.
    Field(String),
    /// A request header (unsigned, but GCM's tag covers the nonce: a changed one fails).
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cipher {
    AesGcm {
        ciphertext_field: String,
        nonce: NonceSource,
    },
    /// Lark / Feishu: `{"encrypt": b64(IV || AES-256-CBC)}`, key = SHA-256(Encrypt Key).
    LarkCbc,
}

/// Why a payload did not open; each is a reason code of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `malformed_payload`: not the envelope the policy expects (the detail says which part).
    Malformed(&'static str),
    /// `decryption_failed`: well formed, but no configured key opens it.
    NoKey,
}

/// The opened payload and which key (index into the policy's decryption keys) opened it.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub plaintext: Vec<u8>,
    pub key_index: usize,
}

// Plaintext is the sender's secret payload: never in debug output.
impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext_bytes", &self.plaintext.len())
            .field("key_index", &self.key_index)
            .finish()
    }
}

impl Cipher {
    /// The field holding the ciphertext.
    fn ciphertext_field(&self) -> &str {
        match self {
            Cipher::AesGcm {
                ciphertext_field, ..
            } => ciphertext_field,
            Cipher::LarkCbc => LARK_FIELD,
        }
    }

    /// Key bytes from secret text: a 32-byte AES key in `encoding`. `None`: unusable.
    pub fn derive_key(&self, encoding: KeyEncoding, text: &str) -> Option<Vec<u8>> {
        match self {
            Cipher::AesGcm { .. } => encoding
                .decode(text)
                .filter(|k| k.len() == AES_256_KEY_BYTES),
            // The Encrypt Key as the console shows it, hashed (whatever `encoding` says).
            Cipher::LarkCbc => {
                use sha2::Digest;
                (!text.is_empty()).then(|| sha2::Sha256::digest(text.as_bytes()).to_vec())
            }
        }
    }

    /// Opens `body` with `keys` (in order). `nonce_header` is the request's nonce header when
    /// the nonce comes from one.
    pub fn open<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        body: &[u8],
        nonce_header: Option<&[u8]>,
    ) -> Result<Opened, Failure> {
        let nonce_field = match self {
            Cipher::AesGcm {
                nonce: NonceSource::Field(f),
                ..
            } => Some(f.as_str()),
            Cipher::AesGcm { .. } | Cipher::LarkCbc => None,
        };
        let fields = envelope(body, self.ciphertext_field(), nonce_field)
            .ok_or(Failure::Malformed("envelope"))?;
        let ciphertext = crate::codec::base64_decode(fields.ciphertext.as_bytes())
            .ok_or(Failure::Malformed("ciphertext"))?;
        match self {
            Cipher::AesGcm { .. } => {
                let nonce_text = match (fields.nonce.as_deref(), nonce_header) {
                    (Some(n), _) => n.as_bytes(),
                    (None, Some(h)) => h,
                    (None, None) => return Err(Failure::Malformed("nonce")),
                };
                let nonce = crate::codec::base64_decode(nonce_text)
                    .and_then(|n| <[u8; GCM_NONCE_BYTES]>::try_from(n.as_slice()).ok())
                    .ok_or(Failure::Malformed("nonce"))?;
                if ciphertext.len() < GCM_TAG_BYTES {
                    return Err(Failure::Malformed("ciphertext"));
                }
                let nonce = aes_gcm::Nonce::from(nonce);
                for (i, key) in keys.iter().enumerate() {
                    let Ok(cipher) = Aes256Gcm::new_from_slice(key.as_ref()) else {
                        continue;
                    };
                    if let Ok(plaintext) = cipher.decrypt(&nonce, ciphertext.as_slice()) {
                        return Ok(Opened {
                            plaintext,
                            key_index: i,
                        });
                    }
                }
                Err(Failure::NoKey)
            }
            Cipher::LarkCbc => {
                let (iv, sealed) = ciphertext
                    .split_at_checked(CBC_IV_BYTES)
                    .filter(|(_, c)| !c.is_empty() && c.len() % CBC_IV_BYTES == 0)
                    .ok_or(Failure::Malformed("ciphertext"))?;
                for (i, key) in keys.iter().enumerate() {
                    let Ok(cipher) =
                        cbc::Decryptor::<aes::Aes256>::new_from_slices(key.as_ref(), iv)
                    else {
                        continue;
                    };
                    let Ok(plaintext) = cipher.decrypt_padded_vec_mut::<Pkcs7>(sealed) else {
                        continue;
                    };
                    // A wrong key unpads by chance about once in 256 tries; its garbage is
                    // never a JSON object.
                    if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                        &plaintext,
                    )
                    .is_ok()
                    {
                        return Ok(Opened {
                            plaintext,
                            key_index: i,
                        });
                    }
                }
                Err(Failure::NoKey)
            }
        }
    }
}

struct Fields<'b> {
    ciphertext: Cow<'b, str>,
    nonce: Option<Cow<'b, str>>,
}

/// The envelope's string fields in one pass, borrowed from the body when they hold no escapes
/// (base64 never needs one, but `\/` is valid JSON some encoders emit). `None`: not a JSON
/// object, a field missing, or not a string.
fn envelope<'b>(body: &'b [u8], ciphertext: &str, nonce: Option<&str>) -> Option<Fields<'b>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let (c, n) = Envelope { ciphertext, nonce }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(Fields {
        ciphertext: c?,
        nonce: match nonce {
            Some(_) => Some(n?),
            None => None,
        },
    })
}

struct Envelope<'f> {
    ciphertext: &'f str,
    nonce: Option<&'f str>,
}

type Found<'b> = (Option<Cow<'b, str>>, Option<Cow<'b, str>>);

impl<'de> DeserializeSeed<'de> for Envelope<'_> {
    type Value = Found<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Envelope<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an encrypted envelope (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut c, mut n) = (None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.ciphertext && c.is_none() {
                c = Some(map.next_value::<Text<'de>>()?.0);
            } else if Some(key.as_ref()) == self.nonce && n.is_none() {
                n = Some(map.next_value::<Text<'de>>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((c, n))
    }
}

/// A JSON string, borrowed when it can be.
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Seals `plaintext` as the AES-256-GCM envelope (for `webhook-guard sign` and tests):
/// `{"<ciphertext_field>": .., "<nonce_field>": ..}` and the nonce's base64.
pub fn seal_gcm(
    key: &[u8],
    nonce: [u8; GCM_NONCE_BYTES],
    plaintext: &[u8],
    ciphertext_field: &str,
    nonce_field: Option<&str>,
) -> Option<(Vec<u8>, String)> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let sealed = cipher
        .encrypt(&aes_gcm::Nonce::from(nonce), plaintext)
        .ok()?;
    let nonce_b64 = crate::codec::base64_encode(&nonce);
    let mut envelope = serde_json::Map::new();
    envelope.insert(
        ciphertext_field.to_string(),
        serde_json::Value::String(crate::codec::base64_encode(&sealed)),
    );
    if let Some(field) = nonce_field {
        envelope.insert(
            field.to_string(),
            serde_json::Value::String(nonce_b64.clone()),
        );
    }
    let body = serde_json::to_vec(&serde_json::Value::Object(envelope)).ok()?;
    Some((body, nonce_b64))
}

/// Seals `plaintext` as Lark does (for `webhook-guard sign` and tests): the
/// `{"encrypt": b64(iv || AES-256-CBC)}` body under `key` (already SHA-256 of the Encrypt Key).
pub fn seal_lark(key: &[u8], iv: [u8; CBC_IV_BYTES], plaintext: &[u8]) -> Option<Vec<u8>> {
    let cipher = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv).ok()?;
    let mut sealed = iv.to_vec();
    sealed.extend(cipher.encrypt_padded_vec_mut::<Pkcs7>(plaintext));
    let mut envelope = serde_json::Map::new();
    envelope.insert(
        LARK_FIELD.to_string(),
        serde_json::Value::String(crate::codec::base64_encode(&sealed)),
    );
    serde_json::to_vec(&serde_json::Value::Object(envelope)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm() -> Cipher {
        Cipher::AesGcm {
            ciphertext_field: "encrypted".into(),
            nonce: NonceSource::Field("nonce".into()),
        }
    }

    const KEY: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [9; 32];

    #[test]
    fn gcm_opens_with_the_right_key_among_several() {
        let (body, _) = seal_gcm(
            &KEY,
            [1; 12],
            br#"{"id":"evt_1"}"#,
            "encrypted",
            Some("nonce"),
        )
        .unwrap_or_default();
        let opened = gcm().open(&[OTHER, KEY], &body, None);
        assert_eq!(
            opened,
            Ok(Opened {
                plaintext: br#"{"id":"evt_1"}"#.to_vec(),
                key_index: 1
            })
        );
        assert_eq!(gcm().open(&[OTHER], &body, None), Err(Failure::NoKey));
    }

    #[test]
    fn gcm_takes_the_nonce_from_a_header_when_configured() {
        let (body, nonce) = seal_gcm(&KEY, [2; 12], b"hello", "data", None).unwrap_or_default();
        let cipher = Cipher::AesGcm {
            ciphertext_field: "data".into(),
            nonce: NonceSource::Header("x-encryption-nonce".into()),
        };
        let opened = cipher.open(&[KEY], &body, Some(nonce.as_bytes()));
        assert_eq!(opened.map(|o| o.plaintext), Ok(b"hello".to_vec()));
        assert_eq!(
            cipher.open(&[KEY], &body, None),
            Err(Failure::Malformed("nonce"))
        );
        // A different nonce: GCM's tag fails, as with a wrong key.
        let other = crate::codec::base64_encode(&[3; 12]);
        assert_eq!(
            cipher.open(&[KEY], &body, Some(other.as_bytes())),
            Err(Failure::NoKey)
        );
    }

    #[test]
    fn gcm_tells_malformed_envelopes_apart() {
        let open = |body: &[u8]| gcm().open(&[KEY], body, None);
        assert_eq!(open(b"not json"), Err(Failure::Malformed("envelope")));
        assert_eq!(open(b"[]"), Err(Failure::Malformed("envelope")));
        assert_eq!(
            open(br#"{"nonce":"AAAAAAAAAAAAAAAA"}"#),
            Err(Failure::Malformed("envelope"))
        );
        assert_eq!(
            open(br#"{"encrypted":7,"nonce":"AAAAAAAAAAAAAAAA"}"#),
            Err(Failure::Malformed("envelope"))
        );
        assert_eq!(
            open(br#"{"encrypted":"!!","nonce":"AAAAAAAAAAAAAAAA"}"#),
            Err(Failure::Malformed("ciphertext"))
        );
        assert_eq!(
            open(br#"{"encrypted":"AAAA","nonce":"AAAAAAAAAAAAAAAA"}"#),
            Err(Failure::Malformed("ciphertext"))
        );
        assert_eq!(
            open(br#"{"encrypted":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AAAA"}"#),
            Err(Failure::Malformed("nonce"))
        );
        assert_eq!(
            open(br#"{"encrypted":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"AAAAAAAAAAAAAAAA"} x"#),
            Err(Failure::Malformed("envelope"))
        );
    }

    #[test]
    fn escaped_slashes_in_base64_still_decode() {
        let (body, _) =
            seal_gcm(&KEY, [4; 12], &[0xff; 200], "encrypted", Some("nonce")).unwrap_or_default();
        let escaped = String::from_utf8_lossy(&body).replace('/', "\\/");
        assert!(
            escaped.contains("\\/"),
            "the vector must exercise an escape"
        );
        let opened = gcm().open(&[KEY], escaped.as_bytes(), None);
        assert_eq!(opened.map(|o| o.plaintext), Ok(vec![0xff; 200]));
    }

    #[test]
    fn gcm_keys_must_be_32_bytes() {
        let b64 = |n: usize| crate::codec::base64_encode(&vec![1u8; n]);
        assert!(gcm().derive_key(KeyEncoding::Base64, &b64(32)).is_some());
        assert!(gcm().derive_key(KeyEncoding::Base64, &b64(16)).is_none());
        assert!(gcm()
            .derive_key(KeyEncoding::Hex, &"ab".repeat(32))
            .is_some());
    }
}
