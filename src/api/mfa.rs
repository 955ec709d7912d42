//! `/auth/mfa/totp`: the caller's TOTP second factor (status, enrolment in
//! two steps, removal), and the one-time code at sign-in.
//!
//! Enrolment: `POST /auth/mfa/totp` makes a fresh key and hands it out (as
//! base32, `otpauth://` URI and QR code) with an enrolment token that seals
//! it; `POST /auth/mfa/totp/confirm` opens the token, checks a code of the
//! key, and only then stores the key with the backend. The key is never
//! taken from the client unsealed.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{self, Principal};
pub(super) use super::flows::second_factor::{CODE_INVALID, CODE_REQUIRED};
use super::flows::second_factor::{count_attempt, user_key};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::schema::Schema;
use crate::http::validate::{self, Field, Model};
use crate::http::{Message, Request, Response};
use crate::identity::IdentityError;
use crate::identity::mfa::Mfa;
use crate::totp::{self, EnrolmentSealer, TotpKey};

/// The feature's name in the 501 answer of backends without it.
pub(super) const FEATURE: &str = "Two-factor authentication";
pub(super) const ALREADY_ENABLED: &str = "TOTP is already enabled";
pub(super) const NOT_ENABLED: &str = "TOTP is not enabled";
pub(super) const BAD_ENROLMENT: &str = "Invalid or expired enrolment token";
pub(super) const BAD_PASSWORD: &str = "Invalid password";
pub(super) const ENABLED: &str = "TOTP enabled";
pub(super) const DISABLED: &str = "TOTP disabled";

fn capability(app: &App) -> Result<&dyn Mfa, ApiError> {
    app.backend
        .mfa()
        .ok_or(ApiError::Identity(IdentityError::Unsupported(FEATURE)))
}

#[derive(Serialize)]
struct StatusOut {
    enabled: bool,
    created_at: Option<String>,
}

pub(super) fn status_schema() -> Schema {
    Schema::object()
        .field("enabled", Schema::boolean())
        .field(
            "created_at",
            Schema::string()
                .format("date-time")
                .nullable()
                .describe("When TOTP was enabled; `null` when it is not."),
        )
        .describe("Whether the caller has a TOTP second factor.")
}

/// `GET /auth/mfa/totp`
pub async fn status(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal { user_id, .. } = auth::require(app, req).await?;
    let mfa = capability(app)?;
    let status = mfa.totp_status(user_id).await?;
    Ok(Response::json(
        StatusCode::OK,
        &StatusOut {
            enabled: status.enabled,
            created_at: status.created_at.map(|t| t.to_rfc3339()),
        },
    ))
}

#[derive(Serialize)]
struct EnrolmentOut {
    secret: String,
    otpauth_uri: String,
    qr_svg: String,
    enrolment_token: String,
    expires_in: i64,
    algorithm: &'static str,
    digits: u8,
    period: u64,
}

pub(super) fn enrolment_schema() -> Schema {
    Schema::object()
        .field(
            "secret",
            Schema::string().describe("The key in base32 (for typing it into an app)."),
        )
        .field(
            "otpauth_uri",
            Schema::string()
                .describe("`otpauth://totp/<APP_NAME>:<e-mail>?secret=...&issuer=<APP_NAME>`"),
        )
        .field(
            "qr_svg",
            Schema::string()
                .describe("An SVG image (`image/svg+xml` text) of a QR code of `otpauth_uri`."),
        )
        .field(
            "enrolment_token",
            Schema::string()
                .describe("Sealed pending key: send it to `/auth/mfa/totp/confirm` with a code."),
        )
        .field(
            "expires_in",
            Schema::integer().describe("Seconds the enrolment token lives."),
        )
        .field("algorithm", Schema::string().describe("`SHA1`"))
        .field("digits", Schema::integer().describe("`6`"))
        .field("period", Schema::integer().describe("`30` (seconds)"))
        .describe("A TOTP enrolment waiting for its confirmation.")
}

fn internal(err: totp::TotpError) -> ApiError {
    ApiError::internal(err)
}

fn sealer(app: &App) -> Result<EnrolmentSealer, ApiError> {
    EnrolmentSealer::new(app.config.jwt.secret.as_bytes()).map_err(internal)
}

