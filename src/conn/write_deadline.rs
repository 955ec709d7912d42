//! A bound on how long a write to a client may stall.
//!
//! A client that stops reading its answer fills its TCP window, and every
//! write to it then waits for ever, holding the connection, the request's
//! state and, on a forwarded request, the upstream connection. Here the
//! client's stream is wrapped once, when the connection is accepted: a
//! write, flush or shutdown that makes no progress for the limit fails with
//! `TimedOut`, and from then on every write fails at once. The request then
//! fails as on any broken client connection: the connection is closed, and
//! the upstream connection of a forwarded answer is dropped, not pooled.
//!
//! pingora's own write timeout (`set_write_timeout` on a session) bounds
//! body writes only: not the write of a response head, nor the final flush
//! of a body, nor the flush of a closing connection, nor the answers authgate
//! writes outside a session ([`super::refusal`]). One wrapper under all of
//! them covers API answers and both ways of forwarding alike.
//!
//! It costs nothing while writes go through: the timer is armed only when a
//! write has to wait (the socket's send buffer is full), and disarmed by the
//! next write that goes through. So a client that reads, however slowly,
//! keeps its connection; one that stops reading is dropped after the limit.
//!
//! Being the one wrapper under every write, it also gathers an answer's
//! small writes (its head, a short body) until the flush, so that they
//! leave in one send: [`WRITE_BUFFER`] bytes at most, as pingora's own
//! listener did with a buffer every connection kept for its whole life.
//! This one exists only while an answer is being written and is given back
//! at the flush, so an idle connection holds none.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The most bytes gathered before a send (pingora's listener's buffer: one
/// TCP segment on a 1500-byte MTU).
pub const WRITE_BUFFER: usize = 1460;

/// A client stream whose writes may stall for at most `limit`.
pub struct WriteDeadline {
    inner: Stream,
    /// Written, not sent yet: less than [`WRITE_BUFFER`] bytes, empty (and
    /// unallocated) after a flush.
    gathered: Vec<u8>,
    limit: Duration,
    /// Counts the connections dropped for it.
    timeouts: IntCounter,
    /// The timer of the current stall, kept for the next one once made.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting and the timer runs.
    stalled: bool,
    /// The limit was reached: the connection is finished.
    timed_out: bool,
}

impl WriteDeadline {
    /// Wraps `inner`; the result is a [`Stream`] like any other.
    pub fn wrap(inner: Stream, limit: Duration, timeouts: IntCounter) -> Stream {
        Box::new(Self::new(inner, limit, timeouts))
    }

    /// Wraps `inner`, as a stream of its own type (for TLS to run over it:
    /// then the encrypted writes, the handshake's too, are bounded).
    pub fn new(inner: Stream, limit: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner,
            gathered: Vec::new(),
            limit,
            timeouts,
            timer: None,
            stalled: false,
            timed_out: false,
        }
    }

    fn timed_out_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take the answer in time",
        )
    }

    /// Follows one poll of a write: progress ends a stall, waiting starts
    /// one (or goes on with it), and a stall that reached the limit ends the
    /// connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = false;
            return poll;
        }
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(timer) => {
                if !self.stalled {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.stalled = false;
                self.timed_out = true;
                self.timeouts.inc();
                tracing::debug!(limit = ?self.limit, "client stopped reading; closing");
                Poll::Ready(Err(Self::timed_out_error()))
            }
        }
    }

    /// Sends what was gathered, under the limit; the buffer is given back
    /// once it is all sent.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let poll = Pin::new(&mut self.inner).poll_write(cx, &self.gathered);
            match self.watch(cx, poll) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(sent)) => {
                    self.gathered.drain(..sent.min(self.gathered.len()));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.gathered = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Keeps `len` bytes (appended by `keep`) for the next send when they
    /// fit, having sent what was gathered before if they do not fit beside
    /// it. `Ready(None)`: too large to keep, to be written through.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        keep: impl FnOnce(&mut Vec<u8>),
    ) -> Poll<io::Result<Option<usize>>> {
        if self.gathered.len() + len > WRITE_BUFFER {
            match self.poll_send_gathered(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if len >= WRITE_BUFFER {
            return Poll::Ready(Ok(None));
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(WRITE_BUFFER);
        }
        keep(&mut self.gathered);
        Poll::Ready(Ok(Some(len)))
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(Self::timed_out_error()));
        }
        let this = self.get_mut();
        match this.poll_gather(cx, buf.len(), |gathered| gathered.extend_from_slice(buf)) {
            Poll::Ready(Ok(None)) => {}
            other => return other.map_ok(|kept| kept.unwrap_or_default()),
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(Self::timed_out_error()));
        }
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        let keep = |gathered: &mut Vec<u8>| {
            for buf in bufs {
                gathered.extend_from_slice(buf);
            }
        };
        match this.poll_gather(cx, len, keep) {
            Poll::Ready(Ok(None)) => {}
            other => return other.map_ok(|kept| kept.unwrap_or_default()),
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(Self::timed_out_error()));
        }
        let this = self.get_mut();
        match this.poll_send_gathered(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(Self::timed_out_error()));
        }
        let this = self.get_mut();
        match this.poll_send_gathered(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[async_trait]
impl Shutdown for WriteDeadline {
    /// As pingora's own streams do, through `poll_shutdown` (flush, then
    /// FIN), here under the write limit.
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            tracing::debug!(error = %e, "client connection shutdown failed");
        }
    }
}

