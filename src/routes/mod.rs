//! Upstream routes: which path prefixes go to which upstream servers, under
//! which policy. Read from the TOML file named by `ROUTES_FILE`:
//!
//! ```toml
//! [[routes]]
//! prefix = "/chat"                          # longest prefix wins
//! upstreams = ["127.0.0.1:9001", "10.0.0.7:9001"]  # round-robin, health-checked;
//!                                           # none: a policy for forward-auth only
//! policy = "authenticated"                  # public | authenticated | role:<name>
//! allow_services = false                    # optional: also machine clients (keycloak mode)
//! rate_limit = "100/second"                 # optional, per client IP
//! connect_timeout_ms = 2000                 # optional
//! read_timeout_ms = 30000                   # optional
//! case_insensitive = false                  # optional: match the prefix ignoring ASCII case
//! forward_access_token = true               # optional: false keeps the access token here
//! upstream_h2 = false                       # optional: HTTP/2 (h2c) to the upstream, for gRPC
//! ```
//!
//! Prefixes are matched against the request's policy path (canonical,
//! decoded, `;` parameters removed; see [`crate::edge::path`]), so a prefix
//! must itself be canonical: no `%`, `;`, `\`, empty or dot segments.
//!
//! [`table`] holds the routes in force with their upstreams' balancers;
//! [`reload`] reads the file again on SIGHUP or when it changes, and swaps
//! in a new table when the file is valid.

pub mod reload;
pub mod table;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::ratelimit::Quota;

/// Who may pass a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Policy {
    Public,
    #[default]
    Authenticated,
    /// Authenticated and holding this role.
    Role(String),
}

impl Policy {
    /// `public`, `authenticated` or `role:<name>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "public" => Some(Self::Public),
            "authenticated" => Some(Self::Authenticated),
            _ => text
                .strip_prefix("role:")
                .filter(|role| !role.is_empty())
                .map(|role| Self::Role(role.to_string())),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::Authenticated => f.write_str("authenticated"),
            Self::Role(role) => write!(f, "role:{role}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub prefix: String,
    /// Empty for a route that only states a policy (for forward-auth): it
    /// is never forwarded.
    pub upstreams: Vec<SocketAddr>,
    pub policy: Policy,
    /// Machine clients with a client-credentials token of the identity
    /// provider may pass too (under a `role:` policy, holding the role).
    pub allow_services: bool,
    pub rate_limit: Option<Quota>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Match the prefix ignoring ASCII case (upstreams that route so, like
    /// IIS and ASP.NET).
    pub case_insensitive: bool,
    /// The client's access token (bearer header, `access_token` cookie)
    /// goes upstream (other services verify it with `SECRET_KEY`).
    pub forward_access_token: bool,
    /// Speak HTTP/2 with prior knowledge (h2c) to the upstreams, as gRPC
    /// servers need (pingora's proxy path; trailers pass); HTTP/1.1 else.
    pub upstream_h2: bool,
}

impl RouteConfig {
    /// Whether the policy path `path` is under this route (`/api` takes
    /// `/api` and `/api/x`, not `/apix`).
    pub fn matches(&self, path: &str) -> bool {
        let prefix = self.prefix.as_bytes();
        let Some(head) = path.as_bytes().get(..prefix.len()) else {
            return false;
        };
        let same = if self.case_insensitive {
            head.eq_ignore_ascii_case(prefix)
        } else {
            head == prefix
        };
        same && {
            let rest = &path.as_bytes()[prefix.len()..];
            rest.is_empty() || rest.first() == Some(&b'/') || prefix.last() == Some(&b'/')
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: Vec<RouteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    prefix: String,
    #[serde(default)]
    upstreams: Vec<String>,
    #[serde(default = "public")]
    policy: String,
    #[serde(default)]
    allow_services: bool,
    rate_limit: Option<String>,
    connect_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default = "yes")]
    forward_access_token: bool,
    #[serde(default)]
    upstream_h2: bool,
}

fn yes() -> bool {
    true
}

fn public() -> String {
    "public".into()
}

fn problem(text: String) -> ConfigError {
    ConfigError(format!("ROUTES_FILE {text}"))
}

/// Reads and checks the routes file; longest prefixes first.
pub fn load(path: &Path) -> Result<Vec<RouteConfig>, ConfigError> {
    parse_bytes(&read(path)?)
}

/// The routes file's bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|err| problem(format!("cannot be read ({}): {err}", path.display())))
}

/// The routes of a file's bytes, checked as [`load`] checks them.
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<RouteConfig>, ConfigError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| problem("is not valid: not UTF-8 text".into()))?;
    parse(text)
}