/// `POST /auth/mfa/totp`: a fresh key, not stored until confirmed.
pub async fn start(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal { user_id, .. } = auth::require(app, req).await?;
    let mfa = capability(app)?;
    if mfa.totp_status(user_id).await?.enabled {
        return Err(ApiError::bad_request(ALREADY_ENABLED));
    }
    let user = app.sessions.user(app.backend.as_ref(), user_id).await?;
    let key = TotpKey::generate().map_err(internal)?;
    let uri = key
        .uri(&app.config.app.name, &user.email)
        .map_err(internal)?;
    let qr_svg = totp::qr_svg(&uri).map_err(internal)?;
    let expires_at = app.clock.unix() + totp::ENROLMENT_SECONDS;
    let enrolment_token = sealer(app)?
        .seal(user_id, &key, expires_at)
        .map_err(internal)?;
    app.audit(
        AuditEvent::success("mfa.totp.enrolment_started")
            .actor(user_id)
            .from(req),
    )
    .await;
    Ok(Response::json(
        StatusCode::OK,
        &EnrolmentOut {
            secret: key.base32(),
            otpauth_uri: uri,
            qr_svg,
            enrolment_token,
            expires_in: totp::ENROLMENT_SECONDS,
            algorithm: totp::ALGORITHM,
            digits: totp::DIGITS,
            period: totp::PERIOD,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct ConfirmBody {
    enrolment_token: String,
    otp: String,
}

impl Model for ConfirmBody {
    const FIELDS: &'static [Field] = &[
        Field::string("enrolment_token", 1, 4096),
        Field::string("otp", 1, 16),
    ];
}

/// `POST /auth/mfa/totp/confirm`: a right code of the pending key enables it.
pub async fn confirm(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal { user_id, .. } = auth::require(app, req).await?;
    let mfa = capability(app)?;
    let body: ConfirmBody = validate::json_body(req)?;
    count_attempt(app, &user_key(user_id)).await?;
    let failed = |reason: &'static str| {
        AuditEvent::failure("mfa.totp.enrolled")
            .actor(user_id)
            .from(req)
            .detail(json!({ "reason": reason }))
    };
    let Some(key) = sealer(app)?.open(&body.enrolment_token, user_id, app.clock.unix()) else {
        app.audit(failed("enrolment_token")).await;
        return Err(ApiError::bad_request(BAD_ENROLMENT));
    };
    if !key.check(&body.otp, app.clock.unix()).map_err(internal)? {
        app.audit(failed("wrong_code")).await;
        return Err(ApiError::bad_request(CODE_INVALID));
    }
    if mfa.totp_status(user_id).await?.enabled {
        app.audit(failed("already_enabled")).await;
        return Err(ApiError::bad_request(ALREADY_ENABLED));
    }
    mfa.enable_totp(user_id, &key).await?;
    app.audit(
        AuditEvent::success("mfa.totp.enrolled")
            .actor(user_id)
            .from(req),
    )
    .await;
    Ok(Response::json(
        StatusCode::OK,
        &Message { message: ENABLED },
    ))
}

#[derive(Debug, Deserialize)]
pub(super) struct RemoveBody {
    password: String,
}

impl Model for RemoveBody {
    const FIELDS: &'static [Field] = &[Field::string("password", 0, 1024)];
}

/// `DELETE /auth/mfa/totp`: the password again, then TOTP is gone.
pub async fn remove(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal { user_id, .. } = auth::require(app, req).await?;
    let mfa = capability(app)?;
    let body: RemoveBody = validate::json_body(req)?;
    count_attempt(app, &user_key(user_id)).await?;
    if !mfa.totp_status(user_id).await?.enabled {
        return Err(ApiError::status(StatusCode::NOT_FOUND, NOT_ENABLED));
    }
    if !mfa.check_password(user_id, &body.password).await? {
        app.audit(
            AuditEvent::failure("mfa.totp.removed")
                .actor(user_id)
                .from(req)
                .detail(json!({ "reason": "wrong_password" })),
        )
        .await;
        return Err(ApiError::bad_request(BAD_PASSWORD));
    }
    mfa.disable_totp(user_id).await?;
    app.audit(
        AuditEvent::success("mfa.totp.removed")
            .actor(user_id)
            .from(req),
    )
    .await;
    Ok(Response::json(
        StatusCode::OK,
        &Message { message: DISABLED },
    ))
}
