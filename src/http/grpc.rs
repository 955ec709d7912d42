//! The gateway's own answers to gRPC callers, in gRPC's shape.
//!
//! A gRPC client reads its outcome from the `grpc-status` trailer, not from
//! the HTTP status, and cannot read a JSON body: a policy's 403, a rate
//! limit's 429 or an upstream's 502 written as usual reaches it as a
//! framing error. So when the request is gRPC (`content-type:
//! application/grpc...`), an answer the gateway writes itself is sent as a
//! trailers-only answer instead: HTTP 200, `content-type: application/grpc`,
//! `grpc-status` mapped from the HTTP status as gRPC's own mapping does
//! (400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404
//! UNIMPLEMENTED, 429, 502, 503 and 504 UNAVAILABLE, anything else
//! UNKNOWN), and `grpc-message` the contract's `detail`, percent-encoded.
//! Upstream answers pass untouched.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::Response;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What gRPC's `grpc-message` encodes: controls, `%`, and anything past
/// visible ASCII (the spec's percent-encoding).
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether the request is a gRPC call.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status code for a gateway answer's HTTP status.
pub fn status_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// `response` (an answer of the gateway's own) as a gRPC trailers-only
/// answer; a success is left as it is.
pub fn answer(response: Response) -> Response {
    if response.status.is_success() {
        return response;
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|body| body.get("detail")?.as_str().map(str::to_string))
        .unwrap_or_else(|| {
            response
                .status
                .canonical_reason()
                .unwrap_or_default()
                .to_string()
        });
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        GRPC_STATUS,
        HeaderValue::from(u16::from(status_code(response.status))),
    );
    let message = utf8_percent_encode(&detail, MESSAGE).to_string();
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert(GRPC_MESSAGE, message);
    }
    Response {
        status: StatusCode::OK,
        headers,
        body: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_grpc_statuses() {
        let refused = answer(Response::detail(
            StatusCode::FORBIDDEN,
            "Not enough permissions",
        ));
        assert_eq!(refused.status, StatusCode::OK);
        assert_eq!(refused.headers["content-type"], "application/grpc");
        assert_eq!(refused.headers["grpc-status"], "7");
        assert_eq!(refused.headers["grpc-message"], "Not enough permissions");
        assert!(refused.body.is_empty());
        let down = answer(Response::detail(StatusCode::BAD_GATEWAY, "Bad Gateway"));
        assert_eq!(down.headers["grpc-status"], "14");
        let odd = answer(Response::detail(StatusCode::BAD_REQUEST, "100% bad\n"));
        assert_eq!(odd.headers["grpc-status"], "13");
        assert_eq!(odd.headers["grpc-message"], "100%25 bad%0A");
        let fine = answer(Response::detail(StatusCode::OK, "fine"));
        assert_eq!(fine.status, StatusCode::OK);
        assert!(fine.headers.get("grpc-status").is_none());
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_grpc(&headers));
    }
}
