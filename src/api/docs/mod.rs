//! The API's OpenAPI 3.1 document (`GET /docs/json`, the old service's
//! path) and a page that renders it (`GET /docs`).
//!
//! Nothing here lists paths or fields by hand: paths and methods come from
//! the router's [`PATHS`], request bodies from each model's `FIELDS` (what
//! the validator checks), answers from the [`Documented`] types that
//! serialise them. [`operations`] adds what only people can say (summaries,
//! who may call, which answers), through a match the compiler keeps
//! complete.

pub mod conform;
mod operations;
mod page;

use super::audit::AuditPage;
use http::StatusCode;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde_json::{Map, Value, json};

use super::App;
use super::backchannel::LogoutError;
use super::devices::{Ended, SessionOut};
use super::flows::session::SessionAnswer;
use super::meta::{Root, Status};
use super::session::{RefreshAnswer, SignedOut};
use super::users::UserOut;
use super::verification::{ResendAnswer, VerifiedAnswer};
use crate::config::AppSettings;
use crate::http::cookies::{ACCESS_COOKIE, REFRESH_COOKIE};
use crate::http::endpoints::{Endpoint, PATHS};
use crate::http::schema::{COMPONENTS, Documented, Schema};
use crate::http::validate::{Issue, Unprocessable};
use crate::http::{Detail, Message, Response};
use crate::identity::IdentityError;
use operations::{Access, Answer, Content, Header, Operation, QueryParam, Tag, operation};

pub use page::page;

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";

const BEARER: &str = "bearerAuth";
const COOKIE: &str = "cookieAuth";

const DESCRIPTION: &str = "\
The authentication API of the legacy FastAPI service, kept to the letter \
(paths, bodies, status codes, messages, cookies and tokens).

- Bodies are JSON. A handled error is `{\"detail\": \"<message>\"}`; a request that \
fails validation is 422 with FastAPI's list of issues.
- \"Token required\": the access token comes from `Authorization: Bearer <token>` or \
the `access_token` cookie; the header wins. Without one: 403 `Unauthorized.`; a bad, \
expired or signed-out one: 403 `Invalid token or expired token.`
- An unknown path is 404 `Not Found`; a known path with another method is 405 \
`Method Not Allowed` with `Allow`; a path with a trailing slash added or removed \
answers 307 to the documented one. Every GET also answers HEAD.
- Paths that are not the API's are forwarded to the upstreams of `ROUTES_FILE`.

This document is generated from the gateway's own route table and models.";

/// `GET /docs/json`.
pub fn json(app: &App) -> Response {
    let _span = tracing::debug_span!("openapi_document").entered();
    let mut response = Response::json(StatusCode::OK, &document(&Info::from(&app.config.app)));
    response
        .headers
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What the document says about the service itself.
#[derive(Debug, Clone, Copy)]
pub struct Info<'a> {
    pub title: &'a str,
    pub version: &'a str,
    /// `name`, `email`, `url`, those that are set.
    pub contact: &'a [(String, String)],
}

impl<'a> From<&'a AppSettings> for Info<'a> {
    fn from(settings: &'a AppSettings) -> Self {
        Self {
            title: &settings.name,
            version: &settings.version,
            contact: &settings.contact,
        }
    }
}

