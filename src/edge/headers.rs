//! Which client headers an upstream may see, and how the gateway writes its
//! own.
//!
//! Upstreams trust the `X-Auth-*` identity headers, so no client may send
//! them in any spelling: Puma, older gunicorn and PHP/CGI read `_` as `-`,
//! so a header is matched by its folded name (lower-case, `_` read as `-`).
//! The forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, the
//! rewrite headers some frameworks route on) are believed only from
//! `TRUSTED_PROXIES`. `Proxy-Authorization` is for the gateway alone, and
//! the `refresh_token` cookie never leaves it.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http::cookies::{ACCESS_COOKIE, REFRESH_COOKIE};

/// Headers only the gateway may set.
pub const IDENTITY: [&str; 5] = [
    "x-auth-user-id",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-device-id",
    "x-auth-client-id",
];

/// Headers that say where a request came from or what it asked for; only a
/// trusted proxy may send them.
pub const FORWARDING: [&str; 13] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
];

/// The most options a `Connection` header may name (pingora's own proxy
/// refuses a tenth).
pub const MAX_CONNECTION_OPTIONS: usize = 9;

/// Headers the gateway writes or relies on: a `Connection` header may not
/// nominate them for removal on the way upstream.
const PROTECTED: [&str; 5] = [
    "host",
    "x-request-id",
    "authorization",
    "cookie",
    "content-length",
];

/// `name` read as servers that fold `_` into `-` read it (header names in
/// a `HeaderMap` are already lower-case).
fn folds_to(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn in_list(name: &str, list: &[&str]) -> bool {
    list.iter().any(|wanted| folds_to(name, wanted))
}

/// The headers to remove, in every spelling: the identity headers and
/// (unless the peer is a trusted proxy) the forwarding headers, and
/// `Proxy-Authorization`.
pub fn untrusted(headers: &HeaderMap, trusted_peer: bool) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            // Cheap first look: every name of the lists starts with x, f or p.
            matches!(name.as_bytes().first(), Some(b'x' | b'f' | b'p'))
                && (in_list(name, &IDENTITY)
                    || (!trusted_peer && in_list(name, &FORWARDING))
                    || folds_to(name, "proxy-authorization"))
        })
        .cloned()
        .collect()
}

/// Every value of a header, in order, joined as one comma-separated list
/// (RFC 9110 section 5.3): a client's own line and a proxy's line both
/// count, in the order they came.
pub fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let first = values.next()?;
    let mut out = first.to_string();
    for value in values {
        out.push_str(", ");
        out.push_str(value);
    }
    Some(out)
}

/// Why the `Connection` header(s) of a request are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionProblem {
    TooManyOptions,
    /// Not an HTTP token, or a pseudo-header.
    Malformed,
    /// Names a header the gateway sets or relies on.
    Protected,
}

/// Checks the options the `Connection` header(s) name, as pingora's own
/// proxy does for requests with a body (so that both ways of forwarding
/// refuse the same requests): at most [`MAX_CONNECTION_OPTIONS`], HTTP
/// tokens only, and none of the headers the gateway sets or relies on.
pub fn check_connection(headers: &HeaderMap) -> Result<(), ConnectionProblem> {
    let mut count = 0;
    for value in headers.get_all(http::header::CONNECTION) {
        for option in value.as_bytes().split(|b| *b == b',') {
            let option = option.trim_ascii();
            if option.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_CONNECTION_OPTIONS {
                return Err(ConnectionProblem::TooManyOptions);
            }
            if option.starts_with(b":") || !option.iter().all(|b| is_tchar(*b)) {
                return Err(ConnectionProblem::Malformed);
            }
            let name = String::from_utf8_lossy(option).to_ascii_lowercase();
            if PROTECTED.contains(&name.as_str())
                || in_list(&name, &IDENTITY)
                || in_list(&name, &FORWARDING)
            {
                return Err(ConnectionProblem::Protected);
            }
        }
    }
    Ok(())
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether the request asks to switch to WebSocket, the one protocol the
/// gateway tunnels (others, such as `h2c`, would carry requests past every
/// route policy once switched).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(http::header::UPGRADE).iter();
    matches!(
        (values.next(), values.next()),
        (Some(value), None) if value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
    )
}

