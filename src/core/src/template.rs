//! Signed-string templates: `{timestamp}.{body}` and friends, parsed once at config load.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(Vec<u8>),
    Body,
    Timestamp,
    /// Lower-case header name; its exact value bytes are signed.
    Header(String),
    Method,
    Path,
    /// Form parameters of an `application/x-www-form-urlencoded` body, decoded, de-duplicated,
    /// sorted by name then value, concatenated as name+value (Twilio).
    FormParams,
    /// The `token` field next to a `BodyFields` signature (Mailgun); not a placeholder of
    /// custom templates.
    Token,
    /// The `header.payload` of a `Jwt` signature (Vonage); not a placeholder of custom
    /// templates.
    Jwt,
    /// Plivo V3: the request's path (without `;params` of its last segment), then `?` and its
    /// query parameters decoded and sorted as `k=v&...`, then `.` and the form parameters
    /// sorted as `kv...` (`form::plivo_url_tail`); not a placeholder of custom templates.
    PlivoUrl,
    /// The verifying key itself (Lark signs `timestamp + nonce + key + body` with a plain
    /// SHA-256); not a placeholder of custom templates.
    Secret,
}

pub fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!("unclosed placeholder '{{{name}'"));
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into_bytes()));
                }
                parts.push(placeholder(&name)?);
            }
            '}' => return Err("unmatched '}' (write '}}' for a literal brace)".to_string()),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal.into_bytes()));
    }
    Ok(parts)
}

fn placeholder(name: &str) -> Result<Part, String> {
    match name {
        "body" => Ok(Part::Body),
        "timestamp" => Ok(Part::Timestamp),
        "method" => Ok(Part::Method),
        "path" => Ok(Part::Path),
        _ => match name.strip_prefix("header:") {
            Some(h) if crate::policy::is_header_name(h) => Ok(Part::Header(h.to_ascii_lowercase())),
            Some(h) => Err(format!("'{h}' is not a valid header name")),
            None => Err(format!(
                "unknown placeholder '{{{name}}}' (valid: {{body}}, {{timestamp}}, {{header:NAME}}, {{method}}, {{path}})"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_literals_and_escapes() {
        assert_eq!(
            parse("v0:{timestamp}:{body}").unwrap(),
            vec![
                Part::Literal(b"v0:".to_vec()),
                Part::Timestamp,
                Part::Literal(b":".to_vec()),
                Part::Body
            ]
        );
        assert_eq!(
            parse("{{x}}{header:Webhook-Id}{method}{path}").unwrap(),
            vec![
                Part::Literal(b"{x}".to_vec()),
                Part::Header("webhook-id".into()),
                Part::Method,
                Part::Path
            ]
        );
    }

    #[test]
    fn rejects_unknown_and_unbalanced() {
        assert!(parse("{bodyy}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(parse("{body").unwrap_err().contains("unclosed"));
        assert!(parse("body}").unwrap_err().contains("unmatched"));
        assert!(parse("{header:bad name}").is_err());
    }
}
