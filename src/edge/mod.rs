//! The gateway's front door: what a request head must look like before
//! anything else reads it, decided once, here.
//!
//! [`settle`] runs first on every request, on every listener: it refuses
//! heads no server could read the same way (an unsettled path, too many
//! header lines or `Connection` options), rewrites the target to its
//! canonical form ([`path`]), and removes the headers a client may not send
//! ([`headers`]). Routes, policies, the API and the upstream all see the
//! settled head. [`for_upstream`] then writes what the gateway tells an
//! upstream about an admitted request.
//!
//! May import: `http` (responses, cookies), `proxy` (the identity it
//! writes), `routes` (a route's options). Nothing imports it but the
//! server and forward-auth (`api::forward_auth`, which judges a proxy's
//! request as a route would and answers with the same identity headers).
//!
//! Imports: `http` (the gateway's answers, the client address).

pub mod headers;
pub mod path;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::RequestHeader;

use crate::http::Response;

pub use path::{Canonical, PathError};

/// Why a request head is refused before anything reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request path: {0}")]
    Path(#[from] PathError),
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("Connection options refused")]
    Connection(headers::ConnectionProblem),
}

impl Refusal {
    /// The answer, in the contract's `{"detail": ...}` shape.
    pub fn response(self) -> Response {
        match self {
            Self::Path(_) => Response::detail(StatusCode::BAD_REQUEST, "Invalid request path"),
            Self::TooManyHeaders => Response::detail(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
            ),
            Self::Connection(_) => Response::detail(StatusCode::BAD_REQUEST, "Bad Request"),
        }
    }

    /// A short name for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Path(why) => why.reason(),
            Self::TooManyHeaders => "too_many_headers",
            Self::Connection(headers::ConnectionProblem::TooManyOptions) => {
                "too_many_connection_options"
            }
            Self::Connection(headers::ConnectionProblem::Malformed) => {
                "malformed_connection_option"
            }
            Self::Connection(headers::ConnectionProblem::Protected) => {
                "protected_connection_option"
            }
        }
    }
}

/// Checks a request head and rewrites it to its settled form: the target's
/// path canonical (the query kept byte for byte), the headers a client may
/// not send removed (identity headers always, forwarding headers unless
/// `trusted_peer`), an upgrade to anything but WebSocket dropped. The
/// `Connection` header is checked as pingora's own proxy checks it, so both
/// ways of forwarding refuse the same requests. An HTTP/2 request's
/// `:authority` becomes its `Host` when it has none (pingora's HTTP/2 layer
/// has already refused one that disagrees with `Host`, or carries
/// userinfo), so that every reader of `Host` sees the same name whatever
/// the protocol. Returns the canonical path.
pub fn settle(
    req: &mut RequestHeader,
    trusted_peer: bool,
    max_headers: usize,
) -> Result<Canonical, Refusal> {
    if req.headers.len() > max_headers {
        return Err(Refusal::TooManyHeaders);
    }
    headers::check_connection(&req.headers).map_err(Refusal::Connection)?;
    if req.version == http::Version::HTTP_2
        && !req.headers.contains_key(http::header::HOST)
        && let Some(host) = req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.insert_header(http::header::HOST, host)
            .map_err(|_| Refusal::Path(PathError::NotOriginForm))?;
    }
    if req.headers.contains_key(http::header::UPGRADE)
        && !headers::is_websocket_upgrade(&req.headers)
    {
        // Not a WebSocket: forwarded as a plain request, as pingora does.
        req.remove_header(&http::header::UPGRADE);
        req.remove_header("http2-settings");
    }
    let raw = req.raw_path();
    let (path, query, origin_form) = if raw.first() == Some(&b'/') {
        match raw.iter().position(|b| *b == b'?') {
            Some(at) => {
                let (path, query) = raw.split_at(at);
                (path, query.get(1..), true)
            }
            None => (raw, None, true),
        }
    } else if raw == b"*" {
        // Asterisk-form (`OPTIONS *`) names no resource: no route takes it,
        // and the API answers it as any unknown path.
        for name in headers::untrusted(&req.headers, trusted_peer) {
            req.remove_header(&name);
        }
        let star = "*".to_string();
        return Ok(Canonical {
            path: star.clone(),
            policy: star.clone(),
            literal: star,
        });
    } else if raw.first() == Some(&b'*') || req.uri.path_and_query().is_none() {
        return Err(PathError::NotOriginForm.into());
    } else {
        // Absolute-form: the parser kept only its path in the URI; the
        // upstream gets it in origin-form, with the Host header.
        if !req.raw_path_is_utf8() {
            return Err(PathError::NotUtf8.into());
        }
        let query = req.uri.query().map(|q| q.as_bytes());
        (req.uri.path().as_bytes(), query, false)
    };
    let canonical = path::canonicalize(path)?;
    if !origin_form || canonical.path.as_bytes() != path {
        let mut target = canonical.path.clone().into_bytes();
        if let Some(query) = query {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        req.set_raw_path(&target)
            .map_err(|_| Refusal::Path(PathError::NotOriginForm))?;
    }
    for name in headers::untrusted(&req.headers, trusted_peer) {
        req.remove_header(&name);
    }
    Ok(canonical)
}

