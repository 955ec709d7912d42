//! The `authgate` command line.

/// mimalloc: the request path allocates a lot of small, short-lived buffers,
/// which glibc's allocator handles at a measurable cost (see BENCHMARKS).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[cfg(feature = "keycloak")]
mod import_view;
use tracing_subscriber::EnvFilter;

use authgate::clock::SystemClock;
use authgate::config::{Config, LogFormat};
use authgate::routes::RouteConfig;
use authgate::startup::Startup;
use authgate::store::{Step, StepOutcome};
use authgate::{StartupError, build_app, native_backend};

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication gateway keeping the legacy /users API",
    long_about = "authgate serves the legacy /users/... authentication API (same bodies, \
status codes, cookies and tokens) from its own store or from Keycloak, and forwards \
authenticated traffic to upstream apps.\n\n\
Settings come from the environment and an optional .env file in the working directory \
(see the README for the full list). With no database configured, native mode runs on an \
embedded SQLite file in DATA_DIR (default ./authgate-data), keeps a generated key there \
when SECRET_KEY is unset, and writes mail to DATA_DIR/outbox when SMTP_HOST is unset.",
    after_help = "Run `authgate check-config` to see the effective settings and test the servers they name."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on APP_HOST:APP_PORT (runs the migrations first).
    ///
    /// Serves the /users API, /health, /ready and /metrics, and forwards the
    /// routes of ROUTES_FILE to their upstreams. Stops gracefully on SIGTERM
    /// or SIGINT: the listener closes first, and the process exits once the
    /// requests in flight are answered (within SHUTDOWN_GRACE_SECONDS).
    Serve {
        /// Do not run the database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Run the database migrations (creates the legacy schema or adopts an existing one).
    ///
    /// On PostgreSQL, an empty database gets the legacy schema, and a database
    /// the old service left behind is adopted as it is (rows and
    /// alembic_version untouched). Prints each migration as it goes.
    Migrate,
    /// Print the effective configuration (secrets masked) and test the
    /// connections it implies.
    ///
    /// Probes the database, Keycloak (keycloak mode: realm and service
    /// account), the SMTP server (TLS and login as configured), Redis and
    /// every upstream of ROUTES_FILE. Exits non-zero when any probe fails.
    CheckConfig,
    /// Grant a role (e.g. admin) to a user, named by username or e-mail
    /// (native: authgate's roles table; keycloak: a realm role).
    GrantRole {
        /// Username or e-mail address.
        user: String,
        /// Role name, e.g. `admin`.
        role: String,
    },
    /// Copy the legacy users table into Keycloak, with each user's id, verified
    /// flag and existing password hash (idempotent: imported users are skipped).
    ///
    /// Users go in batches through Keycloak's partial import (the client
    /// KEYCLOAK_IMPORT_CLIENT_ID; one at a time through KEYCLOAK_CLIENT_ID
    /// when it is not usable), several batches in flight. A run stopped
    /// half-way (Ctrl-C, SIGTERM, Keycloak down, a crash) continues where it
    /// stopped when run again. Exits non-zero when a user failed or the run
    /// did not finish.
    #[cfg(feature = "keycloak")]
    ImportUsers {
        /// Show what would be imported without writing anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u16).range(1..=5000),
            help = format!(
                "Users per partial import request [default: IMPORT_BATCH_SIZE, else {}]",
                authgate::config::ImportTuning::default().batch_size
            )
        )]
        batch_size: Option<u16>,
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u8).range(1..=16),
            help = format!(
                "Requests in flight [default: IMPORT_CONCURRENCY, else {}]",
                authgate::config::ImportTuning::default().concurrency
            )
        )]
        concurrency: Option<u8>,
        /// Also write the report as JSON to this file.
        #[arg(long, value_name = "PATH")]
        report: Option<std::path::PathBuf>,
        /// Start at the first user, forgetting where an unfinished run stopped.
        #[arg(long)]
        restart: bool,
        /// Exit at once, as a crash would, when Keycloak has taken batch N and
        /// before it is recorded (tests of resuming).
        #[arg(long, value_name = "N", hide = true)]
        crash_at_batch: Option<u64>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,pingora=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A runtime for the work done before the server starts (or by a command).
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))
}

