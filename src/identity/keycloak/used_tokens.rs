//! Logout tokens already used, by their `jti`, remembered until they
//! expire and shared by every replica: in Redis when `REDIS_URL` is set
//! (`SET NX` with the token's expiry), else in PostgreSQL
//! (`authgate_logout_tokens`, migration 0013). Only a SHA-256 of the `jti`
//! is kept. While Redis does not answer, PostgreSQL is used (a replay sent
//! to a replica that still reaches Redis could then pass once: it would
//! only end again what already ended).

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use sqlx::Postgres;

use crate::clock::Clock;
use crate::identity::db_error;
use crate::identity::{IdentityError, Pruning};
use crate::redis_conn::LazyRedis;
use crate::store::Database;
use crate::tokens::digest;

/// Redis's own bound for one `SET NX`.
const REDIS_WAIT: Duration = Duration::from_millis(500);

pub struct UsedTokens {
    redis: Option<LazyRedis>,
    db: Arc<Database<Postgres>>,
    clock: Arc<dyn Clock>,
    pruning: Pruning,
}

impl std::fmt::Debug for UsedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsedTokens")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl UsedTokens {
    pub fn new(
        redis_url: Option<&str>,
        db: Arc<Database<Postgres>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: redis_url.map(LazyRedis::open).transpose()?,
            db,
            clock,
            pruning: Pruning::default(),
        })
    }

    /// Records `jti` as used until `expires` (Unix seconds); `true` the
    /// first time, `false` for a token seen before.
    pub async fn first_use(&self, jti: &str, expires: i64) -> Result<bool, IdentityError> {
        let key = digest(jti);
        if let Some(redis) = &self.redis {
            let work = async {
                let mut connection = redis.connection().await?;
                redis::cmd("SET")
                    .arg(format!("authgate:logout-jti:{key}"))
                    .arg(1)
                    .arg("NX")
                    .arg("EXAT")
                    .arg(expires.max(self.clock.unix() + 1))
                    .query_async::<Option<String>>(&mut connection)
                    .await
            };
            match tokio::time::timeout(REDIS_WAIT, work).await {
                Ok(Ok(set)) => return Ok(set.is_some()),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "Redis did not take a logout token's jti: kept in PostgreSQL");
                }
                Err(_) => {
                    tracing::warn!(
                        "Redis did not answer in time: a logout token's jti is kept in PostgreSQL"
                    );
                }
            }
        }
        let expires_at = DateTime::from_timestamp(expires, 0)
            .map(|at| at.naive_utc())
            .unwrap_or_else(|| self.clock.naive_utc());
        let pool = self.db.pool().await;
        let inserted = sqlx::query(
            "INSERT INTO authgate_logout_tokens (jti_digest, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti_digest) DO NOTHING",
        )
        .bind(&key)
        .bind(expires_at)
        .execute(pool)
        .await
        .map_err(db_error)?;
        if self.pruning.due(self.clock.unix()) {
            let pool = pool.clone();
            let now = self.clock.naive_utc();
            tokio::spawn(async move {
                if let Err(err) =
                    sqlx::query("DELETE FROM authgate_logout_tokens WHERE expires_at < $1")
                        .bind(now)
                        .execute(&pool)
                        .await
                {
                    tracing::warn!(error = %err, "expired logout token ids not removed");
                }
            });
        }
        Ok(inserted.rows_affected() == 1)
    }
}
