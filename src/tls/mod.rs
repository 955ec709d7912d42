//! TLS termination on the main listener, through pingora's rustls acceptor.
//!
//! With `TLS_CERT_FILE` and `TLS_KEY_FILE` the main listener serves HTTPS:
//! TLS 1.3 and 1.2 only, rustls's safe cipher suites (AES-GCM and
//! ChaCha20-Poly1305, forward secrecy only; X25519MLKEM768, X25519 and
//! the NIST curves for the key exchange) on the aws-lc-rs provider, and
//! ALPN offering `h2` then `http/1.1`.
//!
//! The handshake is not run by pingora's listener (which would run it
//! before any limit, for up to a minute) but by [`crate::keepalive`]'s
//! connection loop, through [`Tls::accept`]: after the connection took its
//! place under the cap, within the head deadline (`CLIENT_HEADER_TIMEOUT_SECONDS`),
//! its writes under the write deadline ([`crate::conn::write_deadline`] sits
//! below TLS). A connection past the cap, allowed one health probe, is
//! offered `http/1.1` only.
//!
//! The certificate is chosen per handshake from [`certs::Certificates`],
//! which [`CertificateWatch`] keeps up to date: it looks at the two files
//! every `TLS_RELOAD_CHECK_SECONDS` and on every reload request
//! ([`crate::reload`]: SIGHUP). Open connections keep the certificate they
//! were made with.
//!
//! `redirect` is the optional plain listener's answer (`HTTP_REDIRECT_PORT`).
//!
//! Imports: `config` (the TLS settings), `conn` (the write deadline), `http`
//! (the redirect's answer), `reload`, `clock`, `metrics`.

pub mod certs;
pub mod redirect;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

use crate::clock::Clock;
use crate::config::TlsSettings;
use crate::conn::write_deadline::WriteDeadline;
use crate::metrics::{Metrics, MetricsError};
use crate::reload::Reloads;

pub use certs::{Certificates, Checked, PairError};

/// ALPN protocol names.
const H2: &[u8] = b"h2";
const HTTP_1_1: &[u8] = b"http/1.1";

/// Why TLS termination cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE / TLS_KEY_FILE: {0}")]
    Pair(#[from] PairError),
    #[error("TLS settings refused: {0}")]
    Settings(#[from] rustls::Error),
    #[error("{0}")]
    Metrics(#[from] MetricsError),
}

/// What came of a client's TLS handshake.
pub enum Handshake {
    /// Done: the decrypted stream.
    Done(Stream),
    /// Not done within the head deadline.
    TimedOut,
    /// The client went away or spoke something else.
    Failed,
}

/// The TLS side of the main listener.
pub struct Tls {
    certificates: Arc<Certificates>,
    /// `h2` and `http/1.1`.
    acceptor: Acceptor,
    /// `http/1.1` only: one health probe past the connection cap.
    probe_acceptor: Acceptor,
    check_every: Option<Duration>,
}

impl Tls {
    /// Loads the certificate pair and builds the acceptors; fails on a pair
    /// that cannot be served.
    pub fn new(
        settings: &TlsSettings,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certificates = Arc::new(Certificates::load(
            &settings.cert_file,
            &settings.key_file,
            Arc::clone(&provider),
            clock,
            metrics.tls()?,
        )?);
        let acceptor = acceptor_for(&provider, &certificates, &[H2, HTTP_1_1])?;
        let probe_acceptor = acceptor_for(&provider, &certificates, &[HTTP_1_1])?;
        Ok(Self {
            certificates,
            acceptor,
            probe_acceptor,
            check_every: settings.check_every,
        })
    }

    /// Runs the server's side of the handshake on `stream` (already under
    /// the write deadline) for at most `limit`; `probe_only` offers
    /// `http/1.1` alone.
    pub async fn accept(
        &self,
        stream: WriteDeadline,
        limit: Duration,
        probe_only: bool,
    ) -> Handshake {
        let acceptor = if probe_only {
            &self.probe_acceptor
        } else {
            &self.acceptor
        };
        match tokio::time::timeout(limit, acceptor.tls_handshake(stream)).await {
            Ok(Ok(stream)) => Handshake::Done(Box::new(stream)),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                Handshake::Failed
            }
            Err(_) => Handshake::TimedOut,
        }
    }

    /// The background service that keeps the served pair up to date.
    pub fn watch(&self, reloads: &Reloads) -> CertificateWatch {
        CertificateWatch {
            certificates: Arc::clone(&self.certificates),
            reloads: reloads.clone(),
            every: self.check_every,
        }
    }
}

/// An acceptor offering `alpn`, choosing each handshake's certificate from
/// `certificates`.
fn acceptor_for(
    provider: &Arc<CryptoProvider>,
    certificates: &Arc<Certificates>,
    alpn: &[&[u8]],
) -> Result<Acceptor, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(certificates) as _);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Acceptor::from_server_config(Arc::new(config)))
}

/// Looks at the certificate files every `TLS_RELOAD_CHECK_SECONDS` and on
/// every reload request (SIGHUP), and serves a new pair once it passes
/// every check (see [`certs`]).
pub struct CertificateWatch {
    certificates: Arc<Certificates>,
    reloads: Reloads,
    every: Option<Duration>,
}

#[async_trait]
impl BackgroundService for CertificateWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut asked = self.reloads.subscribe();
        let mut ticks = self.every.map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            let asked_for = tokio::select! {
                () = tick(&mut ticks) => false,
                heard = asked.next() => {
                    if !heard {
                        return;
                    }
                    true
                }
                _ = shutdown.changed() => return,
            };
            self.certificates.check(asked_for);
        }
    }
}

/// The next tick; never without a period.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}
