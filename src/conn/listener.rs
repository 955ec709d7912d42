//! The client-facing listening socket and its accept loop, in place of
//! pingora's listening service.
//!
//! pingora's service spawns one task per connection whose state machine
//! holds, besides the application's, the listener's own TLS handshake
//! (rustls's connection and the TCP stream inline: about 7 KB). authgate
//! runs its TLS handshake in its connection loop instead ([`crate::tls`],
//! [`crate::keepalive`]), so that state was dead weight, held by every
//! connection for its whole life: 10 000 idle keep-alive connections cost
//! 169 MB with it (90 MB before pingora's TLS support was built in), and
//! 50 MB here, where a connection's task holds the application and nothing
//! else (release build, `bench/idle_conns.py`).
//!
//! A connection's stream has no read buffer: it reads straight into the
//! HTTP parser's own buffer (or, over TLS, into rustls's, which batches
//! records itself); pingora's default 64 KiB read buffer made 10 000 idle
//! keep-alive connections cost 780 MB.
//!
//! What pingora's listener did besides is done here the same way: the
//! socket bound with `SO_REUSEADDR` and a backlog of 65 535, `TCP_NODELAY`
//! on each connection, the peer's address in the stream's socket digest
//! (where [`crate::http::client_ip`] reads it), no accept loop spinning
//! when the process is out of file descriptors, and the loop ended by the
//! server's shutdown. The socket is bound when the server is assembled, so
//! a taken port is an error at start-up, named by its setting.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as TcpClient;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ListenFds;
use pingora::server::ShutdownWatch;
use pingora::services::Service;
use socket2::{Domain, Protocol, Socket, Type};

/// The length of the queue of connections not accepted yet (pingora's).
const BACKLOG: i32 = 65_535;
/// How long the loop rests when the process is out of file descriptors.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_secs(1);

/// A listening socket whose connections an application serves.
pub struct ClientListener<A> {
    name: String,
    socket: Option<std::net::TcpListener>,
    app: Arc<A>,
}

impl<A> ClientListener<A> {
    /// Binds `addr` now (the accept loop starts with the server).
    pub fn bind(name: &str, addr: SocketAddr, app: A) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(Self {
            name: name.to_string(),
            socket: Some(socket.into()),
            app: Arc::new(app),
        })
    }
}

/// The stream pingora's HTTP code reads from, for a new connection.
fn client_stream(tcp: tokio::net::TcpStream, peer: SocketAddr) -> Stream {
    let mut stream = TcpClient::from(tcp);
    if let Err(err) = stream.set_nodelay() {
        tracing::debug!(error = %err, "TCP_NODELAY not set");
    }
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    // A new digest: its cell is empty.
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    Box::new(stream)
}

/// A connection's whole life: the application gets it back for as long as
/// it hands it back.
async fn serve<A: ServerApp>(app: Arc<A>, stream: Stream, shutdown: ShutdownWatch) {
    let mut next = app.process_new(stream, &shutdown).await;
    while let Some(stream) = next {
        next = app.process_new(stream, &shutdown).await;
    }
}

/// Whether an accept error means the process (or the system) is out of
/// file descriptors: accept would fail again at once.
fn out_of_files(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[async_trait]
impl<A> Service for ClientListener<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(err) => {
                tracing::error!(service = %self.name, error = %err, "listener not started");
                return;
            }
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(service = %self.name, "no longer accepting connections");
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let stream = client_stream(tcp, peer);
                    tokio::spawn(serve(Arc::clone(&self.app), stream, shutdown.clone()));
                }
                Err(err) => {
                    tracing::warn!(service = %self.name, error = %err, "accept failed");
                    if out_of_files(&err) {
                        tokio::time::sleep(OUT_OF_FILES_PAUSE).await;
                    }
                }
            }
        }
        drop(listener);
        self.app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_at_bind() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        struct Nothing;
        let err = ClientListener::bind("test", addr, Nothing).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn out_of_files_is_told_apart() {
        assert!(out_of_files(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_files(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!out_of_files(&io::Error::from_raw_os_error(
            libc::ECONNRESET
        )));
    }
}
