//! `authgate check-config`: the effective configuration with every secret
//! masked, then a probe of each server it names (store, Keycloak, SMTP,
//! Redis, upstreams), each bounded in time.
//!
//! Imports: what it probes: `config`, `store`, `identity`, `mail`,
//! `ratelimit`, `routes`, `tls`, `clock`, `metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::config::Quota;
use crate::config::{Backend, Config, SmtpTls, redact_url};
#[cfg(feature = "keycloak")]
use crate::identity::IdentityBackend;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::ratelimit::RedisLimiter;
use crate::routes::RouteConfig;
use crate::store::{StoreKind, sqlite_file};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings in effect, as `(name, value)` lines; secrets masked.
pub fn settings(config: &Config, routes: &[RouteConfig]) -> Vec<(&'static str, String)> {
    let quota = |q: &Option<Quota>| {
        q.map_or_else(
            || "off".to_string(),
            |q| format!("{}/{}s", q.count, q.period.as_secs()),
        )
    };
    let backend = match config.backend {
        Backend::Native => "native",
        Backend::Keycloak => "keycloak",
    };
    let store = match StoreKind::of(&config.database.url) {
        Some(StoreKind::Sqlite) => "embedded SQLite",
        _ => "PostgreSQL",
    };
    let mut lines = vec![
        ("AUTH_BACKEND", backend.to_string()),
        (
            "APP_HOST:APP_PORT",
            format!("{}:{}", config.app.host, config.app.port),
        ),
        ("APP_URL", config.app.url.clone()),
        ("APP_WORKERS", config.app.workers.to_string()),
        ("DATA_DIR", config.data_dir.display().to_string()),
        (
            "DATABASE_URL",
            format!("{} ({store})", redact_url(&config.database.url)),
        ),
        (
            "DATABASE_MAX_CONNECTIONS",
            config.database.max_connections.to_string(),
        ),
        (
            "MIGRATE_ON_START",
            config.database.migrate_on_start.to_string(),
        ),
        ("SECRET_KEY", "*** (32 bytes)".to_string()),
        (
            "JWT_EXP_TIME_MINUTES",
            config.jwt.access_minutes.to_string(),
        ),
        (
            "JWT_REFRESH_EXP_TIME_MINUTES",
            config.jwt.refresh_minutes.to_string(),
        ),
        (
            "JWT_EMAIL_EXP_TIME_MINUTES",
            config.jwt.email_minutes.to_string(),
        ),
        (
            "JWT_EXP_CEILING_MINUTES / JWT_REFRESH_EXP_CEILING_MINUTES",
            format!(
                "{} / {}",
                config.jwt.access_ceiling_minutes, config.jwt.refresh_ceiling_minutes
            ),
        ),
        ("PASSWORD_PBKDF2_ROUNDS", config.password_rounds.to_string()),
        (
            "HASHING_THREADS / QUEUE_MAX / QUEUE_WAIT_MS",
            format!(
                "{} / {} / {}",
                config.hashing.threads,
                config.hashing.queue_max,
                config.hashing.max_wait.as_millis()
            ),
        ),
        (
            "COOKIE_SECURE / HTTPONLY / SAMESITE",
            format!(
                "{} / {} / {}",
                config.cookies.secure,
                config.cookies.http_only,
                config.cookies.same_site.as_str()
            ),
        ),
    ];
    let smtp = &config.smtp;
    lines.push(match &smtp.host {
        Some(host) => (
            "SMTP",
            format!(
                "{host}:{} ({}), user {}, password {}, from {} <{}>",
                smtp.port,
                match smtp.tls {
                    SmtpTls::StartTls => "STARTTLS",
                    SmtpTls::Tls => "TLS",
                    SmtpTls::None => "no TLS",
                },
                smtp.username.as_deref().unwrap_or("(none)"),
                if smtp.password.is_some() {
                    "***"
                } else {
                    "(none)"
                },
                smtp.sender_name,
                smtp.from_address
            ),
        ),
        None => (
            "SMTP",
            match &smtp.outbox {
                Some(dir) => format!("not set: mail is written to {}", dir.display()),
                None => "not set: mail is only logged".to_string(),
            },
        ),
    });
    if config.backend == Backend::Keycloak {
        let kc = &config.keycloak;
        lines.push((
            "KEYCLOAK",
            format!(
                "{} realm {}, client {} (secret ***), password-check client {} (secret ***), import client {} (secret ***), timeout {} ms, token format {:?}",
                kc.url,
                kc.realm,
                kc.client_id,
                kc.password_check_client_id,
                kc.import_client_id,
                kc.timeout.as_millis(),
                kc.token_format
            ),
        ));
    }
    let edge = &config.edge;
    lines.push((
        "REDIS_URL",
        edge.redis_url.as_deref().map_or_else(
            || "not set: rate limits are per process".to_string(),
            redact_url,
        ),
    ));
    let limits = &config.rate_limits;
    lines.push((
        "RATE_LIMIT_SIGNIN_PER_IP / PER_ACCOUNT / SIGNUP / EMAIL / OTP",
        format!(
            "{} / {} / {} / {} / {}",
            quota(&limits.signin_per_ip),
            quota(&limits.signin_per_account),
            quota(&limits.signup_per_ip),
            quota(&limits.email_per_ip),
            quota(&limits.otp_per_account)
        ),
    ));
    lines.push((
        "TRUSTED_PROXIES",
        if edge.trusted_proxies.is_empty() {
            "none (client address from the socket)".to_string()
        } else {
            edge.trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    ));
    lines.push((
        "ROUTES_WATCH_SECONDS",
        edge.routes_watch.map_or_else(
            || "0: the routes file is read again on SIGHUP only".to_string(),
            |every| every.as_secs().to_string(),
        ),
    ));
    lines.push((
        "FORWARD_AUTH_DEFAULT_POLICY",
        edge.forward_auth_default.to_string(),
    ));
    lines.push((
        "METRICS_ADDR",
        edge.metrics_addr.map_or_else(
            || "not set: /metrics on the main listener".to_string(),
            |addr| addr.to_string(),
        ),
    ));
    lines.push((
        "SHUTDOWN_GRACE_SECONDS",
        edge.shutdown_grace.as_secs().to_string(),
    ));
    lines.push((
        "CLIENT_IDLE_TIMEOUT_SECONDS",
        edge.client_idle_timeout.as_secs().to_string(),
    ));
    lines.push((
        "CLIENT_HEADER_TIMEOUT_SECONDS",
        edge.client_header_timeout.as_secs().to_string(),
    ));
    lines.push((
        "CLIENT_WRITE_TIMEOUT_SECONDS",
        edge.client_write_timeout.as_secs().to_string(),
    ));
    lines.push((
        "MAX_CLIENT_CONNECTIONS",
        edge.max_client_connections.to_string(),
    ));
    lines.push((
        "TLS_CERT_FILE / TLS_KEY_FILE",
        match &edge.tls {
            None => "not set: plain HTTP".to_string(),
            Some(tls) => format!(
                "{} / {}, looked at {}, HTTP_REDIRECT_PORT {}, HSTS_MAX_AGE_SECONDS {}",
                tls.cert_file.display(),
                tls.key_file.display(),
                tls.check_every.map_or_else(
                    || "on SIGHUP only".to_string(),
                    |every| format!("every {} s and on SIGHUP", every.as_secs())
                ),
                tls.redirect_port
                    .map_or_else(|| "not set".to_string(), |port| port.to_string()),
                tls.hsts_max_age
                    .map_or_else(|| "off".to_string(), |age| age.to_string()),
            ),
        },
    ));
    for route in routes {
        lines.push((
            "route",
            format!(
                "{} -> {} ({:?}{})",
                route.prefix,
                route
                    .upstreams
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                route.policy,
                route
                    .rate_limit
                    .map(|q| format!(", limit {}", quota(&Some(q))))
                    .unwrap_or_default()
            ),
        ));
    }
    lines
}

/// What one probe found.
#[derive(Debug)]
pub struct Probe {
    pub what: String,
    /// `Ok(detail)` when reachable (or nothing to reach), `Err(why)` else.
    pub outcome: Result<String, String>,
    pub took: Duration,
}

async fn probe<F>(what: String, work: F) -> Probe
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let started = Instant::now();
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    Probe {
        what,
        outcome,
        took: started.elapsed(),
    }
}

