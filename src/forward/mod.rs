//! The lean forwarding path: a request without a body goes to its upstream
//! over a pooled HTTP/1.1 connection, in the task that serves the client,
//! and the answer streams back as it arrives.
//!
//! Upgrade requests (WebSocket) take the same path into a [`Tunnel`]: the
//! bytes of both sides relayed until either side closes, the tunnel stays
//! idle too long, or the caller's check (is the session still live, the
//! token still valid?) says no.
//!
//! Requests that carry a body or expect `100 Continue` take pingora's
//! full-duplex proxy path instead (see [`crate::server`]); both paths send
//! the same settled request head and answer failures the same way.
//!
//! Imports: nothing of the crate (pingora sessions and sockets only).

pub mod pool;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Method, Version};
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use pingora::time::timeout;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use pool::Pool;
use wire::{Dechunker, Framing};

/// How many idle connections are kept per upstream address.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The read buffer for an upstream answer, grown as needed.
const READ_BUFFER: usize = 8 * 1024;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connecting to the upstream: {0}")]
    Connect(io::Error),
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("sending the request upstream: {0}")]
    Write(io::Error),
    #[error("reading the upstream answer: {0}")]
    Read(io::Error),
    #[error("the upstream answer did not come in time")]
    ReadTimeout,
    #[error("the upstream closed the connection before its answer was complete")]
    Closed,
    #[error("the upstream answer is not valid HTTP/1.1: {0}")]
    BadResponse(&'static str),
    #[error("writing the answer to the client: {0}")]
    Client(Box<Error>),
}

impl From<ForwardError> for Box<Error> {
    /// As pingora's errors, so that one failure path answers both ways of
    /// forwarding (502 or 504, the metrics, the log line).
    fn from(err: ForwardError) -> Self {
        let etype = match err {
            ForwardError::Client(inner) => return inner.into_down(),
            ForwardError::Connect(ref e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                ErrorType::ConnectRefused
            }
            ForwardError::Connect(_) => ErrorType::ConnectError,
            ForwardError::ConnectTimeout => ErrorType::ConnectTimedout,
            ForwardError::Write(_) => ErrorType::WriteError,
            ForwardError::Read(_) => ErrorType::ReadError,
            ForwardError::ReadTimeout => ErrorType::ReadTimedout,
            ForwardError::Closed => ErrorType::ConnectionClosed,
            ForwardError::BadResponse(_) => ErrorType::InvalidHTTPHeader,
        };
        Error::explain(etype, err.to_string()).into_up()
    }
}

/// Where one request goes.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// Forwards requests without a body over pooled connections.
pub struct Forwarder {
    pool: Pool,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self {
            pool: Pool::new(MAX_IDLE_PER_UPSTREAM, IDLE_TIMEOUT),
        }
    }
}

/// An answer whose head has arrived; its body is still upstream.
pub struct Exchange<'a> {
    forwarder: &'a Forwarder,
    target: Target,
    stream: TcpStream,
    buf: BytesMut,
    framing: Framing,
    reusable: bool,
}

impl Forwarder {
    /// Whether the client's request can take this path: HTTP/1.1, no body,
    /// no upgrade, no `Expect`.
    pub fn takes(session: &mut Session) -> bool {
        let req = session.req_header();
        req.version == Version::HTTP_11
            && !req.headers.contains_key(http::header::EXPECT)
            && !session.is_upgrade_req()
            && session.is_body_empty()
    }

    /// Whether the client's request asks to switch protocols (WebSocket)
    /// and can take a [`Tunnel`]: HTTP/1.1, no `Expect`.
    pub fn tunnels(session: &Session) -> bool {
        let req = session.req_header();
        req.version == Version::HTTP_11
            && !req.headers.contains_key(http::header::EXPECT)
            && session.is_upgrade_req()
    }

    /// Sends an upgrade request on a connection of its own (never pooled)
    /// and waits for the answer's head: a switch gives a [`Tunnel`], any
    /// other answer an [`Exchange`] to relay as usual.
    pub async fn open_tunnel(
        &self,
        session: &Session,
        target: Target,
    ) -> Result<(ResponseHeader, Upgrade<'_>), ForwardError> {
        let req = session.req_header();
        let mut stream = connect(target).await?;
        stream
            .write_all(&wire::request_head(req, true))
            .await
            .map_err(ForwardError::Write)?;
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let head = loop {
            if !read_more(&mut stream, &mut buf, target.read_timeout).await? {
                return Err(ForwardError::Closed);
            }
            if let Some(head) = wire::parse_head(&mut buf, &req.method, true)? {
                break head;
            }
        };
        if head.header.status == http::StatusCode::SWITCHING_PROTOCOLS {
            let tunnel = Tunnel {
                stream,
                buf,
                idle_timeout: target.read_timeout,
            };
            return Ok((head.header, Upgrade::Switched(tunnel)));
        }
        let exchange = Exchange {
            forwarder: self,
            target,
            stream,
            buf,
            framing: head.framing,
            reusable: false,
        };
        Ok((head.header, Upgrade::Refused(exchange)))
    }

