//! The answers written straight on a client connection, outside any HTTP
//! session, just before authgate closes it: 408 for a request head that was
//! not complete in time, 503 for a connection over the cap. Each is one
//! small write, given a second at most: a client that does not take it
//! loses nothing it was owed.

use std::time::Duration;

use http::StatusCode;
use http::header::RETRY_AFTER;
use pingora::protocols::Stream;
use tokio::io::AsyncWriteExt;

use crate::http::Response;

/// How long writing a refusal may take.
const WRITE_LIMIT: Duration = Duration::from_secs(1);
/// When a refused client may try again.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Why a connection is closed with an answer of authgate's own.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// The request head was not complete in time.
    RequestTimeout,
    /// Over the connection cap.
    Busy,
}

impl Refusal {
    /// The whole answer, as written on the wire.
    fn answer(self) -> Vec<u8> {
        let response = match self {
            Self::RequestTimeout => {
                Response::detail(StatusCode::REQUEST_TIMEOUT, "Request Timeout")
            }
            Self::Busy => Response::detail(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                .with_header(RETRY_AFTER, RETRY_AFTER_SECONDS.into()),
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(response.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            response
                .status
                .canonical_reason()
                .unwrap_or_default()
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        for (name, value) in &response.headers {
            header_line(&mut out, name.as_str(), value.as_bytes());
        }
        header_line(
            &mut out,
            "content-length",
            response.body.len().to_string().as_bytes(),
        );
        header_line(&mut out, "connection", b"close");
        let request_id = crate::http::client_ip::request_id(None);
        header_line(&mut out, "x-request-id", request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&response.body);
        out
    }

    /// Writes the answer (within a second) and closes the writing side.
    pub async fn send(self, stream: &mut Stream) {
        let answer = self.answer();
        let written = tokio::time::timeout(WRITE_LIMIT, async {
            stream.write_all(&answer).await?;
            stream.shutdown().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::debug!(refusal = ?self, "the client did not take the answer");
        }
    }
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(refusal: Refusal) -> String {
        String::from_utf8(refusal.answer()).unwrap()
    }

    #[test]
    fn answers_in_the_contract_shape() {
        let timeout = text(Refusal::RequestTimeout);
        assert!(timeout.starts_with("HTTP/1.1 408 Request Timeout\r\n"));
        assert!(timeout.contains("\r\ncontent-type: application/json\r\n"));
        assert!(timeout.contains("\r\nconnection: close\r\n"));
        assert!(timeout.contains("\r\nx-request-id: "));
        assert!(timeout.ends_with("\r\n\r\n{\"detail\":\"Request Timeout\"}"));
        assert!(timeout.contains("\r\ncontent-length: 28\r\n"));

        let busy = text(Refusal::Busy);
        assert!(busy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(busy.contains("\r\nretry-after: 5\r\n"));
        assert!(busy.ends_with("\r\n\r\n{\"detail\":\"Service Unavailable\"}"));
    }
}
