//! Which policy a request belongs to: ordered rules, first match wins.

use crate::config::RawMatch;

#[derive(Debug, Clone)]
pub struct Matcher {
    route_name: Option<String>,
    path_prefix: Option<String>,
    /// Lower-case; `host_only` when the configured value has no port.
    authority: Option<String>,
    host_only: bool,
    /// Matches no request (`never()`).
    never: bool,
}

/// What the proxy knows about a request before reading it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteInfo<'a> {
    pub route_name: Option<&'a str>,
    pub authority: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// The policy the request's route names in its per-route configuration (native build):
    /// it wins over every `match`.
    pub route_policy: Option<&'a str>,
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
            never: false,
        })
    }

    /// A policy without `match` (native build): routes select it by name, nothing else does.
    pub fn never() -> Matcher {
        Matcher {
            route_name: None,
            path_prefix: None,
            authority: None,
            host_only: false,
            never: true,
        }
    }

    pub fn uses_route_name(&self) -> bool {
        self.route_name.is_some()
    }

    pub fn matches(&self, req: &RouteInfo) -> bool {
        self.matches_spelled(req, Spelling::Either)
    }

    /// `matches`, comparing `path_prefix` with the path as Envoy routes it (`Raw`), as a
    /// lenient backend resolves it (`Canonical`), or either.
    pub fn matches_spelled(&self, req: &RouteInfo, spelling: Spelling) -> bool {
        if self.never {
            return false;
        }
        if let Some(want) = &self.route_name {
            if req.route_name != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !prefix_matches(prefix.as_bytes(), req.path, spelling) {
                return false;
            }
        }
        if let Some(want) = &self.authority {
            let got = if self.host_only {
                strip_port(req.authority)
            } else {
                req.authority
            };
            // "hooks.example.com." names the same host (a trailing dot must not dodge a policy).
            let got = got.strip_suffix('.').unwrap_or(got);
            if !got.eq_ignore_ascii_case(want) {
                return false;
            }
        }
        true
    }
}

/// Which spelling of a request's path a `path_prefix` is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// As Envoy routes it.
    Raw,
    /// As a lenient backend resolves it (`canonical_path`).
    Canonical,
    /// Either: matching more requests only means verifying more.
    Either,
}

/// Whether `path` (query included) is under `prefix`, as Envoy sees it or as a backend may
/// see it after decoding: ASCII case is ignored and the path is also compared in its
/// canonical form (`canonical_path`).
fn prefix_matches(prefix: &[u8], path: &str, spelling: Spelling) -> bool {
    let under = |p: &[u8]| {
        p.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let raw = path_only(path);
    let canonical = || {
        if is_canonical(raw) {
            under(raw.as_bytes())
        } else {
            under(&canonical_path(raw))
        }
    };
    match spelling {
        Spelling::Raw => under(raw.as_bytes()),
        Spelling::Canonical => canonical(),
        Spelling::Either => {
            under(raw.as_bytes()) || (!is_canonical(raw) && under(&canonical_path(raw)))
        }
    }
}

/// Whether a lenient backend, decoding the path (`canonical_path`), meets a `..` segment that
/// Envoy left in place (`..;`, `%2e%2e;`, `..\`): the path it serves is not under the one Envoy
/// routed.
pub fn path_climbs(path: &str) -> bool {
    let raw = path_only(path);
    if is_canonical(raw) {
        return false;
    }
    let decoded = crate::form::percent_decode(raw.as_bytes());
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| segment.split(|&b| b == b';').next() == Some(b".."))
}

/// Whether the path's spellings disagree on the policy: the first policy matching it as Envoy
/// routes it differs from the first matching it as a backend resolves it (`/a/%2e%2e;/b`:
/// Envoy routes it under `/a`, a servlet container serves `/b`, which may have no policy).
/// Verifying with either policy would hand another route a delivery signed for someone else.
pub fn spellings_disagree<'m>(
    matchers: impl Iterator<Item = &'m Matcher> + Clone,
    req: &RouteInfo,
) -> bool {
    if is_canonical(path_only(req.path)) {
        return false;
    }
    let first = |spelling| {
        matchers
            .clone()
            .position(|m| m.matches_spelled(req, spelling))
    };
    // Only the canonical form under a policy: that policy verifies it, and it is what a
    // lenient backend serves.
    let raw = first(Spelling::Raw);
    raw.is_some() && raw != first(Spelling::Canonical)
}