    /// Sends the client's request (already settled by [`crate::edge`]) and
    /// waits for the answer's head. A pooled connection found closed before
    /// any answer byte is replaced by a new one, once, for idempotent
    /// methods only (RFC 9110 section 9.2.2): the upstream may have acted on
    /// a `POST` before the connection closed.
    pub async fn send(
        &self,
        session: &Session,
        target: Target,
    ) -> Result<(ResponseHeader, Exchange<'_>), ForwardError> {
        let req = session.req_header();
        let head = wire::request_head(req, false);
        let may_retry = req.method.is_idempotent();
        let mut pooled = self.pool.take(target.addr, Instant::now());
        loop {
            let reused = pooled.is_some();
            let mut stream = match pooled.take() {
                Some(stream) => stream,
                None => connect(target).await?,
            };
            let mut buf = BytesMut::with_capacity(READ_BUFFER);
            let answer = match stream.write_all(&head).await {
                Ok(()) => read_head(&mut stream, &mut buf, &req.method, target.read_timeout).await,
                Err(e) => Err(ForwardError::Write(e)),
            };
            match answer {
                Ok(head) => {
                    let exchange = Exchange {
                        forwarder: self,
                        target,
                        stream,
                        buf,
                        framing: head.framing,
                        reusable: head.reusable,
                    };
                    return Ok((head.header, exchange));
                }
                // The upstream closed the idle connection as it was taken:
                // nothing of this request was seen, so it goes again, on a
                // new connection.
                Err(ForwardError::Write(_) | ForwardError::Closed | ForwardError::Read(_))
                    if reused && may_retry && buf.is_empty() =>
                {
                    tracing::debug!(upstream = %target.addr, "pooled connection was closed; retrying on a new one");
                }
                Err(err) => return Err(err),
            }
        }
    }
}

impl Exchange<'_> {
    /// The answer has no body.
    pub fn is_empty(&self) -> bool {
        self.framing == Framing::Empty || self.framing == Framing::Length(0)
    }

    /// Streams the body to the client as it arrives, then keeps the
    /// connection for the next request when HTTP allows.
    pub async fn relay(mut self, session: &mut Session) -> Result<(), ForwardError> {
        match self.framing {
            Framing::Empty | Framing::Length(0) => {}
            Framing::Length(len) => self.relay_length(session, len).await?,
            Framing::Chunked => self.relay_chunked(session).await?,
            Framing::Close => self.relay_until_close(session).await?,
        }
        // Bytes after the answer would be an answer to nothing.
        if self.reusable && self.buf.is_empty() {
            self.forwarder
                .pool
                .put(self.target.addr, self.stream, Instant::now());
        }
        Ok(())
    }

    async fn relay_length(&mut self, session: &mut Session, len: u64) -> Result<(), ForwardError> {
        let mut left = len;
        loop {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(ForwardError::Closed);
            }
            let take = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let chunk = self.buf.split_to(take).freeze();
            left -= take as u64;
            write_body(session, Some(chunk), left == 0).await?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    async fn relay_chunked(&mut self, session: &mut Session) -> Result<(), ForwardError> {
        let mut dechunker = Dechunker::default();
        let mut out = Vec::new();
        loop {
            dechunker.decode(&mut self.buf, &mut out)?;
            let done = dechunker.done();
            let last = out.len();
            for (i, chunk) in out.drain(..).enumerate() {
                write_body(session, Some(chunk), done && i + 1 == last).await?;
            }
            if done {
                if last == 0 {
                    write_body(session, None, true).await?;
                }
                return Ok(());
            }
            if !self.fill().await? {
                return Err(ForwardError::Closed);
            }
        }
    }

    async fn relay_until_close(&mut self, session: &mut Session) -> Result<(), ForwardError> {
        self.reusable = false;
        loop {
            if !self.buf.is_empty() {
                let chunk = self.buf.split().freeze();
                write_body(session, Some(chunk), false).await?;
            }
            if !self.fill().await? {
                return write_body(session, None, true).await;
            }
        }
    }

    /// Reads more of the answer: false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, ForwardError> {
        read_more(&mut self.stream, &mut self.buf, self.target.read_timeout).await
    }
}

