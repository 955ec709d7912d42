//! A small, fast HTTP/1.1 upstream for the forwarding tests and the
//! benchmarks (`examples/upstream.rs` serves it as a binary).
//!
//! It answers by the end of the path, so the same server works behind any
//! route prefix (`/api/echo` and `/echo` are the same):
//!
//! | path | answer |
//! |---|---|
//! | anything else | 200 JSON echo: `upstream`, `method`, `path`, `query` (string or null), `headers` (lower-case names, repeated ones joined with `", "`), `body` (lossy UTF-8), `body_len` |
//! | `…/stream?chunks=5&delay_ms=50&size=0` | 200, chunked: `chunk-<i>\n` one chunk at a time, `delay_ms` apart; with `size`, each chunk padded with `.` to `size` bytes |
//! | `…/slow?ms=1000` | sleeps `ms`, then the echo |
//! | `…/status/<code>…` | that status, body `{"status": code}` (empty for 204 and 304) |
//! | `…/bench` | 200 `ok` (text/plain, 2 bytes) |
//! | `…/upload` | reads the body as a stream: `{"body_len": n, "sha256": hex}` |
//!
//! Every answer carries `x-upstream: <name>`. Connections are kept alive
//! (and never closed for idleness) and counted while open; dropping the
//! [`Upstream`] stops everything: the listener and every open connection.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// A running upstream server; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("upstream: bind 127.0.0.1:0");
        Self::start_on(listener, name).await
    }

    /// Starts on a listener bound by the caller (e.g. a port chosen in
    /// advance for a routes file).
    pub async fn start_on(listener: TcpListener, name: &str) -> Upstream {
        let addr = listener.local_addr().expect("upstream: local address");
        let name = name.to_owned();
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(
            listener,
            Arc::<str>::from(name.as_str()),
            Arc::clone(&open),
        ));
        Upstream {
            addr,
            name,
            open,
            task,
        }
    }

    /// Connections open to this upstream now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>`, as a routes file names an upstream.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Dropping the accept task drops the listener and its JoinSet, which
        // aborts every connection task.
        self.task.abort();
    }
}

/// Counts an open connection for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts until aborted; each connection is a task of `connections`, so
/// they all end with this one.
async fn serve(listener: TcpListener, name: Arc<str>, open: Arc<AtomicUsize>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // EMFILE and the like: back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let open = Open::new(&open);
        connections.spawn(async move {
            let _open = open;
            let service = hyper::service::service_fn(move |req| handle(name.clone(), req));
            // No timer: idle keep-alive connections stay open until the
            // client closes them.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(name: Arc<str>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let mut response = if path.ends_with("/bench") {
        let mut r = Response::new(Body::full(Bytes::from_static(b"ok")));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    } else if path.ends_with("/stream") {
        let chunks = query_param(&req, "chunks").unwrap_or(5);
        let delay = Duration::from_millis(query_param(&req, "delay_ms").unwrap_or(50));
        let size = query_param(&req, "size").unwrap_or(0);
        let mut r = Response::new(Body::stream(chunks, delay, size));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    } else if path.ends_with("/upload") {
        upload(req).await
    } else if let Some(code) = status_in_path(path) {
        status(code)
    } else {
        if path.ends_with("/slow") {
            let ms = query_param(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        echo(&name, req).await
    };
    if let Ok(value) = HeaderValue::from_str(&name) {
        response.headers_mut().insert("x-upstream", value);
    }
    Ok(response)
}

/// `/status/<code>` anywhere in the path; `Some(Err(()))` for a bad code.
fn status_in_path(path: &str) -> Option<Result<StatusCode, ()>> {
    let (_, rest) = path.split_once("/status/")?;
    let code = rest.split('/').next().unwrap_or("");
    Some(
        code.parse::<u16>()
            .ok()
            .filter(|c| (200..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(()),
    )
}

fn status(code: Result<StatusCode, ()>) -> Response<Body> {
    let Ok(code) = code else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "status code must be 200..=599"}),
        );
    };
    if code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED {
        let mut r = Response::new(Body::full(Bytes::new()));
        *r.status_mut() = code;
        return r;
    }
    json_response(code, &json!({"status": code.as_u16()}))
}

async fn echo(name: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return body_error(e),
    };
    let mut headers = Map::new();
    for (key, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(key.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(key.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "upstream": name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_len": body.len(),
        }),
    )
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                }
            }
            Err(e) => return body_error(e),
        }
    }
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json_response(StatusCode::OK, &json!({"body_len": len, "sha256": sha256}))
}

fn body_error(e: hyper::Error) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": format!("reading the request body: {e}")}),
    )
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = value.to_string().into_bytes();
    let mut r = Response::new(Body::full(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A numeric query parameter (first occurrence; no percent-decoding needed).
fn query_param<B>(req: &Request<B>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
}

// ---------------------------------------------------------------- bodies

/// The response body: all at once (with a Content-Length), or `chunk-<i>\n`
/// frames produced one by one with a delay between them (chunked).
pub enum Body {
    Full(Option<Bytes>),
    Stream {
        next: u64,
        chunks: u64,
        delay: Duration,
        /// Pad each chunk to this many bytes (0: no padding).
        size: u64,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl Body {
    fn full(bytes: Bytes) -> Self {
        Body::Full(Some(bytes))
    }

    fn stream(chunks: u64, delay: Duration, size: u64) -> Self {
        Body::Stream {
            next: 0,
            chunks,
            delay,
            size,
            sleep: None,
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream {
                next,
                chunks,
                delay,
                size,
                sleep,
            } => {
                if *next >= *chunks {
                    return Poll::Ready(None);
                }
                if *next > 0 && !delay.is_zero() {
                    let timer = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*delay)));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *sleep = None;
                }
                let mut chunk = format!("chunk-{next}\n").into_bytes();
                let padded = usize::try_from(*size).unwrap_or(usize::MAX);
                if chunk.len() < padded {
                    chunk.resize(padded, b'.');
                }
                let chunk = Bytes::from(chunk);
                *next += 1;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.as_ref().is_none_or(|b| b.is_empty()),
            Body::Stream { next, chunks, .. } => next >= chunks,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream { .. } => SizeHint::default(),
        }
    }
}
