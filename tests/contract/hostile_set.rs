//! The hostile-request set of `tests/fixtures/hostile_requests.txt`, as data
//! any suite can send: raw request targets and header lines that try to get
//! around a route policy or forge an identity, each with what the edge rules
//! make of it. The file's header explains its format.

#![allow(dead_code)]

/// What the edge rules make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded with this canonical path (and the target's query unchanged).
    Canonical(String),
    /// Forwarded under the policy of this path; its exact form is left open.
    Under(String),
    /// 400 `{"detail": "Invalid request path"}`, before any route.
    Refuse,
    /// 400 from the HTTP parser itself, before any rule (body may be empty).
    Reject,
    /// Not forwarded: the API answers as it did before.
    Api,
    /// Left open by the rules: only the invariants hold.
    Open,
}

impl Expect {
    /// The path whose policy applies, when the request is forwarded.
    pub fn routed_path(&self) -> Option<&str> {
        match self {
            Self::Canonical(path) | Self::Under(path) => Some(path),
            _ => None,
        }
    }
}

/// One distinct hostile request (who sends it is up to the suite).
#[derive(Debug, Clone)]
pub struct Hostile {
    /// How the report names it: the target, or the header case and target.
    pub label: String,
    pub method: String,
    /// The raw request target, byte for byte.
    pub target: Vec<u8>,
    /// Extra raw header lines (no line ends).
    pub header_lines: Vec<Vec<u8>>,
    pub expect: Expect,
}

impl Hostile {
    /// The target's query (after the first `?`), byte for byte.
    pub fn query(&self) -> Option<&[u8]> {
        // A fragment is never part of the target sent on.
        let end = self
            .target
            .iter()
            .position(|&b| b == b'#')
            .unwrap_or(self.target.len());
        let target = &self.target[..end];
        let at = target.iter().position(|&b| b == b'?')?;
        Some(&target[at + 1..])
    }

    /// The path and query as an origin-form target would carry them: an
    /// absolute-form target without its scheme and authority.
    pub fn origin_form(&self) -> Vec<u8> {
        let target = &self.target;
        let lower = String::from_utf8_lossy(target).to_ascii_lowercase();
        for scheme in ["http://", "https://"] {
            if lower.starts_with(scheme) {
                let rest = &target[scheme.len()..];
                let path_at = rest
                    .iter()
                    .position(|&b| b == b'/' || b == b'?')
                    .unwrap_or(rest.len());
                return rest[path_at..].to_vec();
            }
        }
        target.clone()
    }

    /// The authority of an absolute-form target (`evil.example:8080`).
    pub fn authority(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.target).into_owned();
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        Some(
            authority
                .rsplit('@')
                .next()
                .unwrap_or(authority)
                .to_string(),
        )
    }

    /// What the upstream must receive as its target, when the rules say.
    pub fn canonical_target(&self) -> Option<String> {
        let Expect::Canonical(path) = &self.expect else {
            return None;
        };
        Some(match self.query() {
            Some(query) => format!("{path}?{}", String::from_utf8_lossy(query)),
            None => path.clone(),
        })
    }
}

/// The three policies of the routes the set is written for.
/// Ordered from the least to the most demanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    Public,
    Authenticated,
    Admin,
}

