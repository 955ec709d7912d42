//! E-mail verification: the link mailed at sign-up, sign-in and on request,
//! and its single-use redemption (which also signs the user in).

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::deferred::JobContext;
use super::session::{device_info, open_session};
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::config::Config;
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::{IdentityError, MailQuota, User};
use crate::mail::{Mail, MailKind};
use crate::tokens::{EmailPurpose, TokenError};
use serde_json::json;

pub(super) const INVALID_OR_EXPIRED: &str = "Invalid or expired reset token";

#[derive(Debug, Deserialize)]
pub(super) struct VerifyBody {
    token: String,
    redirect_url: Option<String>,
}

impl Model for VerifyBody {
    const FIELDS: &'static [Field] = &[
        Field::string("token", 0, 4096),
        Field::url("redirect_url").optional(),
    ];
}

#[derive(Debug, Deserialize)]
pub(super) struct ResendBody {
    email: String,
    verification_url: Option<String>,
}

impl Model for ResendBody {
    const FIELDS: &'static [Field] = &[
        Field::email("email"),
        Field::url("verification_url").optional(),
    ];
}

/// `<base>?token=<token>` (or `&token=` when the base already has a query).
pub fn link_with_token(base: &str, token: &str) -> String {
    let joiner = if base.contains('?') { '&' } else { '?' };
    format!("{base}{joiner}token={token}")
}

/// Counts a verification mail toward the resend limit and, when the limit
/// allows it, mints, stores and mails a token after the answer (so that the
/// answer takes the time of an unknown address's, deliberate difference 3).
/// Over the limit nothing is sent.
pub async fn send_verification(
    app: &App,
    user: &User,
    verification_url: Option<&str>,
) -> Result<MailQuota, ApiError> {
    let quota = app.backend.reserve_verification_mail(user.id).await?;
    if quota != MailQuota::Granted {
        return Ok(quota);
    }
    let user = user.clone();
    let verification_url = verification_url.map(str::to_string);
    app.after_answer(|jobs| async move {
        if let Err(err) = mail_verification_link(&jobs, &user, verification_url.as_deref()).await {
            tracing::error!(user_id = user.id, error = %err, "verification link not mailed");
        }
    })
    .await;
    Ok(MailQuota::Granted)
}

/// Mints and stores a verification token, then mails its link.
async fn mail_verification_link(
    jobs: &JobContext,
    user: &User,
    verification_url: Option<&str>,
) -> Result<(), IdentityError> {
    // The answer came from the store's copy of the verified flag: a change
    // made in the identity provider and not seen yet sends nothing.
    if !jobs.backend.still_unverified(user).await? {
        tracing::info!(
            user_id = user.id,
            "verification mail not sent: the address is verified (or the user disabled) at the identity provider"
        );
        return Ok(());
    }
    let token = jobs
        .tokens
        .mint_email(&user.email, EmailPurpose::Verification)
        .map_err(|err| IdentityError::Internal(err.to_string()))?;
    jobs.backend
        .store_email_token(
            user.id,
            EmailPurpose::Verification,
            &token,
            jobs.email_token_expiry(),
        )
        .await?;
    send_mail(
        jobs,
        &verification_mail(&jobs.config, user, verification_url, &token),
    )
    .await;
    Ok(())
}

/// Sends a mail from a job (already in the background), logging a failure.
pub(super) async fn send_mail(jobs: &JobContext, mail: &Mail) {
    if let Err(err) = jobs.mailer.send(mail).await {
        tracing::error!(kind = mail.kind.label(), error = %err, "mail could not be sent");
    }
}

/// The mail of a verification link (`<verification_url or APP_URL/verify-email>?token=`).
pub fn verification_mail(
    config: &Config,
    user: &User,
    verification_url: Option<&str>,
    token: &str,
) -> Mail {
    let default_base = format!("{}/verify-email", config.app.url);
    let base = verification_url.unwrap_or(&default_base);
    Mail {
        kind: MailKind::Verification,
        to: user.email.clone(),
        username: user.username.clone(),
        link: link_with_token(base, token),
    }
}

pub fn email_token_expiry(app: &App) -> chrono::DateTime<chrono::Utc> {
    app.jobs.email_token_expiry()
}

#[derive(Serialize)]
pub(super) struct VerifiedAnswer {
    message: &'static str,
    verified: bool,
    redirect_url: Option<String>,
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

impl Documented for VerifiedAnswer {
    const NAME: &'static str = "VerifiedAnswer";

