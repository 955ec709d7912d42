//! The live users of the legacy `users` table, read in id order one page at
//! a time (keyset pages: `id > last seen`), so memory holds a page, never
//! the table, and no transaction stays open for the length of a run.

use sqlx::{FromRow, PgPool};

use crate::identity::IdentityError;
use crate::identity::db_error;

#[derive(Debug, Clone, FromRow)]
pub struct LegacyUser {
    pub id: i32,
    pub username: String,
    pub email: String,
    pub password: String,
    pub is_verified: bool,
}

/// Before every id (ids are `INTEGER`).
pub const BEFORE_ALL: i64 = i32::MIN as i64 - 1;

/// How many live users have an id above `after`.
pub async fn count_after(pool: &PgPool, after: i64) -> Result<u64, IdentityError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users \
         WHERE id > $1 AND NOT COALESCE(is_deleted, false) AND COALESCE(is_active, true)",
    )
    .bind(after)
    .fetch_one(pool)
    .await
    .map_err(db_error)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Up to `limit` live users with an id above `after`, by id. Live: neither
/// deleted nor deactivated (the old service's columns may be NULL in
/// databases it left behind).
pub async fn page_after(
    pool: &PgPool,
    after: i64,
    limit: usize,
) -> Result<Vec<LegacyUser>, IdentityError> {
    sqlx::query_as(
        "SELECT id, username, email, password, COALESCE(is_verified, false) AS is_verified \
         FROM users WHERE id > $1 AND NOT COALESCE(is_deleted, false) AND COALESCE(is_active, true) \
         ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db_error)
}

/// The live users above a given id, `size` at a time, read as they are
/// asked for.
#[derive(Debug)]
pub struct Pages<'p> {
    pool: &'p PgPool,
    /// The last id read; `None` once a page came back short.
    after: Option<i64>,
    size: usize,
}

impl<'p> Pages<'p> {
    pub fn new(pool: &'p PgPool, after: i64, size: usize) -> Self {
        Self {
            pool,
            after: Some(after),
            size: size.max(1),
        }
    }

    /// The next page; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<LegacyUser>>, IdentityError> {
        let Some(after) = self.after else {
            return Ok(None);
        };
        let page = page_after(self.pool, after, self.size).await?;
        // A short page is the last one: no query for an empty page after it.
        self.after = match page.last() {
            Some(last) if page.len() == self.size => Some(i64::from(last.id)),
            _ => None,
        };
        Ok((!page.is_empty()).then_some(page))
    }

    /// Every page has been read.
    pub fn exhausted(&self) -> bool {
        self.after.is_none()
    }
}
