//! Sign-in, refresh and sign-out: the device session and its tokens.

use http::StatusCode;
use http::header::SET_COOKIE;
use serde::{Deserialize, Serialize};

use super::auth::{self, Principal};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::cookies::{self, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::{CredentialCheck, MailQuota, RefreshDenied};
use crate::revocation::{Revocation, Source};
use crate::tokens::Subject;
use serde_json::json;

use super::flows::second_factor::check_signin;
use super::flows::session::{EXAMPLE_TOKEN, SessionAnswer, device_info, open_session};
use super::flows::verification_mail::send_verification;

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

/// The login name of a failed sign-in as the trail keeps it: trimmed and
/// cut (it is what the caller typed, not necessarily an account).
fn login_for_audit(login: &str) -> String {
    login.trim().chars().take(100).collect()
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
            check_signin(app, req, mfa, &body.username, &body.password, otp).await?
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
    if app.backend.takes_upstream_refresh_tokens() && body.refresh_token.split('.').count() == 3 {
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

#[cfg(test)]
mod in_process {
    //! Sign-in, refresh and sign-out on the in-process kit (SQLite, manual clock).

    use http::{Method, StatusCode};
    use serde_json::json;

    use crate::testkit::Kit;

    #[tokio::test]
    async fn signin_gives_a_pair_and_the_cookies() {
        let kit = Kit::native().await;
        let user = kit.verified_user("ada").await;
        let answer = kit.signin(&user.email, &user.password).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        assert!(answer.text("access_token").split('.').count() == 3);
        assert!(!answer.text("refresh_token").is_empty());
        assert_eq!(answer.json["expires_in"], 3600);
        assert_eq!(answer.json["message"], serde_json::Value::Null);
        let cookies = answer.set_cookies();
        assert!(
            cookies.iter().any(|c| c.starts_with("access_token=")),
            "{cookies:?}"
        );
        assert!(
            cookies.iter().any(|c| c.starts_with("refresh_token=")),
            "{cookies:?}"
        );
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_user_read_alike() {
        let kit = Kit::native().await;
        let user = kit.verified_user("bob").await;
        let wrong = kit.signin(&user.username, "not the password").await;
        let unknown = kit.signin("nobody", "not the password").await;
        for answer in [&wrong, &unknown] {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(answer.detail(), "Invalid credentials");
        }
    }

    #[tokio::test]
    async fn an_unverified_user_is_sent_to_verify_and_mailed_again() {
        let kit = Kit::native().await;
        let user = kit.signed_up("cyd").await;
        let answer = kit.signin(&user.username, &user.password).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json["access_token"], serde_json::Value::Null);
        assert_eq!(answer.json["message"], "Please verify your email first");
        // The sign-up's mail and the sign-in's.
        assert_eq!(kit.mails(&user.email, "verification", 2).await.len(), 2);
    }

    #[tokio::test]
    async fn refresh_mints_a_new_access_token_until_the_refresh_token_expires() {
        let kit = Kit::native().await;
        let user = kit.verified_user("dan").await;
        kit.clock.advance(5);
        let answer = kit
            .post(
                "/users/refresh-token",
                json!({ "refresh_token": user.refresh_token }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        let fresh = answer.text("access_token");
        assert_ne!(fresh, user.access_token);
        let me = kit.bearer(Method::GET, "/users/me/", &fresh, None).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.json["id"], user.id);

        // A week (JWT_REFRESH_EXP_TIME_MINUTES) later, the refresh token is done.
        kit.clock.advance(7 * 24 * 3600);
        let answer = kit
            .post(
                "/users/refresh-token",
                json!({ "refresh_token": user.refresh_token }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.detail(), "Refresh token expired");
    }

    #[tokio::test]
    async fn the_access_token_expires_with_the_clock() {
        let kit = Kit::native().await;
        let user = kit.verified_user("eve").await;
        kit.clock.advance(3599);
        let me = kit
            .bearer(Method::GET, "/users/me/", &user.access_token, None)
            .await;
        assert_eq!(me.status, StatusCode::OK);
        kit.clock.advance(2);
        let me = kit
            .bearer(Method::GET, "/users/me/", &user.access_token, None)
            .await;
        assert_eq!(me.status, StatusCode::FORBIDDEN);
        assert_eq!(me.detail(), "Invalid token or expired token.");
    }

    #[tokio::test]
    async fn signout_ends_the_session_its_tokens_and_clears_the_cookies() {
        let kit = Kit::native().await;
        let user = kit.verified_user("fay").await;
        let answer = kit
            .bearer(Method::POST, "/users/signout", &user.access_token, None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        assert_eq!(answer.json["message"], "Successfully signed out");
        assert!(
            answer
                .set_cookies()
                .iter()
                .any(|c| c.starts_with("access_token=") && c.contains("Max-Age=0")),
            "{:?}",
            answer.set_cookies()
        );
        let me = kit
            .bearer(Method::GET, "/users/me/", &user.access_token, None)
            .await;
        assert_eq!(me.status, StatusCode::FORBIDDEN);
        assert_eq!(me.detail(), "Invalid token or expired token.");
        let refreshed = kit
            .post(
                "/users/refresh-token",
                json!({ "refresh_token": user.refresh_token }),
            )
            .await;
        assert_eq!(refreshed.status, StatusCode::UNAUTHORIZED);
    }
}
