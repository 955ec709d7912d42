//! `GET /`, `GET /health` (the process is up) and `GET /ready` (its store answers).

use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{ApiError, App};
use crate::http::Response;

#[derive(Serialize)]
struct Root<'a> {
    name: &'a str,
    version: &'a str,
    contact: Map<String, Value>,
}

pub fn root(app: &App) -> Response {
    let contact = app
        .config
        .app
        .contact
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Response::json(
        StatusCode::OK,
        &Root {
            name: &app.config.app.name,
            version: &app.config.app.version,
            contact,
        },
    )
}

pub fn health() -> Response {
    Response::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// Prometheus text exposition.
pub fn metrics(app: &App) -> Response {
    match app.metrics.render() {
        Ok(text) => {
            let mut response = Response::empty(StatusCode::OK);
            response.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response.body = bytes::Bytes::from(text);
            response
        }
        Err(err) => ApiError::internal(err).into_response(),
    }
}

pub async fn ready(app: &App) -> Result<Response, ApiError> {
    app.backend.ready().await?;
    Ok(Response::json(
        StatusCode::OK,
        &serde_json::json!({ "status": "ready" }),
    ))
}
