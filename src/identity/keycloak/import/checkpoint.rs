//! Where an import stopped (migration 0009), and the lock that keeps two
//! runs from working on one database at once.
//!
//! Batches finish out of order when several are in flight; the checkpoint
//! moves only past batches that are complete, and every batch before them
//! too. A batch Keycloak had taken but the run had not yet recorded when it
//! stopped is simply sent again: Keycloak skips users that exist.

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::report::{Failure, Tally};
use crate::identity::IdentityError;
use crate::identity::db_error;

/// What earlier runs of the import did, as far as they got.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Every live user up to this id has been handled.
    pub last_legacy_id: i32,
    pub tally: Tally,
    pub failures: Vec<Failure>,
}

/// Held for the length of a run: a session-level advisory lock on a
/// connection of its own.
#[derive(Debug)]
pub struct RunLock {
    conn: PgConnection,
}

/// The lock's key: `hashtextextended('authgate import-users', 0)`.
const LOCK_KEY: &str = "authgate import-users";

impl RunLock {
    /// `Ok(None)` when another run holds it.
    pub async fn try_take(pool: &PgPool) -> Result<Option<Self>, IdentityError> {
        let conn: PoolConnection<Postgres> = pool.acquire().await.map_err(db_error)?;
        // Out of the pool: a pooled connection would keep the lock after the run.
        let mut conn = conn.detach();
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(LOCK_KEY)
                .fetch_one(&mut conn)
                .await
                .map_err(db_error)?;
        Ok(taken.then_some(Self { conn }))
    }

    /// Ends the session, and with it the lock.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

#[derive(Debug)]
pub struct Checkpoints<'a> {
    pool: &'a PgPool,
}

impl<'a> Checkpoints<'a> {
    pub fn new(pool: &'a PgPool) -> Self {
        Self { pool }
    }

    pub async fn load(&self) -> Result<Option<Checkpoint>, IdentityError> {
        let row: Option<(i32, i64, i64)> = sqlx::query_as(
            "SELECT last_legacy_id, imported, skipped FROM authgate_import_progress",
        )
        .fetch_optional(self.pool)
        .await
        .map_err(db_error)?;
        let Some((last_legacy_id, imported, skipped)) = row else {
            return Ok(None);
        };
        let failures: Vec<(i32, String, String)> = sqlx::query_as(
            "SELECT legacy_id, username, reason FROM authgate_import_failures \
             WHERE legacy_id <= $1 ORDER BY legacy_id",
        )
        .bind(last_legacy_id)
        .fetch_all(self.pool)
        .await
        .map_err(db_error)?;
        let failures: Vec<Failure> = failures
            .into_iter()
            .map(|(legacy_id, username, reason)| Failure {
                legacy_id,
                username,
                reason,
            })
            .collect();
        Ok(Some(Checkpoint {
            last_legacy_id,
            tally: Tally {
                imported: u64::try_from(imported).unwrap_or(0),
                skipped: u64::try_from(skipped).unwrap_or(0),
                failed: failures.len() as u64,
            },
            failures,
        }))
    }

    /// Moves the checkpoint to `last_legacy_id`, adding the counts and
    /// failures of the batches up to it, in one transaction.
    pub async fn advance(
        &self,
        last_legacy_id: i32,
        tally: &Tally,
        failures: &[Failure],
        now: chrono::NaiveDateTime,
    ) -> Result<(), IdentityError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO authgate_import_progress (last_legacy_id, imported, skipped, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (only_row) DO UPDATE SET last_legacy_id = EXCLUDED.last_legacy_id, \
               imported = authgate_import_progress.imported + EXCLUDED.imported, \
               skipped = authgate_import_progress.skipped + EXCLUDED.skipped, \
               updated_at = EXCLUDED.updated_at",
        )
        .bind(last_legacy_id)
        .bind(i64::try_from(tally.imported).unwrap_or(i64::MAX))
        .bind(i64::try_from(tally.skipped).unwrap_or(i64::MAX))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if !failures.is_empty() {
            let ids: Vec<i32> = failures.iter().map(|f| f.legacy_id).collect();
            let names: Vec<&str> = failures.iter().map(|f| f.username.as_str()).collect();
            let reasons: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
            sqlx::query(
                "INSERT INTO authgate_import_failures (legacy_id, username, reason) \
                 SELECT * FROM UNNEST($1::int4[], $2::text[], $3::text[]) \
                 ON CONFLICT (legacy_id) DO UPDATE SET username = EXCLUDED.username, reason = EXCLUDED.reason",
            )
            .bind(&ids)
            .bind(&names)
            .bind(&reasons)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    /// Forgets where the import stopped: the next run starts at the first user.
    pub async fn clear(&self) -> Result<(), IdentityError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for statement in [
            "DELETE FROM authgate_import_progress",
            "DELETE FROM authgate_import_failures",
        ] {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}
