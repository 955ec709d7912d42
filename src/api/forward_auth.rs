//! `/auth/forward`: forward-auth, for an edge that is already there. nginx
//! `auth_request` (ingress-nginx `auth-url`), Traefik `ForwardAuth`, Caddy
//! `forward_auth` and Envoy's HTTP `ext_authz` ask it, for each request they
//! are about to pass on, whether its caller may; it answers as a route of
//! the gateway would have: the same canonical path, the same route policies
//! (both readings of the path), the same in-process token checks (no call
//! to Keycloak) and rate limits. 200 carries the identity headers a
//! forwarded request gets, for the proxy to copy upstream; a refusal is the
//! contract's 403 (or 429) `{"detail": ...}`.
//!
//! - Only a peer in `TRUSTED_PROXIES` is answered; anyone else gets 403.
//!   The question is about another request, named by headers only the
//!   proxy may set: from another peer they are removed before anything
//!   reads them ([`crate::edge::headers`]), and answering for the request
//!   itself instead (`/auth/forward`, under the default policy) would tell
//!   a proxy that is not trusted "allowed" for every path to any signed-in
//!   caller.
//! - The original target comes from `X-Original-URI` (nginx),
//!   `X-Original-URL` (ingress-nginx, a whole URL), `X-Forwarded-Uri`
//!   (Traefik, Caddy), `x-envoy-original-path`, or what follows
//!   `/auth/forward` in the request's own raw target (Envoy's ext_authz
//!   `path_prefix`). A proxy passes its client's headers on too, so a
//!   client may add one the proxy does not set: every one present must name
//!   the same path (each header once), else 400. None: 400.
//! - The path is made canonical as for forwarded routes
//!   ([`crate::edge::path`]); one that has no canonical form gets the same
//!   400 `{"detail": "Invalid request path"}`. The query is not read.
//! - Each reading of the path takes its route's policy, or
//!   `FORWARD_AUTH_DEFAULT_POLICY` (`authenticated`) when no route matches
//!   it; the caller must pass all of them. The route of the policy reading
//!   counts its rate limit and gives the identity.

use bytes::Bytes;
use http::StatusCode;

use super::App;
use super::admission::{admit, pass};
use super::auth::NOT_PERMITTED;
use crate::edge::Admitted;
use crate::edge::path::{Canonical, canonicalize};
use crate::http::{Request, Response};

/// The endpoint. An ext_authz check appends the original target to it.
pub const PATH: &str = "/auth/forward";

/// The headers that may name the original request target.
const TARGET_HEADERS: [&str; 4] = [
    "x-original-uri",
    "x-original-url",
    "x-forwarded-uri",
    "x-envoy-original-path",
];

pub(super) const UNTRUSTED: &str = "Forward-auth answers trusted proxies only";
pub(super) const NO_TARGET: &str = "Original request URI missing";
pub(super) const AMBIGUOUS: &str = "Original request URI is ambiguous";
pub(super) const INVALID_PATH: &str = "Invalid request path";

/// The raw target after [`PATH`] when `raw` (a request's raw target) is an
/// ext_authz check: `/auth/forward/...`.
pub fn forwarded_target(raw: &[u8]) -> Option<Bytes> {
    raw.strip_prefix(PATH.as_bytes())
        .filter(|rest| rest.first() == Some(&b'/'))
        .map(Bytes::copy_from_slice)
}

/// Why the original request cannot be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unjudged {
    /// No header names it.
    Missing,
    /// Headers name different paths, or one header comes twice.
    Ambiguous,
    /// Its path has no canonical form.
    Unsettled,
}

impl Unjudged {
    fn response(self) -> Response {
        let detail = match self {
            Self::Missing => NO_TARGET,
            Self::Ambiguous => AMBIGUOUS,
            Self::Unsettled => INVALID_PATH,
        };
        Response::detail(StatusCode::BAD_REQUEST, detail)
    }
}

