//! The lean path driven by pingora's own HTTP/1 client: its transport
//! connector and pool, and its `HttpSession` reading and framing the
//! answer, in the client's task.

use bytes::Bytes;
use http::header::HeaderName;
use http::{StatusCode, Version};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType};

use super::{ForwardError, IDLE_TIMEOUT, MAX_IDLE_PER_UPSTREAM, Target, write_body};

/// Hop-by-hop headers: they describe one connection and are never passed on.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "http2-settings",
    "proxy-authorization",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// pingora's connector and its pool of idle upstream connections.
pub struct PingoraClient {
    transport: TransportConnector,
}

/// An answer whose head has arrived; its body is still upstream.
pub struct Exchange<'a> {
    client: &'a PingoraClient,
    http: HttpSession,
    reuse_hash: u64,
    empty: bool,
}

impl PingoraClient {
    pub fn new() -> Self {
        Self {
            transport: TransportConnector::new(Some(ConnectorOptions::new(
                MAX_IDLE_PER_UPSTREAM * 4,
            ))),
        }
    }

    /// As [`super::Forwarder::send`].
    pub async fn send(
        &self,
        req: &RequestHeader,
        target: Target,
    ) -> Result<(ResponseHeader, Exchange<'_>), ForwardError> {
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.options.connection_timeout = Some(target.connect_timeout);
        peer.options.total_connection_timeout = Some(target.connect_timeout);
        peer.options.read_timeout = Some(target.read_timeout);
        let reuse_hash = peer.reuse_hash();
        let may_retry = req.method.is_idempotent();
        let mut head = Some(upstream_head(req));
        let mut pooled = self.transport.reused_stream(&peer).await;
        loop {
            let reused = pooled.is_some();
            let stream = match pooled.take() {
                Some(stream) => stream,
                None => self
                    .transport
                    .new_stream(&peer)
                    .await
                    .map_err(ForwardError::Upstream)?,
            };
            let mut http = HttpSession::new_with_options(stream, &peer);
            http.read_timeout = Some(target.read_timeout);
            let this_head = match (&head, reused && may_retry) {
                (Some(h), true) => h.clone(),
                _ => head
                    .take()
                    .ok_or_else(|| ForwardError::BadResponse("request sent twice"))?,
            };
            let answer = match http.write_request_header(Box::new(this_head)).await {
                Ok(_) => read_head(&mut http).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(()) => {
                    let header = client_head(&http)?;
                    let empty = http.is_body_done();
                    let exchange = Exchange {
                        client: self,
                        http,
                        reuse_hash,
                        empty,
                    };
                    return Ok((header, exchange));
                }
                Err(e) if reused && may_retry && nothing_read(&e) => {
                    tracing::debug!(upstream = %target.addr, "pooled connection was closed; retrying on a new one");
                }
                Err(e) => return Err(ForwardError::Upstream(e)),
            }
        }
    }
}

impl Exchange<'_> {
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    pub async fn relay(mut self, session: &mut Session) -> Result<(), ForwardError> {
        if !self.empty {
            loop {
                let piece = self
                    .http
                    .read_body_ref()
                    .await
                    .map_err(ForwardError::Upstream)?;
                let Some(piece) = piece else {
                    write_body(session, None, true).await?;
                    break;
                };
                let chunk = Bytes::copy_from_slice(piece);
                let done = self.http.is_body_done();
                if !chunk.is_empty() {
                    write_body(session, Some(chunk), done).await?;
                } else if done {
                    write_body(session, None, true).await?;
                }
                if done {
                    break;
                }
            }
        }
        self.http.respect_keepalive();
        if let Some(stream) = self.http.reuse().await {
            self.client
                .transport
                .release_stream(stream, self.reuse_hash, Some(IDLE_TIMEOUT));
        }
        Ok(())
    }
}

/// Reads answer heads until the final one (informational ones skipped).
async fn read_head(http: &mut HttpSession) -> pingora::Result<()> {
    loop {
        http.read_response().await?;
        match http.get_status() {
            Some(StatusCode::SWITCHING_PROTOCOLS) => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "unrequested protocol switch",
                );
            }
            Some(status) if status.is_informational() => continue,
            _ => return Ok(()),
        }
    }
}

/// The connection failed before any byte of the answer: the request may go
/// again on a new connection.
fn nothing_read(e: &Error) -> bool {
    match e.etype() {
        ErrorType::WriteError => true,
        ErrorType::ConnectionClosed | ErrorType::ReadError => e
            .context
            .as_ref()
            .is_some_and(|c| c.as_str().ends_with("bytes already read: 0")),
        _ => false,
    }
}

/// The tokens of a message's `Connection` header(s).
fn connection_tokens(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// The settled request less its hop-by-hop headers.
fn upstream_head(req: &RequestHeader) -> RequestHeader {
    let mut head = req.clone();
    head.set_version(Version::HTTP_11);
    for name in connection_tokens(&req.headers) {
        head.remove_header(&name);
    }
    for name in HOP_BY_HOP {
        head.remove_header(name);
    }
    head
}

/// The answer's head for the client: hop-by-hop headers removed, except
/// `Transfer-Encoding`, from which the client's side frames the body again.
fn client_head(http: &HttpSession) -> Result<ResponseHeader, ForwardError> {
    let resp = http
        .resp_header()
        .ok_or(ForwardError::BadResponse("no answer head"))?;
    let mut header = resp.clone();
    header.set_version(Version::HTTP_11);
    for name in connection_tokens(&resp.headers) {
        if name != http::header::TRANSFER_ENCODING {
            header.remove_header(&name);
        }
    }
    for name in HOP_BY_HOP {
        if name != "transfer-encoding" {
            header.remove_header(name);
        }
    }
    Ok(header)
}
