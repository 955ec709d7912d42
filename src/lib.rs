//! authgate: a gateway that keeps the legacy `/users/...` authentication
//! contract while the identity work runs natively (PostgreSQL) or in Keycloak.
//!
//! The library holds everything; `main.rs` is the command line.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod clock;
pub mod config;
pub mod http;
pub mod identity;
pub mod mail;
pub mod password;
pub mod ratelimit;
pub mod server;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use crate::api::App;
use crate::clock::{Clock, SystemClock};
use crate::config::{Backend, Config};
use crate::identity::IdentityBackend;
use crate::identity::native::{Database, Hashing, MailLimit, NativeBackend};
use crate::mail::Mailer;
use crate::password::PasswordHasher;
use crate::tokens::{Lifetimes, TokenService};

/// Why the gateway cannot start (one line, naming what is wrong).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("SECRET_KEY cannot key the tokens: {0}")]
    Tokens(#[from] tokens::TokenError),
    #[error("DATABASE_URL is not usable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("mail: {0}")]
    Mail(#[from] mail::MailError),
    #[error("{0}")]
    Migrate(#[from] identity::native::MigrateError),
    #[error("AUTH_BACKEND=keycloak: {0}")]
    Keycloak(String),
    #[error("router: {0}")]
    Router(#[from] matchit::InsertError),
}

/// Seconds in a minute-denominated setting.
fn minutes(value: u64) -> Duration {
    Duration::from_secs(value.saturating_mul(60))
}

pub fn token_service(config: &Config, clock: Arc<dyn Clock>) -> Result<TokenService, StartupError> {
    Ok(TokenService::new(
        config.jwt.secret.as_bytes(),
        Lifetimes {
            access: minutes(config.jwt.access_minutes),
            refresh: minutes(config.jwt.refresh_minutes),
            email: minutes(config.jwt.email_minutes),
        },
        clock,
    )?)
}

/// The native backend on the configured database.
pub fn native_backend(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<NativeBackend, StartupError> {
    let database = Arc::new(Database::new(&config.database)?);
    let hasher = PasswordHasher::new(config.password_rounds, config.jwt.secret.as_bytes());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(NativeBackend::new(
        database,
        Hashing::new(hasher, cores),
        clock,
        MailLimit {
            count: config.verification_mail_limit,
            window: config.verification_mail_window,
        },
    ))
}

/// Builds the application from a checked configuration (no I/O happens here).
pub fn build_app(config: Config) -> Result<App, StartupError> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tokens = token_service(&config, Arc::clone(&clock))?;
    let backend: Arc<dyn IdentityBackend> = match config.backend {
        Backend::Native => Arc::new(native_backend(&config, Arc::clone(&clock))?),
        Backend::Keycloak => {
            return Err(StartupError::Keycloak(
                "the Keycloak backend is not available in this version yet".into(),
            ));
        }
    };
    let mailer = Arc::new(Mailer::new(
        &config.smtp,
        &config.app.name,
        config.jwt.email_minutes,
        config.templates_dir.as_deref(),
    )?);
    Ok(App::new(config, tokens, backend, mailer, clock)?)
}
