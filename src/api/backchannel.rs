//! `POST /auth/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0
//! (keycloak mode). Keycloak posts a logout token (form field
//! `logout_token`) when a session of the `authgate` client ends there: a
//! user's or an administrator's sign-out, the end-session endpoint, a
//! session ended in the console. A valid token ends that session (`sid`),
//! or every session of the user (`sub` alone), on every replica at their
//! next request; its refresh token stops refreshing.
//!
//! Answers as the specification says, both with `Cache-Control: no-store`:
//! 200 with an empty body; or 400 with the OAuth error shape
//! `{"error": "invalid_request", "error_description": "..."}` (Keycloak is
//! an OAuth server, not a legacy client: the contract's `{"detail"}` shape
//! is kept for the 501 of native mode and the 503 of an unavailable store),
//! and nothing revoked.

use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::Serialize;
use serde_json::json;

use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::schema::{Documented, Schema};
use crate::http::{Request, Response};
use crate::identity::IdentityError;
use crate::identity::logout::LogoutRefusal;
use crate::revocation::Source;

/// The feature's name in the 501 answer of a backend without it.
pub(super) const FEATURE: &str = "Back-channel logout";
/// The form field of the logout token.
pub(super) const FIELD: &str = "logout_token";

/// The 400 answer.
#[derive(Debug, Serialize)]
pub(super) struct LogoutError {
    error: &'static str,
    error_description: &'static str,
}

impl Documented for LogoutError {
    const NAME: &'static str = "BackchannelLogoutError";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "error",
                Schema::string().describe("Always `invalid_request`."),
            )
            .field(
                "error_description",
                Schema::string().describe("Why the logout token was refused."),
            )
            .describe("A refused logout token (OpenID Connect Back-Channel Logout 1.0, section 2.8); nothing was revoked.")
    }

    fn example() -> Self {
        Self {
            error: "invalid_request",
            error_description: LogoutRefusal::Replayed.description(),
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The `logout_token` of a form body, if there is exactly one.
fn logout_token(body: &[u8]) -> Option<String> {
    let mut found = url::form_urlencoded::parse(body).filter(|(name, _)| name == FIELD);
    let token = found.next()?.1.into_owned();
    (found.next().is_none() && !token.is_empty()).then_some(token)
}

async fn refuse(app: &App, req: &Request, refusal: LogoutRefusal) -> Response {
    tracing::info!(reason = refusal.reason(), "back-channel logout refused");
    app.metrics
        .backchannel_refused
        .with_label_values(&[refusal.reason()])
        .inc();
    app.audit(
        AuditEvent::failure("session.revoked")
            .from(req)
            .detail(json!({"source": Source::Backchannel.label(), "reason": refusal.reason()})),
    )
    .await;
    no_store(Response::json(
        StatusCode::BAD_REQUEST,
        &LogoutError {
            error: "invalid_request",
            error_description: refusal.description(),
        },
    ))
}

/// `POST /auth/backchannel-logout`.
pub async fn logout(app: &App, req: &Request) -> Result<Response, ApiError> {
    let capability = app
        .backend
        .backchannel_logout()
        .ok_or(IdentityError::Unsupported(FEATURE))?;
    let Some(token) = logout_token(&req.body) else {
        return Ok(refuse(app, req, LogoutRefusal::Malformed).await);
    };
    let logged_out = match capability.logout(&token).await? {
        Ok(logged_out) => logged_out,
        Err(refusal) => return Ok(refuse(app, req, refusal).await),
    };
    if !logged_out.revocation.is_empty() {
        app.revocations
            .revoke(&logged_out.revocation, Source::Backchannel)
            .await;
        tracing::info!(
            user_id = logged_out.user_id,
            sessions = logged_out.revocation.sessions.len(),
            "revoked: Keycloak's back-channel logout"
        );
        let mut event = AuditEvent::success("session.revoked")
            .from(req)
            .detail(json!({
                "source": Source::Backchannel.label(),
                "sessions": logged_out.revocation.sessions,
                "not_before": logged_out.revocation.users.first().map(|cut| cut.not_before),
            }));
        if let Some(user_id) = logged_out.user_id {
            event = event.subject(user_id);
        }
        app.audit(event).await;
    }
    Ok(no_store(Response::empty(StatusCode::OK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_logout_token_from_the_form() {
        assert_eq!(
            logout_token(b"logout_token=a.b.c").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(
            logout_token(b"x=1&logout_token=a%2Eb.c").as_deref(),
            Some("a.b.c")
        );
        assert_eq!(logout_token(b""), None);
        assert_eq!(logout_token(b"logout_token="), None);
        assert_eq!(logout_token(b"logout_token=a&logout_token=b"), None);
        assert_eq!(logout_token(b"{\"logout_token\": \"a.b.c\"}"), None);
    }
}
