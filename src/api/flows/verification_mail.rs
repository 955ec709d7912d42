//! The mails that carry an e-mail token (verification, password reset):
//! minted and stored after the answer, as sign-up, sign-in, resend and
//! reset all send them.

use crate::api::deferred::JobContext;
use crate::api::{ApiError, App};
use crate::config::Config;
use crate::identity::{IdentityError, Internal, MailQuota, User};
use crate::mail::{Mail, MailKind};
use crate::tokens::EmailPurpose;

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
        .map_err(|err| IdentityError::Internal(Internal::Token(err)))?;
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
pub async fn send_mail(jobs: &JobContext, mail: &Mail) {
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
