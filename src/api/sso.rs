//! Single sign-on (`/auth/login`, `/auth/callback`): the browser is sent to
//! the identity provider, which brokers to the customer's own, and comes
//! back signed in with the contract's cookies, to an allowed URL only.

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue, LOCATION, SET_COOKIE};
use serde_json::json;

use super::flows::session::{device_info, open_session};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::config::SsoSettings;
use crate::http::{Request, Response};
use crate::identity::IdentityError;
use crate::identity::sso::{Sso, SsoCallback, SsoRefusal, SsoRequest};

/// The feature's name in the 501 answer of a backend without it.
pub(super) const FEATURE: &str = "Single sign-on";
/// The cookie that binds a begun login to its browser.
pub(super) const LOGIN_COOKIE: &str = "authgate_sso";
pub(super) const MISSING_PROVIDER: &str = "Missing provider";
pub(super) const REDIRECT_NOT_ALLOWED: &str = "Redirect URL is not allowed";
/// The longest `redirect` accepted.
const MAX_REDIRECT: usize = 2083;

fn capability(app: &App) -> Result<&dyn Sso, ApiError> {
    Ok(app
        .backend
        .sso()
        .ok_or(IdentityError::Unsupported(FEATURE))?)
}

fn refused(refusal: SsoRefusal) -> ApiError {
    let status = if refusal.unauthorized() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::status(status, refusal.to_string())
}

/// `GET /auth/login?provider=<alias>&redirect=<url>`: 302 to Keycloak.
pub async fn login(app: &App, req: &Request) -> Result<Response, ApiError> {
    let sso = capability(app)?;
    let settings = &app.config.sso;
    let provider = req
        .query_param("provider")
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request(MISSING_PROVIDER))?;
    let redirect = req.query_param("redirect");
    let Some(redirect) = allowed_redirect(redirect.as_deref(), settings) else {
        app.audit(
            AuditEvent::failure("sso.login.start")
                .from(req)
                .detail(json!({"provider": provider, "reason": "redirect_not_allowed"})),
        )
        .await;
        return Err(ApiError::bad_request(REDIRECT_NOT_ALLOWED));
    };
    let start = sso
        .begin(SsoRequest {
            provider: provider.clone(),
            redirect,
            callback_url: settings.callback_url.clone(),
            lifetime: settings.login_lifetime,
        })
        .await?;
    let start = match start {
        Ok(start) => start,
        Err(refusal) => {
            app.audit(
                AuditEvent::failure("sso.login.start")
                    .from(req)
                    .detail(json!({"provider": provider, "reason": refusal.reason()})),
            )
            .await;
            return Err(refused(refusal));
        }
    };
    app.audit(
        AuditEvent::success("sso.login.start")
            .from(req)
            .detail(json!({"provider": provider})),
    )
    .await;
    let mut response = found(&start.authorize_url)?;
    let cookie = login_cookie(app, &start.browser_key, settings.login_lifetime.as_secs());
    response.headers.append(SET_COOKIE, cookie?);
    Ok(response)
}

/// `GET /auth/callback?code=..&state=..`: signs the user in, 302 to the
/// URL saved at `/auth/login`.
pub async fn callback(app: &App, req: &Request) -> Result<Response, ApiError> {
    let sso = capability(app)?;
    let outcome = sso
        .complete(SsoCallback {
            state: req.query_param("state"),
            code: req.query_param("code"),
            error: req.query_param("error"),
            browser_key: req.cookie(LOGIN_COOKIE),
            callback_url: app.config.sso.callback_url.clone(),
        })
        .await?;
    let done = match outcome {
        Ok(done) => done,
        Err(refusal) => {
            tracing::info!(reason = refusal.reason(), "single sign-on refused");
            app.audit(
                AuditEvent::failure("sso.login")
                    .from(req)
                    .detail(json!({"reason": refusal.reason()})),
            )
            .await;
            return Err(refused(refusal));
        }
    };
    let user_id = done.login.user.id;
    if done.provisioned {
        app.audit(
            AuditEvent::success("sso.user.provisioned")
                .actor(user_id)
                .from(req)
                .detail(json!({"provider": done.provider})),
        )
        .await;
    }
    let tokens = open_session(app, &done.login, &device_info(req)).await?;
    app.audit(
        AuditEvent::success("sso.login")
            .actor(user_id)
            .from(req)
            .detail(json!({"provider": done.provider, "first_login": done.provisioned})),
    )
    .await;
    let mut response = found(&done.redirect)?;
    tokens.set_cookies(app, &mut response);
    response
        .headers
        .append(SET_COOKIE, login_cookie(app, "\"\"", 0)?);
    Ok(response)
}

