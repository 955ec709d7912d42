//! Sign-up: an unverified user, a stored verification token, a mail, and
//! working tokens in the answer (clients rely on them).

use http::StatusCode;
use serde::Deserialize;

use super::flows::session::SessionAnswer;
use super::flows::verification_mail::{email_token_expiry, verification_mail};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::{IdentityError, NewUser, PendingToken};
use crate::tokens::{EmailPurpose, Subject};
use serde_json::json;

#[derive(Debug, Deserialize)]
pub(super) struct SignupBody {
    email: String,
    username: String,
    password: String,
    verification_url: Option<String>,
}

impl Model for SignupBody {
    const FIELDS: &'static [Field] = &[
        Field::email("email"),
        Field::string("username", 3, 50),
        Field::string("password", 8, 128),
        Field::url("verification_url").optional(),
    ];
}

pub async fn signup(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: SignupBody = validate::json_body(req)?;
    app.check_limit(
        "signup_per_ip",
        app.config.rate_limits.signup_per_ip,
        &req.client_ip_text(),
    )
    .await?;
    let token = app
        .tokens
        .mint_email(&body.email, EmailPurpose::Verification)
        .map_err(ApiError::internal)?;
    let registered = app
        .backend
        .register(
            NewUser {
                username: body.username,
                email: body.email,
                password: body.password,
            },
            Some(PendingToken {
                purpose: EmailPurpose::Verification,
                token: token.clone(),
                expires_at: email_token_expiry(app),
            }),
        )
        .await;
    let user = match registered {
        Ok(user) => user,
        Err(err) => {
            if matches!(
                err,
                IdentityError::EmailTaken | IdentityError::UsernameTaken
            ) {
                app.audit(
                    AuditEvent::failure("signup")
                        .from(req)
                        .detail(json!({ "reason": err.to_string() })),
                )
                .await;
            }
            return Err(err.into());
        }
    };
    tracing::info!(user_id = user.id, "signed up");
    app.audit(AuditEvent::success("signup").actor(user.id).from(req))
        .await;
    app.mailer.send_in_background(verification_mail(
        &app.config,
        &user,
        body.verification_url.as_deref(),
        &token,
    ));
    let subject = Subject {
        user_id: user.id,
        email: Some(user.email.clone()),
        device_id: None,
        upstream_refresh: None,
        roles: None,
    };
    Ok(Response::json(
        StatusCode::OK,
        &SessionAnswer {
            access_token: Some(
                app.tokens
                    .mint_access(&subject)
                    .map_err(ApiError::internal)?,
            ),
            refresh_token: Some(
                app.tokens
                    .mint_refresh(&subject)
                    .map_err(ApiError::internal)?,
            ),
            expires_in: Some(app.tokens.access_seconds()),
            fallback_url: None,
            message: Some("Verification email sent successfully"),
        },
    ))
}
