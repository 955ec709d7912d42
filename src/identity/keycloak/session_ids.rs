//! Session UUIDs of keycloak mode (migration 0011): every Keycloak session
//! gets a UUID of authgate's own, which tokens carry as `device_id` and the
//! API shows, mapped to Keycloak's session id (`sid`, not a UUID in
//! Keycloak 26) wherever one is needed from the other.
//!
//! A `sid` always maps to the same UUID (the first one recorded), so a
//! session seen again (a single sign-on in a browser where Keycloak still
//! has a session, a listing, a token naming its `sid`) keeps its UUID.

use std::collections::HashMap;

use uuid::Uuid;

use super::registry::Registry;
use crate::identity::db_error;
use crate::identity::{IdentityError, Internal};

impl Registry {
    /// The UUID of a Keycloak session of the user, recorded now if it has none.
    pub async fn device_for_session(
        &self,
        session_id: &str,
        legacy_id: i64,
    ) -> Result<Uuid, IdentityError> {
        let found = self
            .devices_for_sessions(&[session_id.to_string()], legacy_id)
            .await?;
        found.get(session_id).copied().ok_or_else(|| {
            IdentityError::Internal(Internal::Inconsistent("session id not recorded"))
        })
    }

    /// The UUIDs of Keycloak sessions of the user, by `sid`; those without
    /// one get one now.
    pub async fn devices_for_sessions(
        &self,
        session_ids: &[String],
        legacy_id: i64,
    ) -> Result<HashMap<String, Uuid>, IdentityError> {
        if session_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let legacy_id = i32::try_from(legacy_id).map_err(|_| IdentityError::NotFound)?;
        let fresh: Vec<Uuid> = session_ids.iter().map(|_| Uuid::new_v4()).collect();
        // On a known sid the no-op update returns the row as it is: its UUID.
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO authgate_session_ids (device_id, session_id, legacy_id, created_at) \
             SELECT device_id, session_id, $3, $4 FROM unnest($1::varchar[], $2::uuid[]) AS s (session_id, device_id) \
             ON CONFLICT (session_id) DO UPDATE SET session_id = EXCLUDED.session_id \
             RETURNING session_id, device_id",
        )
        .bind(session_ids)
        .bind(&fresh)
        .bind(legacy_id)
        .bind(self.now())
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().collect())
    }

    /// Keycloak's `sid` of a session UUID; `None` for a session of the
    /// gateway's own (opened by a verification link) or an unknown UUID.
    pub async fn session_of_device(
        &self,
        device_id: Uuid,
    ) -> Result<Option<String>, IdentityError> {
        sqlx::query_scalar("SELECT session_id FROM authgate_session_ids WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(self.pool().await)
            .await
            .map_err(db_error)
    }

    /// The UUID of a Keycloak session, by its `sid` (what a back-channel
    /// logout names); `None` when authgate never saw the session.
    pub async fn device_of_session(&self, session_id: &str) -> Result<Option<Uuid>, IdentityError> {
        sqlx::query_scalar("SELECT device_id FROM authgate_session_ids WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(self.pool().await)
            .await
            .map_err(db_error)
    }

    /// The UUID and the user of a Keycloak session, by its `sid`.
    pub async fn session_by_sid(
        &self,
        session_id: &str,
    ) -> Result<Option<(Uuid, i32)>, IdentityError> {
        sqlx::query_as(
            "SELECT device_id, legacy_id FROM authgate_session_ids WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// The UUIDs of every session authgate saw of a Keycloak user (what a
    /// back-channel logout naming only the user, `sub`, ends), oldest first.
    pub async fn devices_of_user(&self, keycloak_id: Uuid) -> Result<Vec<Uuid>, IdentityError> {
        sqlx::query_scalar(
            "SELECT s.device_id FROM authgate_session_ids s \
             JOIN authgate_identities i ON i.legacy_id = s.legacy_id \
             WHERE i.keycloak_id = $1 ORDER BY s.created_at, s.device_id",
        )
        .bind(keycloak_id)
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)
    }
}
