//! Signature verification: pull the signed material out of the headers (before the body
//! arrives), then MAC the template over the raw body and compare in constant time.

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::codec::decode_mac;
use crate::config::{Algorithm, TimestampUnit};
use crate::reason::Reason;
use crate::scheme::{Scheme, SigFormat, SigSource, TimestampSource};
use crate::template::Part;

/// Longest signature header we parse; real ones are well under 1 KiB even with rotation.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 4096;
/// Most candidate signatures we compare against (rotation needs 2-3).
pub const MAX_CANDIDATES: usize = 8;
/// Longest timestamp we parse (u64 milliseconds fit in 20 digits).
const MAX_TIMESTAMP_DIGITS: usize = 19;

/// Request headers as the proxy hands them over: names (any case) and raw value bytes.
/// One request header as the glue has it: owned pairs (the wasm SDK's), or slices of the
/// proxy's own buffers (the native build reads them in place, no copies).
pub trait Header {
    fn name(&self) -> &str;
    fn value(&self) -> &[u8];
}

impl<N: AsRef<str>, V: AsRef<[u8]>> Header for (N, V) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }

    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

pub enum Lookup<'a> {
    Absent,
    One(&'a [u8]),
    /// The same header more than once: ambiguous, never guessed at.
    Many,
}

pub fn lookup<'a, H: Header>(headers: &'a [H], name: &str) -> Lookup<'a> {
    let mut found = Lookup::Absent;
    for h in headers {
        if h.name().eq_ignore_ascii_case(name) {
            if let Lookup::One(_) = found {
                return Lookup::Many;
            }
            found = Lookup::One(h.value());
        }
    }
    found
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    /// Exactly as received: the scheme signs these bytes.
    pub raw: Vec<u8>,
    pub ms: u64,
}

/// Everything needed from the headers, owned so it outlives the headers callback.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub source: usize,
    pub candidates: Vec<Vec<u8>>,
    pub timestamp: Option<Timestamp>,
    /// Values of the template's `{header:..}` parts, in template order.
    pub signed_headers: Vec<Vec<u8>>,
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    /// The body is `application/x-www-form-urlencoded` (its parameters may be signed).
    pub form_encoded: bool,
    /// Twilio: the `bodySHA256` parameter of the signed URL (hex), when present.
    pub body_sha256: Option<Vec<u8>>,
    /// Mailgun: the body's signed `token` (empty until `body_fields` read it); Vonage: the
    /// JWT's signed `jti`.
    pub token: Vec<u8>,
    /// Vonage: the JWT's `header.payload`, the bytes its MAC covers.
    pub jwt_signed: Vec<u8>,
    /// Vonage: the JWT's `payload_hash` claim, decoded (the SHA-256 the body must have).
    pub payload_hash: Option<Vec<u8>>,
}

/// A signature that verified: which key (0 = the first listed), under which of the scheme's
/// templates (0 = the main one), and the MAC or signature that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub key_index: usize,
    pub template: usize,
    pub mac: Vec<u8>,
}

impl Extracted {
    /// Nothing extracted: a request without a signature that may still be a handshake
    /// answered from its body (Lark's `url_verification`).
    pub fn unsigned() -> Extracted {
        Extracted {
            source: 0,
            candidates: Vec::new(),
            timestamp: None,
            signed_headers: Vec::new(),
            method: Vec::new(),
            path: Vec::new(),
            form_encoded: false,
            body_sha256: None,
            token: Vec::new(),
            jwt_signed: Vec::new(),
            payload_hash: None,
        }
    }
}

