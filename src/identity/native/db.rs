//! The PostgreSQL pool, its migrations, and how its errors read to the api.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::OnceCell;

use crate::config::DatabaseSettings;
use crate::identity::IdentityError;

/// The migrations under `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool created on first use, inside the runtime that uses it (pingora
/// runs each service on its own tokio runtime, and a pool's connections
/// belong to the runtime that opened them).
#[derive(Debug)]
pub struct Database {
    options: PgConnectOptions,
    settings: DatabaseSettings,
    pool: OnceCell<PgPool>,
}

impl Database {
    pub fn new(settings: &DatabaseSettings) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(&settings.url)?
            .application_name("authgate")
            .disable_statement_logging();
        Ok(Self {
            options,
            settings: settings.clone(),
            pool: OnceCell::new(),
        })
    }

    pub async fn pool(&self) -> &PgPool {
        self.pool
            .get_or_init(|| async {
                PgPoolOptions::new()
                    .max_connections(self.settings.max_connections)
                    .acquire_timeout(self.settings.acquire_timeout)
                    .test_before_acquire(true)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    /// Runs the migrations on a connection of its own.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.settings.acquire_timeout)
            .connect_with(self.options.clone())
            .await
            .map_err(MigrateError::Connect)?;
        let result = MIGRATOR.run(&pool).await.map_err(MigrateError::Run);
        pool.close().await;
        result
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Run(sqlx::migrate::MigrateError),
}

/// Maps a database error to the identity layer: an unreachable database is
/// `Unavailable` (a 503 at the edge); the rest is internal and logged here,
/// never shown to the client.
pub fn db_error(err: sqlx::Error) -> IdentityError {
    match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %err, "database unavailable");
            IdentityError::Unavailable("Database")
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 57P0x: shutdown / cannot connect now.
            if code.starts_with("08") || code.starts_with("57P") {
                tracing::warn!(code = %code, "database unavailable");
                return IdentityError::Unavailable("Database");
            }
            if code == "23505" {
                let constraint = db.constraint().unwrap_or_default();
                if constraint.contains("email") {
                    return IdentityError::EmailTaken;
                }
                if constraint.contains("username") {
                    return IdentityError::UsernameTaken;
                }
            }
            tracing::error!(code = %code, error = %db.message(), "database error");
            IdentityError::Internal(format!("database error {code}"))
        }
        _ => {
            tracing::error!(error = %err, "database error");
            IdentityError::Internal("database error".into())
        }
    }
}
