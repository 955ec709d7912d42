//! authgate: a gateway that keeps the legacy `/users/...` authentication
//! contract while the identity work runs natively (PostgreSQL) or in Keycloak.
//!
//! The library holds everything; `main.rs` is the command line.

pub mod api;
pub mod audit;
pub mod background;
pub mod balance;
pub mod check_config;
pub mod clock;
pub mod config;
pub mod conn;
pub mod drain;
pub mod edge;
pub mod forward;
pub mod http;
pub mod identity;
pub mod keepalive;
pub mod mail;
pub mod metrics;
pub mod password;
pub mod progress;
pub mod ratelimit;
pub mod redis_conn;
pub mod reload;
pub mod revocation;
pub mod routes;
pub mod secret_file;
pub mod server;
pub mod startup;
pub mod store;
#[cfg(test)]
pub mod testkit;
pub mod tls;
pub mod tokens;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use crate::api::App;
use crate::clock::Clock;
use crate::config::{Backend, Config};
use crate::identity::IdentityBackend;
use crate::identity::MailLimit;
use crate::identity::native::{Hashing, NativeBackend};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::password::PasswordHasher;
use crate::store::{Database, StoreKind};
use crate::tokens::{Ceilings, Lifetimes, TokenService};

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
    Migrate(#[from] store::MigrateError),
    #[cfg(feature = "keycloak")]
    #[error("AUTH_BACKEND=keycloak: {0}")]
    Keycloak(#[from] identity::keycloak::client::UrlError),
    #[cfg(feature = "keycloak")]
    #[error("AUTH_BACKEND=keycloak: the Keycloak client cannot be built: {0}")]
    KeycloakClient(#[source] reqwest::Error),
    #[error(
        "AUTH_BACKEND=keycloak: this build has no Keycloak backend (built without the `keycloak` feature)"
    )]
    NoKeycloak,
    #[error("router: {0}")]
    Router(#[from] matchit::InsertError),
    #[error("{0}")]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot start the password hashing threads: {0}")]
    Hashing(std::io::Error),
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
    )?
    .with_ceilings(ceilings(config)))
}

/// The lifetime ceilings of the configuration.
pub fn ceilings(config: &Config) -> Ceilings {
    Ceilings {
        access: minutes(config.jwt.access_ceiling_minutes),
        refresh: minutes(config.jwt.refresh_ceiling_minutes),
    }
}

/// The native backend on the configured store (PostgreSQL or SQLite).
pub fn native_backend(
    config: &Config,
    clock: Arc<dyn Clock>,
    metrics: &Metrics,
) -> Result<Arc<dyn IdentityBackend>, StartupError> {
    let hasher = PasswordHasher::new(config.password_rounds, config.jwt.secret.as_bytes());
    let hashing =
        Hashing::new(hasher, config.hashing, metrics.hashing()).map_err(StartupError::Hashing)?;
    let mail_limit = MailLimit {
        count: config.verification_mail_limit,
        window: config.verification_mail_window,
    };
    Ok(match StoreKind::of(&config.database.url) {
        Some(StoreKind::Sqlite) => Arc::new(NativeBackend::new(
            Arc::new(Database::<sqlx::Sqlite>::new(&config.database)?),
            hashing,
            clock,
            mail_limit,
        )),
        _ => Arc::new(NativeBackend::new(
            Arc::new(Database::<sqlx::Postgres>::new(&config.database)?),
            hashing,
            clock,
            mail_limit,
        )),
    })
}