/// What the gateway tells the upstream about an admitted request.
pub struct Forwarding<'a> {
    /// The route forwards the caller's access token (`forward_access_token`).
    pub forward_access_token: bool,
    pub identity: Option<&'a Admitted>,
    pub request_id: &'a str,
    /// The socket's peer.
    pub peer: Option<IpAddr>,
    pub trusted_peer: bool,
    /// `https` on a TLS listener, else `http`.
    pub scheme: &'static str,
}

/// Writes the gateway's headers into a settled request about to go
/// upstream: credentials that stay here removed, identity, request id and
/// the `X-Forwarded-*` headers set. The same for both ways of forwarding.
pub fn for_upstream(req: &mut RequestHeader, f: &Forwarding<'_>) -> pingora::Result<()> {
    if let Some(cookies) = headers::credential_free_cookies(&req.headers, !f.forward_access_token) {
        req.remove_header(&http::header::COOKIE);
        for value in cookies {
            req.append_header(http::header::COOKIE, value)?;
        }
    }
    if !f.forward_access_token && headers::has_bearer(&req.headers) {
        req.remove_header(&http::header::AUTHORIZATION);
    }
    if let Some(identity) = f.identity {
        for (name, value) in identity_headers(identity) {
            req.insert_header(HeaderName::from_static(name), value)?;
        }
    }
    if let Ok(value) = HeaderValue::from_str(f.request_id) {
        req.insert_header(HeaderName::from_static("x-request-id"), value)?;
    }
    if let Some(peer) = f.peer {
        // From a trusted proxy: its chain, every line in order, then it.
        let chain = match headers::joined(&req.headers, "x-forwarded-for") {
            Some(before) if f.trusted_peer => format!("{before}, {peer}"),
            _ => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            req.insert_header(HeaderName::from_static("x-forwarded-for"), value)?;
        }
    }
    let kept = |req: &RequestHeader, name: &str| f.trusted_peer && req.headers.contains_key(name);
    if !kept(req, "x-forwarded-proto") {
        req.insert_header(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(f.scheme),
        )?;
    }
    if !kept(req, "x-forwarded-host")
        && let Some(host) = req.headers.get(http::header::HOST).cloned()
    {
        req.insert_header(HeaderName::from_static("x-forwarded-host"), host)?;
    }
    Ok(())
}

/// Who an admitted request is for: a user, or a machine client.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub user_id: Option<i64>,
    /// The machine client (client credentials), instead of a user.
    pub client_id: Option<String>,
    pub email: Option<String>,
    pub device_id: Option<String>,
    pub roles: Arc<Vec<String>>,
}

