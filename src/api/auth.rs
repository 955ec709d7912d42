//! "Token required": the access token from `Authorization: Bearer` (which
//! wins) or the `access_token` cookie, verified in-process; then the
//! session's revocation state (deliberate difference 7).

use crate::http::Request;
use crate::http::cookies::ACCESS_COOKIE;
use crate::identity::{IdentityError, SessionRef};

use super::{ApiError, App};

const UNAUTHORIZED: &str = "Unauthorized.";
const INVALID: &str = "Invalid token or expired token.";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub device_id: Option<String>,
}

/// The bearer credentials of an `Authorization` header, if it has usable ones.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

pub async fn require(app: &App, req: &Request) -> Result<Principal, ApiError> {
    let cookie = req.cookie(ACCESS_COOKIE).filter(|c| !c.is_empty());
    let token = match bearer(req) {
        Some(token) => token.to_string(),
        None => cookie.ok_or_else(|| ApiError::forbidden(UNAUTHORIZED))?,
    };
    let verified = match &app.external_tokens {
        Some(external) if crate::tokens::is_rs256(&token) => external.verify(&token).await,
        _ => app.tokens.verify_access(&token),
    };
    let claims = verified.map_err(|err| {
        tracing::debug!(reason = err.reason(), "access token refused");
        app.metrics
            .token_rejections
            .with_label_values(&["access", err.reason()])
            .inc();
        ApiError::forbidden(INVALID)
    })?;
    if app
        .backend
        .session_revoked(&SessionRef::of(&claims))
        .await?
    {
        tracing::debug!(reason = "revoked", "access token refused");
        app.metrics
            .token_rejections
            .with_label_values(&["access", "revoked"])
            .inc();
        return Err(ApiError::forbidden(INVALID));
    }
    Ok(Principal {
        user_id: claims.user_id,
        device_id: claims.device_id,
    })
}

/// The caller must hold the `admin` role.
pub async fn require_admin(app: &App, principal: &Principal) -> Result<(), ApiError> {
    if is_admin(app, principal).await? {
        Ok(())
    } else {
        Err(ApiError::forbidden("Not enough permissions"))
    }
}

pub async fn is_admin(app: &App, principal: &Principal) -> Result<bool, IdentityError> {
    app.backend.is_admin(principal.user_id).await
}