/// Probes every server the configuration names.
pub async fn probes(config: &Config, routes: &[RouteConfig]) -> Vec<Probe> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut found = Vec::new();
    found.push(store_probe(config, &clock).await);
    #[cfg(feature = "keycloak")]
    if config.backend == Backend::Keycloak {
        found.push(keycloak_probe(config, &clock).await);
        found.push(backchannel_probe(config, &clock).await);
    }
    found.push(smtp_probe(config).await);
    if let Some(tls) = &config.edge.tls {
        found.push(
            probe("TLS certificate pair".to_string(), async {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))
                };
                let provider = rustls::crypto::aws_lc_rs::default_provider();
                let pair = crate::tls::certs::parse_pair(
                    &read(&tls.cert_file)?,
                    &read(&tls.key_file)?,
                    (&tls.cert_file, &tls.key_file),
                    &provider,
                    clock.unix(),
                )
                .map_err(|err| err.to_string())?;
                let days = (pair.not_after - clock.unix()) / 86_400;
                Ok(format!("{}, expires in {days} days", pair.subject))
            })
            .await,
        );
    }
    if let Some(url) = &config.edge.redis_url {
        found.push(
            probe(format!("redis {}", redact_url(url)), async {
                let redis = RedisLimiter::new(url).map_err(|e| e.to_string())?;
                redis.ping().await.map_err(|e| e.to_string())?;
                Ok("PONG".to_string())
            })
            .await,
        );
    }
    for route in routes {
        for addr in &route.upstreams {
            let timeout = route.connect_timeout;
            found.push(
                probe(format!("upstream {} -> {addr}", route.prefix), async move {
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await
                    {
                        Ok(Ok(_)) => Ok("accepts connections".to_string()),
                        Ok(Err(err)) => Err(err.to_string()),
                        Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
                    }
                })
                .await,
            );
        }
    }
    found
}