pub fn extract<H: Header>(
    scheme: &Scheme,
    headers: &[H],
    method: &[u8],
    path: &[u8],
) -> Result<Extracted, Reason> {
    let (source_index, source, sig_value) = find_signature(scheme, headers)?;
    let mut jwt = None;
    let (candidates, ts_param) = if matches!(source.format, SigFormat::Jwt) {
        let token = parse_jwt(sig_value)?;
        let candidates = vec![token.mac.clone()];
        let iat = token.iat.to_string().into_bytes();
        jwt = Some(token);
        (candidates, Some(iat))
    } else {
        parse_candidates(source, sig_value)?
    };

    let timestamp = match &scheme.timestamp {
        None => None,
        Some(spec) => {
            let raw = match &spec.source {
                TimestampSource::SignatureParam => Some(ts_param.ok_or(Reason::MissingTimestamp)?),
                TimestampSource::Header(name) => match lookup(headers, name) {
                    Lookup::Absent => return Err(Reason::MissingTimestamp),
                    Lookup::Many => return Err(Reason::MalformedTimestamp),
                    Lookup::One(v) => Some(v.to_vec()),
                },
                // In the body: read once the body has verified (`body_timestamp`).
                TimestampSource::BodyJson(_) | TimestampSource::BodyFields => None,
            };
            match raw {
                None => None,
                Some(raw) => {
                    let ms = parse_timestamp(&raw, spec.unit).ok_or(Reason::MalformedTimestamp)?;
                    Some(Timestamp { raw, ms })
                }
            }
        }
    };

    let mut signed_headers = Vec::new();
    for part in &scheme.template {
        if let Part::Header(name) = part {
            match lookup(headers, name) {
                Lookup::Absent => return Err(Reason::MissingHeader),
                Lookup::Many => return Err(Reason::MalformedSignature),
                Lookup::One(v) => signed_headers.push(v.to_vec()),
            }
        }
    }

    const FORM: &[u8] = b"application/x-www-form-urlencoded";
    let form_encoded = matches!(
        lookup(headers, "content-type"),
        Lookup::One(v) if v.get(..FORM.len()).is_some_and(|p| p.eq_ignore_ascii_case(FORM))
    );
    let body_sha256 = if scheme.body_sha256_query {
        query_param(path, b"bodySHA256").map(<[u8]>::to_vec)
    } else {
        None
    };
    Ok(Extracted {
        source: source_index,
        candidates,
        timestamp,
        signed_headers,
        method: method.to_vec(),
        path: path.to_vec(),
        form_encoded,
        body_sha256,
        token: jwt.as_ref().map(|t| t.jti.clone()).unwrap_or_default(),
        payload_hash: jwt.as_ref().map(|t| t.payload_hash.clone()),
        jwt_signed: jwt.map(|t| t.signed).unwrap_or_default(),
    })
}

/// The first value of `name` in the path's query string (raw, not decoded).
fn query_param<'a>(path: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let query = path.splitn(2, |b| *b == b'?').nth(1)?;
    query.split(|b| *b == b'&').find_map(|kv| {
        let (k, v) = split_once(kv, b"=")?;
        (k == name).then_some(v)
    })
}

fn find_signature<'s, 'h, H: Header>(
    scheme: &'s Scheme,
    headers: &'h [H],
) -> Result<(usize, &'s SigSource, &'h [u8]), Reason> {
    for (i, source) in scheme.sources.iter().enumerate() {
        if matches!(source.format, SigFormat::BodyFields | SigFormat::AdyenItems) {
            // In the body: read once it is buffered (`body_fields`).
            return Ok((i, source, &[]));
        }
        for name in &source.headers {
            match lookup(headers, name) {
                Lookup::Absent => {}
                Lookup::Many => return Err(Reason::MalformedSignature),
                Lookup::One(v) => return Ok((i, source, v)),
            }
        }
    }
    Err(Reason::MissingSignature)
}

type Candidates = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// Decoded candidate MACs, plus the timestamp item for `KeyValues` formats.
pub fn parse_candidates(source: &SigSource, value: &[u8]) -> Result<Candidates, Reason> {
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(Reason::MalformedSignature);
    }
    let len = source.algorithm.signature_lengths();
    match &source.format {
        SigFormat::Single { prefix } => {
            let encoded = value
                .strip_prefix(prefix.as_bytes())
                .ok_or(Reason::MalformedSignature)?;
            let mac =
                decode_mac(source.encoding, encoded, len).ok_or(Reason::MalformedSignature)?;
            Ok((vec![mac], None))
        }
        SigFormat::KeyValues {
            item_sep,
            sig_key,
            ts_key,
        } => {
            let mut candidates = Vec::new();
            let mut seen = 0usize;
            let mut ts = None;
            let mut sep = [0u8; 4];
            let sep = item_sep.encode_utf8(&mut sep).as_bytes();
            for item in split_bytes(value, sep) {
                let item = item.trim_ascii();
                if item.is_empty() {
                    continue;
                }
                let (k, v) = split_once(item, b"=").ok_or(Reason::MalformedSignature)?;
                if ts_key.as_deref().is_some_and(|t| t.as_bytes() == k) {
                    if ts.replace(v.to_vec()).is_some() {
                        return Err(Reason::MalformedSignature);
                    }
                } else if k == sig_key.as_bytes() {
                    seen = seen.saturating_add(1);
                    if seen > MAX_CANDIDATES {
                        return Err(Reason::MalformedSignature);
                    }
                    candidates.extend(decode_mac(source.encoding, v, len));
                }
            }
            if candidates.is_empty() {
                return Err(Reason::MalformedSignature);
            }
            Ok((candidates, ts))
        }
        SigFormat::Token => Ok((vec![value.to_vec()], None)),
        SigFormat::BodyFields | SigFormat::AdyenItems => Ok((Vec::new(), None)),
        // Parsed whole by `parse_jwt` (in `extract`).
        SigFormat::Jwt => Err(Reason::MalformedSignature),
        SigFormat::List { sep } => {
            let mut buf = [0u8; 4];
            let sep = sep.encode_utf8(&mut buf).as_bytes();
            let mut candidates = Vec::new();
            for (seen, item) in split_bytes(value, sep).enumerate() {
                if seen >= MAX_CANDIDATES {
                    return Err(Reason::MalformedSignature);
                }
                candidates.extend(decode_mac(source.encoding, item.trim_ascii(), len));
            }
            if candidates.is_empty() {
                return Err(Reason::MalformedSignature);
            }
            Ok((candidates, None))
        }
        SigFormat::Versioned { version } => {
            let mut candidates = Vec::new();
            let mut seen = 0usize;
            for entry in split_bytes(value, b" ") {
                let Some((v, sig)) = split_once(entry, b",") else {
                    continue;
                };
                if v == version.as_bytes() {
                    seen = seen.saturating_add(1);
                    if seen > MAX_CANDIDATES {
                        return Err(Reason::MalformedSignature);
                    }
                    candidates.extend(decode_mac(source.encoding, sig, len));
                }
            }
            if candidates.is_empty() {
                return Err(Reason::MalformedSignature);
            }
            Ok((candidates, None))
        }
    }
}

