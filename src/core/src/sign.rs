//! Producing signatures: the inverse of verification, driven by the same `Scheme` data. Used by
//! the `webhook-guard sign` CLI to test an endpoint by hand, never by the filter.

use crate::codec::base64_encode;
use crate::config::Encoding;
use crate::scheme::{DeliveryId, Scheme, SigFormat, TimestampSource};
use crate::template::Part;
use crate::verify::compute_mac;

#[derive(Debug, Clone, Default)]
pub struct SignInput<'a> {
    pub body: &'a [u8],
    /// In the scheme's unit (seconds or milliseconds); required when the scheme signs one.
    pub timestamp: Option<u64>,
    /// Delivery id: used for the scheme's signed id header (e.g. `webhook-id`) and its
    /// delivery-id header.
    pub id: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    /// Other header values a custom template signs.
    pub headers: &'a [(String, String)],
}

/// The headers to send: signature, timestamp and signed headers, lower-case names.
pub fn sign(
    scheme: &Scheme,
    key: &[u8],
    input: &SignInput,
) -> Result<Vec<(String, String)>, String> {
    let source = scheme
        .sources
        .first()
        .ok_or_else(|| "the scheme has no signature header".to_string())?;
    if matches!(
        source.algorithm,
        crate::config::Algorithm::Ed25519 | crate::config::Algorithm::EcdsaP256Sha256
    ) {
        return Err("public-key schemes are signed by the provider's private key, not here".into());
    }
    let ts_text = match &scheme.timestamp {
        // A body timestamp is part of the body the caller passes.
        Some(spec) if matches!(spec.source, TimestampSource::BodyJson(_)) => None,
        Some(spec) => {
            let ts = input
                .timestamp
                .ok_or_else(|| "this scheme signs a timestamp: pass one".to_string())?;
            Some(match spec.unit {
                crate::config::TimestampUnit::Rfc3339 => crate::rfc3339::format_secs(ts),
                _ => ts.to_string(),
            })
        }
        None => None,
    };
    if matches!(source.format, SigFormat::Jwt) {
        let iat = ts_text
            .as_deref()
            .ok_or("this scheme signs a timestamp: pass one")?;
        let jti = input
            .id
            .filter(|id| !id.is_empty())
            .ok_or("this scheme signs a jti: pass it as the delivery id")?;
        let name = source.headers.first().ok_or("no signature header name")?;
        return Ok(vec![(name.clone(), sign_jwt(key, iat, jti, input.body)?)]);
    }
    let id_header = match &scheme.delivery_id {
        Some(DeliveryId::Header(h)) => Some(h.as_str()),
        _ => None,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut signed_values: Vec<String> = Vec::new();
    for part in &scheme.template {
        if let Part::Header(name) = part {
            let value = input
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    (Some(name.as_str()) == id_header)
                        .then(|| input.id.map(str::to_string))
                        .flatten()
                })
                .ok_or_else(|| format!("header '{name}' is signed: pass its value"))?;
            out.push((name.clone(), value.clone()));
            signed_values.push(value);
        }
    }
    // Sign a body's form parameters as Twilio does (callers pass form bodies for such schemes).
    let form = if scheme.template.contains(&Part::PlivoUrl) {
        // Plivo V3: callers pass a form body (or none).
        let params = crate::form::plivo_params(input.body)
            .ok_or("a form parameter is repeated: Plivo signs one value per name")?;
        crate::form::plivo_url_tail(input.path.as_bytes(), &params)
    } else if scheme.template.contains(&Part::FormParams) {
        crate::form::sorted_params(input.body)
    } else {
        Vec::new()
    };
    let mut values = signed_values.iter();
    let parts: Vec<&[u8]> = scheme
        .template
        .iter()
        .map(|part| match part {
            Part::Literal(l) => l.as_slice(),
            Part::Body => input.body,
            Part::Timestamp => ts_text.as_deref().unwrap_or("").as_bytes(),
            Part::Header(_) => values.next().map_or(&b""[..], |v| v.as_bytes()),
            Part::Method => input.method.as_bytes(),
            Part::Path => input.path.as_bytes(),
            Part::FormParams => form.as_slice(),
            Part::Token => input.id.unwrap_or("").as_bytes(),
            Part::Jwt => b"",
            Part::PlivoUrl => form.as_slice(),
            Part::Secret => key,
        })
        .collect();
    if scheme.template.contains(&Part::Token) && input.id.is_none_or(str::is_empty) {
        return Err("this scheme signs a token: pass it as the delivery id".into());
    }
    let mac = compute_mac(source.algorithm, key, &parts).ok_or("cannot compute the MAC")?;
    let encoded = match source.encoding {
        Encoding::Hex => hex::encode(&mac),
        Encoding::Base64 => base64_encode(&mac),
    };
    let value = match &source.format {
        SigFormat::Single { prefix } => format!("{prefix}{encoded}"),
        SigFormat::KeyValues {
            item_sep,
            sig_key,
            ts_key,
        } => match (ts_key, &ts_text) {
            (Some(k), Some(ts)) => format!("{k}={ts}{item_sep}{sig_key}={encoded}"),
            _ => format!("{sig_key}={encoded}"),
        },
        SigFormat::Versioned { version } => format!("{version},{encoded}"),
        // The token is the secret itself.
        SigFormat::Token => String::from_utf8_lossy(key).into_owned(),
        SigFormat::Jwt => return Err("a JWT is signed by sign_jwt".into()),
        SigFormat::List { .. } => encoded,
        SigFormat::AdyenItems => {
            return Err("Adyen signs each notification item: see sign_adyen".into())
        }
        // Mailgun: the fields of the body's signature block, not headers.
        SigFormat::BodyFields => {
            return Ok(vec![
                ("timestamp".into(), ts_text.unwrap_or_default()),
                ("token".into(), input.id.unwrap_or("").to_string()),
                ("signature".into(), encoded),
            ])
        }
    };
    let sig_header = source.headers.first().ok_or("no signature header name")?;
    out.insert(0, (sig_header.clone(), value));
    if let (Some(spec), Some(ts)) = (&scheme.timestamp, &ts_text) {
        if let TimestampSource::Header(name) = &spec.source {
            out.push((name.clone(), ts.clone()));
        }
    }
    if let (Some(h), Some(id)) = (id_header, input.id) {
        if !out.iter().any(|(k, _)| k == h) {
            out.push((h.to_string(), id.to_string()));
        }
    }
    Ok(out)
}

