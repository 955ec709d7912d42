//! Forgotten passwords: a single-use reset link by mail, then the new password.

use http::StatusCode;
use serde::Deserialize;

use super::deferred::JobContext;
use super::flows::verification_mail::{link_with_token, send_mail};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::{IdentityError, Internal};
use crate::mail::{Mail, MailKind};
use crate::revocation::{Revocation, Source};
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
    // Unknown addresses get the same answer (deliberate difference 3), in
    // the same time: the address is looked up after the answer, and a known
    // one's token stored and mailed then.
    let requested = AuditEvent::success("password.reset_requested").from(req);
    app.after_answer(|jobs| async move {
        if let Err(err) = mail_reset_link(&jobs, body, requested).await {
            tracing::error!(error = %err, "password reset not mailed");
        }
    })
    .await;
    Ok(Response::message(
        StatusCode::OK,
        "Password reset instructions have been sent to your email.",
    ))
}

/// Stores a reset token for a known address and mails its link; nothing
/// for an unknown one.
async fn mail_reset_link(
    jobs: &JobContext,
    body: ForgotBody,
    requested: AuditEvent,
) -> Result<(), IdentityError> {
    let Some(user) = jobs.backend.user_by_email(&body.email).await? else {
        return Ok(());
    };
    let token = jobs
        .tokens
        .mint_email(&user.email, EmailPurpose::PasswordReset)
        .map_err(|err| IdentityError::Internal(Internal::Token(err)))?;
    jobs.backend
        .store_email_token(
            user.id,
            EmailPurpose::PasswordReset,
            &token,
            jobs.email_token_expiry(),
        )
        .await?;
    tracing::info!(user_id = user.id, "password reset mailed");
    jobs.audit(requested.actor(user.id)).await;
    let base = body.reset_url.as_deref().unwrap_or(&jobs.config.app.url);
    let link = link_with_token(
        &format!("{}/reset-password", base.trim_end_matches('/')),
        &token,
    );
    let mail = Mail {
        kind: MailKind::PasswordReset,
        to: user.email.clone(),
        username: user.username.clone(),
        link,
    };
    send_mail(jobs, &mail).await;
    Ok(())
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
    app.revocations
        .revoke(
            &Revocation::user(user.id, app.clock.unix()),
            Source::PasswordReset,
        )
        .await;
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

#[cfg(test)]
mod in_process {
    //! The password reset on the in-process kit (SQLite, manual clock).

    use http::{Method, StatusCode};
    use serde_json::json;

    use crate::testkit::Kit;

    #[tokio::test]
    async fn a_reset_changes_the_password_once_and_ends_the_old_tokens() {
        let kit = Kit::native().await;
        let user = kit.verified_user("ada").await;
        let answer = kit
            .post("/users/forgot-password", json!({ "email": user.email }))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.json["message"],
            "Password reset instructions have been sent to your email."
        );
        let token = kit.mailed_token(&user.email, "password_reset", 1).await;
        kit.clock.advance(1);
        let reset = json!({ "token": token, "new_password": "a brand new password" });
        let answer = kit.post("/users/reset-password", reset.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        assert_eq!(
            answer.json["message"],
            "Password has been reset successfully"
        );

        // Single use.
        let again = kit.post("/users/reset-password", reset).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(again.detail(), "Invalid or expired reset token");
        // The old password no longer works, the new one does.
        let old = kit.signin(&user.username, &user.password).await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        let new = kit.signin(&user.username, "a brand new password").await;
        assert_eq!(new.status, StatusCode::OK);
        // Tokens minted before the reset are refused.
        let me = kit
            .bearer(Method::GET, "/users/me/", &user.access_token, None)
            .await;
        assert_eq!(me.status, StatusCode::FORBIDDEN);
        assert_eq!(me.detail(), "Invalid token or expired token.");
    }

    #[tokio::test]
    async fn an_unknown_address_answers_alike_and_mails_nothing() {
        let kit = Kit::native().await;
        let answer = kit
            .post(
                "/users/forgot-password",
                json!({ "email": "nobody@example.com" }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            kit.mails("nobody@example.com", "password_reset", 0)
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_verification_token_is_no_reset_token() {
        let kit = Kit::native().await;
        let user = kit.signed_up("bob").await;
        let token = kit.mailed_token(&user.email, "verification", 1).await;
        let answer = kit
            .post(
                "/users/reset-password",
                json!({ "token": token, "new_password": "a brand new password" }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.detail(), "Invalid or expired password reset token");
    }
}
