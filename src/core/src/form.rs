//! `application/x-www-form-urlencoded` bodies as Twilio signs them: every (name, value) pair
//! decoded, duplicates dropped, sorted by name then value, concatenated as name + value.

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => b.checked_sub(b'0'),
        b'a'..=b'f' => b.checked_sub(b'a').and_then(|v| v.checked_add(10)),
        b'A'..=b'F' => b.checked_sub(b'A').and_then(|v| v.checked_add(10)),
        _ => None,
    }
}

/// Percent-decoding with `+` as space (form encoding); a malformed escape is kept as is.
pub fn decode(raw: &[u8]) -> Vec<u8> {
    decode_with(raw, true)
}

/// Percent-decoding of a URL path (`+` stays `+`); a malformed escape is kept as is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    decode_with(raw, false)
}

fn decode_with(raw: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0usize;
    while let Some(&b) = raw.get(i) {
        match b {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hi = raw.get(i.saturating_add(1)).copied().and_then(hex_val);
                let lo = raw.get(i.saturating_add(2)).copied().and_then(hex_val);
                if let (Some(h), Some(l)) = (hi, lo) {
                    out.push(h.wrapping_mul(16).wrapping_add(l));
                    i = i.saturating_add(2);
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(b),
        }
        i = i.saturating_add(1);
    }
    out
}

pub fn sorted_params(body: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = body
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut kv = p.splitn(2, |b| *b == b'=');
            let k = decode(kv.next().unwrap_or(&[]));
            let v = decode(kv.next().unwrap_or(&[]));
            (k, v)
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
        .into_iter()
        .flat_map(|(k, v)| k.into_iter().chain(v))
        .collect()
}

/// Decoded `name=value` pairs of a form body or query (`+` is a space; a piece without `=` has
/// an empty value; empty pieces are skipped), in order.
fn pairs(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut kv = p.splitn(2, |b| *b == b'=');
            (
                decode(kv.next().unwrap_or(&[])),
                decode(kv.next().unwrap_or(&[])),
            )
        })
        .collect()
}

/// Plivo V3: the form parameters of a body, sorted by name; `None` when a name repeats (the
/// `plivo` SDK is given one value per name: which one the sender signed is ambiguous).
pub fn plivo_params(body: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut params = pairs(body);
    params.sort();
    if params.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return None;
    }
    Some(params)
}

/// Plivo V3's URL after the origin, as the `plivo` SDK's `construct_post_url` builds it: the
/// path (the `;params` of its last segment dropped, as `urlparse` does), then, when there are
/// query or form parameters, `?` and the query parameters decoded and sorted (`k=v`, joined by
/// `&`; a repeated name's values sorted), then `.` when there are both, then the form
/// parameters sorted by name, each `name` + `value`, concatenated.
pub fn plivo_url_tail(path: &[u8], params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut split = path.splitn(2, |b| *b == b'?');
    let mut path_only = split.next().unwrap_or(&[]);
    let query = split.next().unwrap_or(&[]);
    let last_slash = path_only.iter().rposition(|b| *b == b'/').unwrap_or(0);
    if let Some(semi) = path_only
        .get(last_slash..)
        .and_then(|seg| seg.iter().position(|b| *b == b';'))
    {
        path_only = path_only
            .get(..last_slash.saturating_add(semi))
            .unwrap_or(path_only);
    }
    let mut q = pairs(query);
    q.sort();
    let query_text: Vec<u8> = q
        .iter()
        .enumerate()
        .flat_map(|(i, (k, v))| {
            let sep: &[u8] = if i == 0 { b"" } else { b"&" };
            [sep, k.as_slice(), b"=", v.as_slice()].concat()
        })
        .collect();
    let mut out = path_only.to_vec();
    if !query_text.is_empty() || !params.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&query_text);
    }
    if !query_text.is_empty() && !params.is_empty() {
        out.push(b'.');
    }
    for (k, v) in params {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_decodes_and_dedups() {
        assert_eq!(
            sorted_params(b"To=%2B1800&From=a+b&Digits=1&Digits=1&Digits=0"),
            b"Digits0Digits1Froma bTo+1800".to_vec()
        );
        assert_eq!(decode(b"%zz%4"), b"%zz%4".to_vec());
        assert!(sorted_params(b"").is_empty());
    }
}
