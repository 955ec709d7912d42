//! The SQL stores every part of authgate that keeps rows uses (the native
//! backend, Keycloak mode's own tables, the audit trail): their pools,
//! dialects and migrations, and the kind of store a database URL names.
//! PostgreSQL (production, and the legacy service's own database) or an
//! embedded SQLite file (the zero-setup default). The queries are written
//! once for both; a [`Dialect`] holds the few places where the two differ.
//!
//! Imports: `config` only (the database settings). How a store's errors
//! read to the identity layer is `identity::db_error`'s job, not this one's.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgQueryResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteQueryResult, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Pool, Postgres, Sqlite};
use tokio::sync::OnceCell;

use crate::config::DatabaseSettings;
pub use crate::config::StoreKind;

/// The PostgreSQL migrations (legacy schema, then authgate's additions).
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
/// The same schema for the embedded SQLite store.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// A value every store binds and reads.
pub trait Value<DB: sqlx::Database>:
    for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send + Sync
{
}

impl<DB: sqlx::Database, T> Value<DB> for T where
    T: for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB> + Send + Sync
{
}

type Options<DB> = <<DB as sqlx::Database>::Connection as Connection>::Options;

/// What differs between the stores.
pub trait Dialect: sqlx::Database {
    /// Starts a transaction that is going to write.
    const BEGIN_WRITE: &'static str;
    /// Locks the text key `$1` until the transaction ends, or `None` where a
    /// writing transaction already excludes every other writer.
    const KEY_LOCK: Option<&'static str>;

    fn migrator() -> &'static Migrator;
    /// The parameter `param` as a token type (`EMAIL_VERIFICATION`, ...).
    fn token_type(param: &str) -> String;
    /// Connection options from the database URL.
    fn options(url: &str) -> Result<Options<Self>, sqlx::Error>;
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const KEY_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))");

    fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATOR
    }

    /// The legacy schema's `tokentype` enum.
    fn token_type(param: &str) -> String {
        format!("CAST({param} AS tokentype)")
    }

    fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
        Ok(PgConnectOptions::from_str(url)?
            .application_name("authgate")
            .disable_statement_logging())
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for Sqlite {
    // IMMEDIATE takes the write lock at once, so the reads that decide a
    // write (is this address taken?) cannot be overtaken by another writer.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const KEY_LOCK: Option<&'static str> = None;

    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATOR
    }

    /// A checked text column.
    fn token_type(param: &str) -> String {
        param.to_string()
    }

    /// The file is created (with its folder) when missing; WAL lets readers
    /// work while one connection writes.
    fn options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .disable_statement_logging();
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder)?;
        }
        Ok(options)
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// A pool created on first use, inside the runtime that uses it (pingora
/// runs each service on its own tokio runtime, and a pool's connections
/// belong to the runtime that opened them).
#[derive(Debug)]
pub struct Database<DB: Dialect> {
    options: Options<DB>,
    settings: DatabaseSettings,
    pool: OnceCell<Pool<DB>>,
}

impl<DB: Dialect> Database<DB>
where
    DB::Connection: Migrate,
{
    pub fn new(settings: &DatabaseSettings) -> Result<Self, sqlx::Error> {
        Ok(Self {
            options: DB::options(&settings.url)?,
            settings: settings.clone(),
            pool: OnceCell::new(),
        })
    }

    pub async fn pool(&self) -> &Pool<DB> {
        self.pool
            .get_or_init(|| async {
                PoolOptions::<DB>::new()
                    .max_connections(self.settings.max_connections)
                    .acquire_timeout(self.settings.acquire_timeout)
                    .test_before_acquire(true)
                    .connect_lazy_with(self.options.clone())
            })
            .await
    }

    /// Runs the migrations on a connection of its own, one at a time,
    /// telling `progress` about each.
    pub async fn migrate(&self, progress: &mut dyn FnMut(Step<'_>)) -> Result<(), MigrateError> {
        let pool = PoolOptions::<DB>::new()
            .max_connections(1)
            .acquire_timeout(self.settings.acquire_timeout)
            .connect_with(self.options.clone())
            .await
            .map_err(MigrateError::Connect)?;
        let result = Self::run_steps(&pool, progress).await;
        pool.close().await;
        result
    }

    async fn run_steps(
        pool: &Pool<DB>,
        progress: &mut dyn FnMut(Step<'_>),
    ) -> Result<(), MigrateError> {
        let migrator = DB::migrator();
        let applied: HashSet<i64> = {
            let mut conn = pool.acquire().await.map_err(MigrateError::Connect)?;
            conn.ensure_migrations_table(&migrator.table_name)
                .await
                .map_err(MigrateError::Run)?;
            conn.list_applied_migrations(&migrator.table_name)
                .await
                .map_err(MigrateError::Run)?
                .into_iter()
                .map(|m| m.version)
                .collect()
        };
        let steps: Vec<_> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .collect();
        for (index, migration) in steps.iter().enumerate() {
            let outcome = if applied.contains(&migration.version) {
                StepOutcome::AlreadyApplied
            } else {
                let started = Instant::now();
                migrator
                    .run_to(migration.version, pool)
                    .await
                    .map_err(MigrateError::Run)?;
                StepOutcome::Applied(started.elapsed())
            };
            progress(Step {
                number: index + 1,
                total: steps.len(),
                version: migration.version,
                description: &migration.description,
                outcome,
            });
        }
        // Checks the applied ones against their sources (changed files).
        migrator.run(pool).await.map_err(MigrateError::Run)
    }
}

/// One migration, as `migrate` went through it.
#[derive(Debug)]
pub struct Step<'a> {
    pub number: usize,
    pub total: usize,
    pub version: i64,
    pub description: &'a str,
    pub outcome: StepOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    AlreadyApplied,
    Applied(Duration),
}

impl std::fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}/{}] {:04} {}: ",
            self.number, self.total, self.version, self.description
        )?;
        match self.outcome {
            StepOutcome::AlreadyApplied => write!(f, "already applied"),
            StepOutcome::Applied(took) => write!(f, "applied in {:.2}s", took.as_secs_f64()),
        }
    }
}

/// Runs the migrations of whichever store `settings` names.
pub async fn migrate(
    settings: &DatabaseSettings,
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<(), MigrateError> {
    match StoreKind::of(&settings.url) {
        Some(StoreKind::Sqlite) => {
            Database::<Sqlite>::new(settings)
                .map_err(MigrateError::Connect)?
                .migrate(progress)
                .await
        }
        _ => {
            Database::<Postgres>::new(settings)
                .map_err(MigrateError::Connect)?
                .migrate(progress)
                .await
        }
    }
}

/// The file behind a `sqlite:` URL, for messages.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(Path::new(rest.split('?').next().unwrap_or(rest)))
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("migration failed: {0}")]
    Run(sqlx::migrate::MigrateError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kind_from_url() {
        assert_eq!(StoreKind::of("postgres://u@h/d"), Some(StoreKind::Postgres));
        assert_eq!(
            StoreKind::of("postgresql://u@h/d"),
            Some(StoreKind::Postgres)
        );
        assert_eq!(StoreKind::of("sqlite://data/a.db"), Some(StoreKind::Sqlite));
        assert_eq!(
            StoreKind::of("sqlite:a.db?mode=rwc"),
            Some(StoreKind::Sqlite)
        );
        assert_eq!(StoreKind::of("mysql://h/d"), None);
        assert_eq!(
            sqlite_file("sqlite://data/a.db"),
            Some(Path::new("data/a.db"))
        );
        assert_eq!(sqlite_file("sqlite:a.db?mode=rwc"), Some(Path::new("a.db")));
    }
}