fn split_bytes<'a>(value: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let current = rest?;
        match split_once(current, sep) {
            Some((head, tail)) => {
                rest = Some(tail);
                Some(head)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

fn split_once<'a>(value: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = value.windows(sep.len()).position(|w| w == sep)?;
    Some((value.get(..at)?, value.get(at.checked_add(sep.len())?..)?))
}

/// Canonical non-negative decimal only (no sign, spaces or leading zeros), or an RFC 3339
/// date-time for `Rfc3339`; the result is milliseconds since the epoch.
pub fn parse_timestamp(raw: &[u8], unit: TimestampUnit) -> Option<u64> {
    if unit == TimestampUnit::Rfc3339 {
        return crate::rfc3339::parse_ms(raw);
    }
    if raw.is_empty() || raw.len() > MAX_TIMESTAMP_DIGITS || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if raw.len() > 1 && raw.first() == Some(&b'0') {
        return None;
    }
    let value: u64 = std::str::from_utf8(raw).ok()?.parse().ok()?;
    match unit {
        TimestampUnit::Seconds => value.checked_mul(1000),
        TimestampUnit::Milliseconds => Some(value),
        TimestampUnit::Rfc3339 => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skew {
    Stale,
    Future,
}

/// Two-sided window: `|now - ts| <= tolerance`.
pub fn check_window(ts_ms: u64, now_ms: u64, tolerance_ms: u64) -> Result<(), Skew> {
    if now_ms.abs_diff(ts_ms) <= tolerance_ms {
        Ok(())
    } else if ts_ms < now_ms {
        Err(Skew::Stale)
    } else {
        Err(Skew::Future)
    }
}

/// The bytes a template signs, as slices in order (fed to the MAC without concatenating).
pub fn signed_parts<'a>(
    template: &'a [Part],
    ex: &'a Extracted,
    body: &'a [u8],
    form: &'a [u8],
) -> Vec<&'a [u8]> {
    let mut headers = ex.signed_headers.iter();
    template
        .iter()
        .map(|part| match part {
            Part::Literal(l) => l.as_slice(),
            Part::Body => body,
            Part::Timestamp => ex.timestamp.as_ref().map_or(&[][..], |t| t.raw.as_slice()),
            Part::Header(_) => headers.next().map_or(&[][..], Vec::as_slice),
            Part::Method => ex.method.as_slice(),
            Part::Path => ex.path.as_slice(),
            Part::FormParams => form,
            Part::Token => ex.token.as_slice(),
            Part::Jwt => ex.jwt_signed.as_slice(),
            // Computed with the form parameters (`form_part`).
            Part::PlivoUrl => form,
            // Filled in per key (`with_key`).
            Part::Secret => &[],
        })
        .collect()
}

/// `parts` (from `signed_parts` over `template`) with the key in place of `{secret}`.
fn with_key<'a>(template: &[Part], parts: &[&'a [u8]], key: &'a [u8]) -> Vec<&'a [u8]> {
    template
        .iter()
        .zip(parts)
        .map(|(part, bytes)| if *part == Part::Secret { key } else { bytes })
        .collect()
}