/// An identity value as a header can carry it: bytes outside visible ASCII,
/// and `%` and `,` (so that lists stay unambiguous), percent-encoded with
/// upper-case hex. Plain values come back unchanged.
pub fn encode_value(value: &str) -> HeaderValue {
    let needs = |b: u8| !(0x21..=0x7e).contains(&b) || b == b'%' || b == b',';
    if !value.bytes().any(needs)
        && let Ok(plain) = HeaderValue::from_str(value)
    {
        return plain;
    }
    let mut out = String::with_capacity(value.len() + 8);
    for byte in value.bytes() {
        if needs(byte) {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    // Visible ASCII only, which is always a valid header value.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A list of identity values (roles): each encoded, joined with `,`.
pub fn encode_list(values: &[String]) -> HeaderValue {
    let encoded: Vec<HeaderValue> = values.iter().map(|v| encode_value(v)).collect();
    let mut out = Vec::with_capacity(encoded.iter().map(|v| v.len() + 1).sum());
    for (i, value) in encoded.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Cookie` header lines to send instead of the client's, without the
/// gateway's credentials: the `refresh_token` cookie always, the
/// `access_token` cookie too when `drop_access` (a route that keeps the
/// access token to itself). Other cookies keep their order and bytes; a
/// line left empty goes. `None`: nothing to change (the common case).
pub fn credential_free_cookies(headers: &HeaderMap, drop_access: bool) -> Option<Vec<HeaderValue>> {
    let doomed = |pair: &[u8]| {
        let name = pair
            .split(|b| *b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        name == REFRESH_COOKIE.as_bytes() || (drop_access && name == ACCESS_COOKIE.as_bytes())
    };
    let lines = headers.get_all(http::header::COOKIE);
    if !lines
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b';').any(doomed))
    {
        return None;
    }
    Some(
        lines
            .iter()
            .filter_map(|value| {
                let pairs: Vec<&[u8]> = value
                    .as_bytes()
                    .split(|b| *b == b';')
                    .filter(|pair| !pair.trim_ascii().is_empty() && !doomed(pair))
                    .map(<[u8]>::trim_ascii)
                    .collect();
                if pairs.is_empty() {
                    return None;
                }
                HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok()
            })
            .collect(),
    )
}

/// Whether the request carries a bearer `Authorization` header (other
/// schemes are the upstream's business).
pub fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| {
            v.as_bytes()
                .trim_ascii_start()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn identity_headers_go_in_every_spelling() {
        let headers = map(&[
            ("X_Auth_User_Id", "1"),
            ("x-auth_roles", "admin"),
            ("X-AUTH-EMAIL", "a@b"),
            ("x_auth_device_id", "d"),
            ("X-Auth-Client-Id", "c"),
            ("X-Auth-Client-Id", "c2"),
            ("x-authx-user-id", "kept"),
            ("accept", "*/*"),
        ]);
        let doomed: Vec<String> = untrusted(&headers, true)
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        assert_eq!(
            doomed,
            [
                "x_auth_user_id",
                "x-auth_roles",
                "x-auth-email",
                "x_auth_device_id",
                "x-auth-client-id"
            ]
        );
    }

    #[test]
    fn forwarding_headers_only_from_trusted_proxies() {
        let pairs = [
            ("X_Forwarded_For", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("proxy_authorization", "Basic x"),
            ("Proxy-Authorization", "Basic x"),
            ("host", "example.test"),
        ];
        let headers = map(&pairs);
        let names = |trusted| -> Vec<String> {
            untrusted(&headers, trusted)
                .iter()
                .map(|n| n.as_str().to_string())
                .collect()
        };
        assert_eq!(names(false).len(), pairs.len() - 1);
        assert!(!names(false).contains(&"host".to_string()));
        assert_eq!(names(true), ["proxy_authorization", "proxy-authorization"]);
    }

    #[test]
    fn lists_join_every_line_in_order() {
        let headers = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", " 2.2.2.2, 3.3.3.3 "),
            ("x-forwarded-for", ""),
        ]);
        assert_eq!(
            joined(&headers, "x-forwarded-for").as_deref(),
            Some("1.1.1.1, 2.2.2.2, 3.3.3.3")
        );
        assert_eq!(joined(&headers, "forwarded"), None);
        let connection = map(&[("connection", "a, b,,c"), ("connection", "d")]);
        assert_eq!(check_connection(&connection), Ok(()));
    }

    #[test]
    fn connection_options_are_checked_as_pingora_checks_them() {
        let check = |value: &str| check_connection(&map(&[("connection", value)]));
        assert_eq!(check("keep-alive, X-Custom-Hop"), Ok(()));
        assert_eq!(
            check(
                &(0..10)
                    .map(|i| format!("o{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(ConnectionProblem::TooManyOptions)
        );
        assert_eq!(
            check("\"x-forwarded-for\""),
            Err(ConnectionProblem::Malformed)
        );
        assert_eq!(check(":authority"), Err(ConnectionProblem::Malformed));
        for protected in [
            "Host",
            "X-Forwarded-For",
            "x_auth_user_id",
            "X-Request-Id",
            "Cookie",
        ] {
            assert_eq!(
                check(protected),
                Err(ConnectionProblem::Protected),
                "{protected}"
            );
        }
    }

    #[test]
    fn only_websocket_upgrades_are_tunnels() {
        assert!(is_websocket_upgrade(&map(&[("upgrade", "WebSocket")])));
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "h2c")])));
        assert!(!is_websocket_upgrade(&map(&[(
            "upgrade",
            "websocket, h2c"
        )])));
        assert!(!is_websocket_upgrade(&map(&[
            ("upgrade", "websocket"),
            ("upgrade", "h2c")
        ])));
        assert!(!is_websocket_upgrade(&HeaderMap::new()));
    }

    #[test]
    fn identity_values_are_encoded_never_dropped() {
        assert_eq!(encode_value("ada@example.com"), "ada@example.com");
        assert_eq!(encode_value("zoë@example.com"), "zo%C3%AB@example.com");
        assert_eq!(encode_value("a b,c%d"), "a%20b%2Cc%25d");
        assert_eq!(encode_value("\u{7f}\n"), "%7F%0A");
        let roles = [
            "admin".to_string(),
            "billing,reader".into(),
            "ünïcode".into(),
        ];
        assert_eq!(
            encode_list(&roles),
            "admin,billing%2Creader,%C3%BCn%C3%AFcode"
        );
        assert_eq!(encode_list(&[]), "");
    }

    #[test]
    fn credential_cookies_stay_at_the_gateway() {
        let text = |values: Vec<HeaderValue>| -> Vec<String> {
            values
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        let headers = map(&[
            ("cookie", "a=1; refresh_token=r.r; access_token=t.t"),
            ("cookie", "refresh_token=again"),
            ("cookie", "b=2"),
        ]);
        assert_eq!(
            text(credential_free_cookies(&headers, false).unwrap()),
            ["a=1; access_token=t.t", "b=2"]
        );
        assert_eq!(
            text(credential_free_cookies(&headers, true).unwrap()),
            ["a=1", "b=2"]
        );
        let untouched = map(&[("cookie", "refresh_tokenx=1;  a=2")]);
        assert_eq!(credential_free_cookies(&untouched, true), None);
        let spaced = map(&[("cookie", " refresh_token =x;a=1")]);
        assert_eq!(
            text(credential_free_cookies(&spaced, false).unwrap()),
            ["a=1"]
        );
    }

    #[test]
    fn bearer_tokens_are_recognised() {
        assert!(has_bearer(&map(&[("authorization", "Bearer a.b.c")])));
        assert!(has_bearer(&map(&[("authorization", "bearer a")])));
        assert!(!has_bearer(&map(&[("authorization", "Basic eDp5")])));
        assert!(!has_bearer(&HeaderMap::new()));
    }
}

/// Hostile bytes: identity values percent-encoded for the upstream's
/// headers decode back (the long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    fn decode(bytes: &[u8]) -> String {
        percent_encoding::percent_decode(bytes)
            .decode_utf8()
            .unwrap()
            .into_owned()
    }

    proptest! {
        /// Any text becomes visible ASCII without `,`, at most three times
        /// its length, and decodes back to itself.
        #[test]
        fn identity_value_round_trip(value in prop_oneof![any::<String>(), "[%,a-z0-9 ]{0,20}"]) {
            let encoded = encode_value(&value);
            let bytes = encoded.as_bytes();
            prop_assert!(bytes.len() <= 3 * value.len());
            prop_assert!(bytes.iter().all(|b| b.is_ascii_graphic() && *b != b','));
            prop_assert_eq!(decode(bytes), value);
        }

        /// A list splits on `,` into its values again.
        #[test]
        fn identity_list_round_trip(values in prop::collection::vec(any::<String>(), 1..6)) {
            let encoded = encode_list(&values);
            let back: Vec<String> = encoded.as_bytes().split(|b| *b == b',').map(decode).collect();
            prop_assert_eq!(back, values);
        }
    }
}
