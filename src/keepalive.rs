//! The client connection loop in front of pingora's HTTP/1 sessions: it
//! admits a connection against the cap, bounds its writes, and reads each
//! request's head within the head deadline before pingora parses it (see
//! [`crate::conn`]).
//!
//! Kept-alive client connections also wait for their next request here, in
//! a small future of their own instead of inside pingora's (about 6 KB per
//! idle connection in all, against 24 KB). pingora's HTTP/1 loop hands a
//! kept-alive connection straight back to the proxy, whose request future
//! (the whole proxy path's state machine, about 16 KiB, plus the session and
//! a 4 KiB header buffer) then sits allocated for as long as the client stays
//! silent. Here the loop first waits until the client sends a byte, and only
//! then allocates the head's buffer, builds the session and calls into the
//! proxy.
//!
//! Cleartext HTTP/1.1 only, which is what authgate listens for: no TLS, no
//! h2c (pingora's own loop handles those through server options authgate
//! does not set).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::conn::ClientPolicy;
use crate::conn::head::{Head, is_probe, read_head};
use crate::conn::limit::{Admission, Waiting};
use crate::conn::refusal::Refusal;
use crate::conn::write_deadline::WriteDeadline;
use crate::drain::InFlight;

/// A pingora HTTP application (the proxy) behind the lean connection loop.
pub struct LeanKeepalive<A> {
    inner: Arc<A>,
    policy: ClientPolicy,
    /// Counts each request from its complete head until its answer is
    /// written (the drain at shutdown waits on it).
    in_flight: InFlight,
}

impl<A> LeanKeepalive<A> {
    pub fn new(inner: A, policy: ClientPolicy, in_flight: InFlight) -> Self {
        Self {
            inner: Arc::new(inner),
            policy,
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
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let policy = &self.policy;
        let (_permit, waiting) = match policy.limit.admit() {
            Admission::Served(permit) => (permit, None),
            Admission::ProbeOnly(permit, waiting) => (permit, Some(waiting)),
            Admission::Refused => return None,
        };
        let mut stream =
            WriteDeadline::wrap(stream, policy.write_timeout, policy.write_timeouts.clone());
        if let Some(waiting) = waiting {
            return self.serve_probe(stream, waiting, shutdown).await;
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
