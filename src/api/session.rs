//! Sign-in, refresh and sign-out: the device session and its tokens.

use http::StatusCode;
use http::header::SET_COOKIE;
use serde::{Deserialize, Serialize};

use super::auth::{self, Principal};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::config::{Backend, TokenFormat};
use crate::http::cookies::{self, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::{CredentialCheck, DeviceInfo, Login, MailQuota, RefreshDenied};
use crate::revocation::{Revocation, Source};
use crate::tokens::Subject;
use serde_json::json;

use super::verification::send_verification;

#[derive(Debug, Deserialize)]
pub(super) struct SigninBody {
    username: String,
    password: String,
    fallback_url: Option<String>,
    /// The one-time code of a user with TOTP (ignored by backends without it).
    otp: Option<String>,
}

impl Model for SigninBody {
    const FIELDS: &'static [Field] = &[
        Field::string("username", 0, 255),
        Field::string("password", 0, 1024),
        Field::string("fallback_url", 0, 2083).optional(),
        Field::string("otp", 0, 16).optional(),
    ];
}

#[derive(Debug, Deserialize)]
pub(super) struct RefreshBody {
    refresh_token: String,
}

impl Model for RefreshBody {
    const FIELDS: &'static [Field] = &[Field::string("refresh_token", 0, 8192)];
}

/// The answer of sign-up, sign-in (`SessionAnswer` keys are always all present).
#[derive(Debug, Serialize)]
pub struct SessionAnswer {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub fallback_url: Option<String>,
    pub message: Option<&'static str>,
}

/// An access token as the examples show it (not a working one).
pub(super) const EXAMPLE_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjo0Miwic2NvcGUiOiJhY2Nlc3NfdG9rZW4ifQ.c2lnbmF0dXJl";
/// A refresh token (a compact JWE) as the examples show it.
pub(super) const EXAMPLE_REFRESH_TOKEN: &str =
    "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..aXY.Y2lwaGVydGV4dA.dGFn";

impl Documented for SessionAnswer {
    const NAME: &'static str = "SessionAnswer";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "access_token",
                Schema::string()
                    .nullable()
                    .describe("HS256 JWT, scope `access_token`; `null` while the address is not verified (sign-in)."),
            )
            .field(
                "refresh_token",
                Schema::string()
                    .nullable()
                    .describe("JWE (`dir`/`A256GCM`) wrapping a refresh JWT; `null` like `access_token`."),
            )
            .field(
                "expires_in",
                Schema::integer()
                    .nullable()
                    .describe("Seconds the access token lives (`JWT_EXP_TIME_MINUTES`)."),
            )
            .field(
                "fallback_url",
                Schema::string()
                    .nullable()
                    .describe("Where to send an unverified user (sign-in); otherwise `null`."),
            )
            .field(
                "message",
                Schema::string().nullable().describe(
                    "`Verification email sent successfully` (sign-up), `Please verify your email first` (unverified sign-in) or `null`.",
                ),
            )
            .describe("The answer of sign-up and sign-in; every key is always present.")
    }

    fn example() -> Self {
        Self {
            access_token: Some(EXAMPLE_TOKEN.into()),
            refresh_token: Some(EXAMPLE_REFRESH_TOKEN.into()),
            expires_in: Some(3600),
            fallback_url: None,
            message: Some("Verification email sent successfully"),
        }
    }
}

/// A freshly minted pair for a recorded device session.
#[derive(Debug)]
pub struct SessionTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl SessionTokens {
    /// Sets both cookies on a response.
    pub fn set_cookies(&self, app: &App, response: &mut Response) {
        let settings = &app.config.cookies;
        let lifetimes = app.tokens.lifetimes();
        let pairs = [
            (
                ACCESS_COOKIE,
                &self.access_token,
                lifetimes.access.as_secs(),
            ),
            (
                REFRESH_COOKIE,
                &self.refresh_token,
                lifetimes.refresh.as_secs(),
            ),
        ];
        for (name, value, max_age) in pairs {
            if let Some(header) = cookies::set(name, value, max_age, settings) {
                response.headers.append(SET_COOKIE, header);
            }
        }
    }
}

/// The login name of a failed sign-in as the trail keeps it: trimmed and
/// cut (it is what the caller typed, not necessarily an account).
fn login_for_audit(login: &str) -> String {
    login.trim().chars().take(100).collect()
}

