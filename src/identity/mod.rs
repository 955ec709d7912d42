//! The identity backend: one trait, written against by the api layer, with a
//! native (PostgreSQL) implementation and, in the enterprise build, Keycloak.
//!
//! Backends hold no HTTP plumbing: they speak in users, sessions and tokens,
//! and fail with [`IdentityError`].

pub mod native;

use async_trait::async_trait;

use crate::tokens::EmailPurpose;

/// A user as the contract shows it (`{"username", "email", "id"}`), plus the
/// verification flag the flows need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub is_verified: bool,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password: String,
}

impl NewUser {
    /// Redacts the password in logs.
    pub fn describe(&self) -> String {
        format!("{} <{}>", self.username, self.email)
    }
}

/// An e-mail token to store together with the user it is for.
#[derive(Debug, Clone)]
pub struct PendingToken {
    pub purpose: EmailPurpose,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub password: Option<String>,
    pub is_verified: Option<bool>,
}

/// What a sign-in tells about the device (the legacy `device_sessions` row).
#[derive(Debug, Clone, Default)]
pub struct DeviceInfo {
    pub device_type: Option<String>,
    pub device_name: Option<String>,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// A successful authentication, before the session is recorded.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    /// The session's id: it becomes the tokens' `device_id`.
    pub device_id: String,
}

#[derive(Debug, Clone)]
pub enum CredentialCheck {
    /// Unknown user or wrong password (the caller cannot tell which).
    Invalid,
    /// Right password, e-mail not verified yet.
    Unverified(User),
    Valid(Login),
}

/// Whether another verification mail may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailQuota {
    Granted,
    /// Seconds until the next one may be sent.
    Exhausted {
        retry_after: u64,
    },
}

/// Why a refresh token may not be used any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDenied {
    SessionEnded,
    UserGone,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("Username already registered")]
    UsernameTaken,
    #[error("User not found")]
    NotFound,
    /// A server the backend needs does not answer (named, e.g. "Database").
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

#[async_trait]
pub trait IdentityBackend: Send + Sync + std::fmt::Debug {
    /// Whether the backing store answers (for `GET /ready`).
    async fn ready(&self) -> Result<(), IdentityError>;

    /// Creates an unverified user, and stores `token` with it atomically (the
    /// sign-up's verification link). `EmailTaken` wins over `UsernameTaken`.
    async fn register(
        &self,
        new: NewUser,
        token: Option<PendingToken>,
    ) -> Result<User, IdentityError>;

    /// Checks a username-or-e-mail and password.
    async fn check_credentials(
        &self,
        login: &str,
        password: &str,
    ) -> Result<CredentialCheck, IdentityError>;

    /// A session for a user who proved themself another way (a verification link).
    async fn login_verified(&self, user: &User) -> Result<Login, IdentityError>;

    /// Records the device session of a login, with a digest of its refresh token.
    async fn record_session(
        &self,
        login: &Login,
        device: &DeviceInfo,
        refresh_token: &str,
    ) -> Result<(), IdentityError>;

    /// Ends one session of a user (sign-out).
    async fn end_session(&self, user_id: i64, device_id: &str) -> Result<(), IdentityError>;

    /// True when the session named by a token's `device_id` was ended.
    async fn session_revoked(&self, device_id: &str) -> Result<bool, IdentityError>;

    /// Whether a refresh token of this user and session may still be used.
    async fn check_refresh(
        &self,
        user_id: i64,
        device_id: Option<&str>,
    ) -> Result<Result<(), RefreshDenied>, IdentityError>;

    async fn user_by_id(&self, id: i64) -> Result<Option<User>, IdentityError>;

    /// Looks an address up regardless of case.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, IdentityError>;

    async fn list_users(&self, offset: i64, limit: i64) -> Result<Vec<User>, IdentityError>;

    async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, IdentityError>;

    /// Deletes a user: they can no longer sign in, and their sessions end.
    async fn delete_user(&self, id: i64) -> Result<(), IdentityError>;

    async fn is_admin(&self, id: i64) -> Result<bool, IdentityError>;

    /// Stores a single-use e-mail token that was (about to be) mailed.
    async fn store_email_token(
        &self,
        user_id: i64,
        purpose: EmailPurpose,
        token: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), IdentityError>;

    /// Uses a verification token and marks its user verified, atomically.
    /// `None` when the token is unknown, used or expired.
    async fn redeem_verification(&self, token: &str) -> Result<Option<User>, IdentityError>;

    /// Uses a reset token and sets the new password, atomically; the user's
    /// sessions end. `None` when the token is unknown, used or expired.
    async fn redeem_password_reset(
        &self,
        token: &str,
        new_password: &str,
    ) -> Result<Option<User>, IdentityError>;

    /// Counts a verification mail against the user's limit, if it allows one.
    async fn reserve_verification_mail(&self, user_id: i64) -> Result<MailQuota, IdentityError>;
}
