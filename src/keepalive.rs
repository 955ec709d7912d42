//! The client connection loop in front of pingora's HTTP/1 sessions: it
//! admits a connection against the cap, bounds its writes, and reads each
//! request's head within the head deadline before pingora parses it (see
//! [`crate::conn`]).
//!
//! Kept-alive client connections also wait for their next request here, in
//! a small future of their own instead of inside pingora's (with the task
//! of [`crate::conn::listener`], about 2.3 KB per idle connection in all,
//! against 24 KB). pingora's HTTP/1 loop hands a
//! kept-alive connection straight back to the proxy, whose request future
//! (the whole proxy path's state machine, about 16 KiB, plus the session and
//! a 4 KiB header buffer) then sits allocated for as long as the client stays
//! silent. Here the loop first waits until the client sends a byte, and only
//! then allocates the head's buffer, builds the session and calls into the
//! proxy.
//!
//! On a TLS listener ([`crate::tls`]) the loop runs the handshake too,
//! after the connection took its place under the cap, within the head
//! deadline, and under the write deadline (which sits below TLS). HTTP/1.1
//! over TLS then goes through the same loop as cleartext; a connection that
//! chose `h2` (ALPN) is handed, once its preface came in time
//! ([`crate::conn::preface`]), to pingora's own HTTP/2 loop, each of its
//! streams counted in flight and the connection closed after
//! `CLIENT_IDLE_TIMEOUT_SECONDS` without one ([`H2Streams`]). No h2c: a
//! cleartext listener speaks HTTP/1.1 only.
//!
//! Imports: `conn` (the connection's wrappers and limits), `tls`, `drain`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::{H2Options, default_h2_options};
use pingora::protocols::{ALPN, Stream};
use pingora::server::ShutdownWatch;

use crate::conn::ClientPolicy;
use crate::conn::head::{Head, is_probe, read_head};
use crate::conn::limit::{Admission, Waiting};
use crate::conn::preface::{self, Preface};
use crate::conn::refusal::Refusal;
use crate::conn::write_deadline::WriteDeadline;
use crate::drain::InFlight;
use crate::tls::{Handshake, Tls};

/// A pingora HTTP application (the proxy) behind the lean connection loop.
pub struct LeanKeepalive<A> {
    inner: Arc<A>,
    policy: ClientPolicy,
    /// Counts each request from its complete head until its answer is
    /// written (the drain at shutdown waits on it).
    in_flight: InFlight,
    /// TLS termination, on the main listener when it serves HTTPS.
    tls: Option<Arc<Tls>>,
    /// The application as pingora's HTTP/2 loop sees it.
    h2: Arc<H2Streams<A>>,
}

