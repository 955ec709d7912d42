//! The state of one request across pingora's phases, shared by the
//! server's hooks and its input and output.
//!
//! Imports: `edge` (the admitted identity), `routes` (the chosen route).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;

use crate::edge::Admitted;
use crate::routes::table::Route;

/// Per-request state across pingora's phases.
pub struct Ctx {
    pub(super) request_id: String,
    pub(super) started: Instant,
    pub(super) span: tracing::Span,
    pub(super) client_ip: Option<IpAddr>,
    /// The socket's peer (appended to `X-Forwarded-For` upstream).
    pub(super) peer_ip: Option<IpAddr>,
    /// The peer is one of `TRUSTED_PROXIES`.
    pub(super) trusted_peer: bool,
    /// The request came over TLS; its answers carry this
    /// `Strict-Transport-Security`, when configured.
    pub(super) tls: bool,
    pub(super) hsts: Option<HeaderValue>,
    /// A gRPC call: the gateway's own answers go in gRPC's shape.
    pub(super) grpc: bool,
    /// Set when the request is forwarded: its route (kept whatever reloads
    /// happen meanwhile) and who it is for.
    pub(super) forward: Option<(Arc<Route>, Option<Admitted>)>,
    /// The upstreams that refused this request's connection, in turn.
    pub(super) refused: Vec<SocketAddr>,
    pub(super) upstream_started: Option<Instant>,
}

impl Ctx {
    pub(super) fn new() -> Self {
        Self {
            request_id: String::new(),
            started: Instant::now(),
            span: tracing::Span::none(),
            client_ip: None,
            peer_ip: None,
            trusted_peer: false,
            tls: false,
            hsts: None,
            grpc: false,
            forward: None,
            refused: Vec::new(),
            upstream_started: None,
        }
    }
}
