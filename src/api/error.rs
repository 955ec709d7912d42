//! The api layer's one error type, and its conversion into the contract's
//! bodies: `{"detail": "..."}` with a status, or a 422 list of issues.

use std::borrow::Cow;

use http::StatusCode;
use http::header::{HeaderName, HeaderValue};

use crate::http::Response;
use crate::http::validate::{Rejection, Unprocessable};
use crate::identity::IdentityError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A handled error: this status and this detail, as the contract states.
    #[error("{status}: {detail}")]
    Status {
        status: StatusCode,
        detail: Cow<'static, str>,
    },
    #[error(transparent)]
    Validation(#[from] Rejection),
    #[error("too many requests (retry after {retry_after} s)")]
    TooManyRequests { retry_after: u64 },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl ApiError {
    pub fn status(status: StatusCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::Status {
            status,
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: &'static str) -> Self {
        Self::status(StatusCode::BAD_REQUEST, detail)
    }

    pub fn forbidden(detail: &'static str) -> Self {
        Self::status(StatusCode::FORBIDDEN, detail)
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "internal error");
        Self::status(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }

    pub fn into_response(self) -> Response {
        match self {
            Self::Status { status, detail } => Response::detail(status, &detail),
            Self::Validation(Rejection(issues)) => Response::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &Unprocessable { detail: issues },
            ),
            Self::TooManyRequests { retry_after } => {
                Response::detail(StatusCode::TOO_MANY_REQUESTS, "Too many requests").with_header(
                    HeaderName::from_static("retry-after"),
                    HeaderValue::from(retry_after),
                )
            }
            Self::Identity(err) => match err {
                IdentityError::EmailTaken | IdentityError::UsernameTaken => {
                    Response::detail(StatusCode::BAD_REQUEST, &err.to_string())
                }
                IdentityError::NotFound => {
                    Response::detail(StatusCode::NOT_FOUND, "User not found")
                }
                IdentityError::Unavailable(_) => {
                    Response::detail(StatusCode::SERVICE_UNAVAILABLE, &err.to_string())
                }
                IdentityError::Busy { retry_after } => {
                    Response::detail(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()).with_header(
                        HeaderName::from_static("retry-after"),
                        HeaderValue::from(retry_after),
                    )
                }
                IdentityError::Unsupported(_) => {
                    Response::detail(StatusCode::NOT_IMPLEMENTED, &err.to_string())
                }
                IdentityError::Internal(_) => {
                    tracing::error!(error = %err, "identity backend failed");
                    Response::detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                }
            },
        }
    }
}
