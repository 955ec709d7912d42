//! The one canonical form of a request path, decided before any route,
//! policy or handler sees the request.
//!
//! Upstream servers route on their own reading of a path: Starlette decodes
//! `%61`, Go's and Python's servers fold `//` and resolve `..`, Tomcat and
//! Spring drop `;` parameters. A policy matched on the raw path is a bypass,
//! so every path is normalised here once (RFC 3986 section 6.2.2), and what
//! no normal form can settle is refused:
//!
//! - percent-encoded unreserved characters are decoded (`%61` is `a`), other
//!   encodings are kept with upper-case hex (`%3b` is `%3B`), raw non-ASCII
//!   UTF-8 is percent-encoded;
//! - repeated slashes are merged, `.` and `..` segments (encoded ones too,
//!   and ones carrying `;` parameters, as Tomcat reads `..;`) are resolved;
//! - refused: an encoded `/` or `\`, a raw `\`, control characters (raw or
//!   encoded), a `%` without two hex digits, double encoding (`%25` before
//!   two hex digits), bytes that are not UTF-8 once decoded.
//!
//! Three strings come out: [`Canonical::path`], what the upstream receives
//! and the API routes on, and the two ways an upstream may read it, which
//! routes and policies match: [`Canonical::policy`], fully decoded with
//! every segment's `;` parameters removed and dot segments resolved again
//! (Tomcat, Spring), and [`Canonical::literal`], fully decoded with its
//! parameters kept (Starlette, Go, nginx). When the two readings fall under
//! different routes, a request must pass the policies of both.

use std::fmt::Write as _;

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("not an origin-form path")]
    NotOriginForm,
    #[error("an encoded slash or backslash")]
    EncodedSeparator,
    #[error("a backslash")]
    Backslash,
    #[error("a control character")]
    Control,
    #[error("a percent sign without two hex digits")]
    BadPercent,
    #[error("double percent-encoding")]
    DoubleEncoded,
    #[error("not UTF-8 once decoded")]
    NotUtf8,
}

impl PathError {
    /// A short name for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotOriginForm => "not_origin_form",
            Self::EncodedSeparator => "encoded_separator",
            Self::Backslash => "backslash",
            Self::Control => "control_character",
            Self::BadPercent => "bad_percent",
            Self::DoubleEncoded => "double_encoding",
            Self::NotUtf8 => "not_utf8",
        }
    }
}

/// A request path in its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Normalised and still percent-encoded where needed: what the upstream
    /// receives and what the API routes on.
    pub path: String,
    /// Fully decoded, `;` parameters removed from every segment, dot
    /// segments resolved: what route prefixes and policies are matched on.
    pub policy: String,
    /// Fully decoded, parameters kept: how servers that treat `;` as a
    /// plain character read the path (the same as `policy` for most paths).
    pub literal: String,
}