impl<A> LeanKeepalive<A> {
    pub fn new(inner: A, policy: ClientPolicy, in_flight: InFlight, tls: Option<Arc<Tls>>) -> Self {
        let inner = Arc::new(inner);
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(policy.idle_timeout);
        let h2 = Arc::new(H2Streams {
            inner: Arc::clone(&inner),
            in_flight: in_flight.clone(),
            options,
        });
        Self {
            inner,
            policy,
            in_flight,
            tls,
            h2,
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
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let policy = &self.policy;
        let (_permit, waiting) = match policy.limit.admit() {
            Admission::Served(permit) => (permit, None),
            Admission::ProbeOnly(permit, waiting) => (permit, Some(waiting)),
            Admission::Refused => return None,
        };
        let mut stream = match &self.tls {
            None => {
                WriteDeadline::wrap(stream, policy.write_timeout, policy.write_timeouts.clone())
            }
            Some(tls) => {
                let plain =
                    WriteDeadline::new(stream, policy.write_timeout, policy.write_timeouts.clone());
                // Boxed, as the other rare paths below: a future's state is
                // held by every connection's task for its whole life, and
                // the handshake's and HTTP/2's are large (measured: 10 000
                // idle HTTP/1.1 connections held twice the memory inline).
                let handshake =
                    Box::pin(tls.accept(plain, policy.header_timeout, waiting.is_some()));
                let handshake = match &waiting {
                    None => handshake.await,
                    Some(waiting) => tokio::select! {
                        handshake = handshake => handshake,
                        () = waiting.evicted() => return None,
                    },
                };
                match handshake {
                    Handshake::Done(stream) => stream,
                    Handshake::TimedOut => {
                        policy.header_timeouts.inc();
                        return None;
                    }
                    Handshake::Failed => return None,
                }
            }
        };
        if let Some(waiting) = waiting {
            return Box::pin(self.serve_probe(stream, waiting, shutdown)).await;
        }
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            return Box::pin(self.serve_h2(stream, shutdown)).await;
        }
        let mut settings: Option<HttpPersistentSettings> = None;
        // One receiver for the connection's whole life, not one per request.
        let mut shutting_down = shutdown.clone();
        loop {
            let head = match read_head(
                &mut stream,
                policy.idle_timeout,
                policy.header_timeout,
                &mut shutting_down,
            )
            .await
            {
                Head::Complete(head) => head,
                Head::Gone => return None,
                Head::TimedOut => return self.head_timed_out(stream).await,
            };
            let _serving = self.in_flight.begin();
            let session = self.session(stream, head, settings.take());
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

impl<A> LeanKeepalive<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// An HTTP/2 connection: its preface within the head deadline, then
    /// pingora's own HTTP/2 loop.
    async fn serve_h2(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match preface::read(stream, self.policy.header_timeout).await {
            Preface::Read(stream) => self.h2.process_new(stream, shutdown).await,
            Preface::TimedOut => {
                self.policy.header_timeouts.inc();
                None
            }
            Preface::Gone => None,
        }
    }

    /// A connection over the cap: one health probe is answered, anything
    /// else gets 503; it goes at once when a newer connection takes its
    /// place before its head is complete (see [`crate::conn::limit`]).
    async fn serve_probe(
        self: &Arc<Self>,
        mut stream: Stream,
        waiting: Waiting,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let policy = &self.policy;
        let mut shutting_down = shutdown.clone();
        // No idle allowance: the head is due within the head timeout.
        let limit = policy.header_timeout;
        let head = tokio::select! {
            head = read_head(&mut stream, limit, limit, &mut shutting_down) => head,
            () = waiting.evicted() => return None,
        };
        drop(waiting);
        let head = match head {
            Head::Complete(head) => head,
            Head::Gone => return None,
            Head::TimedOut => return self.head_timed_out(stream).await,
        };
        if !is_probe(&head) {
            policy.limit.refuse();
            Refusal::Busy.send(&mut stream).await;
            return None;
        }
        let _serving = self.in_flight.begin();
        let mut session = self.session(stream, head, None);
        // One answer, then `Connection: close`.
        session.set_keepalive_reuses_remaining(Some(0));
        self.inner.process_new_http(session, shutdown).await;
        None
    }

    /// A session for a request whose head has been read, with what the
    /// connection's previous request left for it.
    fn session(
        &self,
        stream: Stream,
        head: BytesMut,
        settings: Option<HttpPersistentSettings>,
    ) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        // pingora parses the head from these bytes without reading again.
        // Should its parser still want more, each read waits at most the
        // head timeout: the keep-alive value it reads with (once the head
        // is parsed, pingora sets keep-alive from the request and from the
        // shutdown state itself).
        session.set_pipelined_prefix(head);
        session.set_keepalive(Some(self.policy.header_timeout.as_secs()));
        session
    }

    /// Answers 408 on a connection whose request head did not come in time.
    async fn head_timed_out(&self, mut stream: Stream) -> Option<Stream> {
        self.policy.header_timeouts.inc();
        Refusal::RequestTimeout.send(&mut stream).await;
        None
    }
}

/// The application as pingora's HTTP/2 loop sees it: each stream a request
/// counted in flight, HTTP/2's own limits (pingora's defaults: 100
/// concurrent streams, 64 KiB of decoded header list, a bound on malformed
/// and reset streams), and the connection closed once it has been idle for
/// `CLIENT_IDLE_TIMEOUT_SECONDS`.
pub struct H2Streams<A> {
    inner: Arc<A>,
    in_flight: InFlight,
    options: HttpServerOptions,
}

#[async_trait]
impl<A> HttpServerApp for H2Streams<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let _serving = self.in_flight.begin();
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        Some(default_h2_options())
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    async fn http_cleanup(&self) {}
}
