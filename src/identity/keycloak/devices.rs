//! [`Devices`] through Keycloak: the open sessions are Keycloak's (Admin
//! API), shown under their UUIDs ([`super::session_ids`]) and merged with
//! what the gateway recorded of each device at sign-in; ending one does
//! what a sign-out does (Keycloak and the registry).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin::KcSession;
use super::registry::IdentityRow;
use crate::identity::IdentityError;
use crate::identity::devices::{DeviceSession, Devices};

fn time_of(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

impl KeycloakBackend {
    /// The user's open Keycloak sessions, each with its UUID.
    async fn open_sessions(
        &self,
        identity: &IdentityRow,
    ) -> Result<Vec<(Uuid, KcSession)>, IdentityError> {
        let open = self
            .admin
            .sessions_of(&identity.keycloak_id.to_string())
            .await?;
        let sids: Vec<String> = open.iter().map(|s| s.id.clone()).collect();
        let uuids = self.session_uuids(identity, sids).await?;
        Ok(uuids.into_iter().map(|(uuid, _)| uuid).zip(open).collect())
    }

    /// Ends sessions the way sign-out does: refused by the registry first,
    /// then ended in Keycloak (their refresh tokens stop working).
    async fn end_sessions(
        &self,
        user_id: i64,
        sessions: &[(Uuid, String)],
    ) -> Result<(), IdentityError> {
        self.registry.end_sessions(sessions, user_id).await?;
        for (_, sid) in sessions {
            self.admin.delete_session(sid).await?;
        }
        self.registry.forget_devices(&sids(sessions)).await
    }
}

fn sids(sessions: &[(Uuid, String)]) -> Vec<String> {
    sessions.iter().map(|(_, sid)| sid.clone()).collect()
}

fn uuids(sessions: &[(Uuid, String)]) -> Vec<String> {
    sessions.iter().map(|(uuid, _)| uuid.to_string()).collect()
}

#[async_trait]
impl Devices for KeycloakBackend {
    async fn sessions(&self, user_id: i64) -> Result<Vec<DeviceSession>, IdentityError> {
        let identity = self.identity(user_id).await?;
        let open = self.open_sessions(&identity).await?;
        let ids: Vec<String> = open.iter().map(|(_, s)| s.id.clone()).collect();
        let mut seen = self.registry.devices(identity.legacy_id, &ids).await?;
        let mut sessions: Vec<DeviceSession> = open
            .into_iter()
            .map(|(uuid, kc)| {
                let row = seen.remove(&kc.id);
                DeviceSession {
                    ip_address: row
                        .as_ref()
                        .and_then(|r| r.ip_address.clone())
                        .or(kc.ip_address),
                    user_agent: row.and_then(|r| r.user_agent),
                    started_at: time_of(kc.start),
                    last_access: time_of(kc.last_access),
                    id: uuid.to_string(),
                }
            })
            .collect();
        sessions.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Ok(sessions)
    }

    async fn end_device_session(
        &self,
        user_id: i64,
        session_id: &str,
    ) -> Result<bool, IdentityError> {
        let Ok(wanted) = Uuid::try_parse(session_id) else {
            return Ok(false);
        };
        let Some(identity) = self.registry.by_legacy_id(user_id).await? else {
            return Ok(false);
        };
        let Some((uuid, kc)) = self
            .open_sessions(&identity)
            .await?
            .into_iter()
            .find(|(uuid, _)| *uuid == wanted)
        else {
            return Ok(false);
        };
        self.end_sessions(user_id, &[(uuid, kc.id)]).await?;
        Ok(true)
    }

    async fn end_other_sessions(
        &self,
        user_id: i64,
        keep: Option<&str>,
    ) -> Result<Vec<String>, IdentityError> {
        let identity = self.identity(user_id).await?;
        let keep = keep.and_then(|id| Uuid::try_parse(id).ok());
        let ended: Vec<(Uuid, String)> = self
            .open_sessions(&identity)
            .await?
            .into_iter()
            .filter(|(uuid, _)| Some(*uuid) != keep)
            .map(|(uuid, kc)| (uuid, kc.id))
            .collect();
        self.end_sessions(user_id, &ended).await?;
        Ok(uuids(&ended))
    }

    async fn end_all_device_sessions(&self, user_id: i64) -> Result<Vec<String>, IdentityError> {
        let identity = self.identity(user_id).await?;
        let ended = self.end_all_sessions(&identity).await?;
        self.registry.forget_devices(&sids(&ended)).await?;
        Ok(uuids(&ended))
    }
}