/// The `{form}` part: the parameters of a form-encoded body, unless the signed URL carries
/// `bodySHA256` (then the body is covered by that hash and no parameters are signed, as in
/// Twilio's SDK).
pub fn form_part(scheme: &Scheme, ex: &Extracted, body: &[u8]) -> Vec<u8> {
    if scheme.template.contains(&Part::PlivoUrl) {
        // Plivo V3: the path, query and form parameters as its SDK signs them (a body that is
        // not a form of distinct names never verifies: `plivo_body_ok`).
        let params = if ex.form_encoded {
            crate::form::plivo_params(body).unwrap_or_default()
        } else {
            Vec::new()
        };
        return crate::form::plivo_url_tail(&ex.path, &params);
    }
    if ex.form_encoded && ex.body_sha256.is_none() && scheme.template.contains(&Part::FormParams) {
        crate::form::sorted_params(body)
    } else {
        Vec::new()
    }
}

/// Plivo V3: whether the body is covered by the signature: empty, or a form body with at least
/// one parameter and no name repeated (its parameters are signed; any other body is not).
pub fn plivo_body_ok(ex: &Extracted, body: &[u8]) -> bool {
    body.is_empty()
        || (ex.form_encoded && crate::form::plivo_params(body).is_some_and(|p| !p.is_empty()))
}

/// Twilio: whether the body is what the signature covers. With `bodySHA256=<hex>` in the
/// signed URL the body must hash to it, whatever the (unsigned) Content-Type says. Without
/// it, a form body is covered through its parameters, but only if it has some (an empty form
/// would make a URL-only signature verify any request), and any other body must be empty.
pub fn body_hash_matches(ex: &Extracted, body: &[u8]) -> bool {
    use sha2::Digest;
    match &ex.body_sha256 {
        Some(hex_digest) => {
            let digest = sha2::Sha256::digest(body);
            hex::decode(hex_digest).is_ok_and(|want| want.as_slice() == digest.as_slice())
        }
        None if ex.form_encoded => !crate::form::sorted_params(body).is_empty(),
        None => body.is_empty(),
    }
}

pub fn compute_mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
        for p in parts {
            mac.update(p);
        }
        Some(mac.finalize().into_bytes().to_vec())
    }
    match algorithm {
        Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(key, parts),
        // The key is among the parts (`Part::Secret`).
        Algorithm::Sha256 => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for p in parts {
                h.update(p);
            }
            Some(h.finalize().to_vec())
        }
        // Not MACs: verified by `ed25519_matches` / `p256_matches`.
        Algorithm::Ed25519 | Algorithm::EcdsaP256Sha256 => None,
    }
}

/// A P-256 public key from its DER SubjectPublicKeyInfo.
pub fn p256_key(spki_der: &[u8]) -> Option<p256::ecdsa::VerifyingKey> {
    use p256::pkcs8::DecodePublicKey;
    p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).ok()
}

/// ECDSA P-256/SHA-256 over the signed bytes, DER signatures.
fn p256_matches(spki_der: &[u8], candidates: &[Vec<u8>], message: &[u8]) -> Option<Vec<u8>> {
    use p256::ecdsa::signature::Verifier;
    let key = p256_key(spki_der)?;
    candidates.iter().find_map(|c| {
        let sig = p256::ecdsa::Signature::from_der(c).ok()?;
        key.verify(message, &sig).ok().map(|()| c.clone())
    })
}

/// Ed25519 over the signed bytes, strict (canonical signatures only, no small-order keys).
fn ed25519_matches(public_key: &[u8], candidates: &[Vec<u8>], message: &[u8]) -> Option<Vec<u8>> {
    let key_bytes: &[u8; 32] = public_key.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(key_bytes).ok()?;
    candidates.iter().find_map(|c| {
        let sig = ed25519_dalek::Signature::from_slice(c).ok()?;
        key.verify_strict(message, &sig).ok().map(|()| c.clone())
    })
}

