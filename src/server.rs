//! Assembles the pingora server: one HTTP service whose `request_filter`
//! reads each API request whole (bounded), lets the api layer answer it, and
//! writes the answer with a Content-Length, keeping the connection alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::CONTENT_LENGTH;
use pingora::http::ResponseHeader;
use pingora::prelude::{HttpPeer, ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::{Error, ErrorType};

use crate::api::App;
use crate::http::{Request, Response};

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Gateway {
    app: Arc<App>,
    max_body: usize,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        let max_body = app.config.app.max_body_bytes;
        Self { app, max_body }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        let response = match read_request(session, self.max_body).await {
            Ok(req) => self.app.handle(req).await,
            Err(response) => response,
        };
        write_response(session, response).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream is configured",
        ))
    }
}

/// The request, its body read whole; or the answer to give instead
/// (413 for a body over the limit, 400 for one that cannot be read).
async fn read_request(session: &mut Session, max_body: usize) -> Result<Request, Response> {
    let header = session.req_header();
    let uri = &header.uri;
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let mut req = Request {
        method: header.method.clone(),
        path,
        query: uri.query().map(str::to_string),
        headers: header.headers.clone(),
        body: Bytes::new(),
        client_ip: session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(SocketAddr::ip),
    };
    let too_large = || Response::detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    let declared = req
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_body) {
        session.set_keepalive(None);
        return Err(too_large());
    }
    session.set_read_timeout(Some(BODY_READ_TIMEOUT));
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_body {
                    session.set_keepalive(None);
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(error = %err, "request body could not be read");
                session.set_keepalive(None);
                return Err(Response::detail(
                    StatusCode::BAD_REQUEST,
                    "Request body could not be read",
                ));
            }
        }
    }
    req.body = body.freeze();
    Ok(req)
}

async fn write_response(session: &mut Session, response: Response) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 1))?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    if !response.headers.contains_key(CONTENT_LENGTH) {
        header.insert_header(CONTENT_LENGTH, response.body.len())?;
    }
    let no_body = response.body.is_empty();
    session
        .write_response_header(Box::new(header), no_body)
        .await?;
    if !no_body {
        session
            .write_response_body(Some(response.body), true)
            .await?;
    }
    Ok(())
}

/// Starts the server on `addr` with `workers` threads; never returns.
pub fn run(app: Arc<App>, addr: SocketAddr, workers: usize) -> ! {
    let conf = ServerConf {
        threads: workers,
        work_stealing: true,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Gateway::new(app));
    service.add_tcp(&addr.to_string());
    server.add_service(service);
    tracing::info!(%addr, workers, "authgate listening");
    server.run_forever()
}