/// The path of a request target: origin-form (`/a/b?q`) or absolute-form
/// (`https://host/a/b?q`, `/` when it has no path), without its query or
/// fragment. Anything else is returned as it is (and refused by the
/// canonical form).
fn target_path(target: &[u8]) -> &[u8] {
    let mut path = target;
    for scheme in [&b"http://"[..], b"https://"] {
        let Some((head, rest)) = target.split_at_checked(scheme.len()) else {
            continue;
        };
        if !rest.is_empty() && head.eq_ignore_ascii_case(scheme) {
            path = match rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')) {
                Some(at) => match rest.split_at_checked(at) {
                    Some((_, from_slash)) if from_slash.first() == Some(&b'/') => from_slash,
                    _ => b"/",
                },
                None => b"/",
            };
            break;
        }
    }
    path.split(|b| matches!(b, b'?' | b'#'))
        .next()
        .unwrap_or(path)
}

/// The canonical path of the original request, from every source there is.
fn original_path(req: &Request) -> Result<Canonical, Unjudged> {
    let mut found: Option<Canonical> = None;
    let mut agree = |target: &[u8]| -> Result<(), Unjudged> {
        let canonical = canonicalize(target_path(target)).map_err(|_| Unjudged::Unsettled)?;
        match &found {
            Some(seen) if seen.path != canonical.path => Err(Unjudged::Ambiguous),
            Some(_) => Ok(()),
            None => {
                found = Some(canonical);
                Ok(())
            }
        }
    };
    for name in TARGET_HEADERS {
        let mut values = req.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => {}
            (Some(value), None) => agree(value.as_bytes())?,
            (Some(_), Some(_)) => return Err(Unjudged::Ambiguous),
        }
    }
    match &req.forwarded_target {
        Some(target) => agree(target)?,
        // `/auth/forward/...` spelled in a way no proxy sends it
        // (`/auth/%66orward/x`): no original target to believe.
        None if req.path != PATH => return Err(Unjudged::Unsettled),
        None => {}
    }
    found.ok_or(Unjudged::Missing)
}

/// A header's value as text, for the log.
fn header<'a>(req: &'a Request, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| req.header(name))
}

/// `/auth/forward` (any method): may the caller of the original request
/// pass?
pub async fn check(app: &App, req: &Request) -> Response {
    let (response, outcome, path) = decide(app, req).await;
    app.metrics.forward_auth.with_label_values(&[outcome]).inc();
    let method =
        header(req, &["x-original-method", "x-forwarded-method"]).unwrap_or(req.method.as_str());
    let host = header(req, &["x-forwarded-host", "host"]);
    tracing::info!(
        outcome,
        original_method = method,
        original_host = host,
        original_path = path.as_deref(),
        status = response.status.as_u16(),
        "forward-auth"
    );
    response
}

/// The answer, its outcome label and the original path (when there is one).
async fn decide(app: &App, req: &Request) -> (Response, &'static str, Option<String>) {
    if !req.from_trusted_proxy {
        let refusal = Response::detail(StatusCode::FORBIDDEN, UNTRUSTED);
        return (refusal, "untrusted", None);
    }
    let canonical = match original_path(req) {
        Ok(canonical) => canonical,
        Err(why) => return (why.response(), "invalid", None),
    };
    let (primary, other) = {
        let table = app.routes.load();
        let readings = table.readings(&canonical);
        let primary = readings.policy.cloned();
        // The literal reading's route when it is another one; a reading no
        // route takes falls under the default policy.
        let other = match readings.literal {
            Some(Some(_)) => readings.other().cloned().map(Some),
            Some(None) if primary.is_some() => Some(None),
            _ => None,
        };
        (primary, other)
    };
    let default = &app.config.edge.forward_auth_default;
    let headers = &req.headers;
    let admitted: Result<Option<Admitted>, Response> = async {
        match &other {
            Some(Some(route)) => {
                pass(
                    app,
                    &route.config.policy,
                    route.config.allow_services,
                    headers,
                )
                .await?;
            }
            Some(None) => {
                pass(app, default, false, headers).await?;
            }
            None => {}
        }
        match &primary {
            Some(route) => admit(app, &route.config, headers, req.client_ip).await,
            None => pass(app, default, false, headers).await,
        }
    }
    .await;
    let path = Some(canonical.path);
    match admitted {
        Ok(identity) => {
            let mut allowed = Response::empty(StatusCode::OK);
            if let Some(identity) = &identity {
                for (name, value) in crate::edge::identity_headers(identity) {
                    allowed.headers.insert(name, value);
                }
            }
            (allowed, "allowed", path)
        }
        Err(refused) => {
            let outcome = match refused.status {
                StatusCode::FORBIDDEN if is_detail(&refused, NOT_PERMITTED) => "forbidden",
                StatusCode::FORBIDDEN => "refused",
                StatusCode::TOO_MANY_REQUESTS => "limited",
                _ => "error",
            };
            (refused, outcome, path)
        }
    }
}