/// The first key whose signature matches any candidate (under the scheme's main template,
/// then its alternates), compared in constant time.
pub fn matching_key<K: AsRef<[u8]>>(
    scheme: &Scheme,
    ex: &Extracted,
    keys: &[K],
    body: &[u8],
) -> Option<Match> {
    let source = scheme.sources.get(ex.source)?;
    if matches!(source.format, SigFormat::Token) {
        // The token is the secret itself. Compare digests, which have one size, so neither
        // the outcome nor the time taken depends on how long the secret is.
        let digest = |b: &[u8]| -> [u8; 32] {
            use sha2::Digest;
            sha2::Sha256::digest(b).into()
        };
        let candidates: Vec<[u8; 32]> = ex.candidates.iter().map(|c| digest(c)).collect();
        return keys.iter().enumerate().find_map(|(i, key)| {
            let key_digest = digest(key.as_ref());
            let matched: bool = candidates
                .iter()
                .fold(subtle::Choice::from(0), |acc, c| acc | key_digest.ct_eq(c))
                .into();
            matched.then(|| Match {
                key_index: i,
                template: 0,
                mac: key.as_ref().to_vec(),
            })
        });
    }
    let algorithm = source.algorithm;
    let form = form_part(scheme, ex, body);
    let templates: Vec<Vec<&[u8]>> = scheme
        .templates()
        .map(|t| signed_parts(t, ex, body, &form))
        .collect();
    if matches!(algorithm, Algorithm::Ed25519 | Algorithm::EcdsaP256Sha256) {
        // Public-key schemes need the whole message at once.
        let messages: Vec<Vec<u8>> = templates.iter().map(|parts| parts.concat()).collect();
        let check = match algorithm {
            Algorithm::Ed25519 => ed25519_matches,
            _ => p256_matches,
        };
        return keys.iter().enumerate().find_map(|(i, key)| {
            messages.iter().enumerate().find_map(|(t, message)| {
                check(key.as_ref(), &ex.candidates, message).map(|mac| Match {
                    key_index: i,
                    template: t,
                    mac,
                })
            })
        });
    }
    let keyed = scheme.template.contains(&Part::Secret);
    keys.iter().enumerate().find_map(|(i, key)| {
        templates.iter().enumerate().find_map(|(t, parts)| {
            let mac = if keyed {
                let template = scheme.templates().nth(t)?;
                compute_mac(
                    algorithm,
                    key.as_ref(),
                    &with_key(template, parts, key.as_ref()),
                )?
            } else {
                compute_mac(algorithm, key.as_ref(), parts)?
            };
            let matched: bool = ex
                .candidates
                .iter()
                .fold(subtle::Choice::from(0), |acc, c| acc | mac.ct_eq(c))
                .into();
            matched.then_some(Match {
                key_index: i,
                template: t,
                mac,
            })
        })
    })
}

/// The signature as a dedup key: the SHA-256 of the bytes the signature covers (under the
/// template that verified). It must not depend on which signature the request happened to
/// carry: GitHub may send a SHA-256 and a legacy SHA-1 signature of the same body, and a sender
/// rotating secrets signs with both (`v1=..,v1=..`, Plivo's comma-separated list) while the
/// policy lists both. Keyed on the MAC under the secret that verified, a copy stripped of the
/// signature under the first listed secret verified under the next one: a new key, admitted
/// again. The signed bytes are the same whichever secret or algorithm verified them.
pub fn canonical_mac(scheme: &Scheme, ex: &Extracted, body: &[u8], m: &Match) -> Vec<u8> {
    use sha2::Digest;
    // Adyen's items have no template: `adyen_match` already hashed their signed strings.
    let adyen = scheme
        .sources
        .get(ex.source)
        .is_some_and(|s| matches!(s.format, SigFormat::AdyenItems));
    let Some(template) = scheme.templates().nth(m.template).filter(|_| !adyen) else {
        return m.mac.clone();
    };
    let form = form_part(scheme, ex, body);
    let mut digest = sha2::Sha256::new();
    for part in signed_parts(template, ex, body, &form) {
        digest.update(part);
    }
    digest.finalize().to_vec()
}

/// The signed timestamp carried in the (verified) JSON body, in milliseconds.
pub fn body_timestamp(field: &str, unit: TimestampUnit, body: &[u8]) -> Result<u64, Reason> {
    let value = crate::json::top_level(body, field).ok_or(Reason::MissingTimestamp)?;
    let n = value.as_u64().ok_or(Reason::MalformedTimestamp)?;
    match unit {
        TimestampUnit::Seconds => n.checked_mul(1000).ok_or(Reason::MalformedTimestamp),
        TimestampUnit::Milliseconds => Ok(n),
        TimestampUnit::Rfc3339 => Err(Reason::MalformedTimestamp),
    }
}

/// Longest Mailgun `token` accepted (Mailgun's are 50 hex characters).
const MAX_TOKEN_BYTES: usize = 256;

/// The three fields of a body-carried signature block, each as found (at most once).
#[derive(Default)]
struct BodySignature {
    timestamp: Option<serde_json::Value>,
    token: Option<serde_json::Value>,
    signature: Option<serde_json::Value>,
    /// A subaccount's event also carries the parent account's signature of the same bytes.
    parent_signature: Option<serde_json::Value>,
}

