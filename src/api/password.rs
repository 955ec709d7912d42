//! Forgotten passwords: a single-use reset link by mail, then the new password.

use http::StatusCode;
use serde::Deserialize;

use super::verification::{email_token_expiry, link_with_token};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::mail::{Mail, MailKind};
use crate::tokens::{EmailPurpose, TokenError};
use serde_json::json;

#[derive(Debug, Deserialize)]
pub(super) struct ForgotBody {
    email: String,
    reset_url: Option<String>,
}

impl Model for ForgotBody {
    const FIELDS: &'static [Field] = &[Field::email("email"), Field::url("reset_url").optional()];
}

#[derive(Debug, Deserialize)]
pub(super) struct ResetBody {
    token: String,
    new_password: String,
}

impl Model for ResetBody {
    const FIELDS: &'static [Field] = &[
        Field::string("token", 0, 4096),
        Field::string("new_password", 8, 128),
    ];
}

pub async fn forgot(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: ForgotBody = validate::json_body(req)?;
    app.check_limit(
        "email_per_ip",
        app.config.rate_limits.email_per_ip,
        &req.client_ip_text(),
    )
    .await?;
    // Unknown addresses get the same answer (deliberate difference 3); the
    // mail goes out in the background, so timing does not tell either.
    if let Some(user) = app.backend.user_by_email(&body.email).await? {
        let token = app
            .tokens
            .mint_email(&user.email, EmailPurpose::PasswordReset)
            .map_err(ApiError::internal)?;
        app.backend
            .store_email_token(
                user.id,
                EmailPurpose::PasswordReset,
                &token,
                email_token_expiry(app),
            )
            .await?;
        let base = body.reset_url.as_deref().unwrap_or(&app.config.app.url);
        let link = link_with_token(
            &format!("{}/reset-password", base.trim_end_matches('/')),
            &token,
        );
        app.mailer.send_in_background(Mail {
            kind: MailKind::PasswordReset,
            to: user.email.clone(),
            username: user.username.clone(),
            link,
        });
        tracing::info!(user_id = user.id, "password reset mailed");
        app.audit(
            AuditEvent::success("password.reset_requested")
                .actor(user.id)
                .from(req),
        )
        .await;
    }
    Ok(Response::message(
        StatusCode::OK,
        "Password reset instructions have been sent to your email.",
    ))
}

pub async fn reset(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: ResetBody = validate::json_body(req)?;
    match app
        .tokens
        .verify_email(&body.token, EmailPurpose::PasswordReset)
    {
        Ok(_) => {}
        Err(TokenError::Scope) => {
            return Err(ApiError::bad_request(
                "Invalid or expired password reset token",
            ));
        }
        Err(_) => return Err(ApiError::bad_request("Invalid or expired reset token")),
    }
    let Some(user) = app
        .backend
        .redeem_password_reset(&body.token, &body.new_password)
        .await?
    else {
        app.audit(
            AuditEvent::failure("password.reset")
                .from(req)
                .detail(json!({ "reason": "unknown, used or expired token" })),
        )
        .await;
        return Err(ApiError::bad_request("Invalid or expired reset token"));
    };
    app.sessions.forget();
    tracing::info!(user_id = user.id, "password reset");
    app.audit(
        AuditEvent::success("password.reset")
            .actor(user.id)
            .from(req),
    )
    .await;
    Ok(Response::message(
        StatusCode::OK,
        "Password has been reset successfully",
    ))
}
