//! What a client connection may hold, and for how long, so that slow and
//! greedy clients cannot pin the gateway: a deadline for each request head
//! ([`head`]), a cap on open connections with a reserve for health probes
//! ([`limit`]), a bound on a stalled write to a client ([`write_deadline`]),
//! the answers written on the connection itself when one of them ends it
//! ([`refusal`]), and the listening socket they come from ([`listener`]).
//! On TLS connections the head deadline also bounds the handshake and the
//! HTTP/2 preface ([`preface`]). [`crate::keepalive`]'s
//! connection loop applies them.
//!
//! Imports: `config` (the client limits), `http` (the answers of refusals),
//! `metrics`.

pub mod head;
pub mod limit;
pub mod listener;
pub mod preface;
pub mod refusal;
pub mod write_deadline;

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use crate::config::EdgeSettings;
use crate::metrics::Metrics;

pub use limit::ConnectionLimit;

/// The limits every client connection of a listener is held to.
#[derive(Clone)]
pub struct ClientPolicy {
    /// Silence allowed before a request and between requests.
    pub idle_timeout: Duration,
    /// From a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// A write to the client that makes no progress.
    pub write_timeout: Duration,
    pub limit: Arc<ConnectionLimit>,
    pub header_timeouts: IntCounter,
    pub write_timeouts: IntCounter,
}

impl ClientPolicy {
    /// The configured limits, counted in `metrics`, with one connection cap
    /// for every listener of the process (clones share it), fitted to the
    /// open-file limit (see [`limit::fit_open_files`]).
    pub fn new(edge: &EdgeSettings, metrics: &Metrics) -> Self {
        let (max, warning) = limit::fit_open_files(edge.max_client_connections);
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let limit = ConnectionLimit::new(
            max,
            metrics.client_connections.clone(),
            metrics.connections_refused.clone(),
        );
        Self {
            idle_timeout: edge.client_idle_timeout,
            header_timeout: edge.client_header_timeout,
            write_timeout: edge.client_write_timeout,
            limit,
            header_timeouts: metrics.client_header_timeouts.clone(),
            write_timeouts: metrics.client_write_timeouts.clone(),
        }
    }
}
