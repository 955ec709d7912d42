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
mod in_process {
    //! E-mail verification on the in-process kit (SQLite, manual clock).

    use http::{Method, StatusCode};
    use serde_json::json;

    use crate::testkit::Kit;

    #[tokio::test]
    async fn the_mailed_token_verifies_once_and_signs_in() {
        let kit = Kit::native().await;
        let user = kit.signed_up("ada").await;
        let token = kit.mailed_token(&user.email, "verification", 1).await;
        let answer = kit
            .post(
                "/users/verify-email",
                json!({ "token": token, "redirect_url": "https://web.example/home" }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        assert_eq!(answer.json["message"], "Email verified successfully");
        assert_eq!(answer.json["verified"], true);
        assert_eq!(answer.json["redirect_url"], "https://web.example/home");
        assert_eq!(answer.set_cookies().len(), 2);
        let me = kit
            .bearer(
                Method::GET,
                "/users/me/",
                &answer.text("access_token"),
                None,
            )
            .await;
        assert_eq!(me.json["username"], "ada");
        let signin = kit.signin("ada", &user.password).await;
        assert_eq!(signin.json["message"], serde_json::Value::Null);
        assert!(!signin.text("access_token").is_empty());

        let again = kit
            .post("/users/verify-email", json!({ "token": token }))
            .await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(again.detail(), "Invalid or expired reset token");
    }

    #[tokio::test]
    async fn a_token_older_than_its_lifetime_is_refused() {
        let kit = Kit::native_with(&[("JWT_EMAIL_EXP_TIME_MINUTES", "10")]).await;
        let user = kit.signed_up("bob").await;
        let token = kit.mailed_token(&user.email, "verification", 1).await;
        kit.clock.advance(11 * 60);
        let answer = kit
            .post("/users/verify-email", json!({ "token": token }))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.detail(), "Invalid or expired reset token");
    }

    #[tokio::test]
    async fn resend_mails_until_the_limit_then_says_when() {
        let kit = Kit::native().await;
        let user = kit.signed_up("cyd").await;
        let resend = json!({ "email": user.email });
        // The sign-up's mail counts: two more, then the limit.
        for _ in 0..2 {
            let answer = kit.post("/users/resend-verification", resend.clone()).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(
                answer.json["message"],
                "Verification email sent successfully"
            );
            assert_eq!(answer.json["retry_after"], serde_json::Value::Null);
        }
        let answer = kit.post("/users/resend-verification", resend.clone()).await;
        assert_eq!(answer.json["message"], "Too many verification attempts");
        assert_eq!(answer.json["retry_after"], 3600);
        assert_eq!(kit.mails(&user.email, "verification", 3).await.len(), 3);
        // An hour after the last one, there is room again.
        kit.clock.advance(3600);
        let answer = kit.post("/users/resend-verification", resend).await;
        assert_eq!(
            answer.json["message"],
            "Verification email sent successfully"
        );
    }

    #[tokio::test]
    async fn a_verified_address_is_not_mailed_again() {
        let kit = Kit::native().await;
        let user = kit.verified_user("dan").await;
        let answer = kit
            .post("/users/resend-verification", json!({ "email": user.email }))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.detail(), "Email already verified");
    }
}
