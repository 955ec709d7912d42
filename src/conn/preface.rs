//! The HTTP/2 connection preface, read within the head deadline.
//!
//! An HTTP/2 client opens with a fixed 24-byte preface, before any request.
//! pingora's HTTP/2 handshake waits for it without a deadline, so a client
//! that completes TLS with ALPN `h2` and then stays silent would hold its
//! connection for ever. The connection loop reads the preface itself,
//! within the head timeout, and hands pingora a stream that gives those
//! bytes back first ([`Replayed`]). Once the preface is in, pingora's HTTP/2
//! loop closes a connection idle for `CLIENT_IDLE_TIMEOUT_SECONDS`.

use std::fmt;
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// RFC 9113 section 3.4.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What came of waiting for the preface.
pub enum Preface {
    /// The preface came: the stream, the preface to be read again first.
    Read(Stream),
    /// Not within the deadline.
    TimedOut,
    /// The client went away, or sent something else.
    Gone,
}

/// Reads the preface from `stream` within `limit`.
pub async fn read(mut stream: Stream, limit: Duration) -> Preface {
    let mut preface = [0u8; PREFACE.len()];
    match tokio::time::timeout(limit, stream.read_exact(&mut preface)).await {
        Err(_) => Preface::TimedOut,
        Ok(Err(_)) => Preface::Gone,
        Ok(Ok(_)) if &preface != PREFACE => Preface::Gone,
        Ok(Ok(_)) => Preface::Read(Box::new(Replayed {
            inner: stream,
            replay: PREFACE,
        })),
    }
}

/// A stream whose first bytes, already read, are given back first.
pub struct Replayed {
    inner: Stream,
    /// What is still to be given back.
    replay: &'static [u8],
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            let (now, later) = self.replay.split_at(n);
            buf.put_slice(now);
            self.replay = later;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Replayed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

#[async_trait]
impl Peek for Replayed {}

impl UniqueID for Replayed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Replayed {
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

impl GetTimingDigest for Replayed {
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

impl GetProxyDigest for Replayed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Replayed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

impl fmt::Debug for Replayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayed")
            .field("inner", &self.inner)
            .field("replay", &self.replay.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let server: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        (server, client.unwrap())
    }

    #[tokio::test]
    async fn the_preface_is_given_back_before_what_follows() {
        let (server, mut client) = pair().await;
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"frames").await.unwrap();
        let Preface::Read(mut stream) = read(server, Duration::from_secs(5)).await else {
            panic!("the preface was not read");
        };
        let mut all = vec![0u8; PREFACE.len() + 6];
        stream.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..24], PREFACE);
        assert_eq!(&all[24..], b"frames");
    }

    #[tokio::test]
    async fn silence_times_out_and_anything_else_is_gone() {
        let (server, client) = pair().await;
        assert!(matches!(
            read(server, Duration::from_millis(100)).await,
            Preface::TimedOut
        ));
        drop(client);
        let (server, mut client) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(
            read(server, Duration::from_secs(5)).await,
            Preface::Gone
        ));
    }
}