    fn schema() -> Schema {
        Schema::object()
            .field("message", Schema::string())
            .field("verified", Schema::boolean())
            .field(
                "redirect_url",
                Schema::string()
                    .nullable()
                    .describe("The request's `redirect_url`, normalised, or `null`."),
            )
            .field("access_token", Schema::string())
            .field("refresh_token", Schema::string())
            .field("expires_in", Schema::integer())
            .describe("The address is verified and the user signed in (cookies set too).")
    }

    fn example() -> Self {
        Self {
            message: "Email verified successfully",
            verified: true,
            redirect_url: Some("https://app.example/welcome".into()),
            access_token: super::session::EXAMPLE_TOKEN.into(),
            refresh_token: super::session::EXAMPLE_REFRESH_TOKEN.into(),
            expires_in: 3600,
        }
    }
}

pub async fn verify_email(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: VerifyBody = validate::json_body(req)?;
    match app
        .tokens
        .verify_email(&body.token, EmailPurpose::Verification)
    {
        Ok(_) => {}
        Err(TokenError::Scope) => return Err(ApiError::bad_request("Invalid verification token")),
        Err(_) => return Err(ApiError::bad_request(INVALID_OR_EXPIRED)),
    }
    let Some(user) = app.backend.redeem_verification(&body.token).await? else {
        app.audit(
            AuditEvent::failure("email.verify")
                .from(req)
                .detail(json!({ "reason": "unknown, used or expired token" })),
        )
        .await;
        return Err(ApiError::bad_request(INVALID_OR_EXPIRED));
    };
    tracing::info!(user_id = user.id, "e-mail verified");
    app.audit(AuditEvent::success("email.verify").actor(user.id).from(req))
        .await;
    let login = app.backend.login_verified(&user).await?;
    let tokens = open_session(app, &login, &device_info(req)).await?;
    let mut response = Response::json(
        StatusCode::OK,
        &VerifiedAnswer {
            message: "Email verified successfully",
            verified: true,
            redirect_url: body.redirect_url,
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires_in: tokens.expires_in,
        },
    );
    tokens.set_cookies(app, &mut response);
    Ok(response)
}

#[derive(Serialize)]
pub(super) struct ResendAnswer {
    message: &'static str,
    retry_after: Option<u64>,
}

impl Documented for ResendAnswer {
    const NAME: &'static str = "ResendAnswer";

    fn schema() -> Schema {
        Schema::object()
            .field(
                "message",
                Schema::string().describe(
                    "`Verification email sent successfully`, or `Too many verification attempts` when the mail limit is reached.",
                ),
            )
            .field(
                "retry_after",
                Schema::integer()
                    .nullable()
                    .describe("Seconds until another mail may be sent; `null` when one was sent."),
            )
    }

    fn example() -> Self {
        Self {
            message: "Too many verification attempts",
            retry_after: Some(3542),
        }
    }
}

pub async fn resend(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body: ResendBody = validate::json_body(req)?;
    app.check_limit(
        "email_per_ip",
        app.config.rate_limits.email_per_ip,
        &req.client_ip_text(),
    )
    .await?;
    // Unknown addresses answer exactly as known ones (deliberate difference
    // 3), limit included, and do the same work before the answer: the
    // gateway's own store is asked for both (never a remote call), and
    // their mails (never sent) are counted by a digest of the address.
    let quota = match app.backend.user_by_email_stored(&body.email).await? {
        None => app.backend.reserve_address_mail(&body.email).await?,
        Some(user) if user.is_verified => {
            return Err(ApiError::bad_request("Email already verified"));
        }
        Some(user) => send_verification(app, &user, body.verification_url.as_deref()).await?,
    };
    Ok(Response::json(
        StatusCode::OK,
        &match quota {
            MailQuota::Granted => ResendAnswer {
                message: "Verification email sent successfully",
                retry_after: None,
            },
            MailQuota::Exhausted { retry_after } => ResendAnswer {
                message: "Too many verification attempts",
                retry_after: Some(retry_after),
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::link_with_token;

    #[test]
    fn links() {
        assert_eq!(
            link_with_token("https://app.example/verify", "t"),
            "https://app.example/verify?token=t"
        );
        assert_eq!(
            link_with_token("https://app.example/verify?lang=en", "t"),
            "https://app.example/verify?lang=en&token=t"
        );
    }
}
