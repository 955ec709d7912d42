//! `GET /`, `GET /health` (the process is up) and `GET /ready` (its store answers).

use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{ApiError, App};
use crate::http::Response;
use crate::http::schema::{Documented, Schema};

#[derive(Serialize)]
pub(super) struct Root<'a> {
    name: &'a str,
    version: &'a str,
    contact: Map<String, Value>,
}

impl Documented for Root<'static> {
    const NAME: &'static str = "Root";

    fn schema() -> Schema {
        Schema::object()
            .field("name", Schema::string().describe("`APP_NAME`"))
            .field("version", Schema::string().describe("`APP_VERSION`"))
            .field(
                "contact",
                Schema::map_of(Schema::string())
                    .describe("`name`, `email`, `url` from `APP_CONTACT_*`, those that are set."),
            )
    }

    fn example() -> Self {
        let mut contact = Map::new();
        contact.insert("name".into(), Value::String("Platform team".into()));
        contact.insert("email".into(), Value::String("platform@example.com".into()));
        Self {
            name: "AISER Authentication Service",
            version: "0.1.0",
            contact,
        }
    }
}

/// `{"status": "ok"}` (health) or `{"status": "ready"}` (readiness).
#[derive(Serialize)]
pub(super) struct Status {
    status: &'static str,
}

impl Documented for Status {
    const NAME: &'static str = "Status";

    fn schema() -> Schema {
        Schema::object().field("status", Schema::string())
    }

    fn example() -> Self {
        Self { status: "ok" }
    }
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
    Response::json(StatusCode::OK, &Status { status: "ok" })
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
    Ok(Response::json(StatusCode::OK, &Status { status: "ready" }))
}
