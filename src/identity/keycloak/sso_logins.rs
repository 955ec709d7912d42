//! The pending single sign-on logins in PostgreSQL (migration 0007), shared
//! by every replica: stored at `/auth/login`, used up once at the callback.
//! Rows are found by a digest of `state` and must match a digest of the
//! browser's cookie; neither value is stored as it is.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{FromRow, Postgres};

use crate::clock::Clock;
use crate::identity::IdentityError;
use crate::identity::db_error;
use crate::identity::sso::SsoRefusal;
use crate::store::Database;
use crate::tokens::digest;

/// Used rows are kept this long after they expire (to tell a replay from
/// a forgery), then deleted.
const KEEP_AFTER_EXPIRY_HOURS: i64 = 24;

/// A login to store.
#[derive(Debug)]
pub struct NewLogin<'a> {
    pub state: &'a str,
    pub browser_key: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub provider: &'a str,
    pub redirect: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// A login taken for its callback.
#[derive(Clone, FromRow)]
pub struct PendingLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    pub provider: String,
    pub redirect_to: String,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("provider", &self.provider)
            .field("redirect_to", &self.redirect_to)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct SsoLogins {
    db: Arc<Database<Postgres>>,
    clock: Arc<dyn Clock>,
}

impl SsoLogins {
    pub fn new(db: Arc<Database<Postgres>>, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    fn now(&self) -> NaiveDateTime {
        self.clock.naive_utc()
    }

    pub async fn insert(&self, login: &NewLogin<'_>) -> Result<(), IdentityError> {
        let pool = self.db.pool().await;
        let now = self.now();
        sqlx::query("DELETE FROM authgate_sso_logins WHERE expires_at < $1")
            .bind(now - chrono::Duration::hours(KEEP_AFTER_EXPIRY_HOURS))
            .execute(pool)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO authgate_sso_logins (state_digest, browser_digest, nonce, pkce_verifier, \
             provider, redirect_to, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(digest(login.state))
        .bind(digest(login.browser_key))
        .bind(login.nonce)
        .bind(login.pkce_verifier)
        .bind(login.provider)
        .bind(login.redirect)
        .bind(login.expires_at.naive_utc())
        .bind(now)
        .execute(pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Uses up the login of `state` when it is this browser's, unused and
    /// unexpired (one statement: two callbacks cannot both take it);
    /// otherwise says which of those it is not.
    pub async fn take(
        &self,
        state: &str,
        browser_key: &str,
    ) -> Result<Result<PendingLogin, SsoRefusal>, IdentityError> {
        let pool = self.db.pool().await;
        let now = self.now();
        let state_digest = digest(state);
        let taken: Option<PendingLogin> = sqlx::query_as(
            "UPDATE authgate_sso_logins SET used_at = $3 \
             WHERE state_digest = $1 AND browser_digest = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING nonce, pkce_verifier, provider, redirect_to",
        )
        .bind(&state_digest)
        .bind(digest(browser_key))
        .bind(now)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
        if let Some(login) = taken {
            return Ok(Ok(login));
        }
        let found: Option<(String, Option<NaiveDateTime>, NaiveDateTime)> = sqlx::query_as(
            "SELECT browser_digest, used_at, expires_at FROM authgate_sso_logins WHERE state_digest = $1",
        )
        .bind(&state_digest)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
        Ok(Err(match found {
            None => SsoRefusal::UnknownState,
            Some((browser, _, _)) if browser != digest(browser_key) => SsoRefusal::WrongBrowser,
            Some((_, Some(_), _)) => SsoRefusal::StateUsed,
            Some(_) => SsoRefusal::StateExpired,
        }))
    }
}
