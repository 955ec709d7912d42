//! Kept-alive client connections wait for their next request in a small
//! future of their own instead of inside pingora's (about 6 KB per idle
//! connection in all, against 24 KB).
//!
//! pingora's HTTP/1 loop hands a kept-alive connection straight back to the
//! proxy, whose request future (the whole proxy path's state machine, about
//! 16 KiB, plus the session and a 4 KiB header buffer) then sits allocated
//! for as long as the client stays silent. Holding 10 000 idle keep-alive
//! connections that way cost about 24 KB each. Here the loop first waits
//! until the client sends a byte (read and put back for the parser), and
//! only then builds the session and calls into the proxy.
//!
//! Cleartext HTTP/1.1 only, which is what authgate listens for: no TLS, no
//! h2c (pingora's own loop handles those through server options authgate
//! does not set).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::drain::InFlight;

/// How long a client connection may stay silent, before its first request
/// and between requests, unless configured: pingora's own keep-alive
/// default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pingora HTTP application (the proxy) behind the lean keep-alive loop.
pub struct LeanKeepalive<A> {
    inner: Arc<A>,
    idle_timeout: Duration,
    /// Counts each request from its first byte until its answer is written.
    in_flight: InFlight,
}

impl<A> LeanKeepalive<A> {
    pub fn new(inner: A, idle_timeout: Duration, in_flight: InFlight) -> Self {
        Self {
            inner: Arc::new(inner),
            idle_timeout,
            in_flight,
        }
    }
}

#[async_trait]
impl<A> ServerApp for LeanKeepalive<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // One receiver for the connection's whole life, not one per request.
        let mut shutting_down = shutdown.clone();
        loop {
            if !next_request_arrives(&mut stream, self.idle_timeout, &mut shutting_down).await {
                return None;
            }
            let _serving = self.in_flight.begin();
            let mut session = ServerSession::new_http1(stream);
            if first {
                // As pingora does: keep alive unless shutting down.
                let keepalive = (!*shutdown.borrow()).then_some(self.idle_timeout.as_secs());
                session.set_keepalive(keepalive);
                first = false;
            } else if let Some(settings) = settings.take() {
                settings.apply_to_session(&mut session);
            }
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Waits until the client sends the first byte of a request. False when it
/// closes the connection, stays silent for `idle_timeout`, or the server
/// begins to shut down (an idle connection has nothing to finish).
async fn next_request_arrives(
    stream: &mut Stream,
    idle_timeout: Duration,
    shutdown: &mut ShutdownWatch,
) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        biased;
        peeked = tokio::time::timeout(idle_timeout, stream.try_peek(&mut byte)) => {
            // Ok(false): this kind of stream cannot peek; let the parser read.
            matches!(peeked, Ok(Ok(_)))
        }
        _ = shutdown.wait_for(|&down| down) => false,
    }
}
