//! Sign-ups whose `create_user` failed without a clear answer (timed out,
//! cut by the request's deadline, a 5xx): Keycloak may still have created
//! the user, under the legacy id authgate allocated for it, which no
//! registry row will ever name. They are written down
//! (`authgate_abandoned_signups`, migration 0014), so that neither a
//! restart nor another replica forgets them, and such a user is removed:
//! by a retried sign-up with the same address or name that finds it
//! ([`super::KeycloakBackend`]'s `register`), soon after the failure by
//! the replica that saw it, or else by every replica's sweep
//! ([`sweep`]), at start and then every [`SWEEP_EVERY`]. The legacy id is
//! authgate's own, allocated once, so no other sign-up's user is touched.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::Postgres;

use super::admin::Admin;
use crate::clock::Clock;
use crate::identity::IdentityError;
use crate::identity::db_error;
use crate::store::Database;

/// The waits before each look by the replica that saw the failure (about
/// a minute in all).
pub const FIRST_LOOKS: [u64; 6] = [1, 2, 4, 8, 16, 32];
/// How often every replica sweeps what is left.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A record whose user Keycloak never created is dropped after this.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::days(1);
/// Records handled per sweep.
const SWEEP_BATCH: i64 = 500;

/// The records, in the registry's database.
#[derive(Clone)]
pub struct Abandoned {
    db: Arc<Database<Postgres>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abandoned").finish_non_exhaustive()
    }
}

/// What became of one record's Keycloak user.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// Found and deleted, or given up: the record is gone.
    Settled,
    /// Not there (yet), or Keycloak did not answer: looked at again later.
    Pending,
}

impl Abandoned {
    pub fn new(db: Arc<Database<Postgres>>, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Writes down the sign-up of `legacy_id` as abandoned.
    pub async fn record(&self, legacy_id: i32) -> Result<(), IdentityError> {
        sqlx::query(
            "INSERT INTO authgate_abandoned_signups (legacy_id, abandoned_at) VALUES ($1, $2) \
             ON CONFLICT (legacy_id) DO NOTHING",
        )
        .bind(legacy_id)
        .bind(self.clock.naive_utc())
        .execute(self.db.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Whether the sign-up of `legacy_id` was abandoned and its user not
    /// removed yet.
    pub async fn contains(&self, legacy_id: i32) -> Result<bool, IdentityError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT legacy_id FROM authgate_abandoned_signups WHERE legacy_id = $1",
        )
        .bind(legacy_id)
        .fetch_optional(self.db.pool().await)
        .await
        .map_err(db_error)?;
        Ok(found.is_some())
    }

    /// Forgets the record (its user was removed).
    pub async fn remove(&self, legacy_id: i32) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM authgate_abandoned_signups WHERE legacy_id = $1")
            .bind(legacy_id)
            .execute(self.db.pool().await)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn oldest(&self) -> Result<Vec<(i32, NaiveDateTime)>, IdentityError> {
        sqlx::query_as(
            "SELECT legacy_id, abandoned_at FROM authgate_abandoned_signups \
             ORDER BY abandoned_at LIMIT $1",
        )
        .bind(SWEEP_BATCH)
        .fetch_all(self.db.pool().await)
        .await
        .map_err(db_error)
    }

    /// Looks for the user of one record and removes it if it is there.
    async fn look(
        &self,
        admin: &Admin,
        legacy_id: i32,
        since: Option<NaiveDateTime>,
    ) -> Result<Look, IdentityError> {
        match admin.find_by_legacy_id(legacy_id).await? {
            Some(user) => {
                admin.delete(&user.id).await?;
                self.remove(legacy_id).await?;
                tracing::info!(legacy_id, "Keycloak user of a failed sign-up removed");
                Ok(Look::Settled)
            }
            None if since.is_some_and(|at| self.clock.naive_utc() - at > GIVE_UP_AFTER) => {
                self.remove(legacy_id).await?;
                Ok(Look::Settled)
            }
            // Not created (yet: Keycloak may still be at it).
            None => Ok(Look::Pending),
        }
    }

    /// The replica that saw the failure looks after each of
    /// [`FIRST_LOOKS`], until the user is removed (here, by a retried
    /// sign-up or by a sweep).
    pub async fn first_looks(self, admin: Admin, legacy_id: i32) {
        for wait in FIRST_LOOKS {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match self.contains(legacy_id).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(err) => {
                    tracing::debug!(legacy_id, error = %err, "abandoned sign-up not read; later");
                    continue;
                }
            }
            match self.look(&admin, legacy_id, None).await {
                Ok(Look::Settled) => return,
                Ok(Look::Pending) => {}
                Err(err) => tracing::debug!(legacy_id, error = %err, "look-up failed; later"),
            }
        }
    }

    /// One pass over the records; how many users it removed or gave up.
    pub async fn sweep_once(&self, admin: &Admin) -> Result<usize, IdentityError> {
        let mut settled = 0;
        for (legacy_id, since) in self.oldest().await? {
            if self.look(admin, legacy_id, Some(since)).await? == Look::Settled {
                settled += 1;
            }
        }
        Ok(settled)
    }
}

/// Every replica's sweep: at start, then every [`SWEEP_EVERY`]; a pass that
/// fails (Keycloak or the database away) is tried again at the next.
pub async fn sweep(abandoned: Abandoned, admin: Admin) {
    loop {
        match abandoned.sweep_once(&admin).await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "abandoned sign-ups swept"),
            Err(err) => tracing::debug!(error = %err, "abandoned sign-ups not swept; later"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}
