//! The `authgate` command line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use authgate::config::{Backend, Config, LogFormat};
use authgate::identity::native::Database;
use authgate::{StartupError, build_app, native_backend};

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authentication gateway keeping the legacy /users API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on APP_HOST:APP_PORT (runs the migrations first).
    Serve {
        /// Do not run the database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Run the database migrations (creates the legacy schema or adopts an existing one).
    Migrate,
    /// Grant a role (e.g. admin) to a user, named by username or e-mail (native mode).
    GrantRole {
        /// Username or e-mail address.
        user: String,
        /// Role name, e.g. `admin`.
        role: String,
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
async fn migrate(config: &Config, patience: Duration) -> Result<(), StartupError> {
    let database = Database::new(&config.database)?;
    let started = Instant::now();
    loop {
        match database.migrate().await {
            Ok(()) => {
                tracing::info!("database migrations applied");
                return Ok(());
            }
            Err(authgate::identity::native::MigrateError::Connect(err))
                if started.elapsed() < patience =>
            {
                tracing::warn!(error = %err, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

fn serve(config: Config, no_migrate: bool) -> Result<(), String> {
    let addr = config.listen_addr().map_err(|e| e.to_string())?;
    if let Err(err) = std::net::TcpListener::bind(addr) {
        return Err(format!("APP_HOST/APP_PORT {addr} cannot be bound: {err}"));
    }
    if config.backend == Backend::Native && config.database.migrate_on_start && !no_migrate {
        runtime()?
            .block_on(migrate(&config, Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
    }
    let workers = config.app.workers;
    let app = Arc::new(build_app(config).map_err(|e| e.to_string())?);
    authgate::server::run(app, addr, workers)
}

fn grant_role(config: &Config, user: &str, role: &str) -> Result<(), String> {
    if config.backend != Backend::Native {
        return Err(
            "grant-role manages native users; in keycloak mode assign realm roles in Keycloak"
                .into(),
        );
    }
    let backend = native_backend(config, Arc::new(authgate::clock::SystemClock))
        .map_err(|e| e.to_string())?;
    runtime()?.block_on(async {
        let found = backend.find_login(user).await.map_err(|e| e.to_string())?;
        let found = found.ok_or_else(|| format!("no user named {user:?}"))?;
        backend
            .grant_role(found.id, role)
            .await
            .map_err(|e| e.to_string())?;
        println!("granted {role} to {} (id {})", found.username, found.id);
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("authgate: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let result = match cli.command {
        Command::Serve { no_migrate } => serve(config, no_migrate),
        Command::Migrate => runtime().and_then(|rt| {
            rt.block_on(migrate(&config, Duration::ZERO))
                .map_err(|e| e.to_string())
        }),
        Command::GrantRole { user, role } => grant_role(&config, &user, &role),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authgate: {err}");
            ExitCode::FAILURE
        }
    }
}
