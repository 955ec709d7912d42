//! A request as the api layer sees it: read whole, headers and body bytes.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, Method};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address: the socket's peer, or from a trusted proxy's
    /// `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// The socket's peer is one of `TRUSTED_PROXIES` (so its forwarding
    /// headers were kept).
    pub from_trusted_proxy: bool,
    /// The raw request target after `/auth/forward` (an ext_authz check
    /// names the original target there), before any normalisation.
    pub forwarded_target: Option<Bytes>,
}

impl Request {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.to_string(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            client_ip: None,
            from_trusted_proxy: false,
            forwarded_target: None,
        }
    }

    /// A header as text; `None` when absent or not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of a cookie from the `Cookie` header(s).
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_in(&self.headers, name)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The client address as text, for logs, limits and device sessions.
    pub fn client_ip_text(&self) -> String {
        self.client_ip
            .map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
    }
}

/// The value of a cookie from the `Cookie` header(s) (the first, when the
/// browser sent several of that name).
pub fn cookie_in(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies_in(headers, name).next()
}

/// Every value of a cookie, in the order the `Cookie` header(s) list them:
/// a browser sends one per matching domain and path (a stale cookie of a
/// parent domain beside the current one).
pub fn cookies_in<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(move |c| c.name() == name)
        .map(|c| c.value_trimmed().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_cookie_of_a_name_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(
            "cookie",
            "access_token=first; theme=dark;access_token=\"second\""
                .parse()
                .unwrap(),
        );
        headers.append("cookie", "access_token=; other=x=y".parse().unwrap());
        headers.append("cookie", " access_token = third ".parse().unwrap());
        assert_eq!(
            cookies_in(&headers, "access_token").collect::<Vec<_>>(),
            ["first", "second", "", "third"]
        );
        assert_eq!(cookies_in(&headers, "other").collect::<Vec<_>>(), ["x=y"]);
        assert_eq!(cookies_in(&headers, "theme").collect::<Vec<_>>(), ["dark"]);
        assert_eq!(cookies_in(&headers, "nothing").count(), 0);
        assert_eq!(
            cookie_in(&headers, "access_token").as_deref(),
            Some("first")
        );
    }

    #[test]
    fn reads_cookies_and_query() {
        let mut req = Request::new(Method::GET, "/users/");
        req.headers.insert(
            "cookie",
            "a=1; access_token=tok.en.x; b=\"q\"".parse().unwrap(),
        );
        req.query = Some("offset=5&limit=a%20b".into());
        assert_eq!(req.cookie("access_token").as_deref(), Some("tok.en.x"));
        assert_eq!(req.cookie("b").as_deref(), Some("q"));
        assert_eq!(req.cookie("missing"), None);
        assert_eq!(req.cookie("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("offset").as_deref(), Some("5"));
        assert_eq!(req.query_param("limit").as_deref(), Some("a b"));
    }
}

/// Hostile bytes: the `Cookie` header reader and query parameters over
/// random and built headers, with the round trips of `Set-Cookie` and of
/// form encoding (the long run is `scripts/fuzz.sh`).
#[cfg(test)]
mod prop {
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;
    use crate::config::{CookieSettings, SameSite};
    use crate::http::cookies::{self, ACCESS_COOKIE, REFRESH_COOKIE};

    /// A header line as a client may send it (any byte a `HeaderValue`
    /// takes: visible ASCII, tab, obs-text).
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                0x20u8..0x7f,
                Just(b'\t'),
                0x80u8..=0xff,
                Just(b';'),
                Just(b'='),
                Just(b'"')
            ],
            0..200,
        )
    }

    fn pair() -> impl Strategy<Value = String> {
        prop_oneof![
            ("[a-z_]{1,12}", "[A-Za-z0-9._-]{0,30}").prop_map(|(n, v)| format!("{n}={v}")),
            "[A-Za-z0-9._-]{0,30}".prop_map(|v| format!("{ACCESS_COOKIE}={v}")),
            "[A-Za-z0-9._-]{0,30}".prop_map(|v| format!(" {REFRESH_COOKIE} = \"{v}\" ")),
            Just("=".into()),
            Just(String::new()),
            Just("noequals".into()),
            "[ -~]{0,20}",
        ]
    }

    fn cookie_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(pair(), 0..8).prop_map(|p| p.join(";").into_bytes()),
            header_bytes(),
        ]
    }

    fn settings() -> impl Strategy<Value = CookieSettings> {
        (
            proptest::option::of("[a-z]{1,10}\\.example"),
            prop::bool::ANY,
            prop::bool::ANY,
            prop_oneof![
                Just(SameSite::Lax),
                Just(SameSite::Strict),
                Just(SameSite::None)
            ],
        )
            .prop_map(|(domain, secure, http_only, same_site)| CookieSettings {
                domain,
                secure,
                http_only,
                same_site,
            })
    }

    proptest! {
        /// Never a panic; every value read is a piece of the lines sent
        /// (no value longer than its line).
        #[test]
        fn cookie_header(lines in prop::collection::vec(cookie_line(), 0..4), name in prop_oneof![Just(ACCESS_COOKIE.to_string()), "[a-z_]{1,12}"]) {
            let mut headers = HeaderMap::new();
            for line in &lines {
                if let Ok(value) = http::HeaderValue::from_bytes(line) {
                    headers.append(http::header::COOKIE, value);
                }
            }
            let longest = lines.iter().map(Vec::len).max().unwrap_or(0);
            for value in cookies_in(&headers, &name) {
                prop_assert!(value.len() <= longest);
            }
            let _ = cookie_in(&headers, &name);
            // The gateway's credentials are taken out of what goes
            // upstream; the rest is kept, at most a space added per `;`.
            if let Some(kept) = crate::edge::headers::credential_free_cookies(&headers, true) {
                let mut upstream = HeaderMap::new();
                for value in kept {
                    prop_assert!(value.len() <= 2 * longest);
                    upstream.append(http::header::COOKIE, value);
                }
                prop_assert_eq!(cookies_in(&upstream, REFRESH_COOKIE).count(), 0);
                prop_assert_eq!(cookies_in(&upstream, ACCESS_COOKIE).count(), 0);
            }
        }

        /// Round trip: the cookie written with `Set-Cookie` is read back,
        /// by a cookie parser and from the `Cookie` header a browser makes
        /// of it (among other cookies).
        #[test]
        fn set_cookie_round_trip(
            value in "[A-Za-z0-9._-]{0,600}",
            refresh in prop::bool::ANY,
            max_age in any::<u64>(),
            settings in settings(),
            before in prop::collection::vec(("[a-z]{1,8}", "[a-z0-9]{0,8}"), 0..3),
        ) {
            let name = if refresh { REFRESH_COOKIE } else { ACCESS_COOKIE };
            let set = cookies::set(name, &value, max_age, &settings).unwrap();
            let parsed = cookie::Cookie::parse(set.to_str().unwrap()).unwrap();
            prop_assert_eq!(parsed.name(), name);
            prop_assert_eq!(parsed.value(), value.as_str());
            prop_assert_eq!(parsed.path(), Some("/"));
            prop_assert_eq!(parsed.domain(), settings.domain.as_deref());
            let sent: Vec<String> = before
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .chain([format!("{name}={value}")])
                .collect();
            let mut headers = HeaderMap::new();
            headers.insert(http::header::COOKIE, sent.join("; ").parse().unwrap());
            prop_assert_eq!(cookie_in(&headers, name), Some(value));
        }

        /// Query strings: never a panic; what form encoding writes, the
        /// reader gives back.
        #[test]
        fn query_params(
            raw in prop_oneof![any::<String>(), "([a-z%0-9+=&;]{0,10}){0,6}"],
            name in "[a-z_]{1,8}",
            value in any::<String>(),
        ) {
            let mut req = Request::new(Method::GET, "/users/");
            req.query = Some(raw.clone());
            if let Some(found) = req.query_param(&name) {
                // Decoding never grows a parameter beyond its text (`%FF`,
                // not UTF-8, becomes one 3-byte U+FFFD).
                prop_assert!(found.len() <= raw.len());
            }
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("other", "1")
                .append_pair(&name, &value)
                .finish();
            req.query = Some(encoded);
            let expected = if name == "other" { "1".to_string() } else { value };
            prop_assert_eq!(req.query_param(&name), Some(expected));
        }
    }
}
