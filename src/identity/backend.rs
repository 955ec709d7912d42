//! The identity backend's trait, split by role as the enterprise
//! capabilities are (`sso`, `mfa`, `devices`, `logout`): users,
//! credentials, sessions, e-mail tokens, roles; [`IdentityBackend`] is all
//! of them, plus readiness and the capabilities a backend has.
//!
//! Imports: `tokens` (the claims and purposes the methods take).

use async_trait::async_trait;

use super::{
    CredentialCheck, DeviceInfo, IdentityError, Login, MailQuota, NewUser, PendingToken,
    RefreshDenied, Refreshed, SessionRef, UpstreamTokens, User, UserPatch, devices, logout, mfa,
    sso,
};
use crate::tokens::{EmailPurpose, SessionClaims};

/// The users: sign-up, look-ups, administration.
#[async_trait]
pub trait Users: Send + Sync {
    /// Creates an unverified user, and stores `token` with it atomically (the
    /// sign-up's verification link, counted as the first mail of the
    /// verification-mail limit). `EmailTaken` wins over `UsernameTaken`.
    async fn register(
        &self,
        new: NewUser,
        token: Option<PendingToken>,
    ) -> Result<User, IdentityError>;

    async fn user_by_id(&self, id: i64) -> Result<Option<User>, IdentityError>;

    /// Looks an address up regardless of case.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, IdentityError>;

    /// Looks an address up for an answer that must take the same time for
    /// known and unknown addresses (resend-verification, deliberate
    /// difference 3): from the gateway's own store only (keycloak mode: the
    /// registry and its copy of the verified flag, Keycloak being asked
    /// only while that copy is not known yet).
    async fn user_by_email_stored(&self, email: &str) -> Result<Option<User>, IdentityError> {
        self.user_by_email(email).await
    }

    /// Whether a verification mail should still go to this user, asked
    /// after the answer (keycloak mode: the user exists, is enabled and is
    /// unverified in Keycloak; the registry's copy of the flag is corrected
    /// on the way).
    async fn still_unverified(&self, _user: &User) -> Result<bool, IdentityError> {
        Ok(true)
    }

    async fn list_users(&self, offset: i64, limit: i64) -> Result<Vec<User>, IdentityError>;

    async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, IdentityError>;

    /// Deletes a user: they can no longer sign in, and their sessions end.
    async fn delete_user(&self, id: i64) -> Result<(), IdentityError>;
}

/// Proving who one is: a password, or a verification link.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// Checks a username-or-e-mail and password.
    async fn check_credentials(
        &self,
        login: &str,
        password: &str,
    ) -> Result<CredentialCheck, IdentityError>;

    /// A session for a user who proved themself another way (a verification
    /// link): a session of the gateway's own, with a new id.
    async fn login_verified(&self, user: &User) -> Result<Login, IdentityError> {
        Ok(Login {
            user: user.clone(),
            device_id: uuid::Uuid::new_v4().to_string(),
            upstream: None,
            upstream_session: None,
            roles: None,
        })
    }
}

/// Device sessions: recorded, ended, asked about, refreshed.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Records the device session of a login, with a digest of its refresh token.
    async fn record_session(
        &self,
        login: &Login,
        device: &DeviceInfo,
        refresh_token: &str,
    ) -> Result<(), IdentityError>;

    /// Ends one session of a user (sign-out).
    async fn end_session(&self, user_id: i64, device_id: &str) -> Result<(), IdentityError>;

    /// True when the token's session was ended (sign-out), or all of the
    /// user's sessions were (password reset, deletion), or the token was
    /// issued before the user's last password reset.
    async fn session_revoked(&self, session: &SessionRef<'_>) -> Result<bool, IdentityError>;

    /// The UUID of a session a token names by another id (Keycloak's `sid`,
    /// in Keycloak's own tokens); `None` where sessions have no other id.
    async fn session_uuid(
        &self,
        _user_id: i64,
        _session_id: &str,
    ) -> Result<Option<String>, IdentityError> {
        Ok(None)
    }

    /// Whether a (legacy) refresh token may still be used; in keycloak mode
    /// this refreshes the wrapped Keycloak session.
    async fn refresh(
        &self,
        claims: &SessionClaims,
    ) -> Result<Result<Refreshed, RefreshDenied>, IdentityError>;

    /// Whether a session may be opened with the identity provider's own
    /// tokens, handed to the client as they are (keycloak mode with
    /// `TOKEN_FORMAT=keycloak`), instead of the legacy pair.
    fn hands_out_upstream_tokens(&self) -> bool {
        false
    }

    /// Whether the identity provider's own refresh tokens (JWTs) are taken
    /// at refresh, beside the legacy ones (keycloak mode).
    fn takes_upstream_refresh_tokens(&self) -> bool {
        false
    }

    /// Refreshes an upstream session with the upstream's own refresh token
    /// (`TOKEN_FORMAT=keycloak`). Backends without an upstream refuse.
    async fn refresh_upstream(
        &self,
        _refresh_token: &str,
    ) -> Result<Result<UpstreamTokens, RefreshDenied>, IdentityError> {
        Ok(Err(RefreshDenied::SessionEnded))
    }
}

/// The single-use tokens mailed for verification and password reset,
/// and the limit on verification mails.
#[async_trait]
pub trait EmailTokens: Send + Sync {
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

    /// Counts a verification mail asked for an address no user has, by the
    /// same rule (none is sent): an unknown address gets the answers of a
    /// known one, after the same work (deliberate difference 3). Counts
    /// past the window are removed now and then.
    async fn reserve_address_mail(&self, address: &str) -> Result<MailQuota, IdentityError>;

    // Enterprise capabilities (`/auth/...`): `None` where the backend has
    // none, which the api layer answers with `IdentityError::Unsupported`.
}

/// Roles, asked and granted.
#[async_trait]
pub trait Roles: Send + Sync {
    /// Whether the user holds the `admin` role now (asked at the source).
    async fn is_admin(&self, id: i64) -> Result<bool, IdentityError>;

    /// The user's roles as the gateway last saw them (for `X-Auth-Roles` and
    /// `role:` routes; callers cache them briefly).
    async fn roles(&self, id: i64) -> Result<Vec<String>, IdentityError>;

    /// Grants a role (e.g. `admin`) to the user named by username or e-mail
    /// (the `grant-role` command); `NotFound` when there is no such user.
    async fn grant_role(&self, login: &str, role: &str) -> Result<User, IdentityError>;
}

/// A backend: every role, whether its store answers, and the enterprise
/// capabilities it has. The api layer is written once against it.
#[async_trait]
pub trait IdentityBackend:
    Users + Credentials + Sessions + EmailTokens + Roles + Send + Sync + std::fmt::Debug
{
    /// Whether the backing store answers (for `GET /ready`).
    async fn ready(&self) -> Result<(), IdentityError>;

    /// Single sign-on through brokered identity providers.
    fn sso(&self) -> Option<&dyn sso::Sso> {
        None
    }

    /// Second factors (TOTP).
    fn mfa(&self) -> Option<&dyn mfa::Mfa> {
        None
    }

    /// A user's device sessions, listed and revoked.
    fn devices(&self) -> Option<&dyn devices::Devices> {
        None
    }

    /// The identity provider's back-channel logout.
    fn backchannel_logout(&self) -> Option<&dyn logout::BackchannelLogout> {
        None
    }
}
