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

/// Implements one of the backend's roles for `NativeBackend<DB>` on every
/// store: the bounds that let the queries run on both dialects, written once.
macro_rules! for_every_store {
    (impl $role:ident { $($body:tt)* }) => {
        #[async_trait::async_trait]
        impl<DB> $crate::identity::$role for $crate::identity::native::NativeBackend<DB>
        where
            DB: $crate::store::Dialect,
            DB::Connection: sqlx::migrate::Migrate,
            DB::Arguments: sqlx::IntoArguments<DB>,
            for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
            usize: sqlx::ColumnIndex<DB::Row>,
            for<'a> &'a str:
                sqlx::ColumnIndex<DB::Row> + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
            i64: $crate::store::Value<DB>,
            i32: $crate::store::Value<DB>,
            bool: $crate::store::Value<DB>,
            String: $crate::store::Value<DB>,
            chrono::NaiveDateTime: $crate::store::Value<DB>,
            uuid::Uuid: $crate::store::Value<DB>,
            Option<i64>: $crate::store::Value<DB>,
            Option<bool>: $crate::store::Value<DB>,
            Option<String>: $crate::store::Value<DB>,
            Option<chrono::NaiveDateTime>: $crate::store::Value<DB>,
            Option<uuid::Uuid>: $crate::store::Value<DB>,
        {
            $($body)*
        }
    };
}

mod hashing;

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};
use sqlx::migrate::Migrate;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type,
};
use uuid::Uuid;

pub use hashing::Hashing;

use super::db_error;
use super::{IdentityError, MailLimit, PendingToken, Pruning, SessionRef, User};
use crate::clock::Clock;
use crate::store::{Database, Dialect, Value};
use crate::tokens::{EmailPurpose, digest};

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

for_every_store! {
    impl IdentityBackend {
        async fn ready(&self) -> Result<(), IdentityError> {
            sqlx::query("SELECT 1")
                .execute(self.pool().await)
                .await
                .map_err(db_error)?;
            Ok(())
        }
    }
}

// The roles, one file each (after the macros above, which they use).
mod credentials;
mod email_tokens;
mod roles;
mod sessions;
mod users;