fn found(location: &str) -> Result<Response, ApiError> {
    let mut response = Response::empty(StatusCode::FOUND);
    let location = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    response.headers.insert(LOCATION, location);
    response
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The login cookie: only sent to the callback, `SameSite=Lax` so that the
/// identity provider's redirect (a top-level navigation) carries it.
fn login_cookie(app: &App, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    let path = url::Url::parse(&app.config.sso.callback_url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".into());
    let mut text =
        format!("{LOGIN_COOKIE}={value}; HttpOnly; Max-Age={max_age}; Path={path}; SameSite=lax");
    if app.config.cookies.secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

/// The URL to go to after signing in, if allowed: a path on this site
/// (one leading `/`), or an absolute URL under an entry of
/// `SSO_REDIRECT_ALLOWLIST` (same scheme, host and port; the entry's path
/// as a whole-segment prefix). No redirect means `/`.
pub fn allowed_redirect(redirect: Option<&str>, settings: &SsoSettings) -> Option<String> {
    let redirect = match redirect.map(str::trim) {
        None | Some("") => return Some("/".into()),
        Some(r) => r,
    };
    if redirect.len() > MAX_REDIRECT
        || redirect
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    if redirect.starts_with('/') {
        return (!redirect.starts_with("//")).then(|| redirect.to_string());
    }
    let url = url::Url::parse(redirect).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    settings
        .redirect_allowlist
        .iter()
        .any(|allowed| {
            let prefix = allowed.path();
            allowed.scheme() == url.scheme()
                && allowed.host_str() == url.host_str()
                && allowed.port_or_known_default() == url.port_or_known_default()
                && (prefix == "/"
                    || url.path() == prefix.trim_end_matches('/')
                    || url.path().starts_with(prefix)
                        && (prefix.ends_with('/') || url.path()[prefix.len()..].starts_with('/')))
        })
        .then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(list: &[&str]) -> SsoSettings {
        SsoSettings {
            redirect_allowlist: list.iter().map(|u| u.parse().unwrap()).collect(),
            callback_url: "http://localhost:5000/auth/callback".into(),
            login_lifetime: Duration::from_secs(300),
        }
    }

    #[test]
    fn relative_paths_are_allowed_and_default_is_root() {
        let s = settings(&[]);
        assert_eq!(allowed_redirect(None, &s).as_deref(), Some("/"));
        assert_eq!(allowed_redirect(Some(""), &s).as_deref(), Some("/"));
        assert_eq!(
            allowed_redirect(Some("/app/home?x=1"), &s).as_deref(),
            Some("/app/home?x=1")
        );
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "/a b",
            "/a\nb",
            "evil",
        ] {
            assert_eq!(allowed_redirect(Some(bad), &s), None, "{bad}");
        }
    }

    #[test]
    fn absolute_urls_only_under_the_allow_list() {
        let s = settings(&["https://app.example.com", "https://portal.example.com/sso/"]);
        assert_eq!(
            allowed_redirect(Some("https://app.example.com/x"), &s).as_deref(),
            Some("https://app.example.com/x")
        );
        assert!(allowed_redirect(Some("https://portal.example.com/sso/done"), &s).is_some());
        assert!(allowed_redirect(Some("https://portal.example.com/sso"), &s).is_some());
        for bad in [
            "https://evil.example/",
            "http://app.example.com/x",
            "https://app.example.com:444/",
            "https://app.example.com.evil.example/",
            "https://app.example.com@evil.example/",
            "https://user@app.example.com/",
            "https://portal.example.com/other",
            "https://portal.example.com/ssoevil",
            "javascript:alert(1)",
            "ftp://app.example.com/",
        ] {
            assert_eq!(allowed_redirect(Some(bad), &s), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_without_a_trailing_slash_match_whole_segments() {
        let s = settings(&["https://x.example/app"]);
        assert!(allowed_redirect(Some("https://x.example/app"), &s).is_some());
        assert!(allowed_redirect(Some("https://x.example/app/y"), &s).is_some());
        assert!(allowed_redirect(Some("https://x.example/application"), &s).is_none());
    }
}
