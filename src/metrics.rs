//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One registry per process, handed to whoever counts (no globals), so a
//! test can read exactly what one gateway did.
//!
//! Imports: nothing of the crate.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub signins: IntCounterVec,
    pub token_rejections: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub mails: IntCounterVec,
    pub keycloak_requests: IntCounterVec,
    pub keycloak_seconds: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub requests_refused: IntCounterVec,
    pub tunnels_ended: IntCounterVec,
    pub routes_reloads: IntCounterVec,
    pub routes_loaded: IntGauge,
    pub forward_auth: IntCounterVec,
    pub redis_up: IntGauge,
    pub ratelimit_fallbacks: IntCounter,
    pub audit_failures: IntCounter,
    pub client_connections: IntGauge,
    pub connections_refused: IntCounter,
    pub client_header_timeouts: IntCounter,
    pub client_write_timeouts: IntCounter,
    pub hashing_queue_depth: IntGauge,
    pub hashing_wait: Histogram,
    pub hashing_refusals: IntCounterVec,
    pub revocations: IntCounterVec,
    pub revocation_push_up: IntGauge,
    pub backchannel_refused: IntCounterVec,
    pub admin_event_polls: IntCounterVec,
    pub admin_events: IntCounterVec,
    pub admin_event_reader: IntGauge,
}