#[async_trait]
impl Peek for WriteDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl UniqueID for WriteDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for WriteDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for WriteDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for WriteDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for WriteDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

impl fmt::Debug for WriteDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteDeadline")
            .field("inner", &self.inner)
            .field("gathered", &self.gathered.len())
            .field("limit", &self.limit)
            .field("stalled", &self.stalled)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpSocket, TcpStream};

    /// A wrapped server-side stream and the client's end of it, with small
    /// socket buffers so that a client that does not read stalls writes soon.
    async fn pair(limit: Duration) -> (Stream, TcpStream, IntCounter) {
        let listening = TcpSocket::new_v4().unwrap();
        // Accepted sockets take their buffer sizes from the listener.
        listening.set_send_buffer_size(16 * 1024).unwrap();
        listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listening.local_addr().unwrap();
        let listener = listening.listen(8).unwrap();
        let connecting = TcpSocket::new_v4().unwrap();
        connecting.set_recv_buffer_size(16 * 1024).unwrap();
        let (client, accepted) = tokio::join!(connecting.connect(addr), listener.accept());
        let server: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        let counter = IntCounter::new("t", "t").unwrap();
        (
            WriteDeadline::wrap(server, limit, counter.clone()),
            client.unwrap(),
            counter,
        )
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_off_and_counted() {
        let (mut server, _client, counter) = pair(Duration::from_millis(300)).await;
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        let err = loop {
            match server.write_all(&chunk).await {
                Ok(()) => written += chunk.len(),
                Err(e) => break e,
            }
            assert!(written < 1 << 30, "never stalled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
        // Finished: later writes, flushes and shutdowns fail at once, and
        // are not counted again.
        assert!(server.write_all(b"more").await.is_err());
        assert!(server.flush().await.is_err());
        assert_eq!(counter.get(), 1);
    }

    /// Small writes leave together at the flush (one read takes them all),
    /// and nothing stays allocated once they are sent.
    #[tokio::test]
    async fn small_writes_are_gathered_until_the_flush() {
        let (server, mut client, _) = pair(Duration::from_secs(5)).await;
        let mut server = WriteDeadline::new(
            server,
            Duration::from_secs(5),
            IntCounter::new("u", "u").unwrap(),
        );
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.write_all(b"{}").await.unwrap();
        assert_eq!(server.gathered.len(), 21);
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await;
        assert!(early.is_err(), "sent before the flush");
        server.flush().await.unwrap();
        assert_eq!(server.gathered.capacity(), 0);
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n\r\n{}");
        // A write past the buffer sends what was gathered first, in order.
        server.write_all(b"head").await.unwrap();
        server.write_all(&vec![b'b'; 4000]).await.unwrap();
        server.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 4004 {
            let n = client.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"headbbb") && got.len() == 4004);
    }

    #[tokio::test]
    async fn stalls_shorter_than_the_limit_are_forgiven_each_time() {
        let (mut server, mut client, counter) = pair(Duration::from_millis(400)).await;
        let total = 2 * 1024 * 1024;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = 0usize;
            let mut next_pause = 0usize;
            while seen < total {
                // Pauses shorter than the limit, adding up to more than it.
                if seen >= next_pause {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    next_pause += 256 * 1024;
                }
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen += n;
            }
            seen
        });
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..total / chunk.len() {
            server.write_all(&chunk).await.unwrap();
        }
        server.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), total);
        assert_eq!(counter.get(), 0);
    }
}