pub fn parse(text: &str) -> Result<Vec<RouteConfig>, ConfigError> {
    let file: RoutesFile = toml::from_str(text).map_err(|err| {
        problem(format!(
            "is not valid: {}",
            err.to_string().replace('\n', " ")
        ))
    })?;
    let mut routes = Vec::new();
    for spec in file.routes {
        let prefix = spec.prefix.clone();
        if !prefix.starts_with('/') {
            return Err(problem(format!(
                "route {prefix:?}: prefix must start with /"
            )));
        }
        let settled = crate::edge::path::canonicalize(prefix.as_bytes());
        if prefix.contains(['%', ';']) || settled.map(|c| c.path) != Ok(prefix.clone()) {
            return Err(problem(format!(
                "route {prefix:?}: prefix must be a plain path (no %, ;, \\, // or dot segments)"
            )));
        }
        let mut upstreams = Vec::new();
        for upstream in &spec.upstreams {
            let addr = upstream
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    problem(format!(
                        "route {prefix}: upstream {upstream:?} is not a reachable host:port"
                    ))
                })?;
            upstreams.push(addr);
        }
        let policy = Policy::parse(&spec.policy).ok_or_else(|| {
            problem(format!(
                "route {prefix}: policy must be public, authenticated or role:<name> (got {:?})",
                spec.policy
            ))
        })?;
        let rate_limit = match &spec.rate_limit {
            None => None,
            Some(text) => Some(Quota::parse(text).map_err(|why| {
                problem(format!("route {prefix}: rate_limit {why} (got {text:?})"))
            })?),
        };
        if spec.allow_services && policy == Policy::Public {
            return Err(problem(format!(
                "route {prefix}: allow_services needs policy authenticated or role:<name>"
            )));
        }
        if routes.iter().any(|r: &RouteConfig| r.prefix == prefix) {
            return Err(problem(format!("route {prefix}: prefix given twice")));
        }
        routes.push(RouteConfig {
            prefix,
            upstreams,
            policy,
            allow_services: spec.allow_services,
            rate_limit,
            connect_timeout: Duration::from_millis(spec.connect_timeout_ms.unwrap_or(2_000)),
            read_timeout: Duration::from_millis(spec.read_timeout_ms.unwrap_or(60_000)),
            case_insensitive: spec.case_insensitive,
            forward_access_token: spec.forward_access_token,
            upstream_h2: spec.upstream_h2,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_longest_first() {
        let routes = parse(
            r#"
            [[routes]]
            prefix = "/api"
            upstreams = ["127.0.0.1:9001", "127.0.0.1:9002"]
            policy = "authenticated"

            [[routes]]
            prefix = "/api/admin"
            upstreams = ["127.0.0.1:9003"]
            policy = "role:admin"
            rate_limit = "5/second"
            allow_services = true

            [[routes]]
            prefix = "/"
            upstreams = ["localhost:9004"]
            "#,
        )
        .unwrap();
        assert_eq!(routes[0].prefix, "/api/admin");
        assert_eq!(routes[0].policy, Policy::Role("admin".into()));
        assert_eq!(routes[0].rate_limit.unwrap().count.get(), 5);
        assert!(routes[0].allow_services);
        assert!(!routes[1].allow_services);
        assert_eq!(routes[1].upstreams.len(), 2);
        assert_eq!(routes[2].policy, Policy::Public);
        assert!(routes[1].matches("/api"));
        assert!(routes[1].matches("/api/x"));
        assert!(!routes[1].matches("/apix"));
        assert!(routes[2].matches("/anything"));
        assert!(!routes[1].matches("/API/x"));
        assert!(routes[1].forward_access_token);
    }

    #[test]
    fn case_insensitive_routes_and_access_token_option() {
        let routes = parse(
            "[[routes]]\nprefix = \"/Admin\"\nupstreams = [\"127.0.0.1:1\"]\ncase_insensitive = true\nforward_access_token = false",
        )
        .unwrap();
        for path in ["/admin", "/ADMIN/x", "/aDmIn/"] {
            assert!(routes[0].matches(path), "{path}");
        }
        assert!(!routes[0].matches("/adminx"));
        assert!(!routes[0].matches("/adm"));
        assert!(!routes[0].forward_access_token);
    }

    #[test]
    fn a_route_may_state_a_policy_alone() {
        let routes = parse("[[routes]]\nprefix = \"/admin\"\npolicy = \"role:admin\"").unwrap();
        assert!(routes[0].upstreams.is_empty());
        assert_eq!(routes[0].policy, Policy::Role("admin".into()));
        assert_eq!(
            parse("[[routes]]\nprefix = \"/a\"\nupstreams = []").unwrap()[0].upstreams,
            []
        );
    }

    #[test]
    fn problems_name_the_route() {
        for (text, expected) in [
            (
                "[[routes]]\nprefix = \"api\"\nupstreams = [\"127.0.0.1:1\"]",
                "prefix must start with /",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"nope\"]",
                "route /a: upstream \"nope\"",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\npolicy = \"vip\"",
                "policy must be",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nrate_limit = \"x\"",
                "rate_limit",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\nallow_services = true",
                "route /a: allow_services needs policy authenticated or role:<name>",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nupstream = [\"127.0.0.1:1\"]",
                "is not valid",
            ),
            (
                "[[routes]]\nprefix = \"/a/../b\"\nupstreams = [\"127.0.0.1:1\"]",
                "prefix must be a plain path",
            ),
            (
                "[[routes]]\nprefix = \"/%61\"\nupstreams = [\"127.0.0.1:1\"]",
                "prefix must be a plain path",
            ),
            (
                "[[routes]]\nprefix = \"/a;b\"\nupstreams = [\"127.0.0.1:1\"]",
                "prefix must be a plain path",
            ),
            (
                "[[routes]]\nprefix = \"//a\"\nupstreams = [\"127.0.0.1:1\"]",
                "prefix must be a plain path",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.0.starts_with("ROUTES_FILE "), "{}", err.0);
            assert!(err.0.contains(expected), "{}: {}", expected, err.0);
        }
    }
}
