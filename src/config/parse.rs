//! Reading the settings: from a lookup of names (the process environment
//! at start-up, a map in tests), with the legacy service's names and
//! defaults, each problem naming its setting.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::redact::redact_url;
use super::{
    AppSettings, Backend, CEILING_LIFETIMES, Config, ConfigError, CookieSettings,
    DEFAULT_HASHING_QUEUE_WAIT_MS, DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADERS, DEFAULT_ROUNDS, DEFAULT_TLS_CHECK_SECONDS,
    DEFAULT_WRITE_TIMEOUT, DatabaseSettings, EdgeSettings, HASHING_QUEUE_PER_THREAD, HashingLimits,
    ImportTuning, JwtSettings, KeycloakSettings, LogFormat, MAX_HASHING_QUEUE,
    MAX_HASHING_QUEUE_WAIT_MS, MAX_HASHING_THREADS, Policy, Quota, RateLimitSettings, SameSite,
    SmtpSettings, SmtpTls, SsoSettings, StoreKind, TlsSettings, TokenFormat, problem,
};

/// The default folder of the embedded store.
const DEFAULT_DATA_DIR: &str = "authgate-data";
/// The settings that name a PostgreSQL server the legacy way.
const POSTGRES_PARTS: [&str; 5] = [
    "POSTGRES_SERVER",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
];