async fn store_probe(config: &Config, clock: &Arc<dyn Clock>) -> Probe {
    let url = &config.database.url;
    let what = format!("database {}", redact_url(url));
    if StoreKind::of(url) == Some(StoreKind::Sqlite)
        && let Some(file) = sqlite_file(url)
        && !file.exists()
    {
        let detail = format!(
            "{} does not exist yet: `authgate serve` creates it",
            file.display()
        );
        return probe(what, async { Ok(detail) }).await;
    }
    probe(what, async {
        let metrics = crate::metrics::Metrics::new().map_err(|e| e.to_string())?;
        let backend = crate::native_backend(config, Arc::clone(clock), &metrics)
            .map_err(|e| e.to_string())?;
        backend.ready().await.map_err(|e| e.to_string())?;
        Ok("answers queries".to_string())
    })
    .await
}

#[cfg(feature = "keycloak")]
async fn keycloak_probe(config: &Config, clock: &Arc<dyn Clock>) -> Probe {
    let what = format!(
        "keycloak {} realm {}",
        config.keycloak.url, config.keycloak.realm
    );
    probe(what, async {
        let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
        let (backend, _) = crate::keycloak_backend(config, Arc::clone(clock), metrics)
            .map_err(|e| e.to_string())?;
        backend.ready().await.map_err(|e| e.to_string())?;
        // The service account: a token, and the right to read users.
        backend
            .admin()
            .find_by_username("authgate-check-config")
            .await
            .map_err(|e| format!("realm reachable, but the Admin API refused: {e}"))?;
        Ok("realm reachable, service account can read users".to_string())
    })
    .await
}

