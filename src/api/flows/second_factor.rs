//! The second factor at sign-in, and the quota of one-time codes per
//! account that sign-in and the MFA handlers share.

use http::StatusCode;
use serde_json::json;

use crate::api::{ApiError, App};
use crate::audit::AuditEvent;
use crate::http::Request;
use crate::identity::CredentialCheck;
use crate::identity::mfa::{Mfa, SignIn};

pub const CODE_REQUIRED: &str = "One-time code required";
pub const CODE_INVALID: &str = "Invalid one-time code";

/// The limiter's name for one-time codes (and MFA removals) per account.
const LIMIT: &str = "otp_per_account";

/// Counts one attempt against the account's one-time-code quota.
pub async fn count_attempt(app: &App, key: &str) -> Result<(), ApiError> {
    app.check_limit(LIMIT, app.config.rate_limits.otp_per_account, key)
        .await
}

pub fn user_key(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// Sign-in with a backend that has second factors: a sign-in carrying a
/// code counts against the account's quota first; a user with TOTP gets
/// "code required" or "code wrong" only after the password is proven.
pub async fn check_signin(
    app: &App,
    req: &Request,
    mfa: &dyn Mfa,
    login: &str,
    password: &str,
    otp: Option<&str>,
) -> Result<CredentialCheck, ApiError> {
    let otp = otp.map(str::trim).filter(|code| !code.is_empty());
    if otp.is_some() {
        let key = match mfa.account_id(login).await? {
            Some(id) => user_key(id),
            None => format!("login:{}", login.trim().to_lowercase()),
        };
        count_attempt(app, &key).await?;
    }
    let (user, reason, detail) = match mfa.check_credentials(login, password, otp).await? {
        SignIn::Checked(check) => return Ok(check),
        SignIn::CodeRequired(user) => (user, "otp_required", CODE_REQUIRED),
        SignIn::CodeInvalid(user) => (user, "otp_invalid", CODE_INVALID),
    };
    tracing::info!(outcome = reason, user_id = user.id, "sign-in");
    app.metrics.signins.with_label_values(&[reason]).inc();
    app.audit(
        AuditEvent::failure("mfa.totp.signin")
            .actor(user.id)
            .from(req)
            .detail(json!({ "reason": reason })),
    )
    .await;
    Err(ApiError::status(StatusCode::UNAUTHORIZED, detail))
}
