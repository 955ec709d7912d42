//! The native backend's `Sessions` role: device sessions recorded, ended,
//! asked about and refreshed, on the legacy schema, for both stores
//! (`for_every_store!`).

use uuid::Uuid;

use super::{fit, issued_at};
use crate::identity::{
    DeviceInfo, IdentityError, Internal, Login, RefreshDenied, Refreshed, SessionRef, db_error,
};
use crate::tokens::{SessionClaims, digest};

for_every_store! {
    impl Sessions {
        async fn record_session(
            &self,
            login: &Login,
            device: &DeviceInfo,
            refresh_token: &str,
        ) -> Result<(), IdentityError> {
            let device_id = Uuid::parse_str(&login.device_id).map_err(|_| {
                IdentityError::Internal(Internal::Inconsistent("device id is not a UUID"))
            })?;
            let now = self.now();
            sqlx::query(
                "INSERT INTO device_sessions (user_id, device_id, device_type, device_name, ip_address, \
                   user_agent, last_active, is_active, refresh_token, created_at, updated_at, deleted_at, is_deleted) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $7, $7, NULL, false)",
            )
            .bind(login.user.id)
            .bind(device_id)
            .bind(fit(device.device_type.as_deref(), 50))
            .bind(fit(device.device_name.as_deref(), 100))
            .bind(fit(device.ip_address.as_deref(), 45))
            .bind(fit(device.user_agent.as_deref(), 255))
            .bind(now)
            .bind(digest(refresh_token))
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
            Ok(())
        }

        async fn end_session(&self, user_id: i64, device_id: &str) -> Result<(), IdentityError> {
            let Ok(device_id) = Uuid::parse_str(device_id) else {
                return Ok(());
            };
            sqlx::query(
                "UPDATE device_sessions SET is_active = false, updated_at = $3 WHERE device_id = $1 AND user_id = $2",
            )
            .bind(device_id)
            .bind(user_id)
            .bind(self.now())
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
            Ok(())
        }

        async fn session_revoked(&self, session: &SessionRef<'_>) -> Result<bool, IdentityError> {
            // A deleted or deactivated user's tokens stop working, whether they
            // belong to a device session or not (sign-up tokens have none), and
            // so do those issued before a password reset: one round trip.
            sqlx::query_scalar(concat!(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND NOT (",
                alive!(),
                ")) OR ",
                session_ended!(),
            ))
            .bind(session.user_id)
            .bind(issued_at(session))
            .bind(session.device_id.and_then(|id| Uuid::parse_str(id).ok()))
            .fetch_one(self.pool().await)
            .await
            .map_err(db_error)
        }

        async fn refresh(
            &self,
            claims: &SessionClaims,
        ) -> Result<Result<Refreshed, RefreshDenied>, IdentityError> {
            if self.user_gone(claims.user_id).await? {
                return Ok(Err(RefreshDenied::UserGone));
            }
            if self.session_ended(&SessionRef::of(claims)).await? {
                return Ok(Err(RefreshDenied::SessionEnded));
            }
            Ok(Ok(Refreshed::default()))
        }
    }
}
