//! The native backend's `EmailTokens` role: the single-use e-mail tokens and
//! the verification-mail limit, on the legacy schema, for both stores
//! (`for_every_store!`).

use chrono::{DateTime, NaiveDateTime, Utc};

use super::UserRow;
use crate::identity::{IdentityError, MailQuota, PendingToken, User, db_error};
use crate::tokens::{EmailPurpose, digest};

for_every_store! {
    impl EmailTokens {
        async fn store_email_token(
            &self,
            user_id: i64,
            purpose: EmailPurpose,
            token: &str,
            expires_at: DateTime<Utc>,
        ) -> Result<(), IdentityError> {
            let pending = PendingToken {
                purpose,
                token: token.to_string(),
                expires_at,
            };
            let mut tx = self.begin().await?;
            Self::insert_token(&mut tx, user_id, &pending, self.now()).await?;
            tx.commit().await.map_err(db_error)
        }

        #[tracing::instrument(skip_all)]
        async fn redeem_verification(&self, token: &str) -> Result<Option<User>, IdentityError> {
            let now = self.now();
            let mut tx = self.begin().await?;
            let Some(user_id) =
                Self::consume_token(&mut tx, token, EmailPurpose::Verification, now).await?
            else {
                return Ok(None);
            };
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET is_verified = true, updated_at = $2 WHERE id = $1 AND ",
                alive!(),
                " RETURNING ",
                user_columns!()
            ))
            .bind(user_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            tx.commit().await.map_err(db_error)?;
            Ok(Some(row.into()))
        }

        #[tracing::instrument(skip_all)]
        async fn redeem_password_reset(
            &self,
            token: &str,
            new_password: &str,
        ) -> Result<Option<User>, IdentityError> {
            let password_hash = self.hashing.hash(new_password.to_string()).await?;
            let now = self.now();
            let mut tx = self.begin().await?;
            let Some(user_id) =
                Self::consume_token(&mut tx, token, EmailPurpose::PasswordReset, now).await?
            else {
                return Ok(None);
            };
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET password = $2, updated_at = $3 WHERE id = $1 AND ",
                alive!(),
                " RETURNING ",
                user_columns!()
            ))
            .bind(user_id)
            .bind(&password_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            Self::end_all_sessions(&mut tx, user_id, now).await?;
            let cutoff =
                DateTime::from_timestamp(self.clock.unix(), 0).map_or(now, |at| at.naive_utc());
            Self::revoke_all(&mut tx, user_id, cutoff).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(Some(row.into()))
        }

        async fn reserve_verification_mail(&self, user_id: i64) -> Result<MailQuota, IdentityError> {
            let now = self.now();
            let mut tx = self.begin().await?;
            Self::lock_key(&mut tx, "user", &user_id.to_string()).await?;
            let state: Option<(i32, Option<NaiveDateTime>)> = sqlx::query_as(
                "SELECT COALESCE(verification_attempts, 0), verification_sent_at FROM users WHERE id = $1",
            )
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let (attempts, sent_at) = state.ok_or(IdentityError::NotFound)?;
            let attempts = match self.mail_limit.next_attempt(attempts, sent_at, now) {
                Ok(attempts) => attempts,
                Err(quota) => return Ok(quota),
            };
            sqlx::query(
                "UPDATE users SET verification_attempts = $2, verification_sent_at = $3 WHERE id = $1",
            )
            .bind(user_id)
            .bind(attempts)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(MailQuota::Granted)
        }

        async fn reserve_address_mail(&self, address: &str) -> Result<MailQuota, IdentityError> {
            let key = digest(&address.to_lowercase());
            let now = self.now();
            let mut tx = self.begin().await?;
            Self::lock_key(&mut tx, "address", &key).await?;
            let state: Option<(i32, NaiveDateTime)> = sqlx::query_as(
                "SELECT attempts, sent_at FROM authgate_address_mail_counts WHERE address_digest = $1",
            )
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            let (attempts, sent_at) = state.map_or((0, None), |(n, at)| (n, Some(at)));
            let attempts = match self.mail_limit.next_attempt(attempts, sent_at, now) {
                Ok(attempts) => attempts,
                Err(quota) => return Ok(quota),
            };
            sqlx::query(
                "INSERT INTO authgate_address_mail_counts (address_digest, attempts, sent_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (address_digest) \
                 DO UPDATE SET attempts = EXCLUDED.attempts, sent_at = EXCLUDED.sent_at",
            )
            .bind(&key)
            .bind(attempts)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            if self.pruning.due(self.clock.unix()) {
                let window = chrono::Duration::from_std(self.mail_limit.window)
                    .unwrap_or(chrono::Duration::hours(1));
                let pool = self.pool().await.clone();
                tokio::spawn(async move {
                    let pruned =
                        sqlx::query("DELETE FROM authgate_address_mail_counts WHERE sent_at < $1")
                            .bind(now - window)
                            .execute(&pool)
                            .await;
                    if let Err(err) = pruned {
                        tracing::warn!(error = %err, "old mail counts of unknown addresses not removed");
                    }
                });
            }
            Ok(MailQuota::Granted)
        }
    }
}