/// The whole document.
pub fn document(about: &Info<'_>) -> Value {
    let mut schemas = answer_schemas();
    let mut paths = Map::new();
    let mut seen: Vec<Endpoint> = Vec::new();
    for (path, route) in PATHS {
        let mut item = Map::new();
        for method in route.methods() {
            let Some(op) = operation(*route, method) else {
                continue;
            };
            let id = if seen.contains(route) {
                format!("{}_{}", op.id, path_suffix(path))
            } else {
                op.id.to_string()
            };
            if let Some(body) = &op.body {
                schemas.insert(body.name.into(), body.schema.clone().into_value());
            }
            item.insert(method.as_str().to_ascii_lowercase(), render(path, &id, &op));
        }
        seen.push(*route);
        paths.insert(template(path), Value::Object(item));
    }
    json!({
        "openapi": OPENAPI_VERSION,
        "info": info(about),
        "tags": Tag::ALL
            .iter()
            .map(|t| json!({ "name": t.name(), "description": t.description() }))
            .collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <access token>`; wins over the cookie.",
                },
                COOKIE: {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": ACCESS_COOKIE,
                    "description": "The access token cookie set at sign-in and e-mail verification.",
                },
            },
        },
    })
}

/// A router path as the document writes it: a catch-all `{*name}` is
/// `{name}`.
pub fn template(path: &str) -> String {
    path.replace("{*", "{")
}

/// Whether a path has parameters that are validated (422 when malformed);
/// a catch-all takes anything.
fn checked_params(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment.starts_with('{') && !segment.starts_with("{*"))
}

/// A path's distinct part for the operation id of a second path of one route.
fn path_suffix(path: &str) -> &'static str {
    if path.contains("{*") {
        "prefixed"
    } else if path.ends_with('/') {
        "slash"
    } else {
        "no_slash"
    }
}

fn info(about: &Info<'_>) -> Value {
    let mut info = Map::new();
    info.insert("title".into(), json!(about.title));
    info.insert("version".into(), json!(about.version));
    info.insert("description".into(), json!(DESCRIPTION));
    let contact: Map<String, Value> = about
        .contact
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if !contact.is_empty() {
        info.insert("contact".into(), Value::Object(contact));
    }
    Value::Object(info)
}

/// The named answer schemas, each with its example.
fn answer_schemas() -> Map<String, Value> {
    [
        (Detail::NAME, Detail::component()),
        (Message::NAME, Message::component()),
        (Unprocessable::NAME, Unprocessable::component()),
        (Issue::NAME, Issue::component()),
        (Root::NAME, Root::component()),
        (Status::NAME, Status::component()),
        (SessionAnswer::NAME, SessionAnswer::component()),
        (RefreshAnswer::NAME, RefreshAnswer::component()),
        (SignedOut::NAME, SignedOut::component()),
        (VerifiedAnswer::NAME, VerifiedAnswer::component()),
        (ResendAnswer::NAME, ResendAnswer::component()),
        (UserOut::NAME, UserOut::component()),
        (AuditPage::NAME, AuditPage::component()),
        (SessionOut::NAME, SessionOut::component()),
        (Ended::NAME, Ended::component()),
        (LogoutError::NAME, LogoutError::component()),
    ]
    .into_iter()
    .map(|(name, schema)| (name.to_string(), schema))
    .collect()
}

fn render(path: &str, id: &str, op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("operationId".into(), json!(id));
    out.insert("tags".into(), json!([op.tag.name()]));
    out.insert("summary".into(), json!(op.summary));
    if !op.description.is_empty() {
        out.insert("description".into(), json!(op.description));
    }
    if op.access != Access::Public {
        out.insert("security".into(), json!([{ BEARER: [] }, { COOKIE: [] }]));
    }
    let path_params = path_parameters(path);
    let has_params = checked_params(path) || !op.query.is_empty();
    let parameters: Vec<Value> = path_params
        .into_iter()
        .chain(op.query.iter().map(query_parameter))
        .chain(op.query_text.iter().map(|(name, description)| {
            json!({
                "name": name,
                "in": "query",
                "required": false,
                "description": description,
                "schema": Schema::string().into_value(),
            })
        }))
        .collect();
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = &op.body {
        let media = if body.form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        out.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": {
                    media: { "schema": Schema::reference(body.name).into_value() },
                },
            }),
        );
    }
    let mut answers = op.answers.clone();
    answers.extend(shared_answers(op, has_params));
    // A path parameter can carry what the edge refuses before any route
    // (an encoded control character, an encoded `/` or dot segment).
    if path.contains('{') && !answers.iter().any(|a| a.status == 400) {
        answers.push(Answer {
            status: 400,
            description: "The path has no canonical form (an encoded control character, \
                          `/` or dot segment): refused before any route.",
            content: Content::Details(vec!["Invalid request path".into()]),
            headers: Vec::new(),
        });
    }
    answers.sort_by_key(|a| a.status);
    let responses: Map<String, Value> = answers
        .iter()
        .map(|a| (a.status.to_string(), render_answer(a)))
        .collect();
    out.insert("responses".into(), Value::Object(responses));
    Value::Object(out)
}

/// `{name}` segments of a path template. Path parameters are read with
/// `validate::path_int` (32-bit integers), but for the opaque `session_id`.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (name, schema) = match name.strip_prefix('*') {
                Some(rest) => (
                    rest,
                    Schema::string().describe(
                        "The rest of the path, as the original request sent it (with its query).",
                    ),
                ),
                None if name == "session_id" => (name, Schema::string()),
                None => (name, Schema::integer().format("int32")),
            };
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": schema.into_value(),
            })
        })
        .collect()
}

fn query_parameter(param: &QueryParam) -> Value {
    let (name, schema) = match param {
        QueryParam::Int(int) => (
            int.name,
            Schema::integer()
                .range(int.min, int.max)
                .default_value(json!(int.default)),
        ),
        QueryParam::Text(text) => (text.name, text.schema()),
    };
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "schema": schema.into_value(),
    })
}

/// The answers that follow from how an operation is called.
fn shared_answers(op: &Operation, has_params: bool) -> Vec<Answer> {
    let mut shared = Vec::new();
    let detail = |status, description, details: Vec<String>| Answer {
        status,
        description,
        content: Content::Details(details),
        headers: Vec::new(),
    };
    if op.access != Access::Public {
        let description = match op.access {
            Access::Token | Access::Public => {
                "No token, or a bad, expired or signed-out one (the contract's 403s)."
            }
            Access::Admin => "No usable token, or the user is not an admin.",
            Access::SelfOrAdmin => {
                "No usable token, or the user is neither the one named nor an admin."
            }
            Access::RoutePolicy => {
                "No usable token, or the caller lacks the route's role; or the peer is not one of \
                 `TRUSTED_PROXIES`. A proxy shows the client this refusal (nginx: its own 403 page)."
            }
        };
        let texts = op
            .forbidden_details()
            .into_iter()
            .map(String::from)
            .collect();
        shared.push(detail(403, description, texts));
    }
    if op.body.is_some() {
        shared.push(Answer {
            status: 413,
            description: "The body is larger than `MAX_BODY_BYTES` (65536 bytes unless set).",
            content: Content::Details(vec!["Request body too large".into()]),
            headers: Vec::new(),
        });
    }
    if op.body.as_ref().is_some_and(|body| !body.form) || has_params {
        shared.push(Answer {
            status: 422,
            description: "The request failed validation (FastAPI's shape).",
            content: Content::Json(Schema::of::<Unprocessable>()),
            headers: Vec::new(),
        });
    }
    if op.limited {
        shared.push(Answer {
            status: 429,
            description: "A rate limit is reached; `Retry-After` says when to try again.",
            content: Content::Details(vec!["Too many requests".into()]),
            headers: vec![Header::RetryAfter],
        });
    }
    if op.enterprise && !op.answers.iter().any(|a| a.status == 501) {
        shared.push(detail(
            501,
            "The backend has no such feature (native mode).",
            vec![IdentityError::Unsupported(op.feature).to_string()],
        ));
    }
    if op.backend {
        shared.push(detail(
            503,
            "The database (or Keycloak) did not answer in time, or the password hashing queue is full (with `Retry-After`).",
            vec![
                IdentityError::Unavailable("Database").to_string(),
                IdentityError::Unavailable("Keycloak").to_string(),
                IdentityError::Busy { retry_after: 1 }.to_string(),
            ],
        ));
    }
    shared
}

fn render_answer(answer: &Answer) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), json!(answer.description));
    let content = match &answer.content {
        Content::Json(schema) => {
            json!({ "application/json": { "schema": schema.clone().into_value() } })
        }
        Content::Details(texts) => {
            let examples: Map<String, Value> = texts
                .iter()
                .map(|text| (text.clone(), json!({ "value": { "detail": text } })))
                .collect();
            json!({
                "application/json": {
                    "schema": Schema::of::<Detail>().into_value(),
                    "examples": examples,
                },
            })
        }
        Content::Other(media_type, schema) => {
            json!({ *media_type: { "schema": schema.clone().into_value() } })
        }
        Content::None => Value::Null,
    };
    if !content.is_null() {
        out.insert("content".into(), content);
    }
    if !answer.headers.is_empty() {
        let headers: Map<String, Value> =
            answer.headers.iter().map(|h| render_header(*h)).collect();
        out.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(out)
}

fn render_header(header: Header) -> (String, Value) {
    let cookie = |what: &str| {
        json!({
            "description": format!(
                "Two headers, `{ACCESS_COOKIE}` and `{REFRESH_COOKIE}`: {what} (`Path=/`, \
                 `SameSite` from `COOKIE_SAMESITE`, `HttpOnly` unless `COOKIE_HTTPONLY=false`, \
                 `Secure` and `Domain` when configured)."
            ),
            "schema": Schema::string().into_value(),
        })
    };
    match header {
        Header::SetCookies => (
            "Set-Cookie".into(),
            cookie("the tokens, with `Max-Age` of their lifetimes"),
        ),
        Header::ClearCookies => (
            "Set-Cookie".into(),
            cookie("cleared (value `\"\"`, `Max-Age=0`, an `expires` date in 1970)"),
        ),
        Header::Location => (
            "Location".into(),
            json!({
                "description": "Where the browser goes next.",
                "required": true,
                "schema": Schema::string().into_value(),
            }),
        ),
        Header::LoginCookie(name) => (
            "Set-Cookie".into(),
            json!({
                "description": format!(
                    "`{name}`: binds the begun login to this browser (`HttpOnly`, `SameSite=lax`, \
                     `Path` of `SSO_CALLBACK_URL`, `Max-Age` of `SSO_LOGIN_TTL_SECONDS`)."
                ),
                "schema": Schema::string().into_value(),
            }),
        ),
        Header::NoStore => (
            "Cache-Control".into(),
            json!({
                "description": "`no-store`.",
                "required": true,
                "schema": Schema::string().into_value(),
            }),
        ),
        Header::Named(name, description) => (
            name.into(),
            json!({
                "description": description,
                "schema": Schema::string().into_value(),
            }),
        ),
        Header::RetryAfter => (
            "Retry-After".into(),
            json!({
                "description": "Whole seconds to wait.",
                "required": true,
                "schema": Schema::string().pattern("^[0-9]+$").into_value(),
            }),
        ),
    }
}

/// The schema a reference points at, in this document.
pub fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    let name = reference.strip_prefix(COMPONENTS)?;
    document.get("components")?.get("schemas")?.get(name)
}

#[cfg(test)]
mod tests;
