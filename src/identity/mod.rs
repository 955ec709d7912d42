//! The identity backend: one trait, written against by the api layer, with a
//! native (PostgreSQL) implementation and, in the enterprise build, Keycloak.
//!
//! Backends hold no HTTP plumbing: they speak in users, sessions and tokens,
//! and fail with [`IdentityError`].
//!
//! Imports: `store`, `tokens`, `totp`, `password`, `revocation` (what a
//! logout or an admin event ends), `audit` (Keycloak's admin events
//! recorded), `redis_conn`, `config`, `clock`, `metrics`. Never the api or
//! http: backends hold no HTTP plumbing.

mod backend;
mod db_error;
pub mod deadline;
pub mod devices;
#[cfg(feature = "keycloak")]
pub mod keycloak;
pub mod logout;
pub mod mfa;
pub mod native;
pub mod sso;

pub use backend::{Credentials, EmailTokens, IdentityBackend, Roles, Sessions, Users};
pub use db_error::db_error;

use crate::tokens::{EmailPurpose, SessionClaims};

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

/// Tokens an upstream identity provider (Keycloak) issued for a session.
#[derive(Clone)]
pub struct UpstreamTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A successful authentication, before the session is recorded.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: User,
    /// The session's id, a UUID: it becomes the tokens' `device_id`.
    pub device_id: String,
    /// The upstream session's tokens, when an upstream holds the session.
    pub upstream: Option<UpstreamTokens>,
    /// The upstream's own id of the session (Keycloak's `sid`), when it has one.
    pub upstream_session: Option<String>,
    /// The user's roles as the upstream granted them for this session
    /// (keycloak mode); they go into the access token.
    pub roles: Option<Vec<String>>,
}

/// A refresh that went through.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    /// The user's roles as the upstream grants them now (keycloak mode):
    /// role changes take effect at the next refresh.
    pub roles: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum CredentialCheck {
    /// Unknown user or wrong password (the caller cannot tell which).
    Invalid,
    /// Right password, e-mail not verified yet.
    Unverified(User),
    Valid(Login),
}

/// What a presented token says about its session, for revocation checks.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef<'a> {
    pub user_id: i64,
    pub device_id: Option<&'a str>,
    /// The token's `iat`, in seconds.
    pub issued_at: Option<i64>,
    /// An access token (a refresh token otherwise): a change of the user's
    /// roles refuses access tokens issued before it, not refresh tokens.
    pub access: bool,
}

impl<'a> SessionRef<'a> {
    pub fn of(claims: &'a SessionClaims) -> Self {
        Self {
            user_id: claims.user_id,
            device_id: claims.device_id.as_deref(),
            issued_at: claims.iat.map(|iat| iat as i64),
            access: claims.scope.as_deref() != Some(crate::tokens::REFRESH_SCOPE),
        }
    }
}

/// Limits of the verification mails (the legacy resend rule).
#[derive(Debug, Clone, Copy)]
pub struct MailLimit {
    pub count: u32,
    pub window: std::time::Duration,
}

impl MailLimit {
    /// The legacy rule: at most `count` mails within `window` of the last
    /// one. Given the stored count and time of the last mail, returns the
    /// count to store if one more may go out now, or how long to wait.
    pub fn next_attempt(
        &self,
        attempts: i32,
        last_sent: Option<chrono::NaiveDateTime>,
        now: chrono::NaiveDateTime,
    ) -> Result<i32, MailQuota> {
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::hours(1));
        match last_sent.filter(|sent| now - *sent < window) {
            Some(sent) if i64::from(attempts) >= i64::from(self.count) => {
                let left = (window - (now - sent)).num_seconds().max(1);
                Err(MailQuota::Exhausted {
                    retry_after: u64::try_from(left).unwrap_or(1),
                })
            }
            Some(_) => Ok(attempts.saturating_add(1)),
            None => Ok(1),
        }
    }
}

/// When old rows were last removed: at most once per [`Pruning::EVERY`]
/// seconds, in the background.
#[derive(Debug, Default)]
pub struct Pruning {
    next: std::sync::atomic::AtomicI64,
}

impl Pruning {
    /// Seconds between two prunings.
    pub const EVERY: i64 = 60;

    /// True (once) when a pruning is due at `now` (Unix seconds).
    pub fn due(&self, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + Self::EVERY,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
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

/// What failed inside a backend, kept with its cause for the log; a client
/// only ever reads "Internal Server Error".
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// The store answered an error that is not about its availability.
    #[error("database error {code}")]
    Database {
        code: String,
        #[source]
        source: sqlx::Error,
    },
    /// A token could not be made.
    #[error("token: {0}")]
    Token(#[from] crate::tokens::TokenError),
    /// Keycloak refused what it should have taken (a user, a password).
    #[error("Keycloak refused {what}: {detail}")]
    KeycloakRefused { what: &'static str, detail: String },
    /// Data that breaks an invariant (an id that is not a UUID, a record
    /// that should be there).
    #[error("{0}")]
    Inconsistent(&'static str),
    /// Anything else, with its cause.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
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
    /// More work than the machine can take now (the password hashing queue
    /// is full): answered 503 with `Retry-After`.
    #[error("Server busy, retry later")]
    Busy { retry_after: u64 },
    /// Something failed inside (logged, answered 500), with its cause.
    #[error("internal error: {0}")]
    Internal(#[from] Internal),
    /// A feature this backend does not have (named, e.g. "Single sign-on").
    #[error("{0} needs keycloak mode (AUTH_BACKEND=keycloak)")]
    Unsupported(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(h: u32, m: u32, s: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
    }

    #[test]
    fn pruning_is_due_once_a_minute() {
        let pruning = Pruning::default();
        assert!(pruning.due(1_000));
        assert!(!pruning.due(1_000));
        assert!(!pruning.due(1_059));
        assert!(pruning.due(1_060));
        assert!(!pruning.due(1_061));
    }

    #[test]
    fn verification_mail_rule() {
        let limit = MailLimit {
            count: 3,
            window: std::time::Duration::from_secs(3600),
        };
        assert_eq!(limit.next_attempt(0, None, at(10, 0, 0)), Ok(1));
        assert_eq!(
            limit.next_attempt(2, Some(at(10, 0, 0)), at(10, 5, 0)),
            Ok(3)
        );
        assert_eq!(
            limit.next_attempt(3, Some(at(10, 0, 0)), at(10, 10, 0)),
            Err(MailQuota::Exhausted { retry_after: 3000 })
        );
        // An hour after the last mail the count starts again.
        assert_eq!(
            limit.next_attempt(3, Some(at(10, 0, 0)), at(11, 0, 0)),
            Ok(1)
        );
    }
}