/// `{"signature": {...}, ...}`: the block, `None` when the object has no `signature`; a
/// repeated `signature`, or a repeated field inside it, is an error (ambiguous).
struct TopLevel;
struct Block;

impl<'de> serde::de::Visitor<'de> for TopLevel {
    type Value = Option<BodySignature>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "signature" {
                if found.is_some() {
                    return Err(serde::de::Error::custom("repeated signature"));
                }
                found = Some(map.next_value_seed(Block)?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Block {
    type Value = BodySignature;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Block {
    type Value = BodySignature;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a signature object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut block = BodySignature::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "timestamp" => &mut block.timestamp,
                "token" => &mut block.token,
                "signature" => &mut block.signature,
                "parent-signature" => &mut block.parent_signature,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(serde::de::Error::custom("repeated field"));
            }
            *slot = Some(map.next_value::<serde_json::Value>()?);
        }
        Ok(block)
    }
}

/// Form fields `timestamp`, `token`, `signature` (decoded); a repeated one is ambiguous.
fn form_signature(body: &[u8]) -> Result<BodySignature, Reason> {
    let mut block = BodySignature::default();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = split_once(pair, b"=").unwrap_or((pair, &[]));
        let slot = match crate::form::decode(name).as_slice() {
            b"timestamp" => &mut block.timestamp,
            b"token" => &mut block.token,
            b"signature" => &mut block.signature,
            b"parent-signature" => &mut block.parent_signature,
            _ => continue,
        };
        if slot.is_some() {
            return Err(Reason::MalformedSignature);
        }
        let text = String::from_utf8(crate::form::decode(value))
            .map_err(|_| Reason::MalformedSignature)?;
        *slot = Some(serde_json::Value::String(text));
    }
    Ok(block)
}

/// Mailgun: the signed material of a `BodyFields` scheme, out of the buffered body (JSON
/// `signature.{timestamp,token,signature}` and, for subaccounts, `parent-signature`; or form
/// fields when the request is form-encoded):
/// a copy of `ex` with the candidate signature, the timestamp and the token filled in. Missing
/// pieces are `missing_signature` / `missing_timestamp`; anything unparsable or repeated is
/// malformed.
pub fn body_fields(scheme: &Scheme, ex: &Extracted, body: &[u8]) -> Result<Extracted, Reason> {
    let source = scheme
        .sources
        .get(ex.source)
        .ok_or(Reason::MissingSignature)?;
    let block = if ex.form_encoded {
        form_signature(body)?
    } else {
        let mut de = serde_json::Deserializer::from_slice(body);
        let block = serde::Deserializer::deserialize_map(&mut de, TopLevel)
            .map_err(|_| Reason::MalformedSignature)?;
        de.end().map_err(|_| Reason::MalformedSignature)?;
        block.ok_or(Reason::MissingSignature)?
    };
    let text = |v: Option<serde_json::Value>, missing: Reason, malformed: Reason| match v {
        None => Err(missing),
        Some(serde_json::Value::String(s)) => Ok(s.into_bytes()),
        Some(_) => Err(malformed),
    };
    let signature = text(
        block.signature,
        Reason::MissingSignature,
        Reason::MalformedSignature,
    )?;
    let token = text(
        block.token,
        Reason::MissingSignature,
        Reason::MalformedSignature,
    )?;
    let raw_ts = text(
        block.timestamp,
        Reason::MissingTimestamp,
        Reason::MalformedTimestamp,
    )?;
    let decode = |text: &[u8]| {
        (text.len() <= MAX_SIGNATURE_HEADER_BYTES)
            .then(|| decode_mac(source.encoding, text, source.algorithm.signature_lengths()))
            .flatten()
            .ok_or(Reason::MalformedSignature)
    };
    let mut candidates = vec![decode(&signature)?];
    // The parent account's signature (subaccount events): either key may verify.
    if let Some(parent) = block.parent_signature {
        let text = text(
            Some(parent),
            Reason::MalformedSignature,
            Reason::MalformedSignature,
        )?;
        candidates.push(decode(&text)?);
    }
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Reason::MalformedSignature);
    }
    let unit = scheme
        .timestamp
        .as_ref()
        .map_or(TimestampUnit::Seconds, |t| t.unit);
    let ms = parse_timestamp(&raw_ts, unit).ok_or(Reason::MalformedTimestamp)?;
    let mut out = ex.clone();
    out.candidates = candidates;
    out.timestamp = Some(Timestamp { raw: raw_ts, ms });
    out.token = token;
    Ok(out)
}