/// Adyen: the notification body with `additionalData.hmacSignature` set in every
/// `notificationItems[].NotificationRequestItem` (base64 HMAC-SHA256 of its signed string under
/// `key`, the hex-decoded HMAC key), serialized again.
pub fn sign_adyen(key: &[u8], body: &[u8]) -> Result<Vec<u8>, String> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items = doc
        .get_mut("notificationItems")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("the body has no notificationItems array")?;
    for wrapper in items.iter_mut() {
        let item = wrapper
            .get_mut("NotificationRequestItem")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or("an item has no NotificationRequestItem object")?;
        let signed = crate::verify::adyen_signing_string(&serde_json::Value::Object(item.clone()))
            .ok_or("an item's signed fields are not strings, or its amount is not an integer value and a currency")?;
        let mac = compute_mac(crate::config::Algorithm::HmacSha256, key, &[&signed])
            .ok_or("cannot compute the MAC")?;
        let additional = item
            .entry("additionalData")
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
            .as_object_mut()
            .ok_or("additionalData is not an object")?;
        additional.insert(
            "hmacSignature".into(),
            serde_json::Value::String(base64_encode(&mac)),
        );
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

/// Vonage: `Bearer <JWT>`, HS256 under `key`, with the claims Vonage sends: `iat` (`iat`, in
/// seconds, as decimal text), `jti`, `iss` and `payload_hash` (hex SHA-256 of `body`).
pub fn sign_jwt(key: &[u8], iat: &str, jti: &str, body: &[u8]) -> Result<String, String> {
    use base64::Engine;
    use sha2::Digest;
    let iat: u64 = iat.parse().map_err(|_| "iat is not a number of seconds")?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT"}).to_string();
    let claims = serde_json::json!({
        "iat": iat,
        "jti": jti,
        "iss": "Vonage",
        "payload_hash": hex::encode(sha2::Sha256::digest(body)),
    })
    .to_string();
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let mac = compute_mac(
        crate::config::Algorithm::HmacSha256,
        key,
        &[signed.as_bytes()],
    )
    .ok_or("cannot compute the MAC")?;
    Ok(format!("Bearer {signed}.{}", b64(&mac)))
}
