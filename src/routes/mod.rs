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
//!
//! Imports: `config` (the routes file's values), `edge` (the canonical
//! path), `balance`, `reload`, `metrics`.

pub mod reload;
pub mod table;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use crate::config::Policy;
use crate::config::{ConfigError, Quota};

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
            let rest = path.as_bytes().get(prefix.len()..).unwrap_or_default();
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
    ConfigError::Invalid(format!("ROUTES_FILE {text}"))
}

/// Reads and checks the routes file; longest prefixes first.
pub fn load(path: &Path) -> Result<Vec<RouteConfig>, ConfigError> {
    parse_bytes(&read(path)?)
}

/// The routes file's bytes.
pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        setting: "ROUTES_FILE",
        path: path.to_path_buf(),
        source,
    })
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
            assert!(
                err.to_string().starts_with("ROUTES_FILE "),
                "{}",
                err.to_string()
            );
            assert!(err.to_string().contains(expected), "{}: {}", expected, err);
        }
    }
}

/// Hostile bytes: the routes file over random bytes, built files and
/// their mutations, with the round trip of a written file (the long run is
/// `scripts/fuzz.sh`). Upstreams are address literals only: a host name
/// would be a DNS query per case.
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Spec {
        prefix: String,
        upstreams: Vec<SocketAddr>,
        policy: Policy,
        allow_services: bool,
        rate_limit: Option<(u32, &'static str)>,
        connect_timeout_ms: Option<u64>,
        read_timeout_ms: Option<u64>,
        case_insensitive: bool,
        forward_access_token: bool,
        upstream_h2: bool,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            prop::collection::vec("[a-zA-Z0-9_~-]{1,6}", 0..4),
            prop::collection::vec(
                (any::<std::net::IpAddr>(), any::<u16>())
                    .prop_map(|(ip, port)| SocketAddr::new(ip, port)),
                0..3,
            ),
            prop_oneof![
                Just(Policy::Public),
                Just(Policy::Authenticated),
                "[a-z:_-]{1,10}".prop_map(Policy::Role),
            ],
            (
                any::<bool>(),
                proptest::option::of((
                    1u32..100_000,
                    prop_oneof![Just("second"), Just("m"), Just("HOUR")],
                )),
                proptest::option::of(any::<u64>()),
                proptest::option::of(0u64..1_000_000),
            ),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |(segments, upstreams, policy, (allow, rate, ct, rt), (ci, fwd, h2))| Spec {
                    prefix: format!("/{}", segments.join("/")),
                    upstreams,
                    policy,
                    allow_services: allow,
                    rate_limit: rate,
                    connect_timeout_ms: ct,
                    read_timeout_ms: rt,
                    case_insensitive: ci,
                    forward_access_token: fwd,
                    upstream_h2: h2,
                },
            )
    }

    fn file(specs: &[Spec]) -> String {
        let mut out = String::new();
        for s in specs {
            out.push_str("[[routes]]\n");
            out.push_str(&format!("prefix = {:?}\n", s.prefix));
            let ups: Vec<String> = s
                .upstreams
                .iter()
                .map(|u| format!("{:?}", u.to_string()))
                .collect();
            out.push_str(&format!("upstreams = [{}]\n", ups.join(", ")));
            out.push_str(&format!("policy = {:?}\n", s.policy.to_string()));
            out.push_str(&format!("allow_services = {}\n", s.allow_services));
            if let Some((n, unit)) = s.rate_limit {
                out.push_str(&format!("rate_limit = \"{n}/{unit}\"\n"));
            }
            if let Some(ms) = s.connect_timeout_ms {
                out.push_str(&format!("connect_timeout_ms = {ms}\n"));
            }
            if let Some(ms) = s.read_timeout_ms {
                out.push_str(&format!("read_timeout_ms = {ms}\n"));
            }
            out.push_str(&format!(
                "case_insensitive = {}\nforward_access_token = {}\nupstream_h2 = {}\n\n",
                s.case_insensitive, s.forward_access_token, s.upstream_h2
            ));
        }
        out
    }

    proptest! {
        /// Round trip: a file written from routes reads back as them
        /// (longest prefix first), or is refused for what the rules
        /// refuse (a prefix twice, services on a public route, a TOML
        /// integer beyond i64).
        #[test]
        fn written_file_reads_back(specs in prop::collection::vec(spec(), 0..5)) {
            let text = file(&specs);
            let parsed = parse(&text);
            let mut prefixes: Vec<&str> = specs.iter().map(|s| s.prefix.as_str()).collect();
            prefixes.sort_unstable();
            let twice = prefixes.windows(2).any(|w| w[0] == w[1]);
            let refusable = twice
                || specs.iter().any(|s| s.allow_services && s.policy == Policy::Public)
                || specs.iter().any(|s| s.connect_timeout_ms.is_some_and(|ms| ms > i64::MAX as u64));
            let Ok(routes) = parsed else {
                prop_assert!(refusable, "{parsed:?}\n{text}");
                return Ok(());
            };
            prop_assert!(!twice);
            prop_assert_eq!(routes.len(), specs.len());
            prop_assert!(routes.windows(2).all(|w| w[0].prefix.len() >= w[1].prefix.len()));
            for s in &specs {
                let r = routes.iter().find(|r| r.prefix == s.prefix).unwrap();
                prop_assert_eq!(&r.upstreams, &s.upstreams);
                prop_assert_eq!(&r.policy, &s.policy);
                prop_assert_eq!(r.allow_services, s.allow_services);
                prop_assert_eq!(r.rate_limit.is_some(), s.rate_limit.is_some());
                prop_assert_eq!(r.connect_timeout, Duration::from_millis(s.connect_timeout_ms.unwrap_or(2_000)));
                prop_assert_eq!(r.read_timeout, Duration::from_millis(s.read_timeout_ms.unwrap_or(60_000)));
                prop_assert_eq!((r.case_insensitive, r.forward_access_token, r.upstream_h2),
                    (s.case_insensitive, s.forward_access_token, s.upstream_h2));
                prop_assert!(r.matches(&s.prefix));
            }
        }

        /// Random bytes, and files without upstreams with bytes changed,
        /// cut or inserted: never a panic; what is accepted has plain
        /// prefixes, each once.
        #[test]
        fn hostile_files(
            specs in prop::collection::vec(spec(), 0..4),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
            random in proptest::option::of(prop::collection::vec(any::<u8>(), 0..300)),
        ) {
            let bytes = random.unwrap_or_else(|| {
                let specs: Vec<Spec> = specs.into_iter().map(|s| Spec { upstreams: Vec::new(), ..s }).collect();
                let mut bytes = file(&specs).into_bytes();
                for (at, byte, how) in edits {
                    let at = at % (bytes.len() + 1);
                    match how {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 => bytes.insert(at, byte),
                        _ => bytes.truncate(at),
                    }
                }
                bytes
            });
            // A mutation may only make a host name of an upstream literal
            // when there is one; the built files have none.
            if let Ok(routes) = parse_bytes(&bytes) {
                let mut prefixes: Vec<&str> = routes.iter().map(|r| r.prefix.as_str()).collect();
                for p in &prefixes {
                    let settled = crate::edge::path::canonicalize(p.as_bytes()).map(|c| c.path);
                    prop_assert_eq!(settled.as_deref(), Ok(*p));
                }
                prefixes.sort_unstable();
                prop_assert!(prefixes.windows(2).all(|w| w[0] != w[1]));
            }
        }

        /// `rate_limit` texts: never a panic; a quota is at least one.
        #[test]
        fn quotas(text in prop_oneof![any::<String>(), "[ 0-9]{0,12}/[ a-zA-Z]{0,8}"]) {
            if let Ok(quota) = Quota::parse(&text) {
                prop_assert!(quota.count.get() >= 1);
            }
        }
    }
}