/// What the request tells about the device (legacy `device_sessions` columns).
pub fn device_info(req: &Request) -> DeviceInfo {
    DeviceInfo {
        device_type: req.header("sec-ch-ua-platform").map(str::to_string),
        device_name: req.header("sec-ch-ua").map(str::to_string),
        user_agent: req.header("user-agent").map(str::to_string),
        ip_address: req.client_ip.map(|ip| ip.to_string()),
    }
}

/// Mints the pair for a login (or hands out the provider's own, with
/// `TOKEN_FORMAT=keycloak`) and records its device session.
pub async fn open_session(
    app: &App,
    login: &Login,
    device: &DeviceInfo,
) -> Result<SessionTokens, ApiError> {
    if app.config.backend == Backend::Keycloak
        && app.config.keycloak.token_format == TokenFormat::Keycloak
        && let Some(upstream) = &login.upstream
    {
        app.backend
            .record_session(login, device, &upstream.refresh_token)
            .await?;
        return Ok(SessionTokens {
            access_token: upstream.access_token.clone(),
            refresh_token: upstream.refresh_token.clone(),
            expires_in: upstream.expires_in,
        });
    }
    let subject = Subject {
        user_id: login.user.id,
        email: Some(login.user.email.clone()),
        device_id: Some(login.device_id.clone()),
        upstream_refresh: login.upstream.as_ref().map(|u| u.refresh_token.clone()),
        roles: login.roles.clone(),
    };
    let access_token = app
        .tokens
        .mint_access(&subject)
        .map_err(ApiError::internal)?;
    let refresh_token = app
        .tokens
        .mint_refresh(&subject)
        .map_err(ApiError::internal)?;
    app.backend
        .record_session(login, device, &refresh_token)
        .await?;
    Ok(SessionTokens {
        access_token,
        refresh_token,
        expires_in: app.tokens.access_seconds(),
    })
}

pub async fn signin(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: SigninBody = validate::json_body(req)?;
    app.check_limit(
        "signin_per_ip",
        app.config.rate_limits.signin_per_ip,
        &req.client_ip_text(),
    )
    .await?;
    app.check_limit(
        "signin_per_account",
        app.config.rate_limits.signin_per_account,
        &body.username.trim().to_lowercase(),
    )
    .await?;
    let check = match app.backend.mfa() {
        Some(mfa) => {
            let otp = body.otp.as_deref();
            super::mfa::check_signin(app, req, mfa, &body.username, &body.password, otp).await?
        }
        None => {
            app.backend
                .check_credentials(&body.username, &body.password)
                .await?
        }
    };
    match check {
        CredentialCheck::Invalid => {
            tracing::info!(outcome = "invalid", "sign-in");
            app.audit(AuditEvent::failure("signin").from(req).detail(json!({
                "reason": "invalid credentials",
                "login": login_for_audit(&body.username),
            })))
            .await;
            app.metrics.signins.with_label_values(&["invalid"]).inc();
            Err(ApiError::status(
                StatusCode::UNAUTHORIZED,
                "Invalid credentials",
            ))
        }
        CredentialCheck::Unverified(user) => {
            tracing::info!(outcome = "unverified", user_id = user.id, "sign-in");
            app.metrics.signins.with_label_values(&["unverified"]).inc();
            app.audit(
                AuditEvent::failure("signin")
                    .actor(user.id)
                    .from(req)
                    .detail(json!({ "reason": "e-mail not verified" })),
            )
            .await;
            // Over the limit no mail goes out; the answer is the same.
            if let MailQuota::Exhausted { .. } = send_verification(app, &user, None).await? {
                tracing::info!(
                    user_id = user.id,
                    "verification mail limit reached: none sent"
                );
            }
            Ok(Response::json(
                StatusCode::OK,
                &SessionAnswer {
                    access_token: None,
                    refresh_token: None,
                    expires_in: None,
                    fallback_url: Some(
                        body.fallback_url
                            .unwrap_or_else(|| "/verify-email".to_string()),
                    ),
                    message: Some("Please verify your email first"),
                },
            ))
        }
        CredentialCheck::Valid(login) => {
            tracing::info!(outcome = "success", user_id = login.user.id, "sign-in");
            app.metrics.signins.with_label_values(&["success"]).inc();
            app.audit(
                AuditEvent::success("signin")
                    .actor(login.user.id)
                    .from(req)
                    .detail(json!({ "session": login.device_id })),
            )
            .await;
            let tokens = open_session(app, &login, &device_info(req)).await?;
            let mut response = Response::json(
                StatusCode::OK,
                &SessionAnswer {
                    access_token: Some(tokens.access_token.clone()),
                    refresh_token: Some(tokens.refresh_token.clone()),
                    expires_in: Some(tokens.expires_in),
                    fallback_url: None,
                    message: None,
                },
            );
            tokens.set_cookies(app, &mut response);
            Ok(response)
        }
    }
}