/// The identity headers of an admitted request, every value encoded so that
/// none is ever dropped ([`headers::encode_value`]).
pub fn identity_headers(identity: &Admitted) -> Vec<(&'static str, HeaderValue)> {
    let [user_id, email, roles, device_id, client_id] = headers::IDENTITY;
    let mut out = Vec::with_capacity(5);
    if let Some(id) = identity.user_id {
        out.push((user_id, HeaderValue::from(id)));
    }
    if let Some(value) = &identity.email {
        out.push((email, headers::encode_value(value)));
    }
    out.push((roles, headers::encode_list(&identity.roles)));
    if let Some(value) = &identity.device_id {
        out.push((device_id, headers::encode_value(value)));
    }
    if let Some(value) = &identity.client_id {
        out.push((client_id, headers::encode_value(value)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    #[test]
    fn the_target_is_rewritten_to_its_canonical_form() {
        let mut req = head(b"//x/../%61dmin;p/y?q=%2e%2E&a=b", &[("host", "h")]);
        let canonical = settle(&mut req, false, 100).unwrap();
        assert_eq!(req.raw_path(), b"/admin;p/y?q=%2e%2E&a=b");
        assert_eq!(req.uri.path(), "/admin;p/y");
        assert_eq!(canonical.policy, "/admin/y");
        let mut absolute = head(b"http://evil.example/%61dmin/x?y", &[("host", "h")]);
        settle(&mut absolute, false, 100).unwrap();
        assert_eq!(absolute.raw_path(), b"/admin/x?y");
        let mut plain = head(b"/api/x?y=1", &[]);
        settle(&mut plain, false, 100).unwrap();
        assert_eq!(plain.raw_path(), b"/api/x?y=1");
    }

    #[test]
    fn unsettled_heads_are_refused() {
        let mut req = head(b"/admin%2fx", &[]);
        assert_eq!(
            settle(&mut req, false, 100),
            Err(Refusal::Path(PathError::EncodedSeparator))
        );
        assert_eq!(
            Refusal::Path(PathError::Backslash).response().status,
            StatusCode::BAD_REQUEST
        );
        let mut star = head(b"*", &[]);
        assert_eq!(settle(&mut star, false, 100).unwrap().policy, "*");
        let mut stars = head(b"**", &[]);
        assert!(settle(&mut stars, false, 100).is_err());
        let many: Vec<(String, String)> = (0..5).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut req = head(b"/", &many);
        assert_eq!(settle(&mut req, false, 4), Err(Refusal::TooManyHeaders));
        let options = (0..10)
            .map(|i| format!("o{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut req = head(b"/", &[("connection", &options)]);
        assert_eq!(
            settle(&mut req, false, 100),
            Err(Refusal::Connection(
                headers::ConnectionProblem::TooManyOptions
            ))
        );
        let mut h2c = head(
            b"/",
            &[("upgrade", "h2c"), ("http2-settings", "AAMAAABkAAQAAP__")],
        );
        settle(&mut h2c, false, 100).unwrap();
        assert!(!h2c.headers.contains_key("upgrade"));
        assert!(!h2c.headers.contains_key("http2-settings"));
    }

    #[test]
    fn an_http2_authority_is_the_host() {
        let mut req = head(b"/x", &[]);
        req.set_uri("https://app.example:8443/x?y".parse().unwrap());
        req.set_version(http::Version::HTTP_2);
        settle(&mut req, false, 100).unwrap();
        assert_eq!(req.headers["host"], "app.example:8443");
        assert_eq!(req.raw_path(), b"/x?y");
        // A Host already there is kept; HTTP/1.1 gets none made up.
        let mut req = head(b"/x", &[("host", "h")]);
        req.set_uri("https://h/x".parse().unwrap());
        req.set_version(http::Version::HTTP_2);
        settle(&mut req, false, 100).unwrap();
        assert_eq!(req.headers.get_all("host").iter().count(), 1);
        let mut req = head(b"/x", &[]);
        settle(&mut req, false, 100).unwrap();
        assert!(!req.headers.contains_key("host"));
    }

    #[test]
    fn client_headers_that_claim_identity_or_origin_are_removed() {
        let mut req = head(
            b"/",
            &[
                ("X_Auth_User_Id", "1"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Original-URL", "/admin"),
                ("Accept", "*/*"),
            ],
        );
        settle(&mut req, false, 100).unwrap();
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(String::from_utf8(wire).unwrap(), "Accept: */*\r\n");
    }
}
