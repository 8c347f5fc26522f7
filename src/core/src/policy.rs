//! Which policy a request belongs to: ordered rules, first match wins.

use crate::config::RawMatch;

#[derive(Debug, Clone)]
pub struct Matcher {
    route_name: Option<String>,
    path_prefix: Option<String>,
    /// Lower-case; `host_only` when the configured value has no port.
    authority: Option<String>,
    host_only: bool,
}

/// What the proxy knows about a request before reading it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteInfo<'a> {
    pub route_name: Option<&'a str>,
    pub authority: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
}

impl Matcher {
    pub fn compile(raw: &RawMatch) -> Result<Matcher, String> {
        if raw.route_name.is_none() && raw.path_prefix.is_none() && raw.authority.is_none() {
            return Err("needs at least one of route_name, path_prefix, authority".into());
        }
        if let Some(p) = &raw.path_prefix {
            if !p.starts_with('/') {
                return Err(format!("path_prefix '{p}' must start with '/'"));
            }
        }
        let authority = raw.authority.as_ref().map(|a| a.to_ascii_lowercase());
        if authority.as_deref() == Some("") || raw.route_name.as_deref() == Some("") {
            return Err("route_name and authority must not be empty".into());
        }
        Ok(Matcher {
            route_name: raw.route_name.clone(),
            path_prefix: raw.path_prefix.clone(),
            host_only: authority.as_deref().is_some_and(|a| strip_port(a) == a),
            authority,
        })
    }

    pub fn uses_route_name(&self) -> bool {
        self.route_name.is_some()
    }

    pub fn matches(&self, req: &RouteInfo) -> bool {
        if let Some(want) = &self.route_name {
            if req.route_name != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
            if !path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.authority {
            let got = if self.host_only {
                strip_port(req.authority)
            } else {
                req.authority
            };
            if !got.eq_ignore_ascii_case(want) {
                return false;
            }
        }
        true
    }
}

fn strip_port(authority: &str) -> &str {
    // `[v6]:port` keeps its brackets; `host:port` loses the port.
    if authority.starts_with('[') {
        return authority
            .rfind("]:")
            .and_then(|i| authority.get(..=i))
            .unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Policy names end up in stat names and logs: keep them to a safe alphabet.
pub fn is_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// RFC 9110 token characters.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(route: Option<&str>, prefix: Option<&str>, auth: Option<&str>) -> Matcher {
        Matcher::compile(&RawMatch {
            route_name: route.map(Into::into),
            path_prefix: prefix.map(Into::into),
            authority: auth.map(Into::into),
        })
        .unwrap()
    }

    fn req<'a>(route: Option<&'a str>, authority: &'a str, path: &'a str) -> RouteInfo<'a> {
        RouteInfo {
            route_name: route,
            authority,
            path,
        }
    }

    #[test]
    fn all_given_fields_must_match() {
        let x = m(
            Some("gh"),
            Some("/webhooks/github"),
            Some("Hooks.Example.com"),
        );
        assert!(x.matches(&req(
            Some("gh"),
            "hooks.example.com:8443",
            "/webhooks/github?x=1"
        )));
        assert!(!x.matches(&req(Some("other"), "hooks.example.com", "/webhooks/github")));
        assert!(!x.matches(&req(Some("gh"), "evil.com", "/webhooks/github")));
        assert!(!x.matches(&req(Some("gh"), "hooks.example.com", "/webhooks/stripe")));
        assert!(!x.matches(&req(None, "hooks.example.com", "/webhooks/github")));
    }

    #[test]
    fn query_string_is_not_part_of_the_prefix_and_ports_are_respected() {
        assert!(!m(None, Some("/a?b"), None).matches(&req(None, "h", "/a?b")));
        let with_port = m(None, None, Some("h:8080"));
        assert!(with_port.matches(&req(None, "H:8080", "/")));
        assert!(!with_port.matches(&req(None, "h:9090", "/")));
        assert!(m(None, None, Some("[::1]")).matches(&req(None, "[::1]:80", "/")));
    }

    #[test]
    fn refuses_empty_or_invalid_matchers() {
        assert!(Matcher::compile(&RawMatch::default()).is_err());
        assert!(Matcher::compile(&RawMatch {
            path_prefix: Some("webhooks".into()),
            ..RawMatch::default()
        })
        .is_err());
    }

    #[test]
    fn names() {
        assert!(is_policy_name("stripe_live-2"));
        assert!(!is_policy_name("Stripe"));
        assert!(!is_policy_name("a.b"));
        assert!(is_header_name("X-Webhook-Signature"));
        assert!(!is_header_name("x y"));
    }
}
