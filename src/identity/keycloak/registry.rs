//! What keycloak mode keeps in PostgreSQL (migration 0003): integer ids and
//! their Keycloak users, single-use e-mail tokens, verification-mail
//! counters, and signed-out sessions; beside it the devices seen at sign-in
//! (`device_rows`) and the sessions' UUIDs (`session_ids`).

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::clock::Clock;
use crate::identity::db_error;
use crate::identity::{IdentityError, Internal, MailLimit, MailQuota, Pruning, SessionRef, User};
use crate::store::Database;
use crate::tokens::{EmailPurpose, digest};

/// A row of `authgate_identities`.
#[derive(Debug, Clone, FromRow)]
pub struct IdentityRow {
    pub legacy_id: i32,
    pub keycloak_id: Uuid,
    pub username: String,
    pub email: String,
    /// The registry's copy of Keycloak's verified flag; `None` when not
    /// known yet (and, written, leaves the stored one as it is).
    pub email_verified: Option<bool>,
}

impl IdentityRow {
    /// As the contract shows it; whether the address is verified is Keycloak's to say.
    pub fn user(&self, is_verified: bool) -> User {
        User {
            id: i64::from(self.legacy_id),
            username: self.username.clone(),
            email: self.email.clone(),
            is_verified,
        }
    }
}

fn purpose_label(purpose: EmailPurpose) -> &'static str {
    match purpose {
        EmailPurpose::Verification => "email_verification",
        EmailPurpose::PasswordReset => "password_reset",
    }
}

#[derive(Debug)]
pub struct Registry {
    db: Arc<Database<Postgres>>,
    clock: Arc<dyn Clock>,
    mail_limit: MailLimit,
    /// Of the counts of mails to unknown addresses.
    pruning: Pruning,
}

impl Registry {
    pub fn new(db: Arc<Database<Postgres>>, clock: Arc<dyn Clock>, mail_limit: MailLimit) -> Self {
        Self {
            db,
            clock,
            mail_limit,
            pruning: Pruning::default(),
        }
    }

    /// The database and clock, for the other stores of keycloak mode.
    pub fn shared(&self) -> (Arc<Database<Postgres>>, Arc<dyn Clock>) {
        (Arc::clone(&self.db), Arc::clone(&self.clock))
    }

    pub async fn pool(&self) -> &PgPool {
        self.db.pool().await
    }

    pub(super) fn now(&self) -> NaiveDateTime {
        self.clock.naive_utc()
    }