/// Most notification items accepted in one Adyen request: one. Adyen signs each item, never
/// the notification around it, and the store claims one key per request: a batch would let a
/// captured item through again inside another batch (`[a]` then `[a, a]`, `[b, a]`...), each a
/// new key. Adyen's standard webhooks carry one item each.
pub const MAX_ADYEN_ITEMS: usize = 1;

/// A JSON value like `serde_json::Value`, but a key repeated in any object is an error (a
/// repeated signed field is ambiguous: another parser might read the other one).
struct Strict;

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(serde_json::Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(Strict, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// Adyen's signed string of one `NotificationRequestItem`:
/// `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`
/// (the `Adyen` SDK's `generate_notification_sig`): an absent field is empty, `amount.value`
/// an integer in decimal, every other field a string. Anything else (null, a boolean, a
/// fraction, no `amount`) is refused rather than guessed at: `None`.
pub fn adyen_signing_string(item: &serde_json::Value) -> Option<Vec<u8>> {
    let text = |v: Option<&serde_json::Value>| -> Option<String> {
        match v {
            None => Some(String::new()),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        }
    };
    let amount = item.get("amount")?.as_object()?;
    let value = match amount.get("value")? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(|v| v.to_string())
            .or_else(|| n.as_u64().map(|v| v.to_string()))?,
        _ => return None,
    };
    let currency = match amount.get("currency")? {
        serde_json::Value::String(s) => s.clone(),
        _ => return None,
    };
    let fields = [
        text(item.get("pspReference"))?,
        text(item.get("originalReference"))?,
        text(item.get("merchantAccountCode"))?,
        text(item.get("merchantReference"))?,
        value,
        currency,
        text(item.get("eventCode"))?,
        text(item.get("success"))?,
    ];
    Some(fields.join(":").into_bytes())
}

/// One Adyen notification item: its signed string and its decoded `hmacSignature`.
pub type AdyenItem = (Vec<u8>, Vec<u8>);

/// Each item of an Adyen notification: its signed string and its decoded `hmacSignature`.
/// No items, or an item without a signature, is `missing_signature`; more than
/// `MAX_ADYEN_ITEMS` items, an ill-formed body, item, signature or signed field (or a repeated
/// key anywhere) is `malformed_signature`.
pub fn adyen_items(body: &[u8]) -> Result<Vec<AdyenItem>, Reason> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let doc = serde::de::DeserializeSeed::deserialize(Strict, &mut de)
        .map_err(|_| Reason::MalformedSignature)?;
    de.end().map_err(|_| Reason::MalformedSignature)?;
    let items = match doc.get("notificationItems") {
        None => return Err(Reason::MissingSignature),
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err(Reason::MalformedSignature),
    };
    if items.is_empty() {
        return Err(Reason::MissingSignature);
    }
    if items.len() > MAX_ADYEN_ITEMS {
        return Err(Reason::MalformedSignature);
    }
    items
        .iter()
        .map(|wrapper| {
            let item = wrapper
                .get("NotificationRequestItem")
                .filter(|i| i.is_object())
                .ok_or(Reason::MalformedSignature)?;
            let sig = match item.get("additionalData").map(|a| a.get("hmacSignature")) {
                None | Some(None) => return Err(Reason::MissingSignature),
                Some(Some(serde_json::Value::String(s))) => s,
                Some(Some(_)) => return Err(Reason::MalformedSignature),
            };
            let mac = decode_mac(
                crate::config::Encoding::Base64,
                sig.as_bytes(),
                Algorithm::HmacSha256.signature_lengths(),
            )
            .ok_or(Reason::MalformedSignature)?;
            let signed = adyen_signing_string(item).ok_or(Reason::MalformedSignature)?;
            Ok((signed, mac))
        })
        .collect()
}

/// The first key under which **every** item verifies (compared in constant time). The match's
/// MAC, the dedup material, is the SHA-256 of all items' signed strings, each length-prefixed:
/// the same item sent again has the same one, whichever listed key signed it.
pub fn adyen_match<K: AsRef<[u8]>>(keys: &[K], items: &[AdyenItem]) -> Option<Match> {
    if items.is_empty() {
        return None;
    }
    keys.iter().enumerate().find_map(|(i, key)| {
        let key = key.as_ref();
        let all: bool = items
            .iter()
            .map(|(signed, mac)| {
                compute_mac(Algorithm::HmacSha256, key, &[signed])
                    .map_or(subtle::Choice::from(0), |m| m.ct_eq(mac))
            })
            .fold(subtle::Choice::from(1), |acc, c| acc & c)
            .into();
        if !all {
            return None;
        }
        let lengths: Vec<[u8; 8]> = items
            .iter()
            .map(|(s, _)| u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes())
            .collect();
        let parts: Vec<&[u8]> = items
            .iter()
            .zip(&lengths)
            .flat_map(|((s, _), l)| [l.as_slice(), s.as_slice()])
            .collect();
        // Not under the key that verified: the same item signed under another listed key
        // (Adyen's retry after a key change) is the same delivery.
        let mac = {
            use sha2::Digest;
            let mut digest = sha2::Sha256::new();
            for part in parts {
                digest.update(part);
            }
            digest.finalize().to_vec()
        };
        Some(Match {
            key_index: i,
            template: 0,
            mac,
        })
    })
}

