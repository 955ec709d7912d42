//! The plain listener beside HTTPS (`HTTP_REDIRECT_PORT`): health probes
//! and scrapes are answered there as on the main listener (`GET` or `HEAD`
//! of `/health`, `/ready`, `/metrics`), so that an orchestrator can probe
//! without TLS; every other request is sent to HTTPS with 308 Permanent
//! Redirect (the method and body kept), to the same host on `APP_PORT` and
//! the request's canonical path and query. Nothing is forwarded or answered
//! by the API in clear.

use http::header::LOCATION;
use http::{HeaderValue, Method, StatusCode};

use crate::http::Response;

/// Paths the plain listener answers itself.
const PROBES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Where the plain listener sends clients.
#[derive(Debug, Clone, Copy)]
pub struct Redirect {
    /// The HTTPS listener's port (`APP_PORT`).
    pub https_port: u16,
}

impl Redirect {
    /// Whether the plain listener answers the request itself.
    pub fn answers_here(method: &Method, path: &str) -> bool {
        (method == Method::GET || method == Method::HEAD) && PROBES.contains(&path)
    }

    /// The redirect of a request that named `host` (its `Host`) and the
    /// canonical `target` (path and query); 400 without a usable host.
    pub fn response(&self, host: Option<&HeaderValue>, target: &[u8]) -> Response {
        let bad = || Response::detail(StatusCode::BAD_REQUEST, "Bad Request");
        let Some(authority) = host
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .filter(|a| !a.as_str().contains('@') && !a.host().is_empty())
        else {
            return bad();
        };
        let mut location = format!("https://{}", authority.host()).into_bytes();
        if self.https_port != 443 {
            location.extend_from_slice(format!(":{}", self.https_port).as_bytes());
        }
        location.extend_from_slice(target);
        match HeaderValue::from_bytes(&location) {
            Ok(location) => Response::detail(StatusCode::PERMANENT_REDIRECT, "Use HTTPS")
                .with_header(LOCATION, location),
            Err(_) => bad(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(redirect: Redirect, host: &str, target: &str) -> Option<String> {
        let response = redirect.response(
            Some(&HeaderValue::from_str(host).unwrap()),
            target.as_bytes(),
        );
        response
            .headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn sends_to_the_same_host_on_the_https_port() {
        let on = |port| Redirect { https_port: port };
        assert_eq!(
            location(on(443), "app.example:80", "/x?y=1").as_deref(),
            Some("https://app.example/x?y=1")
        );
        assert_eq!(
            location(on(8443), "app.example", "/").as_deref(),
            Some("https://app.example:8443/")
        );
        assert_eq!(
            location(on(443), "[::1]:8080", "/a").as_deref(),
            Some("https://[::1]/a")
        );
        let response = on(443).response(Some(&HeaderValue::from_static("app.example")), b"/");
        assert_eq!(response.status, StatusCode::PERMANENT_REDIRECT);
        for host in ["user@evil.example", "a b", ""] {
            assert_eq!(location(on(443), host, "/"), None, "{host:?}");
        }
        assert_eq!(on(443).response(None, b"/").status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn only_probe_reads_are_answered_in_clear() {
        assert!(Redirect::answers_here(&Method::GET, "/health"));
        assert!(Redirect::answers_here(&Method::HEAD, "/ready"));
        assert!(Redirect::answers_here(&Method::GET, "/metrics"));
        assert!(!Redirect::answers_here(&Method::POST, "/health"));
        assert!(!Redirect::answers_here(&Method::GET, "/users/me"));
        assert!(!Redirect::answers_here(&Method::GET, "/healthz"));
    }
}