fn is_detail(response: &Response, detail: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .is_ok_and(|body| body.get("detail").and_then(|d| d.as_str()) == Some(detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn request(headers: &[(&str, &str)], target: Option<&str>) -> Request {
        let mut req = Request::new(Method::GET, PATH);
        req.from_trusted_proxy = true;
        for (name, value) in headers {
            req.headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        req.forwarded_target = target.map(|t| Bytes::copy_from_slice(t.as_bytes()));
        req
    }

    #[test]
    fn the_path_of_a_target() {
        assert_eq!(target_path(b"/a/b?q=1#f"), b"/a/b");
        assert_eq!(target_path(b"https://app.example/a/b?q"), b"/a/b");
        assert_eq!(target_path(b"HTTP://app.example:8080/x"), b"/x");
        assert_eq!(target_path(b"https://app.example"), b"/");
        assert_eq!(target_path(b"https://app.example?x=/admin"), b"/");
        assert_eq!(target_path(b"/admin#x"), b"/admin");
        assert_eq!(target_path(b"*"), b"*");
    }

    #[test]
    fn an_ext_authz_target_follows_the_prefix() {
        assert_eq!(
            forwarded_target(b"/auth/forward/admin/x?q").as_deref(),
            Some(&b"/admin/x?q"[..])
        );
        assert_eq!(
            forwarded_target(b"/auth/forward/").as_deref(),
            Some(&b"/"[..])
        );
        assert_eq!(forwarded_target(b"/auth/forward"), None);
        assert_eq!(forwarded_target(b"/auth/forward?x"), None);
        assert_eq!(forwarded_target(b"/auth/forwarded/x"), None);
        assert_eq!(forwarded_target(b"//auth/forward/x"), None);
    }

    #[test]
    fn every_source_must_name_the_same_path() {
        let one = request(&[("x-original-uri", "/%61dmin/x?q=1")], None);
        assert_eq!(original_path(&one).unwrap().path, "/admin/x");
        let agree = request(
            &[
                ("x-original-uri", "/admin//x"),
                ("x-original-url", "https://app.example/admin/x"),
            ],
            Some("/admin/./x"),
        );
        assert_eq!(original_path(&agree).unwrap().policy, "/admin/x");
        // A client's own header, passed on by the proxy beside the proxy's.
        let forged = request(
            &[
                ("x-original-uri", "/admin/x"),
                ("x-forwarded-uri", "/public"),
            ],
            None,
        );
        assert_eq!(original_path(&forged), Err(Unjudged::Ambiguous));
        let twice = request(
            &[
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-uri", "/public"),
            ],
            None,
        );
        assert_eq!(original_path(&twice), Err(Unjudged::Ambiguous));
        let against_prefix = request(&[("x-envoy-original-path", "/public")], Some("/admin"));
        assert_eq!(original_path(&against_prefix), Err(Unjudged::Ambiguous));
        assert_eq!(original_path(&request(&[], None)), Err(Unjudged::Missing));
        let unsettled = request(&[("x-forwarded-uri", "/admin%2fx")], None);
        assert_eq!(original_path(&unsettled), Err(Unjudged::Unsettled));
        let climbing = request(&[], Some("/x/../../admin"));
        assert_eq!(original_path(&climbing).unwrap().path, "/admin");
        let mut odd = request(&[], None);
        odd.path = "/auth/forward/admin".into();
        assert_eq!(original_path(&odd), Err(Unjudged::Unsettled));
    }
}