/// Reads settings through `get`, so tests can pass a map instead of the process environment.
struct Source<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.get)(name).map(|v| v.trim().to_string())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.raw(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
        &self,
        name: &str,
        default: T,
        min: T,
    ) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(text) => {
                let value: T = text
                    .parse()
                    .map_err(|_| problem(format!("{name} must be a number (got {text:?})")))?;
                if value < min {
                    return Err(problem(format!(
                        "{name} must be at least {min} (got {text})"
                    )));
                }
                Ok(value)
            }
        }
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(text) => parse_bool(&text)
                .ok_or_else(|| problem(format!("{name} must be true or false (got {text:?})"))),
        }
    }

    fn quota(&self, name: &str, default: &str) -> Result<Option<Quota>, ConfigError> {
        let text = self.string(name, default);
        if matches!(text.to_ascii_lowercase().as_str(), "off" | "none" | "0") {
            return Ok(None);
        }
        Quota::parse(&text)
            .map(Some)
            .map_err(|why| problem(format!("{name} {why} (got {text:?})")))
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "t" | "y" => Some(true),
        "0" | "false" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

impl Config {
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| map.get(name).cloned())
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let src = Source { get };

        let backend = match src
            .string("AUTH_BACKEND", "native")
            .to_ascii_lowercase()
            .as_str()
        {
            "native" => Backend::Native,
            "keycloak" => Backend::Keycloak,
            other => {
                return Err(problem(format!(
                    "AUTH_BACKEND must be native or keycloak (got {other:?})"
                )));
            }
        };

        let secret = src
            .raw("SECRET_KEY")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| problem("SECRET_KEY is not set (32 bytes, shared with the services that verify access tokens)"))?;
        if secret.len() != 32 {
            return Err(problem(format!(
                "SECRET_KEY must be 32 bytes for the refresh-token JWE (got {})",
                secret.len()
            )));
        }
        let algorithm = src.string("JWT_ALGORITHM", "HS256");
        if algorithm != "HS256" {
            return Err(problem(format!(
                "JWT_ALGORITHM must be HS256, the legacy token format (got {algorithm:?})"
            )));
        }

        let app_name = src.string("APP_NAME", "AISER Authentication Service");
        let port = src.number("APP_PORT", 5000u16, 1)?;
        let host = src.string("APP_HOST", "127.0.0.1");
        let tls = tls_settings(&src, port)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut contact = Vec::new();
        for (key, var) in [
            ("name", "APP_CONTACT_NAME"),
            ("email", "APP_CONTACT_EMAIL"),
            ("url", "APP_CONTACT_URL"),
        ] {
            if let Some(value) = src.optional(var) {
                contact.push((key.to_string(), value));
            }
        }
        let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let app = AppSettings {
            version: src.string("APP_VERSION", env!("CARGO_PKG_VERSION")),
            url: src
                .string("APP_URL", &format!("{scheme}://localhost:{port}"))
                .trim_end_matches('/')
                .to_string(),
            host,
            port,
            contact,
            workers: src.number("APP_WORKERS", default_workers, 1)?,
            max_body_bytes: src.number("MAX_BODY_BYTES", 64 * 1024, 1024)?,
            name: app_name,
        };
        url::Url::parse(&app.url)
            .map_err(|err| problem(format!("APP_URL is not a URL ({err}): {:?}", app.url)))?;

        let data_dir = data_dir(&src);
        let mut notices = Vec::new();
        let database = DatabaseSettings {
            url: match src.optional("DATABASE_URL") {
                Some(url) => url,
                None if POSTGRES_PARTS
                    .iter()
                    .any(|name| src.optional(name).is_some()) =>
                {
                    postgres_url(&src)
                }
                None => {
                    let url = embedded_url(&data_dir);
                    notices.push(format!(
                        "no database configured: using the embedded SQLite store {url} (set DATABASE_URL=postgres://... for production)"
                    ));
                    url
                }
            },
            max_connections: src.number("DATABASE_MAX_CONNECTIONS", 10u32, 1)?,
            acquire_timeout: Duration::from_millis(src.number(
                "DATABASE_TIMEOUT_MS",
                3000u64,
                100,
            )?),
            migrate_on_start: src.boolean("MIGRATE_ON_START", true)?,
        };
        match (StoreKind::of(&database.url), backend) {
            (None, _) => {
                return Err(problem(format!(
                    "DATABASE_URL must be a postgres:// or sqlite:// URL (got {})",
                    redact_url(&database.url)
                )));
            }
            (Some(StoreKind::Sqlite), Backend::Keycloak) => {
                return Err(problem(
                    "AUTH_BACKEND=keycloak keeps its registry in PostgreSQL: set DATABASE_URL to a postgres:// URL",
                ));
            }
            _ => {}
        }

        let access_minutes = src.number("JWT_EXP_TIME_MINUTES", 60u64, 1)?;
        let refresh_minutes = src.number("JWT_REFRESH_EXP_TIME_MINUTES", 10080u64, 1)?;
        let jwt = JwtSettings {
            secret,
            access_minutes,
            refresh_minutes,
            email_minutes: src.number("JWT_EMAIL_EXP_TIME_MINUTES", 1440u64, 1)?,
            // A ceiling below the lifetime would refuse the tokens just minted.
            access_ceiling_minutes: src.number(
                "JWT_EXP_CEILING_MINUTES",
                access_minutes.saturating_mul(CEILING_LIFETIMES),
                access_minutes,
            )?,
            refresh_ceiling_minutes: src.number(
                "JWT_REFRESH_EXP_CEILING_MINUTES",
                refresh_minutes.saturating_mul(CEILING_LIFETIMES),
                refresh_minutes,
            )?,
        };

        let same_site = match src
            .string("COOKIE_SAMESITE", "lax")
            .to_ascii_lowercase()
            .as_str()
        {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            other => {
                return Err(problem(format!(
                    "COOKIE_SAMESITE must be lax, strict or none (got {other:?})"
                )));
            }
        };
        let cookies = CookieSettings {
            domain: src.optional("COOKIE_DOMAIN"),
            secure: src.boolean("COOKIE_SECURE", false)?,
            http_only: src.boolean("COOKIE_HTTPONLY", true)?,
            same_site,
        };

        let smtp = smtp_settings(&src, &app.name, &data_dir)?;
        let keycloak = keycloak_settings(&src)?;

        let sso = sso_settings(&src, &app.url)?;

        let rate_limits = RateLimitSettings {
            signin_per_ip: src.quota("RATE_LIMIT_SIGNIN_PER_IP", "60/minute")?,
            signin_per_account: src.quota("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "10/minute")?,
            signup_per_ip: src.quota("RATE_LIMIT_SIGNUP_PER_IP", "30/minute")?,
            email_per_ip: src.quota("RATE_LIMIT_EMAIL_PER_IP", "30/minute")?,
            otp_per_account: src.quota("RATE_LIMIT_OTP_PER_ACCOUNT", "5/minute")?,
        };

        let log_format = match src
            .string("LOG_FORMAT", "text")
            .to_ascii_lowercase()
            .as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(problem(format!(
                    "LOG_FORMAT must be text or json (got {other:?})"
                )));
            }
        };

        Ok(Self {
            backend,
            app,
            database,
            jwt,
            cookies,
            smtp,
            keycloak,
            password_rounds: src.number("PASSWORD_PBKDF2_ROUNDS", DEFAULT_ROUNDS, 1000)?,
            hashing: hashing_limits(&src)?,
            templates_dir: src.optional("TEMPLATES_DIR").map(PathBuf::from),
            rate_limits,
            log_format,
            verification_mail_limit: src.number("VERIFICATION_MAIL_LIMIT", 3u32, 1)?,
            verification_mail_window: Duration::from_secs(src.number(
                "VERIFICATION_MAIL_WINDOW_SECONDS",
                3600u64,
                1,
            )?),
            edge: EdgeSettings {
                tls,
                ..edge_settings(&src)?
            },
            sso,
            import: import_tuning(&src)?,
            data_dir,
            notices,
        })
    }

    /// The address `serve` listens on (`APP_HOST:APP_PORT`).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host = self.app.host.as_str();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.app.port));
        }
        (host, self.app.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4))
            .ok_or_else(|| problem(format!("APP_HOST cannot be resolved: {host:?}")))
    }
}

fn data_dir(src: &Source<'_>) -> PathBuf {
    PathBuf::from(src.string("DATA_DIR", DEFAULT_DATA_DIR))
}

/// The embedded store's URL in `data_dir`.
fn embedded_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("authgate.db").display())
}

/// Where a key is kept when `SECRET_KEY` is unset: only for the embedded
/// store (a gateway on PostgreSQL shares its key with other services, so it
/// must be given one).
/// Where the key of a gateway on the embedded store is kept when
/// `SECRET_KEY` is unset (the assembly reads or makes it and passes it
/// in as `SECRET_KEY`); `None` when a key must be configured.
pub fn generated_key_file(get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let src = Source { get };
    if src.optional("SECRET_KEY").is_some() {
        return None;
    }
    let embedded = match src.optional("DATABASE_URL") {
        Some(url) => StoreKind::of(&url) == Some(StoreKind::Sqlite),
        None => !POSTGRES_PARTS
            .iter()
            .any(|name| src.optional(name).is_some()),
    };
    embedded.then(|| data_dir(&src).join("secret.key"))
}

