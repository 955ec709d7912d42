//! A response built in memory; the server writes it with a Content-Length.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::schema::{Documented, Schema};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The contract's error shape: `{"detail": "..."}`.
#[derive(Debug, Serialize)]
pub struct Detail<'a> {
    pub detail: &'a str,
}

impl Documented for Detail<'static> {
    const NAME: &'static str = "Detail";

    fn schema() -> Schema {
        Schema::object()
            .field("detail", Schema::string())
            .describe("A handled error; clients branch on the text.")
    }

    fn example() -> Self {
        Self {
            detail: "Invalid credentials",
        }
    }
}

/// A plain confirmation: `{"message": "..."}`.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    pub message: &'a str,
}

impl Documented for Message<'static> {
    const NAME: &'static str = "Message";

    fn schema() -> Schema {
        Schema::object().field("message", Schema::string())
    }

    fn example() -> Self {
        Self {
            message: "Password has been reset successfully",
        }
    }
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

    /// A confirmation: `{"message": "..."}`.
    pub fn message(status: StatusCode, message: &str) -> Self {
        Self::json(status, &Message { message })
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}