/// Runs the migrations, retrying while the database is not reachable yet.
async fn migrate(config: &Config, patience: Duration, verbose: bool) -> Result<(), StartupError> {
    let started = Instant::now();
    loop {
        let mut progress = |step: Step<'_>| {
            if verbose {
                println!("{step}");
            } else if step.outcome != StepOutcome::AlreadyApplied {
                tracing::info!("migration {step}");
            }
        };
        match authgate::store::migrate(&config.database, &mut progress).await {
            Ok(()) => {
                tracing::info!("database migrations applied");
                return Ok(());
            }
            Err(authgate::store::MigrateError::Connect(err)) if started.elapsed() < patience => {
                tracing::warn!(error = %err, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn serve(config: Config, routes: Vec<RouteConfig>, no_migrate: bool) -> Result<(), String> {
    // SIGHUP reloads (the TLS certificate, the routes file), never stops: taken over
    // before anything else can be interrupted by it.
    authgate::reload::keep_running_on_hangup()
        .map_err(|err| format!("cannot take SIGHUP over: {err}"))?;
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    if let Err(err) = std::net::TcpListener::bind(addr) {
        return Err(format!("APP_HOST/APP_PORT {addr} cannot be bound: {err}"));
    }
    if config.database.migrate_on_start && !no_migrate {
        runtime()?
            .block_on(migrate(&config, Duration::from_secs(30), false))
            .map_err(|e| e.to_string())?;
    }
    let workers = config.app.workers;
    let app = Arc::new(build_app(config, Arc::new(SystemClock)).map_err(|e| e.to_string())?);
    match authgate::server::run(app, routes, addr, workers) {
        Ok(never) => match never {},
        Err(err) => Err(err),
    }
}

fn grant_role(config: &Config, user: &str, role: &str) -> Result<(), String> {
    use authgate::identity::{IdentityBackend, IdentityError};
    let backend: Arc<dyn IdentityBackend> = match config.backend {
        #[cfg(feature = "keycloak")]
        authgate::config::Backend::Keycloak => Arc::new(keycloak_backend(config)?.0),
        _ => {
            let metrics = authgate::metrics::Metrics::new().map_err(|e| e.to_string())?;
            native_backend(config, Arc::new(authgate::clock::SystemClock), &metrics)
                .map_err(|e| e.to_string())?
        }
    };
    let kind = match config.backend {
        authgate::config::Backend::Keycloak => "realm role",
        authgate::config::Backend::Native => "role",
    };
    runtime()?.block_on(async {
        let found = backend.grant_role(user, role).await.map_err(|e| match e {
            IdentityError::NotFound => format!("no user named {user:?}"),
            other => other.to_string(),
        })?;
        println!(
            "granted {kind} {role} to {} (id {})",
            found.username, found.id
        );
        Ok(())
    })
}

#[cfg(feature = "keycloak")]
fn keycloak_backend(
    config: &Config,
) -> Result<
    (
        authgate::identity::keycloak::KeycloakBackend,
        Arc<authgate::identity::keycloak::jwks::Jwks>,
    ),
    String,
> {
    let metrics = Arc::new(authgate::metrics::Metrics::new().map_err(|e| e.to_string())?);
    authgate::keycloak_backend(config, Arc::new(authgate::clock::SystemClock), metrics)
        .map_err(|e| e.to_string())
}

/// The flags of `import-users`.
#[cfg(feature = "keycloak")]
struct ImportFlags {
    dry_run: bool,
    batch_size: Option<u16>,
    concurrency: Option<u8>,
    report: Option<std::path::PathBuf>,
    restart: bool,
    crash_at_batch: Option<u64>,
}

#[cfg(feature = "keycloak")]
fn import_users(config: &Config, flags: ImportFlags) -> Result<(), String> {
    use authgate::identity::keycloak::import::{ImportSettings, Importer};
    let (backend, _) = keycloak_backend(config)?;
    let settings = ImportSettings {
        batch_size: flags
            .batch_size
            .map_or(config.import.batch_size, usize::from),
        concurrency: flags
            .concurrency
            .map_or(config.import.concurrency, usize::from),
        dry_run: flags.dry_run,
        restart: flags.restart,
    };
    runtime()?.block_on(async {
        migrate(config, Duration::ZERO, false)
            .await
            .map_err(|e| e.to_string())?;
        let importer = Importer::new(&backend, settings).map_err(|e| e.to_string())?;
        let view = Arc::new(import_view::ImportView::new(flags.crash_at_batch));
        let stop = import_view::stop_on_signals(Arc::clone(&view))?;
        let report = importer
            .run(view.as_ref(), stop)
            .await
            .map_err(|e| e.to_string())?;
        view.finish(&report);
        if let Some(path) = &flags.report {
            report
                .write_json(path)
                .map_err(|e| format!("cannot write the report to {}: {e}", path.display()))?;
        }
        import_view::print_report(&report, flags.report.as_deref());
        import_view::verdict(&report)
    })
}

fn check_config(config: &Config, routes: &[RouteConfig]) -> Result<(), String> {
    use authgate::check_config::{probes, settings};
    println!(
        "authgate {} — effective configuration",
        env!("CARGO_PKG_VERSION")
    );
    let lines = settings(config, routes);
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, value) in &lines {
        println!("  {name:<width$}  {value}");
    }
    for notice in &config.notices {
        println!("  note: {notice}");
    }
    println!("\nconnections");
    let found = runtime()?.block_on(probes(config, routes));
    let width = found.iter().map(|p| p.what.len()).max().unwrap_or(0);
    let mut failed = 0;
    for probe in &found {
        let ms = probe.took.as_millis();
        match &probe.outcome {
            Ok(detail) => println!("  {:<width$}  ok      {detail} ({ms} ms)", probe.what),
            Err(why) => {
                failed += 1;
                println!("  {:<width$}  FAILED  {why} ({ms} ms)", probe.what);
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} of {} probes failed", found.len()))
    }
}

fn main() -> ExitCode {
    // Two rustls providers are built in (pingora's listener brings ring):
    // every TLS user of the process gets aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let Startup { config, routes } = match authgate::startup::load() {
        Ok(startup) => startup,
        Err(err) => {
            eprintln!("authgate: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    if !matches!(cli.command, Command::CheckConfig) {
        for notice in &config.notices {
            tracing::info!("{notice}");
        }
    }
    let result = match cli.command {
        Command::Serve { no_migrate } => serve(config, routes, no_migrate),
        Command::Migrate => runtime().and_then(|rt| {
            rt.block_on(migrate(&config, Duration::ZERO, true))
                .map_err(|e| e.to_string())
        }),
        Command::CheckConfig => check_config(&config, &routes),
        Command::GrantRole { user, role } => grant_role(&config, &user, &role),
        #[cfg(feature = "keycloak")]
        Command::ImportUsers {
            dry_run,
            batch_size,
            concurrency,
            report,
            restart,
            crash_at_batch,
        } => import_users(
            &config,
            ImportFlags {
                dry_run,
                batch_size,
                concurrency,
                report,
                restart,
                crash_at_batch,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authgate: {err}");
            ExitCode::FAILURE
        }
    }
}