#[derive(Serialize)]
pub(super) struct RefreshAnswer {
    access_token: String,
    expires_in: u64,
}

impl Documented for RefreshAnswer {
    const NAME: &'static str = "RefreshAnswer";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "access_token",
                Schema::string().describe("A new access token of the same session."),
            )
            .field("expires_in", Schema::integer())
    }

    fn example() -> Self {
        Self {
            access_token: EXAMPLE_TOKEN.into(),
            expires_in: 3600,
        }
    }
}

/// The answer of sign-out.
#[derive(Serialize)]
pub(super) struct SignedOut {
    message: &'static str,
    status: &'static str,
}

const SIGNED_OUT: SignedOut = SignedOut {
    message: "Successfully signed out",
    status: "success",
};

impl Documented for SignedOut {
    const NAME: &'static str = "SignedOut";

    fn schema() -> Schema {
        Schema::object()
            .field("message", Schema::string())
            .field("status", Schema::string())
    }

    fn example() -> Self {
        SIGNED_OUT
    }
}

pub async fn refresh(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: RefreshBody = validate::json_body(req)?;
    // A provider's own refresh token is a JWT (3 parts); the legacy one a JWE (5).
    if app.config.backend == Backend::Keycloak && body.refresh_token.split('.').count() == 3 {
        return match app.backend.refresh_upstream(&body.refresh_token).await? {
            Ok(tokens) => Ok(Response::json(
                StatusCode::OK,
                &RefreshAnswer {
                    access_token: tokens.access_token,
                    expires_in: tokens.expires_in,
                },
            )),
            Err(_) => Err(ApiError::status(
                StatusCode::UNAUTHORIZED,
                "Invalid refresh token",
            )),
        };
    }
    let mut claims = app
        .tokens
        .verify_refresh(&body.refresh_token)
        .map_err(|err| {
            tracing::debug!(reason = err.reason(), "refresh token refused");
            app.metrics
                .token_rejections
                .with_label_values(&["refresh", err.reason()])
                .inc();
            let detail = match err {
                crate::tokens::TokenError::Expired => "Refresh token expired",
                _ => "Invalid refresh token",
            };
            ApiError::status(StatusCode::UNAUTHORIZED, detail)
        })?;
    // A refresh token minted before sessions had UUIDs names Keycloak's
    // sid: the new access token carries the session's UUID.
    claims.device_id = auth::session_uuid(app, claims.user_id, claims.device_id).await?;
    let refreshed = match app.backend.refresh(&claims).await? {
        Ok(refreshed) => refreshed,
        Err(RefreshDenied::SessionEnded) => {
            return Err(ApiError::status(
                StatusCode::UNAUTHORIZED,
                "Session has ended",
            ));
        }
        Err(RefreshDenied::UserGone) => {
            return Err(ApiError::status(
                StatusCode::UNAUTHORIZED,
                "User is no longer active",
            ));
        }
    };
    let access_token = app
        .tokens
        .mint_access(&Subject {
            user_id: claims.user_id,
            email: claims.email,
            device_id: claims.device_id,
            upstream_refresh: None,
            roles: refreshed.roles,
        })
        .map_err(ApiError::internal)?;
    Ok(Response::json(
        StatusCode::OK,
        &RefreshAnswer {
            access_token,
            expires_in: app.tokens.access_seconds(),
        },
    ))
}

pub async fn signout(app: &App, req: &Request) -> Result<Response, ApiError> {
    let Principal {
        user_id, device_id, ..
    } = auth::require(app, req).await?;
    if let Some(device_id) = device_id.as_deref() {
        app.backend.end_session(user_id, device_id).await?;
        app.revocations
            .revoke(
                &Revocation::sessions([device_id.to_string()]),
                Source::Signout,
            )
            .await;
    }
    app.audit(
        AuditEvent::success("signout")
            .actor(user_id)
            .from(req)
            .detail(json!({ "session": device_id })),
    )
    .await;
    let mut response = Response::json(StatusCode::OK, &SIGNED_OUT);
    for name in [ACCESS_COOKIE, REFRESH_COOKIE] {
        if let Some(header) = cookies::clear(name, &app.config.cookies) {
            response.headers.append(SET_COOKIE, header);
        }
    }
    Ok(response)
}