/// Longest Vonage `jti` accepted (theirs are UUIDs).
const MAX_JTI_BYTES: usize = 256;

/// A Vonage signed-webhook JWT, checked for shape (not yet for its MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt {
    /// `base64url(header).base64url(payload)`, as received: what the MAC covers.
    pub signed: Vec<u8>,
    /// The decoded signature (32 bytes: HMAC-SHA256).
    pub mac: Vec<u8>,
    /// `iat`, seconds since the epoch.
    pub iat: u64,
    pub jti: Vec<u8>,
    /// The decoded `payload_hash` (32 bytes).
    pub payload_hash: Vec<u8>,
}

fn base64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    // Unpadded only, as JWS compact serialization requires.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// `Bearer <header>.<payload>.<signature>`: the header must be a JSON object whose `alg` is
/// exactly `HS256` (no `none`, no other algorithm, no `crit`); the payload a JSON object
/// (no key repeated) with an integer `iat`, a non-empty string `jti` and a 64-hex-digit
/// `payload_hash`. Anything else is `malformed_signature`, as is a header that is not a
/// Bearer token.
pub fn parse_jwt(value: &[u8]) -> Result<Jwt, Reason> {
    if value.len() > MAX_SIGNATURE_HEADER_BYTES {
        return Err(Reason::MalformedSignature);
    }
    let scheme = value.get(..7).ok_or(Reason::MalformedSignature)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return Err(Reason::MalformedSignature);
    }
    let token = value
        .get(7..)
        .ok_or(Reason::MalformedSignature)?
        .trim_ascii();
    let mut segments = token.split(|b| *b == b'.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Reason::MalformedSignature);
    };
    let strict = |bytes: &[u8]| -> Result<serde_json::Value, Reason> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc = serde::de::DeserializeSeed::deserialize(Strict, &mut de)
            .map_err(|_| Reason::MalformedSignature)?;
        de.end().map_err(|_| Reason::MalformedSignature)?;
        if doc.is_object() {
            Ok(doc)
        } else {
            Err(Reason::MalformedSignature)
        }
    };
    let head = strict(&base64url_decode(header).ok_or(Reason::MalformedSignature)?)?;
    // Algorithm confusion: only HS256, and no critical extensions we would not honour.
    if head.get("alg").and_then(serde_json::Value::as_str) != Some("HS256")
        || head.get("crit").is_some()
    {
        return Err(Reason::MalformedSignature);
    }
    let claims = strict(&base64url_decode(payload).ok_or(Reason::MalformedSignature)?)?;
    let mac = base64url_decode(signature).ok_or(Reason::MalformedSignature)?;
    if mac.len() != 32 {
        return Err(Reason::MalformedSignature);
    }
    let iat = claims
        .get("iat")
        .and_then(serde_json::Value::as_u64)
        .ok_or(Reason::MalformedSignature)?;
    let jti = match claims.get("jti") {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_JTI_BYTES => {
            s.as_bytes().to_vec()
        }
        _ => return Err(Reason::MalformedSignature),
    };
    let payload_hash = match claims.get("payload_hash") {
        Some(serde_json::Value::String(s)) if s.len() == 64 => {
            hex::decode(s).map_err(|_| Reason::MalformedSignature)?
        }
        _ => return Err(Reason::MalformedSignature),
    };
    let signed_len = header.len().saturating_add(1).saturating_add(payload.len());
    let signed = token.get(..signed_len).ok_or(Reason::MalformedSignature)?;
    Ok(Jwt {
        signed: signed.to_vec(),
        mac,
        iat,
        jti,
        payload_hash,
    })
}

/// Vonage: whether the body hashes to the JWT's `payload_hash` (compared in constant time).
/// A scheme without one always matches.
pub fn payload_hash_matches(ex: &Extracted, body: &[u8]) -> bool {
    use sha2::Digest;
    match &ex.payload_hash {
        None => true,
        Some(want) => {
            let digest = sha2::Sha256::digest(body);
            want.len() == digest.len() && bool::from(want.as_slice().ct_eq(digest.as_slice()))
        }
    }
}