/// See [`Metrics::tls`].
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    pub reload_failures: IntCounter,
    pub expiry: IntGauge,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const HASHING_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("authgate".into()), None)?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, MetricsError> {
                let metric = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        Ok(Self {
            requests: counter(
                "http_requests_total",
                "Requests answered, by route template, method and status.",
                &["route", "method", "status"],
            )?,
            request_seconds: histogram(
                "http_request_duration_seconds",
                "Time to answer a request, by route template.",
                &["route"],
            )?,
            signins: counter(
                "signins_total",
                "Sign-in attempts by outcome.",
                &["outcome"],
            )?,
            token_rejections: counter(
                "token_rejections_total",
                "Tokens refused, by kind and reason.",
                &["kind", "reason"],
            )?,
            rate_limited: counter(
                "rate_limited_total",
                "Requests refused with 429, by limit.",
                &["limit"],
            )?,
            mails: counter(
                "mails_total",
                "Mails by kind and outcome.",
                &["kind", "outcome"],
            )?,
            keycloak_requests: counter(
                "keycloak_requests_total",
                "Calls to Keycloak, by operation and outcome.",
                &["operation", "outcome"],
            )?,
            keycloak_seconds: histogram(
                "keycloak_request_duration_seconds",
                "Time of calls to Keycloak, by operation.",
                &["operation"],
            )?,
            upstream_requests: counter(
                "upstream_requests_total",
                "Requests forwarded to upstreams, by route prefix and upstream status.",
                &["route", "status"],
            )?,
            upstream_seconds: histogram(
                "upstream_duration_seconds",
                "Time from forwarding to the upstream's answer, by route prefix.",
                &["route"],
            )?,
            upstream_errors: counter(
                "upstream_errors_total",
                "Forwarding failures, by route prefix and kind (connect, timeout, ...).",
                &["route", "kind"],
            )?,
            requests_refused: counter(
                "requests_refused_total",
                "Request heads refused before any route or handler (unsettled path, too many headers, ...), by reason.",
                &["reason"],
            )?,
            tunnels_ended: counter(
                "tunnels_ended_total",
                "Upgraded connections (WebSocket) ended, by why: closed, idle, refused (session revoked or token expired).",
                &["reason"],
            )?,
            routes_reloads: counter(
                "routes_reloads_total",
                "Reloads of ROUTES_FILE (SIGHUP, or the file changed), by outcome: applied, unchanged, invalid (the routes in force stay).",
                &["outcome"],
            )?,
            routes_loaded: {
                let gauge = IntGauge::new(
                    "routes_loaded",
                    "Routes in force (the last valid ROUTES_FILE).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            forward_auth: counter(
                "forward_auth_decisions_total",
                "Forward-auth answers (/auth/forward), by outcome: allowed, refused (no or bad token), forbidden (role), invalid (unsettled or ambiguous original request), limited, untrusted (not a TRUSTED_PROXIES peer), error.",
                &["outcome"],
            )?,
            redis_up: {
                let gauge = IntGauge::new(
                    "redis_up",
                    "1 while Redis answers (shared rate limits, ended sessions), 0 while each replica decides alone.",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            ratelimit_fallbacks: {
                let counter = IntCounter::new(
                    "ratelimit_local_fallbacks_total",
                    "Rate-limit decisions taken locally because Redis did not answer.",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            audit_failures: {
                let counter = IntCounter::new(
                    "audit_failures_total",
                    "Audit events that could not be stored (the request went on).",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            client_connections: {
                let gauge = IntGauge::new(
                    "client_connections",
                    "Client connections open (those kept for health probes past MAX_CLIENT_CONNECTIONS too).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            connections_refused: {
                let counter = IntCounter::new(
                    "connections_refused_total",
                    "Client connections refused past MAX_CLIENT_CONNECTIONS (503, or closed unanswered past the probe reserve).",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            client_header_timeouts: {
                let counter = IntCounter::new(
                    "client_header_timeouts_total",
                    "Client connections closed because a request head was not complete within CLIENT_HEADER_TIMEOUT_SECONDS.",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            client_write_timeouts: {
                let counter = IntCounter::new(
                    "client_write_timeouts_total",
                    "Client connections dropped because a write to the client stalled for CLIENT_WRITE_TIMEOUT_SECONDS.",
                )?;
                registry.register(Box::new(counter.clone()))?;
                counter
            },
            hashing_queue_depth: {
                let gauge = IntGauge::new(
                    "hashing_queue_depth",
                    "Password hashing jobs (sign-up, sign-in, password change) waiting for a hashing thread (at most HASHING_QUEUE_MAX).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            hashing_wait: {
                let histogram = Histogram::with_opts(
                    HistogramOpts::new(
                        "hashing_queue_wait_seconds",
                        "Time password hashing jobs waited for a hashing thread (those that reached one).",
                    )
                    .buckets(HASHING_WAIT_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(histogram.clone()))?;
                histogram
            },
            hashing_refusals: counter(
                "hashing_refusals_total",
                "Password hashing jobs refused with 503, by reason: full (HASHING_QUEUE_MAX jobs waiting), wait (no thread within HASHING_QUEUE_WAIT_MS).",
                &["reason"],
            )?,
            revocations: counter(
                "revocations_total",
                "Revocations (sessions ended, token cut-offs) by source: signout, backchannel, admin_event, admin, password_reset.",
                &["source"],
            )?,
            revocation_push_up: {
                let gauge = IntGauge::new(
                    "revocation_push_up",
                    "1 while this replica follows the revocations of the others through Redis, 0 while it relies on the database's few seconds of cache (or has no Redis).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            backchannel_refused: counter(
                "backchannel_logout_refused_total",
                "Back-channel logout tokens refused (400, nothing revoked), by reason.",
                &["reason"],
            )?,
            admin_event_polls: counter(
                "keycloak_admin_event_polls_total",
                "Reads of Keycloak's admin events by this replica (while it holds the reader's lease), by outcome.",
                &["outcome"],
            )?,
            admin_events: counter(
                "keycloak_admin_events_total",
                "Keycloak admin events read, by what authgate made of them (disabled, deleted, credentials, roles, logout, session, verified, realm_logout, ignored, own).",
                &["change"],
            )?,
            admin_event_reader: {
                let gauge = IntGauge::new(
                    "keycloak_admin_event_reader",
                    "1 while this replica holds the lease of the admin-event reader (one replica of the cluster reads Keycloak's admin events).",
                )?;
                registry.register(Box::new(gauge.clone()))?;
                gauge
            },
            registry,
        })
    }

    /// The handles the password hashing pool reports through.
    pub fn hashing(&self) -> HashingMetrics {
        HashingMetrics {
            depth: self.hashing_queue_depth.clone(),
            wait: self.hashing_wait.clone(),
            refusals: self.hashing_refusals.clone(),
        }
    }

    /// The metrics of TLS termination, registered once when the main
    /// listener serves HTTPS (a gateway without TLS exports none of them).
    pub fn tls(&self) -> Result<TlsMetrics, MetricsError> {
        let reload_failures = IntCounter::new(
            "tls_reload_failures_total",
            "Certificate pairs that could not replace the one served (unreadable, key not matching, expired); the old pair stays.",
        )?;
        self.registry.register(Box::new(reload_failures.clone()))?;
        let expiry = IntGauge::new(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate being served expires (its notAfter), in seconds since the epoch.",
        )?;
        self.registry.register(Box::new(expiry.clone()))?;
        Ok(TlsMetrics {
            reload_failures,
            expiry,
        })
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, status_label(status)])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        307 => "307",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// What the password hashing pool reports.
#[derive(Debug, Clone)]
pub struct HashingMetrics {
    /// Jobs waiting for a thread.
    pub depth: IntGauge,
    /// Time from arrival to a thread, of every job that reached one.
    pub wait: Histogram,
    /// Jobs refused, by reason: `full` (on arrival), `wait` (waited too long).
    pub refusals: IntCounterVec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_requests() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request("/users/me", "GET", 200, Duration::from_millis(2));
        metrics
            .keycloak_requests
            .with_label_values(&["token", "ok"])
            .inc();
        let text = metrics.render().unwrap();
        assert!(text.contains(
            "authgate_http_requests_total{method=\"GET\",route=\"/users/me\",status=\"200\"} 1"
        ));
        assert!(
            text.contains("authgate_keycloak_requests_total{operation=\"token\",outcome=\"ok\"} 1")
        );
    }
}