    pub async fn ping(&self) -> Result<(), IdentityError> {
        sqlx::query("SELECT 1")
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, IdentityError> {
        self.pool().await.begin().await.map_err(db_error)
    }

    /// Holds, until `tx` ends, a lock on one Keycloak user shared by every
    /// replica (so two first logins of one user provision one id).
    pub async fn lock_keycloak_id(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        keycloak_id: Uuid,
    ) -> Result<(), IdentityError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(keycloak_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// A new integer id from the legacy `users` sequence.
    pub async fn allocate_id(&self) -> Result<i32, IdentityError> {
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('users', 'id'))")
            .fetch_one(self.pool().await)
            .await
            .map_err(db_error)?;
        i32::try_from(id).map_err(|_| {
            IdentityError::Internal(Internal::Inconsistent("user id sequence exhausted"))
        })
    }

    /// Records a Keycloak user found with a `legacy_id` but not known here;
    /// an id already taken by another Keycloak user is left as it is.
    pub async fn adopt(
        &self,
        identity: &IdentityRow,
    ) -> Result<Option<IdentityRow>, IdentityError> {
        sqlx::query(
            "INSERT INTO authgate_identities (legacy_id, keycloak_id, username, email, email_verified, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $6, $5, $5) ON CONFLICT DO NOTHING",
        )
        .bind(identity.legacy_id)
        .bind(identity.keycloak_id)
        .bind(&identity.username)
        .bind(&identity.email)
        .bind(self.now())
        .bind(identity.email_verified)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        self.by_keycloak_id(identity.keycloak_id).await
    }

    /// A page of the users known here, by id (`GET /users/`).
    pub async fn list(&self, offset: i64, limit: i64) -> Result<Vec<IdentityRow>, IdentityError> {
        sqlx::query_as(
            "SELECT legacy_id, keycloak_id, username, email, email_verified FROM authgate_identities \
             WHERE deleted_at IS NULL ORDER BY legacy_id OFFSET $1 LIMIT $2",
        )
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// Records (or refreshes) the id of a Keycloak user.
    pub async fn upsert(
        &self,
        tx: Option<&mut Transaction<'static, Postgres>>,
        identity: &IdentityRow,
    ) -> Result<(), IdentityError> {
        let query = sqlx::query(
            "INSERT INTO authgate_identities (legacy_id, keycloak_id, username, email, email_verified, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $6, $5, $5) \
             ON CONFLICT (legacy_id) DO UPDATE SET keycloak_id = EXCLUDED.keycloak_id, \
               username = EXCLUDED.username, email = EXCLUDED.email, updated_at = EXCLUDED.updated_at, \
               email_verified = COALESCE(EXCLUDED.email_verified, authgate_identities.email_verified), \
               deleted_at = NULL",
        )
        .bind(identity.legacy_id)
        .bind(identity.keycloak_id)
        .bind(&identity.username)
        .bind(&identity.email)
        .bind(self.now())
        .bind(identity.email_verified);
        match tx {
            Some(tx) => query.execute(&mut **tx).await,
            None => query.execute(self.pool().await).await,
        }
        .map_err(db_error)?;
        Ok(())
    }

    /// Records (or refreshes) many ids at once, as [`Registry::upsert`] does one.
    pub async fn upsert_many(&self, identities: &[IdentityRow]) -> Result<(), IdentityError> {
        if identities.is_empty() {
            return Ok(());
        }
        let legacy_ids: Vec<i32> = identities.iter().map(|i| i.legacy_id).collect();
        let keycloak_ids: Vec<Uuid> = identities.iter().map(|i| i.keycloak_id).collect();
        let usernames: Vec<&str> = identities.iter().map(|i| i.username.as_str()).collect();
        let emails: Vec<&str> = identities.iter().map(|i| i.email.as_str()).collect();
        let verified: Vec<Option<bool>> = identities.iter().map(|i| i.email_verified).collect();
        sqlx::query(
            "INSERT INTO authgate_identities (legacy_id, keycloak_id, username, email, email_verified, created_at, updated_at) \
             SELECT legacy_id, keycloak_id, username, email, email_verified, $5, $5 \
             FROM UNNEST($1::int4[], $2::uuid[], $3::text[], $4::text[], $6::bool[]) \
               AS t(legacy_id, keycloak_id, username, email, email_verified) \
             ON CONFLICT (legacy_id) DO UPDATE SET keycloak_id = EXCLUDED.keycloak_id, \
               username = EXCLUDED.username, email = EXCLUDED.email, updated_at = EXCLUDED.updated_at, \
               email_verified = COALESCE(EXCLUDED.email_verified, authgate_identities.email_verified), \
               deleted_at = NULL",
        )
        .bind(&legacy_ids)
        .bind(&keycloak_ids)
        .bind(&usernames)
        .bind(&emails)
        .bind(self.now())
        .bind(&verified)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Which of these ids have an entry (a Keycloak user, or one deleted
    /// since).
    pub async fn known_legacy_ids(
        &self,
        legacy_ids: &[i32],
    ) -> Result<std::collections::HashSet<i32>, IdentityError> {
        let found: Vec<i32> = sqlx::query_scalar(
            "SELECT legacy_id FROM authgate_identities WHERE legacy_id = ANY($1)",
        )
        .bind(legacy_ids)
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(found.into_iter().collect())
    }

    pub async fn by_legacy_id(&self, legacy_id: i64) -> Result<Option<IdentityRow>, IdentityError> {
        let Ok(legacy_id) = i32::try_from(legacy_id) else {
            return Ok(None);
        };
        sqlx::query_as(
            "SELECT legacy_id, keycloak_id, username, email, email_verified FROM authgate_identities \
             WHERE legacy_id = $1 AND deleted_at IS NULL",
        )
        .bind(legacy_id)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)
    }

    pub async fn by_keycloak_id(
        &self,
        keycloak_id: Uuid,
    ) -> Result<Option<IdentityRow>, IdentityError> {
        sqlx::query_as(
            "SELECT legacy_id, keycloak_id, username, email, email_verified FROM authgate_identities \
             WHERE keycloak_id = $1 AND deleted_at IS NULL",
        )
        .bind(keycloak_id)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// Whether a live entry has this address (regardless of case).
    pub async fn has_email(&self, email: &str) -> Result<bool, IdentityError> {
        Ok(self.by_email(email).await?.is_some())
    }

    /// The live entry of an address (regardless of case), with the
    /// registry's copy of its verified flag.
    pub async fn by_email(&self, email: &str) -> Result<Option<IdentityRow>, IdentityError> {
        sqlx::query_as(
            "SELECT legacy_id, keycloak_id, username, email, email_verified FROM authgate_identities \
             WHERE lower(email) = lower($1) AND deleted_at IS NULL ORDER BY legacy_id LIMIT 1",
        )
        .bind(email)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// Records Keycloak's verified flag of a user (unchanged rows are not
    /// written).
    pub async fn set_verified(
        &self,
        keycloak_id: Uuid,
        verified: bool,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE authgate_identities SET email_verified = $2 \
             WHERE keycloak_id = $1 AND email_verified IS DISTINCT FROM $2",
        )
        .bind(keycloak_id)
        .bind(verified)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub async fn mark_deleted(&self, legacy_id: i32) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE authgate_identities SET deleted_at = $2, updated_at = $2 WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .bind(self.now())
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        sqlx::query("UPDATE authgate_email_tokens SET used_at = $2 WHERE legacy_id = $1 AND used_at IS NULL")
            .bind(legacy_id)
            .bind(self.now())
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Remembers the realm roles a fresh token of the user carried.
    pub async fn set_roles(
        &self,
        keycloak_id: Uuid,
        roles: &[String],
    ) -> Result<(), IdentityError> {
        sqlx::query("UPDATE authgate_identities SET roles = $2 WHERE keycloak_id = $1")
            .bind(keycloak_id)
            .bind(roles)
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn roles(&self, legacy_id: i64) -> Result<Vec<String>, IdentityError> {
        let Ok(legacy_id) = i32::try_from(legacy_id) else {
            return Ok(Vec::new());
        };
        let roles: Option<Vec<String>> =
            sqlx::query_scalar("SELECT roles FROM authgate_identities WHERE legacy_id = $1")
                .bind(legacy_id)
                .fetch_optional(self.pool().await)
                .await
                .map_err(db_error)?;
        Ok(roles.unwrap_or_default())
    }

    pub async fn set_email(&self, legacy_id: i32, email: &str) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE authgate_identities SET email = $2, updated_at = $3 \
             WHERE legacy_id = $1 AND email IS DISTINCT FROM $2",
        )
        .bind(legacy_id)
        .bind(email)
        .bind(self.now())
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Records sessions as ended, each under its UUID and its Keycloak
    /// `sid` (tokens name a session by either).
    pub async fn end_sessions(
        &self,
        sessions: &[(Uuid, String)],
        legacy_id: i64,
    ) -> Result<(), IdentityError> {
        for (device_id, session_id) in sessions {
            self.end_session(&device_id.to_string(), Some(session_id), legacy_id)
                .await?;
        }
        Ok(())
    }

    /// Records a session as ended: its UUID (`device_id`) and, for a
    /// Keycloak session, its `sid`. `true` when it was not ended before.
    pub async fn end_session(
        &self,
        device_id: &str,
        session_id: Option<&str>,
        legacy_id: i64,
    ) -> Result<bool, IdentityError> {
        let ids: Vec<&str> = std::iter::once(device_id).chain(session_id).collect();
        let done = sqlx::query(
            "INSERT INTO authgate_ended_sessions (session_id, legacy_id, ended_at) \
             SELECT id, $2, $3 FROM unnest($1::varchar[]) AS id \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(&ids)
        .bind(i32::try_from(legacy_id).unwrap_or(i32::MAX))
        .bind(self.now())
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    /// Ended by a sign-out (under the token's session id, or under the
    /// `sid` its UUID maps to: sessions ended before they had UUIDs), of a
    /// deleted user, issued before the user's `not_before` (an access
    /// token: or before their `roles_not_before`), or before the realm's
    /// "sign out all active sessions".
    pub async fn revoked(&self, session: &SessionRef<'_>) -> Result<bool, IdentityError> {
        let issued_at = session
            .issued_at
            .and_then(|iat| DateTime::from_timestamp(iat, 0))
            .map(|at| at.naive_utc());
        let device_uuid = session.device_id.and_then(|id| Uuid::try_parse(id).ok());
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM authgate_ended_sessions WHERE session_id = $1 \
                              OR session_id = (SELECT m.session_id FROM authgate_session_ids m \
                                                WHERE m.device_id = $4)) \
                 OR EXISTS (SELECT 1 FROM authgate_identities WHERE legacy_id = $2 \
                              AND (deleted_at IS NOT NULL \
                                   OR (not_before IS NOT NULL AND ($3 IS NULL OR $3 < not_before)) \
                                   OR ($5 AND roles_not_before IS NOT NULL \
                                       AND ($3 IS NULL OR $3 < roles_not_before)))) \
                 OR EXISTS (SELECT 1 FROM authgate_admin_events WHERE realm_not_before IS NOT NULL \
                              AND ($3 IS NULL OR $3 < realm_not_before))",
        )
        .bind(session.device_id.unwrap_or_default())
        .bind(i32::try_from(session.user_id).unwrap_or(i32::MAX))
        .bind(issued_at)
        .bind(device_uuid)
        .bind(session.access)
        .fetch_one(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// Refuses every token of the user issued before now (whole seconds).
    pub async fn revoke_all(&self, legacy_id: i32) -> Result<(), IdentityError> {
        self.revoke_before(legacy_id, self.clock.unix()).await
    }

    /// Refuses every token of the user issued before `at` (Unix seconds);
    /// a later cut-off already recorded stays.
    pub async fn revoke_before(&self, legacy_id: i32, at: i64) -> Result<(), IdentityError> {
        let cutoff = DateTime::from_timestamp(at, 0).map(|at| at.naive_utc());
        sqlx::query(
            "UPDATE authgate_identities SET not_before = GREATEST(not_before, $2) WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .bind(cutoff)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Refuses the user's access tokens issued before `at` (Unix seconds:
    /// their roles were removed) and drops the roles kept for them; a
    /// refresh brings the new ones.
    pub async fn revoke_access_before(&self, legacy_id: i32, at: i64) -> Result<(), IdentityError> {
        let cutoff = DateTime::from_timestamp(at, 0).map(|at| at.naive_utc());
        sqlx::query(
            "UPDATE authgate_identities SET roles_not_before = GREATEST(roles_not_before, $2), \
             roles = '{}' WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .bind(cutoff)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    pub async fn insert_token(
        &self,
        tx: Option<&mut Transaction<'static, Postgres>>,
        legacy_id: i32,
        purpose: EmailPurpose,
        token: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        let query = sqlx::query(
            "INSERT INTO authgate_email_tokens (digest, legacy_id, purpose, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(token))
        .bind(legacy_id)
        .bind(purpose_label(purpose))
        .bind(expires_at.naive_utc())
        .bind(self.now());
        match tx {
            Some(tx) => query.execute(&mut **tx).await,
            None => query.execute(self.pool().await).await,
        }
        .map_err(db_error)?;
        Ok(())
    }

    /// Marks a token used inside `tx`; its user's id when it was valid.
    pub async fn consume_token(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        token: &str,
        purpose: EmailPurpose,
    ) -> Result<Option<i32>, IdentityError> {
        sqlx::query_scalar(
            "UPDATE authgate_email_tokens SET used_at = $3 \
             WHERE digest = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING legacy_id",
        )
        .bind(digest(token))
        .bind(purpose_label(purpose))
        .bind(self.now())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)
    }

    /// Counts the sign-up's mail as the first verification mail of the limit.
    pub async fn count_signup_mail(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        legacy_id: i32,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE authgate_identities SET verification_attempts = 1, verification_sent_at = $2 \
             WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .bind(self.now())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Counts a verification mail against the legacy resend rule.
    pub async fn reserve_verification_mail(
        &self,
        legacy_id: i64,
    ) -> Result<MailQuota, IdentityError> {
        let Ok(legacy_id) = i32::try_from(legacy_id) else {
            return Err(IdentityError::NotFound);
        };
        let now = self.now();
        let mut tx = self.begin().await?;
        let state: Option<(i32, Option<NaiveDateTime>)> = sqlx::query_as(
            "SELECT verification_attempts, verification_sent_at FROM authgate_identities \
             WHERE legacy_id = $1 FOR UPDATE",
        )
        .bind(legacy_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let (attempts, sent_at) = state.ok_or(IdentityError::NotFound)?;
        let attempts = match self.mail_limit.next_attempt(attempts, sent_at, now) {
            Ok(attempts) => attempts,
            Err(quota) => return Ok(quota),
        };
        sqlx::query(
            "UPDATE authgate_identities SET verification_attempts = $2, verification_sent_at = $3 \
             WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .bind(attempts)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(MailQuota::Granted)
    }

    /// Counts a verification mail asked for an address no user has (none
    /// is sent), by the same rule and with the same work as a user's.
    pub async fn reserve_address_mail(&self, address: &str) -> Result<MailQuota, IdentityError> {
        let key = digest(&address.to_lowercase());
        let now = self.now();
        let mut tx = self.begin().await?;
        let state: Option<(i32, NaiveDateTime)> = sqlx::query_as(
            "SELECT attempts, sent_at FROM authgate_address_mail_counts \
             WHERE address_digest = $1 FOR UPDATE",
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
