//! The settings, as plain data, parsed from a lookup of names (the process
//! environment at start-up, a map in tests), with the legacy service's
//! names and defaults. Every problem names its setting. Reading files (the
//! `.env`, the generated key, the routes file) is the start-up's job
//! (`crate::startup`), not this module's.
//!
//! Here: the settings' types and their defaults; `parse` reads them,
//! `redact` masks their secrets for logs, `values` holds the value types
//! the modules that act on a setting use (the store kind, rates, route
//! policies, hashing bounds).
//!
//! Imports: nothing of the crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod parse;
mod redact;
mod values;

pub use parse::generated_key_file;
pub use redact::redact_url;
pub use values::{HashingLimits, Policy, Quota, StoreKind};

/// OWASP's Password Storage Cheat Sheet asks for 600 000 iterations of
/// PBKDF2-HMAC-SHA256.
pub const DEFAULT_ROUNDS: u32 = 600_000;
/// How long a client connection may stay silent unless configured:
/// pingora's own keep-alive default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request head may take, from its first byte, unless configured.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may stall, unless configured.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Open client connections unless configured: 10 000 idle keep-alive
/// connections fit twice (about 2.3 KB each idle, more while a request runs).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// The most header lines a request may carry, unless configured.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Why the settings cannot be used; every message names its setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value.
    #[error("{0}")]
    Invalid(String),
    /// A file a setting names cannot be read.
    #[error("{setting} cannot be read ({}): {source}", path.display())]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `.env` file is there but cannot be read.
    #[error(".env cannot be read: {0}")]
    DotEnv(#[source] dotenvy::Error),
    /// No `SECRET_KEY`, and the generated key's file cannot be used.
    #[error("SECRET_KEY is not set and {0}")]
    KeyFile(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn problem(text: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(text.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Native,
    Keycloak,
}

/// What clients get at sign-in in keycloak mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// The legacy HS256 access token and JWE refresh token (wrapping Keycloak's).
    Legacy,
    /// Keycloak's own access and refresh tokens.
    Keycloak,
}

#[derive(Clone)]
pub struct KeycloakSettings {
    /// Base URL, e.g. `http://127.0.0.1:8080` (no `/realms/...`).
    pub url: url::Url,
    pub realm: String,
    pub client_id: String,
    pub client_secret: String,
    /// The client whose direct grant checks the password only: it proves a
    /// password before the gateway says a one-time code is required.
    pub password_check_client_id: String,
    pub password_check_client_secret: String,
    /// The client `import-users` uses: Keycloak's partial import needs
    /// realm-management `manage-realm`, which the gateway's client lacks.
    pub import_client_id: String,
    pub import_client_secret: String,
    /// Bound on every call to Keycloak.
    pub timeout: Duration,
    /// Bound on all the Keycloak calls of one request together.
    pub request_deadline: Duration,
    pub token_format: TokenFormat,
    /// `KEYCLOAK_PUBLIC_URL`: Keycloak's base URL as browsers reach it (single
    /// sign-on sends them there); `url` unless set.
    pub public_url: url::Url,
    /// `KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS`: how often Keycloak's admin
    /// events are read (by one replica of the cluster); `None`: never.
    pub admin_events_interval: Option<Duration>,
}

impl std::fmt::Debug for KeycloakSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakSettings")
            .field("url", &self.url.as_str())
            .field("realm", &self.realm)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("password_check_client_id", &self.password_check_client_id)
            .field("password_check_client_secret", &"***")
            .field("import_client_id", &self.import_client_id)
            .field("import_client_secret", &"***")
            .field("timeout", &self.timeout)
            .field("token_format", &self.token_format)
            .field("public_url", &self.public_url.as_str())
            .field("admin_events_interval", &self.admin_events_interval)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (the legacy behaviour).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption (local relays and test servers only).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    /// As the old service wrote it in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lax => "lax",
            Self::Strict => "strict",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct AppSettings {
    pub name: String,
    pub version: String,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub contact: Vec<(String, String)>,
    /// Worker threads of the HTTP service.
    pub workers: usize,
    pub max_body_bytes: usize,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub migrate_on_start: bool,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

#[derive(Clone)]
pub struct JwtSettings {
    pub secret: String,
    pub access_minutes: u64,
    pub refresh_minutes: u64,
    pub email_minutes: u64,
    /// Access tokens whose `exp` lies further ahead are refused.
    pub access_ceiling_minutes: u64,
    /// Refresh tokens whose `exp` lies further ahead are refused.
    pub refresh_ceiling_minutes: u64,
}

/// How many lifetimes ahead an `exp` may lie by default (deliberate
/// difference 14): room for tokens of a deployment with a longer lifetime
/// and for clocks a little apart, none for a token that never expires.
pub const CEILING_LIFETIMES: u64 = 4;

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("secret", &"***")
            .field("access_minutes", &self.access_minutes)
            .field("refresh_minutes", &self.refresh_minutes)
            .field("email_minutes", &self.email_minutes)
            .field("access_ceiling_minutes", &self.access_ceiling_minutes)
            .field("refresh_ceiling_minutes", &self.refresh_ceiling_minutes)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
}

#[derive(Clone)]
pub struct SmtpSettings {
    /// `None` when `SMTP_HOST` is unset: mail is then only logged.
    pub host: Option<String>,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sender_name: String,
    pub from_address: String,
    pub tls: SmtpTls,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Without `SMTP_HOST`: a folder that receives each mail as an `.eml`
    /// file (`MAIL_OUTBOX_DIR`, default `DATA_DIR/outbox`; `off` for none).
    pub outbox: Option<PathBuf>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sender_name", &self.sender_name)
            .field("from_address", &self.from_address)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("outbox", &self.outbox)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub signin_per_ip: Option<Quota>,
    pub signin_per_account: Option<Quota>,
    pub signup_per_ip: Option<Quota>,
    pub email_per_ip: Option<Quota>,
    /// Sign-ins carrying a one-time code, TOTP confirmations and removals, per account.
    pub otp_per_account: Option<Quota>,
}

/// Single sign-on (`/auth/login`, `/auth/callback`; keycloak mode).
#[derive(Debug, Clone)]
pub struct SsoSettings {
    /// `SSO_REDIRECT_ALLOWLIST`: absolute origins or URL prefixes the browser
    /// may be sent to after signing in (relative paths are always allowed).
    pub redirect_allowlist: Vec<url::Url>,
    /// `SSO_CALLBACK_URL`: the gateway's `/auth/callback` as browsers reach it.
    pub callback_url: String,
    /// `SSO_LOGIN_TTL_SECONDS`: how long a begun login waits for its callback.
    pub login_lifetime: Duration,
}

/// Where the gateway stands in the network.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// `ROUTES_FILE`: the upstream routes, read at start (by the code that
    /// assembles the server), again on SIGHUP and when it changes.
    pub routes_file: Option<PathBuf>,
    /// `ROUTES_WATCH_SECONDS`: how often the routes file is looked at for a
    /// change; `None` (0): on SIGHUP only.
    pub routes_watch: Option<Duration>,
    /// `FORWARD_AUTH_DEFAULT_POLICY`: what forward-auth applies to a path
    /// no route matches.
    pub forward_auth_default: Policy,
    /// Peers whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `REDIS_URL`: shared rate limits; in-process limits without it.
    pub redis_url: Option<String>,
    /// `METRICS_ADDR`: serve `/metrics` on this address only.
    pub metrics_addr: Option<SocketAddr>,
    /// After SIGTERM: how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// `CLIENT_IDLE_TIMEOUT_SECONDS`: how long a client connection may stay
    /// silent before its first request and between requests.
    pub client_idle_timeout: Duration,
    /// `MAX_REQUEST_HEADERS`: the most header lines a request may carry.
    pub max_request_headers: usize,
    /// `CLIENT_HEADER_TIMEOUT_SECONDS`: how long a request head may take,
    /// from its first byte to its end.
    pub client_header_timeout: Duration,
    /// `CLIENT_WRITE_TIMEOUT_SECONDS`: how long a write to a client may
    /// make no progress before the connection is dropped.
    pub client_write_timeout: Duration,
    /// `MAX_CLIENT_CONNECTIONS`: client connections served at once.
    pub max_client_connections: usize,
    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`: the main listener serves HTTPS.
    pub tls: Option<TlsSettings>,
}

/// TLS termination on the main listener (see [`crate::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `TLS_CERT_FILE`: the certificate chain (PEM, the server's first).
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `TLS_RELOAD_CHECK_SECONDS`: how often the two files are looked at for
    /// a new pair; `None` (0): only on SIGHUP.
    pub check_every: Option<Duration>,
    /// `HTTP_REDIRECT_PORT`: a plain listener on `APP_HOST` answering health
    /// probes and redirecting everything else to HTTPS.
    pub redirect_port: Option<u16>,
    /// `HSTS_MAX_AGE_SECONDS`: `Strict-Transport-Security: max-age=N` on
    /// HTTPS answers.
    pub hsts_max_age: Option<u64>,
}

/// How often the certificate files are looked at, unless configured.
pub const DEFAULT_TLS_CHECK_SECONDS: u64 = 10;

/// `import-users`: how the legacy users go to Keycloak (its flags
/// `--batch-size` and `--concurrency` override these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportTuning {
    /// `IMPORT_BATCH_SIZE`: users per partial import request.
    pub batch_size: usize,
    /// `IMPORT_CONCURRENCY`: requests in flight.
    pub concurrency: usize,
}

impl ImportTuning {
    pub const MAX_BATCH_SIZE: usize = 5000;
    pub const MAX_CONCURRENCY: usize = 16;
}

impl Default for ImportTuning {
    /// Measured on two cores (bench/import_users.sh, SWEEP): Keycloak takes
    /// 10 to 100 users per request about equally fast (300 to 430 users/s,
    /// warm), and slows down past them (250: 146/s, 500: 126/s; its work per
    /// user grows with the users of one transaction). Two requests in flight
    /// keep it busy while authgate records the previous answer; more did not
    /// help. Small batches also lose little to an interruption and find a
    /// refused row in few halvings.
    fn default() -> Self {
        Self {
            batch_size: 50,
            concurrency: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    pub app: AppSettings,
    pub database: DatabaseSettings,
    pub jwt: JwtSettings,
    pub cookies: CookieSettings,
    pub smtp: SmtpSettings,
    pub keycloak: KeycloakSettings,
    pub password_rounds: u32,
    /// `HASHING_THREADS`, `HASHING_QUEUE_MAX`, `HASHING_QUEUE_WAIT_MS`: the
    /// password hashing pool and its queue (native mode).
    pub hashing: HashingLimits,
    pub templates_dir: Option<PathBuf>,
    pub rate_limits: RateLimitSettings,
    pub log_format: LogFormat,
    pub verification_mail_limit: u32,
    pub verification_mail_window: Duration,
    pub edge: EdgeSettings,
    pub sso: SsoSettings,
    pub import: ImportTuning,
    /// `DATA_DIR`: where the embedded store, the generated key and the mail
    /// outbox live (default `authgate-data`).
    pub data_dir: PathBuf,
    /// Things worth a line in the log at start (chosen defaults).
    pub notices: Vec<String>,
}

/// Hashing threads at most (more than any machine's cores is only a way to
/// queue without bound by another name).
pub const MAX_HASHING_THREADS: usize = 1024;
/// Jobs waiting per hashing thread, unless `HASHING_QUEUE_MAX` is set. The
/// count bound keeps a storm from holding connections and memory without
/// limit, and answers it at once: 16 per thread lets a burst of
/// simultaneous sign-ins (clients reconnecting at once) wait its turn,
/// while a storm fills it at once and the rest is refused on arrival. At
/// the default 600 000 rounds a hash takes 0.2 to 0.5 s of a core, so the
/// last of a full queue starts within 3 to 8 s.
pub const HASHING_QUEUE_PER_THREAD: usize = 16;
/// Waiting jobs at most, all threads together.
pub const MAX_HASHING_QUEUE: usize = 100_000;
/// How long a job may wait for a hashing thread, unless set: longer than a
/// full default queue takes on a healthy machine, so that the count bound
/// does the shedding there; this one is the backstop for when hashing
/// slows down (the hashing threads run at a lower priority than whatever
/// else the machine runs), and below the 30 s clients commonly wait.
pub const DEFAULT_HASHING_QUEUE_WAIT_MS: u64 = 10_000;
/// The wait bound at most (a minute).
pub const MAX_HASHING_QUEUE_WAIT_MS: u64 = 60_000;
