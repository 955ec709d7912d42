//! The native backend's `Users` role: sign-up, look-ups and administration
//! of users, on the legacy schema, for both stores (`for_every_store!`).

use super::UserRow;
use crate::identity::{IdentityError, NewUser, PendingToken, User, UserPatch, db_error};

for_every_store! {
    impl Users {
        #[tracing::instrument(skip_all, fields(user = %new.describe()))]
        async fn register(
            &self,
            new: NewUser,
            token: Option<PendingToken>,
        ) -> Result<User, IdentityError> {
            let password_hash = self.hashing.hash(new.password.clone()).await?;
            let now = self.now();
            let mut tx = self.begin().await?;
            if Self::email_taken(&mut tx, &new.email, None).await? {
                return Err(IdentityError::EmailTaken);
            }
            Self::lock_key(&mut tx, "username", &new.username).await?;
            let username_taken: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
                    .bind(&new.username)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
            if username_taken {
                return Err(IdentityError::UsernameTaken);
            }
            // The sign-up's mail is the first verification mail of the limit.
            let (mails, mailed_at) = match &token {
                Some(_) => (1, Some(now)),
                None => (0, None),
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (username, email, password, is_verified, verification_attempts, \
                   verification_sent_at, created_at, updated_at, deleted_at, is_active, is_deleted) \
                 VALUES ($1, $2, $3, false, $5, $6, $4, $4, NULL, true, false) RETURNING CAST(id AS BIGINT)",
            )
            .bind(&new.username)
            .bind(&new.email)
            .bind(&password_hash)
            .bind(now)
            .bind(mails)
            .bind(mailed_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(pending) = token {
                Self::insert_token(&mut tx, id, &pending, now).await?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(User {
                id,
                username: new.username,
                email: new.email,
                is_verified: false,
            })
        }

        async fn user_by_id(&self, id: i64) -> Result<Option<User>, IdentityError> {
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1 AND ",
                alive!()
            ))
            .bind(id)
            .fetch_optional(self.pool().await)
            .await
            .map_err(db_error)?;
            Ok(row.map(User::from))
        }

        async fn user_by_email(&self, email: &str) -> Result<Option<User>, IdentityError> {
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE lower(email) = lower($1) AND ",
                alive!(),
                " ORDER BY (email = $1) DESC, id LIMIT 1"
            ))
            .bind(email)
            .fetch_optional(self.pool().await)
            .await
            .map_err(db_error)?;
            Ok(row.map(User::from))
        }

        async fn list_users(&self, offset: i64, limit: i64) -> Result<Vec<User>, IdentityError> {
            let rows: Vec<UserRow> = sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE ",
                alive!(),
                " ORDER BY id LIMIT $2 OFFSET $1"
            ))
            .bind(offset)
            .bind(limit)
            .fetch_all(self.pool().await)
            .await
            .map_err(db_error)?;
            Ok(rows.into_iter().map(User::from).collect())
        }

        #[tracing::instrument(skip_all, fields(user_id = id))]
        async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User, IdentityError> {
            let password_hash = match patch.password {
                Some(password) => Some(self.hashing.hash(password).await?),
                None => None,
            };
            let now = self.now();
            let mut tx = self.begin().await?;
            let current = Self::alive_user(&mut tx, id)
                .await?
                .ok_or(IdentityError::NotFound)?;
            if let Some(email) = &patch.email
                && email.to_lowercase() != current.email.to_lowercase()
                && Self::email_taken(&mut tx, email, Some(id)).await?
            {
                return Err(IdentityError::EmailTaken);
            }
            let row: UserRow = sqlx::query_as(concat!(
                "UPDATE users SET email = COALESCE($2, email), password = COALESCE($3, password), \
                   is_verified = COALESCE($4, is_verified), updated_at = $5 WHERE id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(id)
            .bind(&patch.email)
            .bind(&password_hash)
            .bind(patch.is_verified)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(row.into())
        }

        #[tracing::instrument(skip_all, fields(user_id = id))]
        async fn delete_user(&self, id: i64) -> Result<(), IdentityError> {
            let now = self.now();
            let mut tx = self.begin().await?;
            Self::lock_key(&mut tx, "user", &id.to_string()).await?;
            let deleted = sqlx::query(concat!(
                "UPDATE users SET is_deleted = true, is_active = false, deleted_at = $2, updated_at = $2 \
                 WHERE id = $1 AND ",
                alive!()
            ))
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if DB::rows_affected(&deleted) == 0 {
                return Err(IdentityError::NotFound);
            }
            Self::end_all_sessions(&mut tx, id, now).await?;
            sqlx::query(
                "UPDATE temporary_tokens SET is_valid = false, updated_at = $2 WHERE user_id = $1 AND COALESCE(is_valid, true)",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(())
        }
    }
}