/// The policy path: the canonical path with `;` parameters removed from
/// every segment.
pub fn policy_path(canonical: &str) -> String {
    canonical
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// The policy of the routes `/api` (authenticated), `/api/admin` and
/// `/admin` (`role:admin`), `/` (public), for a canonical path.
/// The policy a canonical path falls under: the more demanding of its two
/// readings once decoded, without its `;` parameters (dot segments
/// resolved again, as Tomcat reads `..;`) and with them (`;` as a plain
/// character, as Starlette, Go and nginx read it).
pub fn policy_of(canonical: &str) -> Policy {
    let decoded = percent_decode(canonical);
    let stripped = resolve_dots(&policy_path(&decoded));
    policy_for(&stripped).max(policy_for(&decoded))
}

fn policy_for(path: &str) -> Policy {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/admin") || under("/api/admin") {
        Policy::Admin
    } else if under("/api") {
        Policy::Authenticated
    } else {
        Policy::Public
    }
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resolve_dots(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    format!("/{}", kept.join("/"))
}

pub const HEADER_CASE_TARGETS: [&str; 3] = ["/public/h", "/api/h", "/admin/h"];

/// Every distinct request of the set: each `path` line once, each `headers`
/// line on each of [`HEADER_CASE_TARGETS`].
pub fn load() -> Vec<Hostile> {
    parse(include_str!("../fixtures/hostile_requests.txt"))
}

pub fn parse(text: &str) -> Vec<Hostile> {
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let at = || format!("hostile_requests.txt line {}: {line:?}", number + 1);
        match fields.as_slice() {
            ["path", method, target, expect] => out.push(Hostile {
                label: format!("{method} {target}"),
                method: (*method).to_string(),
                target: unescape(target).unwrap_or_else(|| panic!("bad escape, {}", at())),
                header_lines: Vec::new(),
                expect: parse_expect(expect).unwrap_or_else(|| panic!("bad EXPECT, {}", at())),
            }),
            ["headers", label, lines @ ..] if !lines.is_empty() => {
                let lines: Vec<Vec<u8>> = lines
                    .iter()
                    .map(|l| unescape(l).unwrap_or_else(|| panic!("bad escape, {}", at())))
                    .collect();
                for target in HEADER_CASE_TARGETS {
                    out.push(Hostile {
                        label: format!("{label} on {target}"),
                        method: "GET".into(),
                        target: target.as_bytes().to_vec(),
                        header_lines: lines.clone(),
                        expect: Expect::Canonical(target.into()),
                    });
                }
            }
            _ => panic!("unknown line, {}", at()),
        }
    }
    out
}

fn parse_expect(text: &str) -> Option<Expect> {
    Some(match text {
        "refuse" => Expect::Refuse,
        "reject" => Expect::Reject,
        "api" => Expect::Api,
        "open" => Expect::Open,
        _ => {
            if let Some(path) = text.strip_prefix("= ") {
                Expect::Canonical(path.to_string())
            } else {
                Expect::Under(text.strip_prefix("~ ")?.to_string())
            }
        }
    })
}

/// `\xNN` is the byte NN; any other backslash is an error.
fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
            if bytes.get(i + 1) != Some(&b'x') {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[test]
fn the_set_reads_and_its_helpers_follow_the_rules() {
    let set = load();
    assert!(set.len() >= 150, "{} requests", set.len());
    let backslash = set
        .iter()
        .find(|h| h.label == "GET /admin\\x5Cx")
        .expect("the raw backslash case");
    assert_eq!(backslash.target, b"/admin\\x");
    assert_eq!(backslash.expect, Expect::Refuse);
    assert_eq!(policy_path("/admin;jsessionid=1/x"), "/admin/x");
    assert_eq!(policy_of("/api;x/admin"), Policy::Admin);
    assert_eq!(policy_of("/api/adminx"), Policy::Authenticated);
    assert_eq!(policy_of("/adminx"), Policy::Public);
    assert_eq!(policy_of("/admin%3Bjsessionid=1/x"), Policy::Admin);
    assert_eq!(policy_of("/public/..%3B/admin/x"), Policy::Admin);
    assert_eq!(policy_of("/api/x;p/../admin"), Policy::Admin);
    let absolute = set
        .iter()
        .find(|h| h.label == "GET http://app.example/api/admin/x?q=1")
        .expect("an absolute-form case");
    assert_eq!(absolute.origin_form(), b"/api/admin/x?q=1");
    assert_eq!(absolute.authority().as_deref(), Some("app.example"));
    assert_eq!(
        absolute.canonical_target().as_deref(),
        Some("/api/admin/x?q=1")
    );
    assert!(unescape("/a\\q").is_none());
}