fn postgres_url(src: &Source<'_>) -> String {
    let user = src.string("POSTGRES_USER", "postgres");
    let password = src.string("POSTGRES_PASSWORD", "postgres");
    let server = src.string("POSTGRES_SERVER", "localhost");
    let port = src.string("POSTGRES_PORT", "5432");
    let db = src.string("POSTGRES_DB", "fastapi-boilerplate");
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "postgres://{}:{}@{server}:{port}/{}",
        enc(&user),
        enc(&password),
        enc(&db)
    )
}

fn edge_settings(src: &Source<'_>) -> Result<EdgeSettings, ConfigError> {
    let routes_file = src.optional("ROUTES_FILE").map(PathBuf::from);
    let routes_watch = match src.number("ROUTES_WATCH_SECONDS", 5u64, 0)? {
        0 => None,
        seconds => Some(Duration::from_secs(seconds)),
    };
    let default_policy = src.string("FORWARD_AUTH_DEFAULT_POLICY", "authenticated");
    let forward_auth_default = Policy::parse(&default_policy).ok_or_else(|| {
        problem(format!(
            "FORWARD_AUTH_DEFAULT_POLICY must be public, authenticated or role:<name> (got {default_policy:?})"
        ))
    })?;
    let mut trusted_proxies = Vec::new();
    for item in src
        .optional("TRUSTED_PROXIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let net = item
            .parse::<ipnet::IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                problem(format!(
                    "TRUSTED_PROXIES must list IP addresses or CIDR ranges (got {item:?})"
                ))
            })?;
        trusted_proxies.push(net);
    }
    let redis_url = src.optional("REDIS_URL");
    if let Some(url) = &redis_url
        && !(url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        return Err(problem(format!(
            "REDIS_URL must be a redis:// URL (got {})",
            redact_url(url)
        )));
    }
    let metrics_addr = match src.optional("METRICS_ADDR") {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            problem(format!(
                "METRICS_ADDR must be an address like 127.0.0.1:9090 (got {text:?})"
            ))
        })?),
    };
    Ok(EdgeSettings {
        routes_file,
        routes_watch,
        forward_auth_default,
        trusted_proxies,
        redis_url,
        metrics_addr,
        shutdown_grace: Duration::from_secs(src.number("SHUTDOWN_GRACE_SECONDS", 10u64, 0)?),
        client_idle_timeout: Duration::from_secs(src.number(
            "CLIENT_IDLE_TIMEOUT_SECONDS",
            DEFAULT_IDLE_TIMEOUT.as_secs(),
            1,
        )?),
        max_request_headers: src.number("MAX_REQUEST_HEADERS", DEFAULT_MAX_HEADERS, 1)?,
        client_header_timeout: Duration::from_secs(src.number(
            "CLIENT_HEADER_TIMEOUT_SECONDS",
            DEFAULT_HEADER_TIMEOUT.as_secs(),
            1,
        )?),
        client_write_timeout: Duration::from_secs(src.number(
            "CLIENT_WRITE_TIMEOUT_SECONDS",
            DEFAULT_WRITE_TIMEOUT.as_secs(),
            1,
        )?),
        max_client_connections: src.number("MAX_CLIENT_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1)?,
        tls: None,
    })
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE` (both or neither), and what only
/// makes sense with them.
fn tls_settings(src: &Source<'_>, app_port: u16) -> Result<Option<TlsSettings>, ConfigError> {
    let cert = src.optional("TLS_CERT_FILE");
    let key = src.optional("TLS_KEY_FILE");
    let redirect_port = match src.optional("HTTP_REDIRECT_PORT") {
        None => None,
        Some(_) => Some(src.number("HTTP_REDIRECT_PORT", 80u16, 1)?),
    };
    let hsts_max_age = match src.number("HSTS_MAX_AGE_SECONDS", 0u64, 0)? {
        0 => None,
        seconds => Some(seconds),
    };
    let check_every = match src.number("TLS_RELOAD_CHECK_SECONDS", DEFAULT_TLS_CHECK_SECONDS, 0)? {
        0 => None,
        seconds => Some(Duration::from_secs(seconds)),
    };
    let (cert_file, key_file) = match (cert, key) {
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (None, None) => {
            for (name, set) in [
                ("HTTP_REDIRECT_PORT", redirect_port.is_some()),
                ("HSTS_MAX_AGE_SECONDS", hsts_max_age.is_some()),
            ] {
                if set {
                    return Err(problem(format!(
                        "{name} needs TLS_CERT_FILE and TLS_KEY_FILE (authgate serving HTTPS)"
                    )));
                }
            }
            return Ok(None);
        }
        (Some(_), None) => return Err(problem("TLS_CERT_FILE is set without TLS_KEY_FILE")),
        (None, Some(_)) => return Err(problem("TLS_KEY_FILE is set without TLS_CERT_FILE")),
    };
    if redirect_port == Some(app_port) {
        return Err(problem(format!(
            "HTTP_REDIRECT_PORT must differ from APP_PORT (both {app_port})"
        )));
    }
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        check_every,
        redirect_port,
        hsts_max_age,
    }))
}

fn sso_settings(src: &Source<'_>, app_url: &str) -> Result<SsoSettings, ConfigError> {
    let mut redirect_allowlist = Vec::new();
    for item in src
        .optional("SSO_REDIRECT_ALLOWLIST")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let allowed = url::Url::parse(item)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
            })
            .ok_or_else(|| {
                problem(format!(
                    "SSO_REDIRECT_ALLOWLIST must list absolute http(s) origins or URL prefixes, without query or credentials (got {item:?})"
                ))
            })?;
        redirect_allowlist.push(allowed);
    }
    let callback_url = src.string("SSO_CALLBACK_URL", &format!("{app_url}/auth/callback"));
    url::Url::parse(&callback_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            problem(format!(
                "SSO_CALLBACK_URL must be an absolute http(s) URL (got {callback_url:?})"
            ))
        })?;
    let lifetime = src.number("SSO_LOGIN_TTL_SECONDS", 300u64, 30)?;
    if lifetime > 3600 {
        return Err(problem(format!(
            "SSO_LOGIN_TTL_SECONDS must be at most 3600 (got {lifetime})"
        )));
    }
    Ok(SsoSettings {
        redirect_allowlist,
        callback_url,
        login_lifetime: Duration::from_secs(lifetime),
    })
}

fn hashing_limits(src: &Source<'_>) -> Result<HashingLimits, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = src.number("HASHING_THREADS", cores, 1)?;
    if threads > MAX_HASHING_THREADS {
        return Err(problem(format!(
            "HASHING_THREADS must be at most {MAX_HASHING_THREADS} (got {threads})"
        )));
    }
    let queue_max = src.number(
        "HASHING_QUEUE_MAX",
        (threads * HASHING_QUEUE_PER_THREAD).min(MAX_HASHING_QUEUE),
        1,
    )?;
    if queue_max > MAX_HASHING_QUEUE {
        return Err(problem(format!(
            "HASHING_QUEUE_MAX must be at most {MAX_HASHING_QUEUE} (got {queue_max})"
        )));
    }
    let wait_ms = src.number("HASHING_QUEUE_WAIT_MS", DEFAULT_HASHING_QUEUE_WAIT_MS, 1)?;
    if wait_ms > MAX_HASHING_QUEUE_WAIT_MS {
        return Err(problem(format!(
            "HASHING_QUEUE_WAIT_MS must be at most {MAX_HASHING_QUEUE_WAIT_MS} (got {wait_ms})"
        )));
    }
    Ok(HashingLimits {
        threads,
        queue_max,
        max_wait: Duration::from_millis(wait_ms),
    })
}

fn import_tuning(src: &Source<'_>) -> Result<ImportTuning, ConfigError> {
    let defaults = ImportTuning::default();
    let batch_size = src.number("IMPORT_BATCH_SIZE", defaults.batch_size, 1)?;
    if batch_size > ImportTuning::MAX_BATCH_SIZE {
        return Err(problem(format!(
            "IMPORT_BATCH_SIZE must be at most {} (got {batch_size})",
            ImportTuning::MAX_BATCH_SIZE
        )));
    }
    let concurrency = src.number("IMPORT_CONCURRENCY", defaults.concurrency, 1)?;
    if concurrency > ImportTuning::MAX_CONCURRENCY {
        return Err(problem(format!(
            "IMPORT_CONCURRENCY must be at most {} (got {concurrency})",
            ImportTuning::MAX_CONCURRENCY
        )));
    }
    Ok(ImportTuning {
        batch_size,
        concurrency,
    })
}

fn keycloak_settings(src: &Source<'_>) -> Result<KeycloakSettings, ConfigError> {
    let text = src.string("KEYCLOAK_URL", "http://127.0.0.1:8080");
    let url = url::Url::parse(text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            problem(format!(
                "KEYCLOAK_URL must be an http(s) URL (got {text:?})"
            ))
        })?;
    let token_format = match src
        .string("TOKEN_FORMAT", "legacy")
        .to_ascii_lowercase()
        .as_str()
    {
        "legacy" => TokenFormat::Legacy,
        "keycloak" => TokenFormat::Keycloak,
        other => {
            return Err(problem(format!(
                "TOKEN_FORMAT must be legacy or keycloak (got {other:?})"
            )));
        }
    };
    let public_text = src.string("KEYCLOAK_PUBLIC_URL", url.as_str());
    let public_url = url::Url::parse(public_text.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            problem(format!(
                "KEYCLOAK_PUBLIC_URL must be an http(s) URL (got {public_text:?})"
            ))
        })?;
    Ok(KeycloakSettings {
        url,
        public_url,
        realm: src.string("KEYCLOAK_REALM", "authgate"),
        client_id: src.string("KEYCLOAK_CLIENT_ID", "authgate"),
        client_secret: src.string("KEYCLOAK_CLIENT_SECRET", "authgate-dev-secret"),
        password_check_client_id: src.string(
            "KEYCLOAK_PASSWORD_CHECK_CLIENT_ID",
            "authgate-password-check",
        ),
        password_check_client_secret: src.string(
            "KEYCLOAK_PASSWORD_CHECK_CLIENT_SECRET",
            "authgate-password-check-dev-secret",
        ),
        import_client_id: src.string("KEYCLOAK_IMPORT_CLIENT_ID", "authgate-import"),
        import_client_secret: src.string(
            "KEYCLOAK_IMPORT_CLIENT_SECRET",
            "authgate-import-dev-secret",
        ),
        timeout: Duration::from_millis(src.number("KEYCLOAK_TIMEOUT_MS", 5000u64, 100)?),
        request_deadline: Duration::from_millis(src.number(
            "KEYCLOAK_REQUEST_DEADLINE_MS",
            8000u64,
            100,
        )?),
        token_format,
        admin_events_interval: admin_events_interval(src)?,
    })
}

/// `KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS`: 1 to 300 seconds, or `off`.
fn admin_events_interval(src: &Source<'_>) -> Result<Option<Duration>, ConfigError> {
    const NAME: &str = "KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS";
    if src
        .optional(NAME)
        .is_some_and(|v| v.eq_ignore_ascii_case("off"))
    {
        return Ok(None);
    }
    let seconds = src.number(NAME, 5u64, 1)?;
    if seconds > 300 {
        return Err(problem(format!(
            "{NAME} must be 1 to 300, or off (got {seconds})"
        )));
    }
    Ok(Some(Duration::from_secs(seconds)))
}

fn smtp_settings(
    src: &Source<'_>,
    app_name: &str,
    data_dir: &Path,
) -> Result<SmtpSettings, ConfigError> {
    let tls = match src
        .string("SMTP_TLS", "starttls")
        .to_ascii_lowercase()
        .as_str()
    {
        "starttls" => SmtpTls::StartTls,
        "tls" | "ssl" => SmtpTls::Tls,
        "none" | "plain" | "off" => SmtpTls::None,
        other => {
            return Err(problem(format!(
                "SMTP_TLS must be starttls, tls or none (got {other:?})"
            )));
        }
    };
    let username = src.optional("SMTP_USERNAME");
    let password = src.optional("SMTP_PASSWORD");
    if username.is_some() != password.is_some() {
        return Err(problem(
            "SMTP_USERNAME and SMTP_PASSWORD must be set together (or neither)",
        ));
    }
    let sender = src.string("SMTP_SENDER", app_name);
    // The legacy SMTP_SENDER held a display name; an address there is used as such.
    let (sender_name, default_from) = if sender.contains('@') {
        (app_name.to_string(), sender.clone())
    } else {
        (
            sender.clone(),
            username
                .clone()
                .filter(|u| u.contains('@'))
                .unwrap_or_else(|| "no-reply@localhost".to_string()),
        )
    };
    let from_address = src.optional("SMTP_FROM").unwrap_or(default_from);
    if from_address.parse::<lettre::Address>().is_err() {
        return Err(problem(format!(
            "SMTP_FROM must be an e-mail address (got {from_address:?})"
        )));
    }
    let ca_file = src.optional("SMTP_CA_FILE").map(PathBuf::from);
    if let Some(path) = &ca_file
        && !path.is_file()
    {
        return Err(problem(format!(
            "SMTP_CA_FILE does not name a readable file: {}",
            path.display()
        )));
    }
    let host = src.optional("SMTP_HOST");
    let outbox = match src.optional("MAIL_OUTBOX_DIR") {
        Some(dir) if matches!(dir.to_ascii_lowercase().as_str(), "off" | "none") => None,
        _ if host.is_some() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(data_dir.join("outbox")),
    };
    Ok(SmtpSettings {
        host,
        outbox,
        port: src.number("SMTP_PORT", 587u16, 1)?,
        username,
        password,
        sender_name,
        from_address,
        tls,
        ca_file,
        timeout: Duration::from_secs(src.number("SMTP_TIMEOUT_SECONDS", 10u64, 1)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        HashMap::from([(
            "SECRET_KEY".to_string(),
            "9e25a2588fcee7d21ea15fb1a63d5135".to_string(),
        )])
    }

    #[test]
    fn hashing_limits_defaults_and_bounds() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(
            config.hashing,
            HashingLimits {
                threads: cores,
                queue_max: cores * HASHING_QUEUE_PER_THREAD,
                max_wait: Duration::from_millis(10_000),
            }
        );
        let mut map = base();
        map.insert("HASHING_THREADS".into(), "3".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.hashing.threads, 3);
        assert_eq!(config.hashing.queue_max, 48, "16 per thread");
        map.insert("HASHING_QUEUE_MAX".into(), "1".into());
        map.insert("HASHING_QUEUE_WAIT_MS".into(), "250".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.hashing.queue_max, 1);
        assert_eq!(config.hashing.max_wait, Duration::from_millis(250));
        assert_eq!(config.hashing.retry_after(), 1);
        for (name, value, says) in [
            ("HASHING_THREADS", "0", "at least 1"),
            ("HASHING_THREADS", "1025", "at most 1024"),
            ("HASHING_THREADS", "-2", "must be a number"),
            ("HASHING_QUEUE_MAX", "0", "at least 1"),
            ("HASHING_QUEUE_MAX", "100001", "at most 100000"),
            ("HASHING_QUEUE_MAX", "lots", "must be a number"),
            ("HASHING_QUEUE_WAIT_MS", "0", "at least 1"),
            ("HASHING_QUEUE_WAIT_MS", "60001", "at most 60000"),
        ] {
            let mut map = base();
            map.insert(name.into(), value.into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(
                err.to_string().contains(name) && err.to_string().contains(says),
                "{name}={value}: {}",
                err
            );
        }
    }

    #[test]
    fn import_tuning_defaults_and_bounds() {
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(config.import, ImportTuning::default());
        assert_eq!(config.keycloak.import_client_id, "authgate-import");
        let mut map = base();
        map.insert("IMPORT_BATCH_SIZE".into(), "250".into());
        map.insert("IMPORT_CONCURRENCY".into(), "4".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(
            config.import,
            ImportTuning {
                batch_size: 250,
                concurrency: 4
            }
        );
        for (name, value) in [
            ("IMPORT_BATCH_SIZE", "0"),
            ("IMPORT_BATCH_SIZE", "5001"),
            ("IMPORT_BATCH_SIZE", "many"),
            ("IMPORT_CONCURRENCY", "0"),
            ("IMPORT_CONCURRENCY", "17"),
        ] {
            let mut map = base();
            map.insert(name.into(), value.into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {}", err);
        }
    }

    #[test]
    fn keycloak_request_deadline_default_and_bounds() {
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(
            config.keycloak.request_deadline,
            Duration::from_millis(8000)
        );
        let mut map = base();
        map.insert("KEYCLOAK_REQUEST_DEADLINE_MS".into(), "2500".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(
            config.keycloak.request_deadline,
            Duration::from_millis(2500)
        );
        for value in ["0", "99", "soon"] {
            let mut map = base();
            map.insert("KEYCLOAK_REQUEST_DEADLINE_MS".into(), value.into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(
                err.to_string().contains("KEYCLOAK_REQUEST_DEADLINE_MS"),
                "{value}: {}",
                err
            );
        }
    }

    #[test]
    fn sso_settings_defaults_and_refusals() {
        let config = Config::from_map(&base()).unwrap();
        assert!(config.sso.redirect_allowlist.is_empty());
        assert_eq!(
            config.sso.callback_url,
            "http://localhost:5000/auth/callback"
        );
        assert_eq!(config.sso.login_lifetime, Duration::from_secs(300));
        assert_eq!(config.keycloak.public_url, config.keycloak.url);
        let mut map = base();
        map.insert(
            "SSO_REDIRECT_ALLOWLIST".into(),
            "https://app.example.com, https://portal.example.com/sso/".into(),
        );
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.sso.redirect_allowlist.len(), 2);
        for (name, value) in [
            ("SSO_REDIRECT_ALLOWLIST", "app.example.com"),
            ("SSO_REDIRECT_ALLOWLIST", "https://user@app.example.com"),
            ("SSO_REDIRECT_ALLOWLIST", "javascript:alert(1)"),
            ("SSO_CALLBACK_URL", "/auth/callback"),
            ("SSO_LOGIN_TTL_SECONDS", "5"),
            ("SSO_LOGIN_TTL_SECONDS", "86400"),
            ("KEYCLOAK_PUBLIC_URL", "keycloak"),
        ] {
            let mut map = base();
            map.insert(name.into(), value.into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {}", err);
        }
    }

    #[test]
    fn legacy_defaults() {
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(config.app.port, 5000);
        assert_eq!(config.jwt.access_minutes, 60);
        assert_eq!(config.jwt.refresh_minutes, 10080);
        assert_eq!(config.jwt.email_minutes, 1440);
        assert_eq!(config.jwt.access_ceiling_minutes, 240);
        assert_eq!(config.jwt.refresh_ceiling_minutes, 40320);
        assert!(config.cookies.http_only);
        assert!(!config.cookies.secure);
        assert_eq!(config.cookies.same_site, SameSite::Lax);
        assert_eq!(config.cookies.domain, None);
        assert_eq!(config.smtp.tls, SmtpTls::StartTls);
        assert_eq!(config.smtp.port, 587);
        assert_eq!(config.backend, Backend::Native);
        assert_eq!(config.password_rounds, 600_000);
        // Nothing names a database: the embedded store, mail to the outbox.
        assert_eq!(config.database.url, "sqlite://authgate-data/authgate.db");
        assert_eq!(config.data_dir, PathBuf::from("authgate-data"));
        assert_eq!(
            config.smtp.outbox,
            Some(PathBuf::from("authgate-data/outbox"))
        );
        assert_eq!(config.notices.len(), 1);
    }

    #[test]
    fn lifetime_ceilings_follow_the_lifetimes_and_stay_above_them() {
        let mut map = base();
        map.insert("JWT_EXP_TIME_MINUTES".into(), "15".into());
        map.insert("JWT_REFRESH_EXP_TIME_MINUTES".into(), "1440".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.jwt.access_ceiling_minutes, 60);
        assert_eq!(config.jwt.refresh_ceiling_minutes, 5760);
        map.insert("JWT_EXP_CEILING_MINUTES".into(), "15".into());
        map.insert("JWT_REFRESH_EXP_CEILING_MINUTES".into(), "100000".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.jwt.access_ceiling_minutes, 15);
        assert_eq!(config.jwt.refresh_ceiling_minutes, 100_000);
        for (name, value) in [
            ("JWT_EXP_CEILING_MINUTES", "14"),
            ("JWT_REFRESH_EXP_CEILING_MINUTES", "1439"),
            ("JWT_EXP_CEILING_MINUTES", "forever"),
        ] {
            let mut map = map.clone();
            map.insert(name.into(), value.into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {}", err);
        }
    }

    #[test]
    fn any_legacy_postgres_setting_selects_postgres() {
        let mut map = base();
        map.insert("POSTGRES_DB".into(), "fastapi-boilerplate".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(
            config.database.url,
            "postgres://postgres:postgres@localhost:5432/fastapi-boilerplate"
        );
        assert!(config.notices.is_empty());
    }

    #[test]
    fn key_file_only_for_the_embedded_store() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_string())
            }
        };
        assert_eq!(
            generated_key_file(&lookup(&[])),
            Some(PathBuf::from("authgate-data/secret.key"))
        );
        assert_eq!(
            generated_key_file(&lookup(&[("DATA_DIR", "/var/lib/ag")])),
            Some(PathBuf::from("/var/lib/ag/secret.key"))
        );
        assert_eq!(
            generated_key_file(&lookup(&[("DATABASE_URL", "sqlite://x.db")])),
            Some(PathBuf::from("authgate-data/secret.key"))
        );
        assert_eq!(generated_key_file(&lookup(&[("SECRET_KEY", "k")])), None);
        assert_eq!(
            generated_key_file(&lookup(&[("DATABASE_URL", "postgres://h/d")])),
            None
        );
        assert_eq!(
            generated_key_file(&lookup(&[("POSTGRES_SERVER", "db")])),
            None
        );
    }

    #[test]
    fn outbox_only_without_smtp() {
        let mut map = base();
        map.insert("SMTP_HOST".into(), "mail".into());
        assert_eq!(Config::from_map(&map).unwrap().smtp.outbox, None);
        let mut map = base();
        map.insert("MAIL_OUTBOX_DIR".into(), "off".into());
        assert_eq!(Config::from_map(&map).unwrap().smtp.outbox, None);
        map.insert("MAIL_OUTBOX_DIR".into(), "/tmp/box".into());
        assert_eq!(
            Config::from_map(&map).unwrap().smtp.outbox,
            Some(PathBuf::from("/tmp/box"))
        );
    }

    #[test]
    fn database_url_wins_over_postgres_parts() {
        let mut map = base();
        map.insert("POSTGRES_SERVER".into(), "db".into());
        map.insert("DATABASE_URL".into(), "postgres://u:p@h/x".into());
        assert_eq!(
            Config::from_map(&map).unwrap().database.url,
            "postgres://u:p@h/x"
        );
    }

    #[test]
    fn each_problem_names_its_setting() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SECRET_KEY",
                "short",
                "SECRET_KEY must be 32 bytes for the refresh-token JWE (got 5)",
            ),
            ("APP_PORT", "x", "APP_PORT must be a number"),
            (
                "AUTH_BACKEND",
                "ldap",
                "AUTH_BACKEND must be native or keycloak",
            ),
            (
                "SMTP_TLS",
                "maybe",
                "SMTP_TLS must be starttls, tls or none",
            ),
            ("COOKIE_SAMESITE", "sometimes", "COOKIE_SAMESITE must be"),
            (
                "COOKIE_SECURE",
                "perhaps",
                "COOKIE_SECURE must be true or false",
            ),
            (
                "PASSWORD_PBKDF2_ROUNDS",
                "10",
                "PASSWORD_PBKDF2_ROUNDS must be at least 1000",
            ),
            (
                "RATE_LIMIT_SIGNIN_PER_IP",
                "lots",
                "RATE_LIMIT_SIGNIN_PER_IP",
            ),
            (
                "DATABASE_URL",
                "mysql://x",
                "DATABASE_URL must be a postgres:// or sqlite:// URL",
            ),
            (
                "ROUTES_WATCH_SECONDS",
                "often",
                "ROUTES_WATCH_SECONDS must be a number",
            ),
            (
                "FORWARD_AUTH_DEFAULT_POLICY",
                "role:",
                "FORWARD_AUTH_DEFAULT_POLICY must be public, authenticated or role:<name>",
            ),
        ];
        for (name, value, expected) in cases {
            let mut map = base();
            map.insert((*name).to_string(), (*value).to_string());
            let err = Config::from_map(&map).unwrap_err();
            assert!(err.to_string().starts_with(expected), "{name}: {}", err);
            assert!(!err.to_string().contains('\n'));
        }
        let err = Config::from_map(&HashMap::new()).unwrap_err();
        assert!(err.to_string().starts_with("SECRET_KEY is not set"));
        let mut map = base();
        map.insert("AUTH_BACKEND".into(), "keycloak".into());
        let err = Config::from_map(&map).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("AUTH_BACKEND=keycloak keeps its registry in PostgreSQL")
        );
    }

    #[test]
    fn routes_reload_and_forward_auth_settings() {
        let edge = Config::from_map(&base()).unwrap().edge;
        assert_eq!(edge.routes_watch, Some(Duration::from_secs(5)));
        assert_eq!(edge.forward_auth_default, Policy::Authenticated);
        assert_eq!(edge.routes_file, None);
        let mut map = base();
        map.insert("ROUTES_WATCH_SECONDS".into(), "0".into());
        map.insert("FORWARD_AUTH_DEFAULT_POLICY".into(), "role:staff".into());
        let edge = Config::from_map(&map).unwrap().edge;
        assert_eq!(edge.routes_watch, None);
        assert_eq!(edge.forward_auth_default, Policy::Role("staff".into()));
        assert_eq!(edge.forward_auth_default.to_string(), "role:staff");
    }

    #[test]
    fn client_connection_limits() {
        let edge = Config::from_map(&base()).unwrap().edge;
        assert_eq!(edge.client_header_timeout, Duration::from_secs(10));
        assert_eq!(edge.client_write_timeout, Duration::from_secs(30));
        assert_eq!(edge.max_client_connections, 20_000);
        let mut map = base();
        map.insert("CLIENT_HEADER_TIMEOUT_SECONDS".into(), "2".into());
        map.insert("CLIENT_WRITE_TIMEOUT_SECONDS".into(), "5".into());
        map.insert("MAX_CLIENT_CONNECTIONS".into(), "3".into());
        let edge = Config::from_map(&map).unwrap().edge;
        assert_eq!(edge.client_header_timeout, Duration::from_secs(2));
        assert_eq!(edge.client_write_timeout, Duration::from_secs(5));
        assert_eq!(edge.max_client_connections, 3);
        for name in [
            "CLIENT_HEADER_TIMEOUT_SECONDS",
            "CLIENT_WRITE_TIMEOUT_SECONDS",
            "MAX_CLIENT_CONNECTIONS",
        ] {
            let mut map = base();
            map.insert(name.into(), "0".into());
            let err = Config::from_map(&map).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("{name} must be at least 1")),
                "{}",
                err.to_string()
            );
        }
    }

    #[test]
    fn tls_settings_come_as_a_pair_and_bring_their_options() {
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(config.edge.tls, None);
        assert_eq!(config.app.url, "http://localhost:5000");

        let mut map = base();
        map.insert("TLS_CERT_FILE".into(), "/certs/tls.crt".into());
        map.insert("TLS_KEY_FILE".into(), "/certs/tls.key".into());
        let config = Config::from_map(&map).unwrap();
        assert_eq!(config.app.url, "https://localhost:5000");
        assert_eq!(
            config.edge.tls,
            Some(TlsSettings {
                cert_file: "/certs/tls.crt".into(),
                key_file: "/certs/tls.key".into(),
                check_every: Some(Duration::from_secs(DEFAULT_TLS_CHECK_SECONDS)),
                redirect_port: None,
                hsts_max_age: None,
            })
        );
        map.insert("HTTP_REDIRECT_PORT".into(), "8080".into());
        map.insert("HSTS_MAX_AGE_SECONDS".into(), "31536000".into());
        map.insert("TLS_RELOAD_CHECK_SECONDS".into(), "0".into());
        let tls = Config::from_map(&map).unwrap().edge.tls.unwrap();
        assert_eq!(
            (tls.redirect_port, tls.hsts_max_age, tls.check_every),
            (Some(8080), Some(31_536_000), None)
        );

        let refused = |pairs: &[(&str, &str)]| {
            let mut map = base();
            for (k, v) in pairs {
                map.insert((*k).into(), (*v).into());
            }
            Config::from_map(&map).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&[("TLS_CERT_FILE", "/c")]),
            "TLS_CERT_FILE is set without TLS_KEY_FILE"
        );
        assert_eq!(
            refused(&[("TLS_KEY_FILE", "/k")]),
            "TLS_KEY_FILE is set without TLS_CERT_FILE"
        );
        assert!(
            refused(&[("HSTS_MAX_AGE_SECONDS", "60")]).starts_with("HSTS_MAX_AGE_SECONDS needs")
        );
        assert!(refused(&[("HTTP_REDIRECT_PORT", "80")]).starts_with("HTTP_REDIRECT_PORT needs"));
        assert_eq!(
            refused(&[
                ("TLS_CERT_FILE", "/c"),
                ("TLS_KEY_FILE", "/k"),
                ("HTTP_REDIRECT_PORT", "5000")
            ]),
            "HTTP_REDIRECT_PORT must differ from APP_PORT (both 5000)"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut map = base();
        map.insert("DATABASE_URL".into(), "postgres://u:hunter2@h/x".into());
        map.insert("SMTP_USERNAME".into(), "u".into());
        map.insert("SMTP_PASSWORD".into(), "mailpass".into());
        let text = format!("{:?}", Config::from_map(&map).unwrap());
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("mailpass"));
        assert!(!text.contains("9e25a2588fcee7d21ea15fb1a63d5135"));
    }
}
