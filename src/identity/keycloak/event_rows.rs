//! The admin-event reader's row (`authgate_admin_events`, migration 0013):
//! the lease that lets one replica of the cluster read at a time, how far
//! it has read, and the realm's "sign out all active sessions" instant.

use chrono::DateTime;
use uuid::Uuid;

use super::registry::Registry;
use crate::identity::IdentityError;
use crate::identity::db_error;

/// How far the reader has read: events up to `time_ms` are handled, and
/// `seen` names those handled near it (`<time>:<id>`), which are read
/// again in case another one of the same moment committed late.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub time_ms: i64,
    pub seen: Vec<String>,
}

impl Cursor {
    pub fn has_seen(&self, time_ms: i64, key: &str) -> bool {
        self.seen.iter().any(|s| s == &format!("{time_ms}:{key}"))
    }

    /// Marks an event handled, forgetting those older than `keep_ms`
    /// before the newest.
    pub fn handled(&mut self, time_ms: i64, key: &str, keep_ms: i64) {
        self.time_ms = self.time_ms.max(time_ms);
        self.seen.push(format!("{time_ms}:{key}"));
        let oldest = self.time_ms - keep_ms;
        self.seen.retain(|s| {
            s.split_once(':')
                .and_then(|(t, _)| t.parse::<i64>().ok())
                .is_some_and(|t| t >= oldest)
        });
    }
}

impl Registry {
    /// Takes (or keeps) the reader's lease for `lease_ms` when it is free,
    /// expired or already `holder`'s; the cursor when it is ours. A realm
    /// read for the first time starts at `start_ms`.
    pub async fn take_event_lease(
        &self,
        realm: &str,
        holder: Uuid,
        lease_ms: i64,
        start_ms: i64,
    ) -> Result<Option<Cursor>, IdentityError> {
        let row: Option<(i64, Vec<String>)> = sqlx::query_as(
            "INSERT INTO authgate_admin_events (realm, cursor_ms, holder, lease_until) \
             VALUES ($1, $4, $2, now() + $3 * interval '1 millisecond') \
             ON CONFLICT (realm) DO UPDATE SET holder = EXCLUDED.holder, lease_until = EXCLUDED.lease_until \
               WHERE authgate_admin_events.holder = EXCLUDED.holder \
                  OR authgate_admin_events.holder IS NULL \
                  OR authgate_admin_events.lease_until < now() \
             RETURNING cursor_ms, seen",
        )
        .bind(realm)
        .bind(holder)
        .bind(lease_ms as f64)
        .bind(start_ms)
        .fetch_optional(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(row.map(|(time_ms, seen)| Cursor { time_ms, seen }))
    }

    /// Gives the lease up (the process is stopping).
    pub async fn release_event_lease(
        &self,
        realm: &str,
        holder: Uuid,
    ) -> Result<(), IdentityError> {
        sqlx::query(
            "UPDATE authgate_admin_events SET holder = NULL, lease_until = NULL \
             WHERE realm = $1 AND holder = $2",
        )
        .bind(realm)
        .bind(holder)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Saves how far `holder` has read; `false` when it no longer holds
    /// the lease (another replica took over: it reads from the saved cursor).
    pub async fn save_event_cursor(
        &self,
        realm: &str,
        holder: Uuid,
        cursor: &Cursor,
    ) -> Result<bool, IdentityError> {
        let done = sqlx::query(
            "UPDATE authgate_admin_events SET cursor_ms = $3, seen = $4 \
             WHERE realm = $1 AND holder = $2",
        )
        .bind(realm)
        .bind(holder)
        .bind(cursor.time_ms)
        .bind(&cursor.seen)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Every token issued before `at` (Unix seconds) is refused: the
    /// realm's "sign out all active sessions".
    pub async fn set_realm_not_before(&self, realm: &str, at: i64) -> Result<(), IdentityError> {
        let cutoff = DateTime::from_timestamp(at, 0).map(|at| at.naive_utc());
        sqlx::query(
            "UPDATE authgate_admin_events SET realm_not_before = GREATEST(realm_not_before, $2) \
             WHERE realm = $1",
        )
        .bind(realm)
        .bind(cutoff)
        .execute(self.pool().await)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_keeps_what_it_may_read_again() {
        let mut cursor = Cursor {
            time_ms: 1_000,
            seen: Vec::new(),
        };
        cursor.handled(1_500, "a", 5_000);
        cursor.handled(1_200, "b", 5_000);
        assert_eq!(cursor.time_ms, 1_500, "a late event does not move it back");
        assert!(cursor.has_seen(1_200, "b"));
        assert!(!cursor.has_seen(1_500, "b"));
        cursor.handled(7_000, "c", 5_000);
        assert_eq!(
            cursor.seen,
            vec!["7000:c".to_string()],
            "older ones forgotten"
        );
        assert!(!cursor.has_seen(1_500, "a"));
    }
}