/// The Keycloak backend and the realm's key cache.
#[cfg(feature = "keycloak")]
pub fn keycloak_backend(
    config: &Config,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Result<
    (
        identity::keycloak::KeycloakBackend,
        Arc<identity::keycloak::jwks::Jwks>,
    ),
    StartupError,
> {
    use identity::keycloak::{
        AuthorityParts, KeycloakBackend, client::KcClient, jwks::Jwks, registry::Registry,
        used_tokens::UsedTokens,
    };
    let http =
        Arc::new(KcClient::new(&config.keycloak, metrics).map_err(StartupError::KeycloakClient)?);
    let database = Arc::new(Database::<sqlx::Postgres>::new(&config.database)?);
    let used_tokens = UsedTokens::new(
        config.edge.redis_url.as_deref(),
        Arc::clone(&database),
        Arc::clone(&clock),
    )
    .map_err(|err| {
        StartupError::Config(config::ConfigError::Invalid(format!(
            "REDIS_URL is not usable: {err}"
        )))
    })?;
    let registry = Registry::new(
        database,
        Arc::clone(&clock),
        MailLimit {
            count: config.verification_mail_limit,
            window: config.verification_mail_window,
        },
    );
    let jwks = Arc::new(Jwks::new(Arc::clone(&http), clock).with_ceiling(ceilings(config).access));
    let authority = AuthorityParts {
        jwks: Arc::clone(&jwks),
        used_tokens,
    };
    let backend = KeycloakBackend::new(http, registry, authority)?;
    Ok((backend, jwks))
}

/// The audit trail in the configured store, on a small pool of its own.
pub fn audit_log(config: &Config) -> Result<Arc<dyn audit::AuditLog>, StartupError> {
    let mut settings = config.database.clone();
    settings.max_connections = settings.max_connections.clamp(1, 4);
    Ok(match StoreKind::of(&settings.url) {
        Some(StoreKind::Sqlite) => {
            Arc::new(audit::SqlAuditLog::new(Arc::new(
                Database::<sqlx::Sqlite>::new(&settings)?,
            )))
        }
        _ => Arc::new(audit::SqlAuditLog::new(Arc::new(
            Database::<sqlx::Postgres>::new(&settings)?,
        ))),
    })
}

/// Shared limits through Redis when `REDIS_URL` is set, else in-process ones.
fn rate_limiter(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<ratelimit::RateLimiter, StartupError> {
    let Some(url) = &config.edge.redis_url else {
        return Ok(ratelimit::RateLimiter::local_only());
    };
    let redis = ratelimit::RedisLimiter::new(url).map_err(|err| {
        StartupError::Config(config::ConfigError::Invalid(format!(
            "REDIS_URL is not usable: {err}"
        )))
    })?;
    let metrics = Arc::clone(metrics);
    metrics.redis_up.set(1);
    Ok(ratelimit::RateLimiter::new(
        Some(redis),
        Box::new(move |up| {
            metrics.redis_up.set(i64::from(up));
            if !up {
                metrics.ratelimit_fallbacks.inc();
            }
        }),
    ))
}

/// The revocations every replica refuses: in this process, and shared
/// through Redis when `REDIS_URL` is set.
fn revocations(
    config: &Config,
    tokens: &TokenService,
    clock: Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<revocation::Revocations, StartupError> {
    let local =
        revocation::Revocations::local(tokens.lifetimes().access, clock, Arc::clone(metrics));
    let Some(url) = &config.edge.redis_url else {
        return Ok(local);
    };
    let shared = revocation::shared::Shared::open(url, Arc::clone(metrics)).map_err(|err| {
        StartupError::Config(config::ConfigError::Invalid(format!(
            "REDIS_URL is not usable: {err}"
        )))
    })?;
    Ok(local.with_shared(shared))
}

/// Builds the application from a checked configuration, on `clock` (the
/// system's in production; a manual one in tests). No I/O happens here.
pub fn build_app(config: Config, clock: Arc<dyn Clock>) -> Result<App, StartupError> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new()?);
    let tokens = token_service(&config, Arc::clone(&clock))?;
    let revocations = Arc::new(revocations(&config, &tokens, Arc::clone(&clock), &metrics)?);
    let audit_log = audit_log(&config)?;
    let background = background::Background::default();
    if revocations.is_shared() {
        background.add("revocations", Box::pin(Arc::clone(&revocations).follow()));
    }
    type Verifier = Option<Arc<dyn tokens::ExternalTokens>>;
    let (backend, external_tokens): (Arc<dyn IdentityBackend>, Verifier) = match config.backend {
        Backend::Native => (native_backend(&config, Arc::clone(&clock), &metrics)?, None),
        #[cfg(feature = "keycloak")]
        Backend::Keycloak => {
            let (backend, jwks) =
                keycloak_backend(&config, Arc::clone(&clock), Arc::clone(&metrics))?;
            let backend = Arc::new(backend);
            background.add("abandoned sign-ups", Box::pin(backend.abandoned_sweep()));
            if let Some(interval) = config.keycloak.admin_events_interval {
                let reader = identity::keycloak::event_reader::EventReader::new(
                    Arc::clone(&backend),
                    Arc::clone(&revocations),
                    Arc::clone(&audit_log),
                    Arc::clone(&metrics),
                    Arc::clone(&clock),
                    interval,
                );
                background.add("keycloak admin events", Box::pin(reader.run()));
            }
            let verifier = identity::keycloak::jwks::KeycloakTokens(jwks);
            (backend, Some(Arc::new(verifier)))
        }
        #[cfg(not(feature = "keycloak"))]
        Backend::Keycloak => {
            return Err(StartupError::NoKeycloak);
        }
    };
    let mailer = Arc::new(Mailer::new(
        &config.smtp,
        &config.app.name,
        config.jwt.email_minutes,
        config.templates_dir.as_deref(),
        Arc::clone(&metrics),
        Arc::clone(&clock),
    )?);
    let limiter = Arc::new(rate_limiter(&config, &metrics)?);
    let app = App::new(config, tokens, backend, mailer, clock, metrics, audit_log)?
        .with_limiter(limiter)
        .with_revocations(revocations)
        .with_background(background);
    Ok(match external_tokens {
        Some(verifier) => app.with_external_tokens(verifier),
        None => app,
    })
}
