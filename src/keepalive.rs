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
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use crate::conn::ClientPolicy;
use crate::conn::head::{Head, is_probe, read_head};
use crate::conn::limit::Admission;
use crate::conn::refusal::Refusal;
use crate::conn::write_deadline::WriteDeadline;

/// A pingora HTTP application (the proxy) behind the lean connection loop.
pub struct LeanKeepalive<A> {
    inner: Arc<A>,
    policy: ClientPolicy,
}

impl<A> LeanKeepalive<A> {
    pub fn new(inner: A, policy: ClientPolicy) -> Self {
        Self {
            inner: Arc::new(inner),
            policy,
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
        let (_permit, probe_only) = match policy.limit.admit() {
            Admission::Served(permit) => (permit, false),
            Admission::ProbeOnly(permit) => (permit, true),
            Admission::Refused => return None,
        };
        let mut stream =
            WriteDeadline::wrap(stream, policy.write_timeout, policy.write_timeouts.clone());
        // Over the cap, the connection gets no idle allowance.
        let idle_timeout = if probe_only {
            policy.header_timeout
        } else {
            policy.idle_timeout
        };
        let mut settings: Option<HttpPersistentSettings> = None;
        // One receiver for the connection's whole life, not one per request.
        let mut shutting_down = shutdown.clone();
        loop {
            let head = match read_head(
                &mut stream,
                idle_timeout,
                policy.header_timeout,
                &mut shutting_down,
            )
            .await
            {
                Head::Complete(head) => head,
                Head::Gone => return None,
                Head::TimedOut => {
                    policy.header_timeouts.inc();
                    Refusal::RequestTimeout.send(&mut stream).await;
                    return None;
                }
            };
            if probe_only && !is_probe(&head) {
                policy.limit.refuse();
                Refusal::Busy.send(&mut stream).await;
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings.take() {
                settings.apply_to_session(&mut session);
            }
            // pingora parses the head from these bytes without reading
            // again. Should its parser still want more, each read waits at
            // most the head timeout (the keep-alive value it reads with;
            // once the head is parsed, pingora sets keep-alive from the
            // request and from the shutdown state itself).
            session.set_pipelined_prefix(head);
            session.set_keepalive(Some(policy.header_timeout.as_secs()));
            if probe_only {
                // One answer, then `Connection: close`.
                session.set_keepalive_reuses_remaining(Some(0));
            }
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, settings) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}
