//! The API's input and output on a pingora session: the request read
//! whole (bounded) into the api's [`Request`], and the gateway's own answers
//! written back, every one stamped (request id, HSTS over TLS).
//!
//! Imports: `http` (the api's request and answer types), `api`
//! (forward-auth's path), `server::ctx` (the per-request state).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{CONTENT_LENGTH, HeaderValue, STRICT_TRANSPORT_SECURITY};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::Session;

use super::ctx::Ctx;
use crate::api::forward_auth;
use crate::http::{Request, Response};

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const REQUEST_ID: &str = "x-request-id";

pub fn header_text<'a>(header: &'a RequestHeader, name: &str) -> Option<&'a str> {
    header.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request, its body read whole; or the answer to give instead
/// (413 for a body over the limit, 400 for one that cannot be read). An
/// ext_authz check (`forwarded_target`) goes to forward-auth whatever its
/// target reads as once settled.
pub async fn read_request(
    session: &mut Session,
    max_body: usize,
    ctx: &Ctx,
    forwarded_target: Option<Bytes>,
) -> Result<Request, Response> {
    let header = session.req_header();
    let uri = &header.uri;
    let path = match forwarded_target {
        Some(_) => forward_auth::PATH.to_string(),
        None => percent_encoding::percent_decode_str(uri.path())
            .decode_utf8_lossy()
            .into_owned(),
    };
    let mut req = Request {
        method: header.method.clone(),
        path,
        query: uri.query().map(str::to_string),
        headers: header.headers.clone(),
        body: Bytes::new(),
        client_ip: ctx.client_ip,
        from_trusted_proxy: ctx.trusted_peer,
        forwarded_target,
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

/// What the gateway adds to every answer: the request id, and over TLS
/// `Strict-Transport-Security` when configured (an upstream's own is kept).
pub fn stamp(header: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
    if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
        header.insert_header(REQUEST_ID, value)?;
    }
    if let Some(hsts) = &ctx.hsts
        && !header.headers.contains_key(STRICT_TRANSPORT_SECURITY)
    {
        header.insert_header(STRICT_TRANSPORT_SECURITY, hsts.clone())?;
    }
    Ok(())
}

/// Writes an answer of the gateway's own (in gRPC's shape to a gRPC call;
/// the body left out for HEAD).
pub async fn write_response(
    session: &mut Session,
    response: Response,
    ctx: &Ctx,
) -> pingora::Result<()> {
    let response = if ctx.grpc {
        crate::http::grpc::answer(response)
    } else {
        response
    };
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 2))?;
    for (name, value) in &response.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    if !response.headers.contains_key(CONTENT_LENGTH) {
        header.insert_header(CONTENT_LENGTH, response.body.len())?;
    }
    stamp(&mut header, ctx)?;
    let no_body = response.body.is_empty() || session.req_header().method == http::Method::HEAD;
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