/// Whether `path` (without query) already is its own canonical form: nothing to decode and no
/// empty, dot or `;param` segment. Most paths are, and then `canonical_path` (which allocates)
/// is skipped. Conservative: `false` only costs the canonical comparison.
pub fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    b.first() == Some(&b'/')
        && !b.iter().any(|c| matches!(c, b'%' | b'\\' | b';'))
        && !b.windows(2).any(|w| w == b"//" || w == b"/.")
}

/// The path without its query string or fragment.
fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The path as a lenient backend resolves it: percent-escapes decoded once (so `%2F` is a
/// slash), backslashes read as slashes, `;params` dropped from each segment (servlet
/// containers), repeated slashes merged and dot segments removed.
pub fn canonical_path(path: &str) -> Vec<u8> {
    let decoded = crate::form::percent_decode(path_only(path).as_bytes());
    let slashed: Vec<u8> = decoded
        .iter()
        .map(|&b| if b == b'\\' { b'/' } else { b })
        .collect();
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in slashed.split(|&b| b == b'/') {
        let segment = segment.split(|&b| b == b';').next().unwrap_or(segment);
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(slashed.len().saturating_add(1));
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = matches!(slashed.last(), Some(b'/'))
        || slashed.ends_with(b"/.")
        || slashed.ends_with(b"/..");
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push(b'/');
    }
    out
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
            route_policy: None,
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
    fn canonical_path_resolves_what_a_lenient_backend_would() {
        let c = |p: &str| String::from_utf8(canonical_path(p)).unwrap();
        assert_eq!(c("/webhooks%2Fgithub"), "/webhooks/github");
        assert_eq!(c("/webhooks%2fgithub?x=%2F"), "/webhooks/github");
        assert_eq!(c("/webhooks%5Cgithub"), "/webhooks/github");
        assert_eq!(c("/webhooks\\github"), "/webhooks/github");
        assert_eq!(c("//webhooks///github/"), "/webhooks/github/");
        assert_eq!(c("/a/../webhooks/./github"), "/webhooks/github");
        assert_eq!(c("/webhooks/%2e%2e/webhooks/github"), "/webhooks/github");
        assert_eq!(c("/webhooks;jsessionid=1/github;x"), "/webhooks/github");
        assert_eq!(c("/../../.."), "/");
        assert_eq!(c(""), "/");
        assert_eq!(c("/%ZZ%2"), "/%ZZ%2", "malformed escapes stay");
        assert_eq!(c("/%252F"), "/%2F", "decoded once, as a backend does");
    }

    #[test]
    fn prefixes_match_encoded_cased_and_dotted_spellings() {
        let x = m(None, Some("/webhooks/github"), None);
        for path in [
            "/webhooks/github",
            "/webhooks/GitHub",
            "/WEBHOOKS/GITHUB?x=1",
            "/webhooks%2Fgithub",
            "/webhooks%2fGitHub",
            "/webhooks%5Cgithub",
            "/x/..%2Fwebhooks/github",
            "/webhooks/github/../github",
            "/webhooks;a=b/github",
        ] {
            assert!(x.matches(&req(None, "h", path)), "{path}");
        }
        for path in ["/webhooks/stripe", "/webhooks", "/webhooks%2Fgit", "/"] {
            assert!(!x.matches(&req(None, "h", path)), "{path}");
        }
        // A trailing dot on the host is the same host.
        let h = m(None, None, Some("hooks.example.com"));
        assert!(h.matches(&req(None, "hooks.example.com.:443", "/")));
        assert!(h.matches(&req(None, "HOOKS.example.com.", "/")));
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
