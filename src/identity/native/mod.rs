//! The native backend: the legacy flows on the legacy schema, in
//! PostgreSQL or in the embedded SQLite store (one implementation, generic
//! over the store; see [`crate::store::Dialect`]).
//!
//! It reads and writes the old service's tables as they are (`users`,
//! `device_sessions`, `temporary_tokens`), tolerating the NULLs the old
//! SQLAlchemy defaults may have left, and supplies every column on insert.
//! What the legacy schema has no place for lives in tables of authgate's
//! own: roles, and the instant before which a user's tokens are refused
//! (`authgate_user_not_before`, written by a password reset).

mod hashing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::migrate::Migrate;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type,
};
use uuid::Uuid;

pub use hashing::Hashing;

use super::db_error;
use super::{
    CredentialCheck, DeviceInfo, IdentityBackend, IdentityError, Internal, Login, MailLimit,
    MailQuota, NewUser, PendingToken, Pruning, RefreshDenied, Refreshed, SessionRef, User,
    UserPatch,
};
use crate::clock::Clock;
use crate::store::{Database, Dialect, Value};
use crate::tokens::{EmailPurpose, SessionClaims, digest};

#[derive(Debug, FromRow)]
struct UserRow {
    id: i64,
    username: String,
    email: String,
    is_verified: bool,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            username: row.username,
            email: row.email,
            is_verified: row.is_verified,
        }
    }
}

#[derive(Debug, FromRow)]
struct LoginRow {
    id: i64,
    username: String,
    email: String,
    password: String,
    is_verified: bool,
}

/// The native backend on the store `DB`.
#[derive(Debug)]
pub struct NativeBackend<DB: Dialect> {
    db: Arc<Database<DB>>,
    hashing: Hashing,
    clock: Arc<dyn Clock>,
    mail_limit: MailLimit,
    /// Of the counts of mails to unknown addresses.
    pruning: Pruning,
}

/// `users` rows that still count: not deleted, not deactivated.
macro_rules! alive {
    () => {
        "NOT COALESCE(is_deleted, false) AND COALESCE(is_active, true)"
    };
}

/// A token's session is over (parameters: `$1` user id, `$2` the token's
/// `iat`, NULL when it has none, `$3` its device id, NULL when it has none).
macro_rules! session_ended {
    () => {
        "EXISTS (SELECT 1 FROM authgate_user_not_before WHERE user_id = $1 \
           AND ($2 IS NULL OR $2 < not_before)) \
         OR EXISTS (SELECT 1 FROM device_sessions WHERE device_id = $3 \
           AND (NOT COALESCE(is_active, true) OR COALESCE(is_deleted, false)))"
    };
}

/// The instant a token was issued (whole seconds), as the store keeps time.
fn issued_at(session: &SessionRef<'_>) -> Option<NaiveDateTime> {
    session
        .issued_at
        .and_then(|iat| DateTime::from_timestamp(iat, 0))
        .map(|at| at.naive_utc())
}

macro_rules! user_columns {
    () => {
        "CAST(id AS BIGINT) AS id, username, email, COALESCE(is_verified, false) AS is_verified"
    };
}

fn token_type(purpose: EmailPurpose) -> &'static str {
    match purpose {
        EmailPurpose::Verification => "EMAIL_VERIFICATION",
        EmailPurpose::PasswordReset => "PASSWORD_RESET",
    }
}

/// Cuts a header value to a legacy column's width (characters).
fn fit(value: Option<&str>, width: usize) -> Option<String> {
    value.map(|v| v.chars().take(width).collect())
}

