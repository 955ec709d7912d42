//! A response built in memory; the server writes it with a Content-Length.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

impl Response {
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// A JSON body, compact as FastAPI writes it.
    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                let mut response = Self::empty(status);
                response
                    .headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response.body = Bytes::from(body);
                response
            }
            Err(err) => {
                tracing::error!(error = %err, "response body could not be serialised");
                Self::detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }

    /// The contract's error shape: `{"detail": "..."}`.
    pub fn detail(status: StatusCode, detail: &str) -> Self {
        Self::json(status, &Detail { detail })
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}
