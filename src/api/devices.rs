//! `/auth/sessions`: the caller's device sessions, listed and revoked, and
//! an admin's force-logout of a user (keycloak mode).
//!
//! A revoked session ends like a sign-out (its refresh token stops working)
//! and is revoked on every replica ([`crate::revocation`]): its access
//! tokens are refused at their next request (within the 5-second cache of
//! `auth` when there is no Redis).

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::auth::{self, Principal};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::schema::{Documented, Schema};
use crate::http::validate;
use crate::http::{Request, Response};
use crate::identity::IdentityError;
use crate::identity::devices::{DeviceSession, Devices};
use crate::revocation::{Reach, Revocation, Source};

/// The feature's name in the 501 answer of a backend without it.
pub(super) const FEATURE: &str = "Device sessions";
/// Another user's session, or one that is not open.
pub(super) const SESSION_NOT_FOUND: &str = "Session not found";

fn capability(app: &App) -> Result<&dyn Devices, ApiError> {
    Ok(app
        .backend
        .devices()
        .ok_or(IdentityError::Unsupported(FEATURE))?)
}

/// One session of `GET /auth/sessions`.
#[derive(Debug, Serialize)]
pub(super) struct SessionOut {
    id: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    /// RFC 3339, UTC, whole seconds.
    started_at: String,
    last_access: String,
    current: bool,
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl SessionOut {
    fn of(session: DeviceSession, current: Option<&str>) -> Self {
        Self {
            current: current == Some(session.id.as_str()),
            started_at: rfc3339(session.started_at),
            last_access: rfc3339(session.last_access),
            id: session.id,
            ip_address: session.ip_address,
            user_agent: session.user_agent,
        }
    }
}

impl Documented for SessionOut {
    const NAME: &'static str = "DeviceSession";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "id",
                Schema::string()
                    .format("uuid")
                    .describe("The session's id: the tokens' `device_id`, a UUID of authgate's own (not Keycloak's `sid`)."),
            )
            .field(
                "ip_address",
                Schema::string()
                    .nullable()
                    .describe("The client's address when it signed in."),
            )
            .field(
                "user_agent",
                Schema::string()
                    .nullable()
                    .describe("The `User-Agent` it signed in with."),
            )
            .field("started_at", Schema::string().format("date-time"))
            .field("last_access", Schema::string().format("date-time"))
            .field(
                "current",
                Schema::boolean().describe("The session of the token that asks."),
            )
            .describe("A device session of the signed-in user.")
    }

    fn example() -> Self {
        Self {
            id: "6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13".into(),
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
            started_at: "2026-11-29T08:15:00Z".into(),
            last_access: "2026-11-29T09:02:41Z".into(),
            current: true,
        }
    }
}

/// The answer of the revocations.
#[derive(Debug, Serialize)]
pub(super) struct Ended {
    message: &'static str,
    /// How many open sessions were ended.
    ended: usize,
}

impl Documented for Ended {
    const NAME: &'static str = "SessionsEnded";

    fn schema() -> Schema {
        Schema::object().field("message", Schema::string()).field(
            "ended",
            Schema::integer().describe("How many open sessions were ended."),
        )
    }

    fn example() -> Self {
        Self {
            message: OTHERS_ENDED,
            ended: 2,
        }
    }
}

const ONE_ENDED: &str = "Session ended";
const OTHERS_ENDED: &str = "Other sessions ended";
const ALL_ENDED: &str = "All sessions of the user ended";

/// Refuses ended sessions here at once, and on the other replicas.
async fn deny(app: &App, revocation: Revocation, source: Source) {
    app.revocations.revoke(&revocation, source).await;
}

fn ended(message: &'static str, count: usize) -> Response {
    Response::json(
        StatusCode::OK,
        &Ended {
            message,
            ended: count,
        },
    )
}

/// `GET /auth/sessions`.
pub async fn list(app: &App, req: &Request) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    let devices = capability(app)?;
    let current = principal.device_id.as_deref();
    let sessions: Vec<SessionOut> = devices
        .sessions(principal.user_id)
        .await?
        .into_iter()
        .map(|session| SessionOut::of(session, current))
        .collect();
    Ok(Response::json(StatusCode::OK, &sessions))
}

/// `DELETE /auth/sessions/{session_id}`: one of the caller's own sessions.
pub async fn end_one(app: &App, req: &Request, session_id: &str) -> Result<Response, ApiError> {
    let Principal {
        user_id, device_id, ..
    } = auth::require(app, req).await?;
    let devices = capability(app)?;
    if !devices.end_device_session(user_id, session_id).await? {
        app.audit(
            AuditEvent::failure("session.revoke")
                .actor(user_id)
                .from(req)
                .detail(json!({"reason": "not found"})),
        )
        .await;
        return Err(ApiError::status(StatusCode::NOT_FOUND, SESSION_NOT_FOUND));
    }
    deny(
        app,
        Revocation::sessions([session_id.to_string()]),
        Source::Signout,
    )
    .await;
    app.audit(
        AuditEvent::success("session.revoke")
            .actor(user_id)
            .from(req)
            .detail(json!({
                "session_id": session_id,
                "current": device_id.as_deref() == Some(session_id),
            })),
    )
    .await;
    Ok(ended(ONE_ENDED, 1))
}

/// `DELETE /auth/sessions`: every session of the caller but the current one.
pub async fn end_others(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal {
        user_id, device_id, ..
    } = auth::require(app, req).await?;
    let devices = capability(app)?;
    let ended_ids = devices
        .end_other_sessions(user_id, device_id.as_deref())
        .await?;
    deny(
        app,
        Revocation::sessions(ended_ids.clone()),
        Source::Signout,
    )
    .await;
    app.audit(
        AuditEvent::success("session.revoke_others")
            .actor(user_id)
            .from(req)
            .detail(json!({"sessions": ended_ids})),
    )
    .await;
    Ok(ended(OTHERS_ENDED, ended_ids.len()))
}

/// `DELETE /auth/admin/users/{user_id}/sessions`: an admin's force-logout.
pub async fn end_all(app: &App, req: &Request, user_id: &str) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    let devices = capability(app)?;
    if !auth::is_admin(app, &principal).await? {
        app.audit(
            AuditEvent::failure("admin.sessions.revoke_all")
                .actor(principal.user_id)
                .from(req)
                .detail(json!({"reason": "not an admin"})),
        )
        .await;
        return Err(ApiError::forbidden(auth::NOT_PERMITTED));
    }
    let id = validate::path_int("user_id", user_id)?;
    let ended_ids = devices.end_all_device_sessions(id).await?;
    // Tokens of the user's sessions of the gateway's own (and tokens not
    // yet used) end by the registry's cut-off, shared as well.
    let cutoff = app.clock.unix();
    deny(
        app,
        Revocation::sessions(ended_ids.clone()).and_user(id, cutoff, Reach::All),
        Source::Admin,
    )
    .await;
    app.sessions.forget();
    app.audit(
        AuditEvent::success("admin.sessions.revoke_all")
            .actor(principal.user_id)
            .subject(id)
            .from(req)
            .detail(json!({"sessions": ended_ids})),
    )
    .await;
    Ok(ended(ALL_ENDED, ended_ids.len()))
}
