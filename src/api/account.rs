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

#[cfg(test)]
mod in_process {
    //! Sign-up on the in-process kit (SQLite, manual clock).

    use http::{Method, StatusCode};
    use serde_json::json;

    use crate::testkit::Kit;

    fn body(email: &str, username: &str) -> serde_json::Value {
        json!({ "email": email, "username": username, "password": "long enough password" })
    }

    #[tokio::test]
    async fn signup_answers_working_tokens_and_mails_the_link() {
        let kit = Kit::native().await;
        let answer = kit
            .post("/users/signup", body("ada@example.com", "ada"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        assert_eq!(
            answer.json["message"],
            "Verification email sent successfully"
        );
        assert_eq!(answer.json["expires_in"], 3600);
        assert_eq!(answer.json["fallback_url"], serde_json::Value::Null);
        assert!(answer.set_cookies().is_empty(), "no cookies at sign-up");
        let me = kit
            .bearer(
                Method::GET,
                "/users/me/",
                &answer.text("access_token"),
                None,
            )
            .await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.json["email"], "ada@example.com");
        let mails = kit.mails("ada@example.com", "verification", 1).await;
        assert_eq!(mails.len(), 1);
        assert!(mails[0].contains("http://app.test/verify-email?token="));
        let signin = kit.signin("ada", "long enough password").await;
        assert_eq!(signin.json["message"], "Please verify your email first");
    }

    #[tokio::test]
    async fn a_verification_url_is_the_links_base() {
        let kit = Kit::native().await;
        let mut request = body("bob@example.com", "bob");
        request["verification_url"] = json!("https://web.example/confirm");
        let answer = kit.post("/users/signup", request).await;
        assert_eq!(answer.status, StatusCode::OK);
        let mails = kit.mails("bob@example.com", "verification", 1).await;
        assert!(mails[0].contains("https://web.example/confirm?token="));
    }

    #[tokio::test]
    async fn a_taken_address_or_name_is_refused_the_address_first() {
        let kit = Kit::native().await;
        kit.post("/users/signup", body("cyd@example.com", "cyd"))
            .await;
        let cases = [
            (body("CYD@example.com", "other"), "Email already registered"),
            (
                body("new@example.com", "cyd"),
                "Username already registered",
            ),
            (body("cyd@example.com", "cyd"), "Email already registered"),
        ];
        for (request, detail) in cases {
            let answer = kit.post("/users/signup", request).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST);
            assert_eq!(answer.detail(), detail);
        }
    }

    #[tokio::test]
    async fn a_short_password_is_a_422_in_fastapis_shape() {
        let kit = Kit::native().await;
        let answer = kit
            .post(
                "/users/signup",
                json!({ "email": "dan@example.com", "username": "dan", "password": "short" }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.json["detail"][0]["type"], "string_too_short");
        assert_eq!(answer.json["detail"][0]["loc"], json!(["body", "password"]));
    }
}
