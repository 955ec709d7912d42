//! A user's device sessions: listed with where they came from, and revoked
//! one by one, all but the current one, or all of them (an admin's
//! force-logout).
//!
//! Ending a session here does what a sign-out does: its refresh token stops
//! refreshing and the gateway's registry refuses its access tokens. The
//! api layer also puts the ended ids on the shared deny-list.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::IdentityError;

/// One open session of a user, as the device showed itself at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    /// The session's id: the tokens' `device_id`, a UUID (mapped to
    /// Keycloak's `sid` in keycloak mode).
    pub id: String,
    /// The client's address as the gateway saw it at sign-in (else the
    /// identity provider's view).
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub started_at: DateTime<Utc>,
    pub last_access: DateTime<Utc>,
}

#[async_trait]
pub trait Devices: Send + Sync + std::fmt::Debug {
    /// The user's open sessions, oldest first; `NotFound` for an unknown user.
    async fn sessions(&self, user_id: i64) -> Result<Vec<DeviceSession>, IdentityError>;

    /// Ends one session of the user; `false` when the user has no open
    /// session with this id (nothing is changed then).
    async fn end_device_session(
        &self,
        user_id: i64,
        session_id: &str,
    ) -> Result<bool, IdentityError>;

    /// Ends every open session of the user except `keep`; the ids ended.
    async fn end_other_sessions(
        &self,
        user_id: i64,
        keep: Option<&str>,
    ) -> Result<Vec<String>, IdentityError>;

    /// Ends every session of the user, including sessions of the gateway's
    /// own and tokens not yet used; the ids of the open sessions ended.
    /// `NotFound` for an unknown user.
    async fn end_all_device_sessions(&self, user_id: i64) -> Result<Vec<String>, IdentityError>;
}