/// The realm's client for authgate has its back-channel logout URL set
/// (Keycloak announces sign-outs there), with "session required" on.
#[cfg(feature = "keycloak")]
async fn backchannel_probe(config: &Config, clock: &Arc<dyn Clock>) -> Probe {
    let client_id = &config.keycloak.client_id;
    let what = format!("keycloak client {client_id} back-channel logout URL");
    probe(what, async {
        let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
        let (backend, _) = crate::keycloak_backend(config, Arc::clone(clock), metrics)
            .map_err(|e| e.to_string())?;
        let client = match backend.admin().client(client_id).await {
            Ok(Ok(Some(client))) => client,
            Ok(Ok(None)) => return Err(format!("the realm has no client {client_id}")),
            Ok(Err(status)) => {
                return Err(format!(
                    "the Admin API refused to read the client ({status}): the service account \
                     needs realm-management view-clients"
                ));
            }
            Err(err) => return Err(err.to_string()),
        };
        backchannel_detail(&client)
    })
    .await
}

/// What a client's representation says of its back-channel logout.
#[cfg(feature = "keycloak")]
fn backchannel_detail(client: &serde_json::Value) -> Result<String, String> {
    let attribute = |name: &str| {
        client
            .get("attributes")
            .and_then(|a| a.get(name))
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(url) = attribute("backchannel.logout.url") else {
        return Err("no back-channel logout URL: set it to this service's \
             /auth/backchannel-logout, or sign-outs in Keycloak reach authgate only \
             through its admin events"
            .to_string());
    };
    if !url.ends_with("/auth/backchannel-logout") {
        return Err(format!(
            "back-channel logout URL {url} does not end in /auth/backchannel-logout"
        ));
    }
    if attribute("backchannel.logout.session.required") != Some("true") {
        return Err(format!(
            "{url}, but \"backchannel logout session required\" is off: logout tokens \
             then end every session of the user"
        ));
    }
    Ok(format!("{url} (session required)"))
}

async fn smtp_probe(config: &Config) -> Probe {
    let smtp = &config.smtp;
    let what = match &smtp.host {
        Some(host) => format!("smtp {host}:{}", smtp.port),
        None => "smtp".to_string(),
    };
    probe(what, async {
        let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
        let mailer = Mailer::new(
            smtp,
            &config.app.name,
            config.jwt.email_minutes,
            config.templates_dir.as_deref(),
            metrics,
            Arc::new(crate::clock::SystemClock),
        )
        .map_err(|e| e.to_string())?;
        if mailer.check_connection().await.map_err(|e| e.to_string())? {
            Ok("connected (TLS and login as configured)".to_string())
        } else {
            Ok("not configured".to_string())
        }
    })
    .await
}

#[cfg(all(test, feature = "keycloak"))]
mod tests {
    use serde_json::json;

    use super::backchannel_detail;

    #[test]
    fn backchannel_logout_url_of_the_client() {
        let client = |attributes| json!({"clientId": "authgate", "attributes": attributes});
        let set = client(json!({
            "backchannel.logout.url": "http://authgate:5000/auth/backchannel-logout",
            "backchannel.logout.session.required": "true",
        }));
        assert_eq!(
            backchannel_detail(&set).as_deref(),
            Ok("http://authgate:5000/auth/backchannel-logout (session required)")
        );
        assert!(backchannel_detail(&client(json!({}))).is_err());
        assert!(backchannel_detail(&client(json!({"backchannel.logout.url": " "}))).is_err());
        let elsewhere = client(json!({
            "backchannel.logout.url": "http://authgate:5000/logout",
            "backchannel.logout.session.required": "true",
        }));
        assert!(backchannel_detail(&elsewhere).is_err());
        let without_session = client(json!({
            "backchannel.logout.url": "http://authgate:5000/auth/backchannel-logout",
        }));
        assert!(backchannel_detail(&without_session).is_err());
    }
}
