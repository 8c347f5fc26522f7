//! One top-level string field out of a JSON object, without building a document tree: the
//! other values are skipped (serde's `IgnoredAny`), so cost and memory stay linear and small.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

struct Field<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Option<serde_json::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 && found.is_none() {
                found = Some(map.next_value::<serde_json::Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// `body[field]` when `body` is a JSON object with that field.
pub fn top_level(body: &[u8], field: &str) -> Option<serde_json::Value> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Field(field).deserialize(&mut de).ok().flatten()
}

/// `body[field]` when `body` is a JSON object whose `field` is a string.
pub fn top_level_string(body: &[u8], field: &str) -> Option<String> {
    match top_level(body, field)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_top_level_strings() {
        assert_eq!(
            top_level_string(br#"{"a":[1,{"id":"x"}],"id":"evt_1"}"#, "id").as_deref(),
            Some("evt_1")
        );
        assert_eq!(top_level_string(br#"{"id":7}"#, "id"), None);
        assert_eq!(top_level_string(br#"[{"id":"x"}]"#, "id"), None);
        assert_eq!(top_level_string(b"not json", "id"), None);
        assert_eq!(
            top_level_string(br#"{"i\u0064":"escaped"}"#, "id").as_deref(),
            Some("escaped")
        );
    }
}