/// RFC 3986 unreserved characters: their encoded and plain forms are equal.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by `%XY` at the front of `rest` (which starts after `%`).
fn percent_byte(rest: &[u8]) -> Option<u8> {
    match rest {
        [high, low, ..] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

/// Plain visible ASCII that needs no work: no `%`, `\`, `;`, no empty
/// segment inside the path and no `.` or `..` segment. Most paths are like
/// this and are taken as they are.
fn already_canonical(path: &[u8]) -> bool {
    let mut segment_len = 0usize;
    let mut segment_dots = 0usize;
    for (i, &byte) in path.iter().enumerate() {
        if !byte.is_ascii_graphic() || matches!(byte, b'%' | b'\\' | b';') {
            return false;
        }
        if byte == b'/' {
            let dot_segment = segment_len == segment_dots && (1..=2).contains(&segment_len);
            if (i > 0 && segment_len == 0) || dot_segment {
                return false;
            }
            segment_len = 0;
            segment_dots = 0;
        } else {
            segment_len += 1;
            segment_dots += usize::from(byte == b'.');
        }
    }
    !(segment_len == segment_dots && (1..=2).contains(&segment_len))
}

/// The canonical form of a path (no query), or why it has none.
pub fn canonicalize(path: &[u8]) -> Result<Canonical, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if already_canonical(path) {
        // Visible ASCII only, so this is valid UTF-8.
        let text = String::from_utf8_lossy(path).into_owned();
        return Ok(Canonical {
            policy: text.clone(),
            literal: text.clone(),
            path: text,
        });
    }
    let normalised = normalise_encoding(path)?;
    let path = remove_dot_segments(&normalised, |segment| {
        let bare = segment.split(';').next().unwrap_or(segment);
        bare == "." || bare == ".."
    });
    let literal = decode(&path)?;
    let policy = remove_dot_segments(&strip_parameters(&literal), |s| s == "." || s == "..");
    Ok(Canonical {
        path,
        policy,
        literal,
    })
}

/// Percent-encodings settled (unreserved decoded, others upper-cased, raw
/// non-ASCII encoded) and every refusal checked.
fn normalise_encoding(path: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len() + 8);
    let mut i = 0;
    while let Some(&byte) = path.get(i) {
        match byte {
            b'%' => {
                let rest = path.get(i + 1..).unwrap_or_default();
                let value = percent_byte(rest).ok_or(PathError::BadPercent)?;
                if matches!(value, b'/' | b'\\') {
                    return Err(PathError::EncodedSeparator);
                }
                if is_control(value) {
                    return Err(PathError::Control);
                }
                if is_unreserved(value) {
                    out.push(char::from(value));
                } else {
                    let _ = write!(out, "%{value:02X}");
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ if is_control(byte) => return Err(PathError::Control),
            _ if byte.is_ascii() => {
                out.push(char::from(byte));
                i += 1;
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
                i += 1;
            }
        }
    }
    // A `%25` before two hex digits, however they were written, decodes
    // to another encoding: upstreams that decode twice would read a
    // different path than the policy did.
    let bytes = out.as_bytes();
    let double = bytes
        .windows(5)
        .any(|w| w.starts_with(b"%25") && percent_byte(w.get(3..).unwrap_or_default()).is_some());
    if double {
        return Err(PathError::DoubleEncoded);
    }
    Ok(out)
}

/// Every percent-encoding decoded; refused when the bytes are not UTF-8.
fn decode(path: &str) -> Result<String, PathError> {
    if !path.contains('%') {
        return Ok(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%'
            && let Some(value) = percent_byte(bytes.get(i + 1..).unwrap_or_default())
        {
            out.push(value);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// Each segment without its `;` parameters (`/a;x=1/b;y` is `/a/b`).
fn strip_parameters(path: &str) -> String {
    if !path.contains(';') {
        return path.to_string();
    }
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or(segment))
        .collect::<Vec<_>>()
        .join("/")
}

/// Empty segments merged and dot segments resolved (RFC 3986 section
/// 5.2.4, with `..` never climbing above the root); `is_dot` tells a dot
/// segment (`.` or `..`, judged by the first character once it is known to
/// be one). A trailing slash, or a path that ended in a dot segment, keeps
/// its final `/`.
fn remove_dot_segments(path: &str, is_dot: impl Fn(&str) -> bool) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        if segment.is_empty() {
            trailing_slash = true;
        } else if is_dot(segment) {
            if segment.starts_with("..") {
                kept.pop();
            }
            trailing_slash = true;
        } else {
            kept.push(segment);
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> String {
        canonicalize(raw.as_bytes()).unwrap().path
    }

    fn policy(raw: &str) -> String {
        canonicalize(raw.as_bytes()).unwrap().policy
    }

    fn refused(raw: &[u8]) -> PathError {
        canonicalize(raw).unwrap_err()
    }

    #[test]
    fn plain_paths_are_taken_as_they_are() {
        for raw in [
            "/",
            "/api/v1/users/42",
            "/a-b_c~d",
            "/x/",
            "/users/me/",
            "/static/app.min.js",
            "/a/...",
            "/.well-known/x",
        ] {
            assert_eq!(path(raw), raw);
            assert_eq!(policy(raw), raw);
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_others_upper_cased() {
        assert_eq!(path("/%61dmin/x"), "/admin/x");
        assert_eq!(path("/%41%44MIN"), "/ADMIN");
        assert_eq!(path("/a%7e%2D%5f"), "/a~-_");
        assert_eq!(path("/a%3bb%20c"), "/a%3Bb%20c");
        assert_eq!(policy("/a%3bb%20c"), "/a");
        assert_eq!(policy("/caf%c3%a9/x"), "/café/x");
        assert_eq!(path("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(path("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn slashes_merge_and_dot_segments_resolve() {
        assert_eq!(path("//admin/x"), "/admin/x");
        assert_eq!(path("/api///admin//x"), "/api/admin/x");
        assert_eq!(path("/x/../admin/x"), "/admin/x");
        assert_eq!(path("/./admin/x"), "/admin/x");
        assert_eq!(path("/%2e%2e/%2E/admin"), "/admin");
        assert_eq!(path("/x/%2e./admin"), "/admin");
        assert_eq!(path("/../../admin"), "/admin");
        assert_eq!(path("/.."), "/");
        assert_eq!(path("/admin/.."), "/");
        assert_eq!(path("/admin/x/."), "/admin/x/");
        assert_eq!(path("/admin/x/.."), "/admin/");
        assert_eq!(path("/admin/"), "/admin/");
        assert_eq!(path("/a/.hidden/..x"), "/a/.hidden/..x");
        assert_eq!(path("/a/...b"), "/a/...b");
    }

    #[test]
    fn parameters_are_kept_upstream_and_ignored_by_policies() {
        assert_eq!(path("/admin;jsessionid=1/x"), "/admin;jsessionid=1/x");
        assert_eq!(policy("/admin;jsessionid=1/x"), "/admin/x");
        assert_eq!(policy("/api/admin;x"), "/api/admin");
        // Tomcat reads `..;` as `..`.
        assert_eq!(path("/public/..;/admin"), "/admin");
        assert_eq!(path("/public/..;x=1/admin"), "/admin");
        assert_eq!(path("/public/.;/admin"), "/public/admin");
        // An encoded `;` is a parameter to one reading and a character to
        // the other: both are kept.
        let both = canonicalize(b"/admin%3bx/y").unwrap();
        assert_eq!(
            (both.policy.as_str(), both.literal.as_str()),
            ("/admin/y", "/admin;x/y")
        );
        let both = canonicalize(b"/x/..%3b/admin").unwrap();
        assert_eq!(
            (both.policy.as_str(), both.literal.as_str()),
            ("/admin", "/x/..;/admin")
        );
    }

    #[test]
    fn what_no_canonical_form_settles_is_refused() {
        use PathError::*;
        for (raw, why) in [
            (&b"/admin%2fx"[..], EncodedSeparator),
            (b"/admin%2Fx", EncodedSeparator),
            (b"/admin%5cx", EncodedSeparator),
            (b"/admin\\x", Backslash),
            (b"/a%00b", Control),
            (b"/a%0ab", Control),
            (b"/a%7Fb", Control),
            (b"/a\x01b", Control),
            (b"/a\x7fb", Control),
            (b"/a%zz", BadPercent),
            (b"/a%4", BadPercent),
            (b"/a%", BadPercent),
            (b"/%2561dmin", DoubleEncoded),
            (b"/%252F", DoubleEncoded),
            (b"/%25%41%42", DoubleEncoded),
            (b"/%c0%ae%c0%ae/admin", NotUtf8),
            (b"/%C0%AF", NotUtf8),
            (b"/caf%e9", NotUtf8),
            (b"/caf\xe9", NotUtf8),
            (b"*", NotOriginForm),
            (b"admin", NotOriginForm),
            (b"", NotOriginForm),
        ] {
            assert_eq!(refused(raw), why, "{}", String::from_utf8_lossy(raw));
        }
        // A percent sign standing for itself is fine.
        assert_eq!(path("/100%25"), "/100%25");
        assert_eq!(policy("/100%25"), "/100%");
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        for raw in [
            "//a/./b/../c;p=1/%7e%41%3b/caf%c3%a9",
            "/x/%2e%2e/y//z/.",
            "/a;b/..;c/d",
            "/%20/%3F/%23",
        ] {
            let once = canonicalize(raw.as_bytes()).unwrap();
            let twice = canonicalize(once.path.as_bytes()).unwrap();
            assert_eq!(once, twice, "{raw}");
        }
    }
}

/// Hostile bytes: properties over random and grammar-built paths (the
/// long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    /// Segments that reach every branch: dot segments in their encoded and
    /// `;` forms, encodings of every class, raw non-ASCII, refusals.
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(String::from(".")),
            Just(String::from("..")),
            Just(String::from("%2e")),
            Just(String::from("%2E%2e")),
            Just(String::from(".%2E")),
            Just(String::from("..;")),
            Just(String::from(".;x=1")),
            Just(String::from("a;b=c")),
            Just(String::from("%3b")),
            Just(String::from("%3B..")),
            Just(String::from("%61%62")),
            Just(String::from("%7E")),
            Just(String::from("%25")),
            Just(String::from("%2541")),
            Just(String::from("%252")),
            Just(String::from("%2f")),
            Just(String::from("%5C")),
            Just(String::from("\\")),
            Just(String::from("%")),
            Just(String::from("%g0")),
            Just(String::from("%C3%A9")),
            Just(String::from("%FF%FE")),
            Just(String::from("é")),
            Just(String::from("%00")),
            Just(String::from("%7f")),
            "[a-zA-Z0-9._~;=%-]{1,8}",
            any::<String>().prop_map(|s| s.chars().take(6).collect()),
        ]
    }

    fn structured_path() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((segment(), prop::bool::ANY), 0..12),
            prop::bool::ANY,
        )
            .prop_map(|(segments, trailing)| {
                let mut out = String::new();
                for (segment, double) in segments {
                    out.push_str(if double { "//" } else { "/" });
                    out.push_str(&segment);
                }
                if trailing || out.is_empty() {
                    out.push('/');
                }
                out
            })
    }

    fn random_path() -> impl Strategy<Value = Vec<u8>> {
        (prop::bool::ANY, prop::collection::vec(any::<u8>(), 0..256)).prop_map(
            |(slash, mut bytes)| {
                if slash {
                    bytes.insert(0, b'/');
                }
                bytes
            },
        )
    }

    /// What every canonical form holds, whatever the input.
    fn check(input: &[u8]) -> Result<(), TestCaseError> {
        let Ok(c) = canonicalize(input) else {
            return Ok(());
        };
        // Bounds: raw non-ASCII takes three bytes (`%XX`), a resolved dot
        // segment may leave one `/`; decoding and dropping parameters
        // never grow a path.
        prop_assert!(c.path.len() <= 3 * input.len() + 1);
        prop_assert!(c.literal.len() <= c.path.len());
        prop_assert!(c.policy.len() <= c.literal.len() + 1);
        // Canonical: visible ASCII, one slash at a time, no dot segment.
        // ASCII without control characters (a raw space is kept as it
        // is: the HTTP/1 parser refuses one in a request target).
        prop_assert!(c.path.bytes().all(|b| b.is_ascii() && !is_control(b)));
        prop_assert!(c.path.starts_with('/') && c.policy.starts_with('/'));
        for text in [&c.path, &c.policy] {
            prop_assert!(!text.contains("//"), "{text:?}");
            prop_assert!(text.split('/').all(|s| s != "." && s != ".."), "{text:?}");
        }
        prop_assert!(!c.literal.bytes().any(is_control));
        prop_assert!(!c.policy.contains(';'));
        // Idempotent: the canonical path is its own canonical form.
        let again = canonicalize(c.path.as_bytes());
        prop_assert_eq!(
            again.as_ref(),
            Ok(&c),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
        // The quick path for plain paths agrees with the full one.
        if already_canonical(input) {
            let full = normalise_encoding(input).map(|p| {
                remove_dot_segments(&p, |s| {
                    let bare = s.split(';').next().unwrap_or(s);
                    bare == "." || bare == ".."
                })
            });
            prop_assert_eq!(full, Ok(c.path.clone()));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_bytes(input in random_path()) {
            check(&input)?;
        }

        #[test]
        fn built_paths(input in structured_path()) {
            check(input.as_bytes())?;
        }
    }
}
