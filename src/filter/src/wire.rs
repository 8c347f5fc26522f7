//! The proxy-wasm wire formats this filter exchanges with the host, as plain functions (built and
//! tested on the host too): header maps and property paths.
//!
//! A header map is `count: u32 LE`, then `count` pairs of `(name_len: u32 LE, value_len: u32 LE)`,
//! then each name and value followed by a NUL byte.

/// The pairs of a serialized header map, borrowed from `bytes` (no copies). Anything malformed
/// (short, lengths past the end, a name that is not UTF-8) gives `None`: the caller treats the
/// headers as unreadable rather than guessing.
pub fn pairs(bytes: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(u32_at(bytes, 0)?).ok()?;
    // Each pair takes at least 8 bytes of lengths and 2 NULs: a count beyond that is garbage.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = i.checked_mul(8)?.checked_add(4)?;
        let name_len = usize::try_from(u32_at(bytes, at)?).ok()?;
        let value_len = usize::try_from(u32_at(bytes, at.checked_add(4)?)?).ok()?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        out.push((std::str::from_utf8(name).ok()?, value));
    }
    Some(out)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Serializes `(name, value)` pairs as a header map.
pub fn serialize<'a>(map: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let entries: Vec<(&str, &[u8])> = map.into_iter().collect();
    let size = entries
        .iter()
        .fold(4usize, |n, (k, v)| n.saturating_add(k.len() + v.len() + 10));
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(entries.len()).to_le_bytes());
    for (k, v) in &entries {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    for (k, v) in &entries {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Lengths beyond u32 cannot be expressed; such a map would be refused by the host anyway.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A property path (`["xds", "route_name"]`) as the host reads it: parts joined by NUL.
pub fn path(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let map: Vec<(&str, &[u8])> =
            vec![(":method", b"POST"), ("x-empty", b""), ("a", b"\0\xff")];
        let bytes = serialize(map.clone());
        assert_eq!(pairs(&bytes), Some(map));
        assert_eq!(pairs(&[]), Some(vec![]));
        assert_eq!(path(&["xds", "route_name"]), b"xds\0route_name");
    }

    #[test]
    fn malformed_maps_are_refused() {
        let good = serialize(vec![("name", &b"value"[..])]);
        // (The final NUL is not needed to read the last value.)
        for cut in 1..good.len() - 1 {
            assert_eq!(
                pairs(good.get(..cut).unwrap_or_default()),
                None,
                "truncated at {cut}"
            );
        }
        let mut bad_name = serialize(vec![("n", &b"v"[..])]);
        // The name's first byte follows the count and one pair of lengths.
        if let Some(b) = bad_name.get_mut(12) {
            *b = 0xff;
        }
        assert_eq!(pairs(&bad_name), None);
        assert_eq!(pairs(&u32::MAX.to_le_bytes()), None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = pairs(&bytes);
        }

        #[test]
        fn serialized_maps_parse_back(map in prop::collection::vec(("[a-z:-]{0,12}", prop::collection::vec(any::<u8>(), 0..24)), 0..12)) {
            let borrowed: Vec<(&str, &[u8])> = map.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            let bytes = serialize(borrowed.clone());
            prop_assert_eq!(pairs(&bytes), Some(borrowed));
        }
    }
}
