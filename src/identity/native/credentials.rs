//! The native backend's `Credentials` role: the password check (and its re-
//! hash to the current rounds), on the legacy schema, for both stores
//! (`for_every_store!`).

use uuid::Uuid;

use super::LoginRow;
use crate::identity::{CredentialCheck, IdentityError, Login, User, db_error};

for_every_store! {
    impl Credentials {
        #[tracing::instrument(skip_all)]
        async fn check_credentials(
            &self,
            login: &str,
            password: &str,
        ) -> Result<CredentialCheck, IdentityError> {
            let row: Option<LoginRow> = sqlx::query_as(concat!(
                "SELECT CAST(id AS BIGINT) AS id, username, email, password, COALESCE(is_verified, false) AS is_verified \
                 FROM users WHERE ",
                alive!(),
                " AND (username = $1 OR lower(email) = lower($1)) \
                 ORDER BY (username = $1) DESC, (email = $1) DESC, id LIMIT 1"
            ))
            .bind(login)
            .fetch_optional(self.pool().await)
            .await
            .map_err(db_error)?;
            let Some(row) = row else {
                self.hashing.waste_time().await?;
                return Ok(CredentialCheck::Invalid);
            };
            match self
                .hashing
                .verify(row.password.clone(), password.to_string())
                .await?
            {
                Ok(true) => {}
                Ok(false) => return Ok(CredentialCheck::Invalid),
                Err(err) => {
                    tracing::warn!(user_id = row.id, error = %err, "stored password cannot be verified");
                    return Ok(CredentialCheck::Invalid);
                }
            }
            self.rehash_if_needed(&row, password).await;
            let user = User {
                id: row.id,
                username: row.username,
                email: row.email,
                is_verified: row.is_verified,
            };
            if !user.is_verified {
                return Ok(CredentialCheck::Unverified(user));
            }
            Ok(CredentialCheck::Valid(Login {
                user,
                device_id: Uuid::new_v4().to_string(),
                upstream: None,
                upstream_session: None,
                roles: None,
            }))
        }
    }
}
