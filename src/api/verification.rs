//! E-mail verification: the link mailed at sign-up, sign-in and on request,
//! and its single-use redemption (which also signs the user in).

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::flows::session::{EXAMPLE_REFRESH_TOKEN, EXAMPLE_TOKEN, device_info, open_session};
use super::flows::verification_mail::send_verification;
use super::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{self, Field, Model};
use crate::http::{Request, Response};
use crate::identity::MailQuota;
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
            access_token: EXAMPLE_TOKEN.into(),
            refresh_token: EXAMPLE_REFRESH_TOKEN.into(),
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
    use crate::api::flows::verification_mail::link_with_token;

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