impl<DB> NativeBackend<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    i64: Value<DB>,
    i32: Value<DB>,
    bool: Value<DB>,
    String: Value<DB>,
    NaiveDateTime: Value<DB>,
    Uuid: Value<DB>,
    Option<i64>: Value<DB>,
    Option<bool>: Value<DB>,
    Option<String>: Value<DB>,
    Option<NaiveDateTime>: Value<DB>,
    Option<Uuid>: Value<DB>,
{
    pub fn new(
        db: Arc<Database<DB>>,
        hashing: Hashing,
        clock: Arc<dyn Clock>,
        mail_limit: MailLimit,
    ) -> Self {
        Self {
            db,
            hashing,
            clock,
            mail_limit,
            pruning: Pruning::default(),
        }
    }

    async fn pool(&self) -> &Pool<DB> {
        self.db.pool().await
    }

    fn now(&self) -> NaiveDateTime {
        self.clock.naive_utc()
    }

    /// A transaction that is going to write.
    async fn begin(&self) -> Result<Transaction<'static, DB>, IdentityError> {
        self.pool()
            .await
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)
    }

    /// Serialises writers of one address, username or user for the
    /// transaction, so two sign-ups of case variants cannot both pass the
    /// existence check (a no-op where writers already exclude each other).
    async fn lock_key(
        tx: &mut Transaction<'static, DB>,
        kind: &str,
        value: &str,
    ) -> Result<(), IdentityError> {
        let Some(sql) = DB::KEY_LOCK else {
            return Ok(());
        };
        sqlx::query(sql)
            .bind(format!("authgate:{kind}:{value}"))
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn email_taken(
        tx: &mut Transaction<'static, DB>,
        email: &str,
        except_id: Option<i64>,
    ) -> Result<bool, IdentityError> {
        Self::lock_key(tx, "email", &email.to_lowercase()).await?;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1) AND id <> COALESCE($2, -1))",
        )
        .bind(email)
        .bind(except_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
    }

    async fn end_all_sessions(
        tx: &mut Transaction<'static, DB>,
        user_id: i64,
        now: NaiveDateTime,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE device_sessions SET is_active = false, updated_at = $2 WHERE user_id = $1 AND COALESCE(is_active, true)",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn insert_token(
        tx: &mut Transaction<'static, DB>,
        user_id: i64,
        pending: &PendingToken,
        now: NaiveDateTime,
    ) -> Result<(), IdentityError> {
        let sql = format!(
            "INSERT INTO temporary_tokens (user_id, token, token_type, expires_at, used_at, is_valid, \
               created_at, updated_at, deleted_at, is_active, is_deleted) \
             VALUES ($1, $2, {}, $4, NULL, true, $5, $5, NULL, true, false)",
            DB::token_type("$3")
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(user_id)
            .bind(digest(&pending.token))
            .bind(token_type(pending.purpose))
            .bind(pending.expires_at.naive_utc())
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Marks a token used; returns its user when it was valid.
    async fn consume_token(
        tx: &mut Transaction<'static, DB>,
        token: &str,
        purpose: EmailPurpose,
        now: NaiveDateTime,
    ) -> Result<Option<i64>, IdentityError> {
        // Rows written by the old service hold the token itself; authgate's hold
        // its digest.
        let sql = format!(
            "UPDATE temporary_tokens SET is_valid = false, used_at = $3, updated_at = $3 \
             WHERE token IN ($1, $2) AND token_type = {} \
               AND COALESCE(is_valid, true) AND used_at IS NULL AND expires_at > $3 \
               AND NOT COALESCE(is_deleted, false) \
             RETURNING CAST(user_id AS BIGINT)",
            DB::token_type("$4")
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(token)
            .bind(digest(token))
            .bind(now)
            .bind(token_type(purpose))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)
    }

    async fn alive_user(
        tx: &mut Transaction<'static, DB>,
        id: i64,
    ) -> Result<Option<User>, IdentityError> {
        Self::lock_key(tx, "user", &id.to_string()).await?;
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1 AND ",
            alive!()
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(row.map(User::from))
    }

    /// True when the user exists and was deleted or deactivated. Tokens of
    /// users this database does not know (minted by the old deployment)
    /// stay usable.
    async fn user_gone(&self, user_id: i64) -> Result<bool, IdentityError> {
        sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND NOT (",
            alive!(),
            "))"
        ))
        .bind(user_id)
        .fetch_one(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// True when the token's device session exists and was ended, or the
    /// token was issued before the user's `not_before` (a password reset).
    async fn session_ended(&self, session: &SessionRef<'_>) -> Result<bool, IdentityError> {
        sqlx::query_scalar(concat!("SELECT ", session_ended!(),))
            .bind(session.user_id)
            .bind(issued_at(session))
            .bind(session.device_id.and_then(|id| Uuid::parse_str(id).ok()))
            .fetch_one(self.pool().await)
            .await
            .map_err(db_error)
    }

    /// Refuses every token of the user issued before now (whole seconds, as
    /// tokens' `iat`: a token issued in the same second stays usable).
    async fn revoke_all(
        tx: &mut Transaction<'static, DB>,
        user_id: i64,
        cutoff: NaiveDateTime,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "INSERT INTO authgate_user_not_before (user_id, not_before) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET not_before = EXCLUDED.not_before",
        )
        .bind(user_id)
        .bind(cutoff)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn insert_role(&self, user_id: i64, role: &str) -> Result<(), IdentityError> {
        sqlx::query(
            "INSERT INTO authgate_user_roles (user_id, role, granted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(role)
        .bind(self.now())
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<User>, IdentityError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE ",
            alive!(),
            " AND (username = $1 OR lower(email) = lower($1)) ORDER BY (username = $1) DESC, id LIMIT 1"
        ))
        .bind(login)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(row.map(User::from))
    }

    async fn rehash_if_needed(&self, row: &LoginRow, password: &str) {
        if !self.hashing.hasher().needs_rehash(&row.password) {
            return;
        }
        let new_hash = match self.hashing.hash(password.to_string()).await {
            Ok(hash) => hash,
            Err(err) => {
                tracing::warn!(user_id = row.id, error = %err, "password re-hash failed");
                return;
            }
        };
        // Compare-and-swap: a password changed meanwhile is left alone.
        let result = sqlx::query(
            "UPDATE users SET password = $2, updated_at = $4 WHERE id = $1 AND password = $3",
        )
        .bind(row.id)
        .bind(&new_hash)
        .bind(&row.password)
        .bind(self.now())
        .execute(self.pool().await)
        .await;
        match result {
            Ok(done) if DB::rows_affected(&done) == 1 => {
                tracing::info!(
                    user_id = row.id,
                    rounds = self.hashing.hasher().rounds(),
                    "password re-hashed"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(user_id = row.id, error = %err, "password re-hash not stored");
            }
        }
    }
}

#[async_trait]
impl<DB> IdentityBackend for NativeBackend<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    i64: Value<DB>,
    i32: Value<DB>,
    bool: Value<DB>,
    String: Value<DB>,
    NaiveDateTime: Value<DB>,
    Uuid: Value<DB>,
    Option<i64>: Value<DB>,
    Option<bool>: Value<DB>,
    Option<String>: Value<DB>,
    Option<NaiveDateTime>: Value<DB>,
    Option<Uuid>: Value<DB>,
{
    async fn ready(&self) -> Result<(), IdentityError> {
        sqlx::query("SELECT 1")
            .execute(self.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }

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

    async fn roles(&self, id: i64) -> Result<Vec<String>, IdentityError> {
        // A deleted or deactivated user holds no role.
        sqlx::query_scalar(concat!(
            "SELECT CAST(role AS TEXT) FROM authgate_user_roles r JOIN users ON users.id = r.user_id \
             WHERE r.user_id = $1 AND ",
            alive!(),
            " ORDER BY role"
        ))
        .bind(id)
        .fetch_all(self.pool().await)
        .await
        .map_err(db_error)
    }

    /// A row of authgate's roles table (the legacy schema had none).
    async fn grant_role(&self, login: &str, role: &str) -> Result<User, IdentityError> {
        let user = self
            .user_by_login(login)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.insert_role(user.id, role).await?;
        Ok(user)
    }

    async fn is_admin(&self, id: i64) -> Result<bool, IdentityError> {
        sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM authgate_user_roles r JOIN users ON users.id = r.user_id \
             WHERE r.user_id = $1 AND r.role = 'admin' AND ",
            alive!(),
            ")"
        ))
        .bind(id)
        .fetch_one(self.pool().await)
        .await
        .map_err(db_error)
    }

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
