//! What the gateway saw of each device at sign-in (migration 0006), kept
//! beside the [`Registry`]: Keycloak's Admin API has no user agent, and the
//! address it saw for a password grant is the gateway's own.

use std::collections::HashMap;

use sqlx::FromRow;

use super::registry::Registry;
use crate::identity::db_error;
use crate::identity::{DeviceInfo, IdentityError};

/// A row of `authgate_device_sessions`.
#[derive(Debug, Clone, FromRow)]
pub struct DeviceRow {
    pub session_id: String,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// At most `max` characters (the column's size): a long header is cut, not refused.
fn bounded(value: Option<&String>, max: usize) -> Option<String> {
    value.map(|v| v.chars().take(max).collect())
}

impl Registry {
    /// Records the device of a session opened in Keycloak.
    pub async fn record_device(
        &self,
        session_id: &str,
        legacy_id: i64,
        device: &DeviceInfo,
    ) -> Result<(), IdentityError> {
        let legacy_id = i32::try_from(legacy_id).map_err(|_| IdentityError::NotFound)?;
        sqlx::query(
            "INSERT INTO authgate_device_sessions \
               (session_id, legacy_id, user_agent, ip_address, device_type, device_name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (session_id) DO UPDATE SET legacy_id = EXCLUDED.legacy_id, \
               user_agent = EXCLUDED.user_agent, ip_address = EXCLUDED.ip_address, \
               device_type = EXCLUDED.device_type, device_name = EXCLUDED.device_name",
        )
        .bind(session_id)
        .bind(legacy_id)
        .bind(bounded(device.user_agent.as_ref(), 512))
        .bind(bounded(device.ip_address.as_ref(), 64))
        .bind(bounded(device.device_type.as_ref(), 64))
        .bind(bounded(device.device_name.as_ref(), 255))
        .bind(self.now())
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The recorded devices of the user's sessions in `open`, by session id;
    /// rows of the user's other (ended) sessions are removed.
    pub async fn devices(
        &self,
        legacy_id: i32,
        open: &[String],
    ) -> Result<HashMap<String, DeviceRow>, IdentityError> {
        sqlx::query(
            "DELETE FROM authgate_device_sessions WHERE legacy_id = $1 AND NOT (session_id = ANY($2))",
        )
        .bind(legacy_id)
        .bind(open)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        let rows: Vec<DeviceRow> = sqlx::query_as(
            "SELECT session_id, user_agent, ip_address FROM authgate_device_sessions \
             WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (row.session_id.clone(), row))
            .collect())
    }

    /// Forgets the devices of ended sessions.
    pub async fn forget_devices(&self, session_ids: &[String]) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM authgate_device_sessions WHERE session_id = ANY($1)")
            .bind(session_ids)
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
