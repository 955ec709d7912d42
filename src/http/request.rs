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