/// The upstream's answer to an upgrade request.
pub enum Upgrade<'a> {
    /// It switched protocols: relay both ways.
    Switched(Tunnel),
    /// It answered as usual: relay the answer.
    Refused(Exchange<'a>),
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// Either side closed it.
    Closed,
    /// Nothing went either way for the route's read timeout.
    Idle,
    /// The caller's check refused it (a revoked session, an expired token).
    Refused,
}

impl TunnelEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle",
            Self::Refused => "refused",
        }
    }
}

/// A switched connection: the client's bytes go to the upstream and the
/// upstream's to the client, as they come.
pub struct Tunnel {
    stream: TcpStream,
    /// What the upstream sent after its `101` head.
    buf: BytesMut,
    idle_timeout: Duration,
}

impl Tunnel {
    /// Relays both ways until a side closes, the tunnel idles for the
    /// route's read timeout, or `still_allowed` (asked every `every`)
    /// answers false. The client's answer head is written already.
    pub async fn run<F, Fut>(
        mut self,
        session: &mut Session,
        every: Duration,
        mut still_allowed: F,
    ) -> Result<TunnelEnd, ForwardError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if !self.buf.is_empty() {
            let early = self.buf.split().freeze();
            write_body(session, Some(early), false).await?;
        }
        let mut check = tokio::time::interval(every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        let mut last_activity = Instant::now();
        let mut client_open = true;
        loop {
            tokio::select! {
                read = session.read_request_body(), if client_open => match read {
                    Ok(Some(bytes)) => {
                        last_activity = Instant::now();
                        self.stream.write_all(&bytes).await.map_err(ForwardError::Write)?;
                    }
                    // The client finished sending: pass the half-close on.
                    Ok(None) => {
                        client_open = false;
                        let _ = self.stream.shutdown().await;
                    }
                    Err(err) => return Err(ForwardError::Client(err)),
                },
                read = self.stream.read_buf(&mut self.buf) => {
                    match read.map_err(ForwardError::Read)? {
                        0 => {
                            write_body(session, None, true).await?;
                            return Ok(TunnelEnd::Closed);
                        }
                        _ => {
                            last_activity = Instant::now();
                            let chunk = self.buf.split().freeze();
                            write_body(session, Some(chunk), false).await?;
                        }
                    }
                    if self.buf.capacity() < READ_BUFFER / 4 {
                        self.buf.reserve(READ_BUFFER);
                    }
                }
                _ = check.tick() => {
                    if last_activity.elapsed() >= self.idle_timeout {
                        return Ok(TunnelEnd::Idle);
                    }
                    if !still_allowed().await {
                        return Ok(TunnelEnd::Refused);
                    }
                }
            }
        }
    }
}

async fn connect(target: Target) -> Result<TcpStream, ForwardError> {
    let stream = timeout(target.connect_timeout, TcpStream::connect(target.addr))
        .await
        .map_err(|_| ForwardError::ConnectTimeout)?
        .map_err(ForwardError::Connect)?;
    stream.set_nodelay(true).map_err(ForwardError::Connect)?;
    Ok(stream)
}

async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    method: &Method,
    read_timeout: Duration,
) -> Result<wire::Head, ForwardError> {
    loop {
        if !read_more(stream, buf, read_timeout).await? {
            return Err(ForwardError::Closed);
        }
        if let Some(head) = wire::parse_head(buf, method, false)? {
            return Ok(head);
        }
    }
}

/// Appends what the upstream sends next to `buf`: false at the end of the stream.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    read_timeout: Duration,
) -> Result<bool, ForwardError> {
    if buf.capacity() - buf.len() < READ_BUFFER / 4 {
        buf.reserve(READ_BUFFER);
    }
    let read = timeout(read_timeout, stream.read_buf(buf))
        .await
        .map_err(|_| ForwardError::ReadTimeout)?
        .map_err(ForwardError::Read)?;
    Ok(read > 0)
}

/// Writes a piece of the answer's body to the client (`None`: nothing more
/// than the end, when `end`).
async fn write_body(
    session: &mut Session,
    chunk: Option<bytes::Bytes>,
    end: bool,
) -> Result<(), ForwardError> {
    session
        .write_response_body(chunk, end)
        .await
        .map_err(ForwardError::Client)
}
