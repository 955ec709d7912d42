//! Second factors: TOTP enrolment, its check at sign-in, and removal.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{CredentialCheck, IdentityError, User};
use crate::totp::TotpKey;

/// Whether a user has a TOTP second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpStatus {
    pub enabled: bool,
    /// When it was enrolled (the oldest, if several).
    pub created_at: Option<DateTime<Utc>>,
}

/// A sign-in that may need a second factor.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// Decided by the first factor alone (or by both, when a right code was given).
    Checked(CredentialCheck),
    /// The password is right, the user has TOTP, and no code was given.
    CodeRequired(User),
    /// The password is right, the user has TOTP, and the code is wrong.
    CodeInvalid(User),
}

#[async_trait]
pub trait Mfa: Send + Sync + std::fmt::Debug {
    /// Checks a username-or-e-mail, password and, for a user with TOTP, the
    /// code. Says that a code is required or wrong only once the password is
    /// proven: a wrong password is `Checked(Invalid)` whatever the account has.
    async fn check_credentials(
        &self,
        login: &str,
        password: &str,
        otp: Option<&str>,
    ) -> Result<SignIn, IdentityError>;

    /// The id of the account a sign-in names, if any (for per-account limits).
    async fn account_id(&self, login: &str) -> Result<Option<i64>, IdentityError>;

    /// Whether the user has TOTP. `NotFound` for an unknown user.
    async fn totp_status(&self, user_id: i64) -> Result<TotpStatus, IdentityError>;

    /// Gives the user a TOTP credential with this key.
    async fn enable_totp(&self, user_id: i64, key: &TotpKey) -> Result<(), IdentityError>;

    /// Removes every TOTP credential of the user; `false` when there was none.
    async fn disable_totp(&self, user_id: i64) -> Result<bool, IdentityError>;

    /// Whether `password` is the user's (the first factor only).
    async fn check_password(&self, user_id: i64, password: &str) -> Result<bool, IdentityError>;
}
