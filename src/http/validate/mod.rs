//! Request validation with FastAPI's 422 shape (pydantic 2.10 error entries).
//!
//! A request model declares its fields in order ([`Model::FIELDS`]); the body
//! is checked field by field, every problem is reported, and only a fully
//! valid body is turned into the typed model, so a handler never sees (and
//! never writes) half-valid input.

mod body_schema;
pub mod email;
mod query;

pub use body_schema::request_body;
pub use query::{QueryText, TextKind};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::Request;
use super::schema::{Documented, Schema};

/// Longest URL pydantic's `HttpUrl` accepts.
pub const URL_MAX_LEN: usize = 2083;
const ERRORS_URL: &str = "https://errors.pydantic.dev/2.10/v/";

/// One element of an error's `loc`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Loc {
    Key(String),
    Index(usize),
}

impl From<&str> for Loc {
    fn from(value: &str) -> Self {
        Self::Key(value.to_string())
    }
}

/// One entry of a 422 `detail` list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<Loc>,
    pub msg: String,
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Documented for Issue {
    const NAME: &'static str = "ValidationIssue";

    fn schema() -> Schema {
        Schema::object()
            .field("type", Schema::string().describe("e.g. `missing`, `string_too_short`"))
            .field(
                "loc",
                Schema::array(Schema::any_of([Schema::string(), Schema::integer()]))
                    .describe("Where: `[\"body\", field]`, `[\"query\", name]`, `[\"path\", name]` or `[\"body\"]`."),
            )
            .field("msg", Schema::string().describe("For people; the texts are kept as FastAPI wrote them."))
            .field("input", Schema::any().describe("The offending value, the whole body for a missing field, or `null` for an absent body."))
            .optional("ctx", Schema::map_of(Schema::any()))
            .optional("url", Schema::string())
            .describe("One problem of a refused request, in pydantic's shape.")
    }

    fn example() -> Self {
        Self::new(
            "string_too_short",
            vec!["body".into(), "password".into()],
            "String should have at least 8 characters",
            json!("short"),
        )
        .ctx(json!({ "min_length": 8 }))
    }
}

/// The 422 answer: `{"detail": [issue, ...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unprocessable {
    pub detail: Vec<Issue>,
}

impl Documented for Unprocessable {
    const NAME: &'static str = "ValidationError";

    fn schema() -> Schema {
        Schema::object()
            .field("detail", Schema::array(Schema::of::<Issue>()))
            .describe("A request that failed validation: every problem, in the order of the model's fields.")
    }

    fn example() -> Self {
        Self {
            detail: vec![Issue::example()],
        }
    }
}

impl Issue {
    fn new(kind: &'static str, loc: Vec<Loc>, msg: impl Into<String>, input: Value) -> Self {
        Self {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
            url: Some(format!("{ERRORS_URL}{kind}")),
        }
    }

    fn ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }

    fn no_url(mut self) -> Self {
        self.url = None;
        self
    }
}

/// A request that failed validation: answered with 422 and these issues.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("request validation failed ({} issues)", .0.len())]
pub struct Rejection(pub Vec<Issue>);

impl Rejection {
    fn one(issue: Issue) -> Self {
        Self(vec![issue])
    }
}

/// What a field holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string of `min..=max` characters.
    Str {
        min: usize,
        max: usize,
    },
    /// An e-mail address (normalised: domain lower-cased).
    Email,
    /// An `http`/`https` URL (normalised as pydantic's `HttpUrl` does).
    HttpUrl,
    Bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

impl Field {
    pub const fn string(name: &'static str, min: usize, max: usize) -> Self {
        Self {
            name,
            kind: Kind::Str { min, max },
            required: true,
        }
    }

    pub const fn email(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Email,
            required: true,
        }
    }

    pub const fn url(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::HttpUrl,
            required: true,
        }
    }

    pub const fn boolean(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Bool,
            required: true,
        }
    }

    /// The field may be absent or `null`.
    pub const fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

/// A request body model: its fields, in the order errors are reported.
pub trait Model: DeserializeOwned {
    const FIELDS: &'static [Field];
}

/// Parses and validates a JSON body into `M`, the way FastAPI did.
pub fn json_body<M: Model>(req: &Request) -> Result<M, Rejection> {
    let body = parse_body(req)?;
    let Value::Object(object) = &body else {
        return Err(Rejection::one(model_type(body)));
    };
    let mut issues = Vec::new();
    let mut clean = Map::new();
    for field in M::FIELDS {
        match object.get(field.name) {
            None if field.required => issues.push(Issue::new(
                "missing",
                vec!["body".into(), field.name.into()],
                "Field required",
                body.clone(),
            )),
            None => {}
            Some(Value::Null) if !field.required => {}
            Some(value) => match check(field, value) {
                Ok(clean_value) => {
                    clean.insert(field.name.to_string(), clean_value);
                }
                Err(issue) => issues.push(issue),
            },
        }
    }
    if !issues.is_empty() {
        return Err(Rejection(issues));
    }
    serde_json::from_value(Value::Object(clean)).map_err(|err| {
        // Only reachable if a model's FIELDS disagree with its struct.
        tracing::error!(error = %err, "validated body does not fit its model");
        Rejection::one(model_type(body))
    })
}

/// FastAPI reads the body as JSON when there is no content type or a JSON one;
/// any other body is bytes, which no model accepts.
fn parse_body(req: &Request) -> Result<Value, Rejection> {
    if req.body.is_empty() {
        return Err(Rejection::one(Issue::new(
            "missing",
            vec!["body".into()],
            "Field required",
            Value::Null,
        )));
    }
    let is_json = match req.header("content-type") {
        None => true,
        Some(content_type) => {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        }
    };
    if !is_json {
        let text = String::from_utf8_lossy(&req.body).into_owned();
        return Err(Rejection::one(model_type(Value::String(text))));
    }
    serde_json::from_slice(&req.body).map_err(|err| {
        let position = char_offset(&req.body, err.line(), err.column());
        let text = err.to_string();
        let reason = text.split(" at line ").next().unwrap_or(&text).to_string();
        Rejection::one(
            Issue::new(
                "json_invalid",
                vec!["body".into(), Loc::Index(position)],
                "JSON decode error",
                json!({}),
            )
            .ctx(json!({ "error": reason }))
            .no_url(),
        )
    })
}

/// Character offset (as Python's `JSONDecodeError.pos`) of a 1-based line/column.
fn char_offset(body: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(body);
    let mut byte = 0usize;
    for (index, line_text) in text.split_inclusive('\n').enumerate() {
        if index + 1 == line {
            byte += column.saturating_sub(1).min(line_text.len());
            break;
        }
        byte += line_text.len();
    }
    let byte = byte.min(text.len());
    text.char_indices().take_while(|(i, _)| *i < byte).count()
}

fn model_type(input: Value) -> Issue {
    Issue::new(
        "model_attributes_type",
        vec!["body".into()],
        "Input should be a valid dictionary or object to extract fields from",
        input,
    )
}

// An issue is built at most once per field of a refused request: its size is no cost.
#[allow(clippy::result_large_err)]
fn check(field: &Field, value: &Value) -> Result<Value, Issue> {
    let loc = || vec![Loc::from("body"), Loc::from(field.name)];
    match field.kind {
        Kind::Str { min, max } => {
            let text = value.as_str().ok_or_else(|| string_type(loc(), value))?;
            let len = text.chars().count();
            if len < min {
                let unit = if min == 1 { "character" } else { "characters" };
                return Err(Issue::new(
                    "string_too_short",
                    loc(),
                    format!("String should have at least {min} {unit}"),
                    value.clone(),
                )
                .ctx(json!({ "min_length": min })));
            }
            if len > max {
                let unit = if max == 1 { "character" } else { "characters" };
                return Err(Issue::new(
                    "string_too_long",
                    loc(),
                    format!("String should have at most {max} {unit}"),
                    value.clone(),
                )
                .ctx(json!({ "max_length": max })));
            }
            // No store keeps NUL in text (PostgreSQL refuses it; the old
            // service answered 500): refused here, in pydantic's shape.
            if text.contains('\0') {
                return Err(Issue::new(
                    "value_error",
                    loc(),
                    "Value error, must not contain NUL characters",
                    value.clone(),
                )
                .ctx(json!({ "error": {} })));
            }
            Ok(value.clone())
        }
        Kind::Email => {
            let text = value.as_str().ok_or_else(|| string_type(loc(), value))?;
            email::normalize(text).map(Value::String).map_err(|reason| {
                Issue::new(
                    "value_error",
                    loc(),
                    format!("value is not a valid email address: {reason}"),
                    value.clone(),
                )
                .ctx(json!({ "reason": reason }))
                .no_url()
            })
        }
        Kind::HttpUrl => {
            let text = value.as_str().ok_or_else(|| {
                Issue::new(
                    "url_type",
                    loc(),
                    "URL input should be a string or URL",
                    value.clone(),
                )
            })?;
            http_url(text)
                .map(Value::String)
                .map_err(|issue| issue.at(loc(), value))
        }
        Kind::Bool => boolean(value).map(Value::Bool).ok_or_else(|| {
            if value.is_string() || value.is_number() {
                Issue::new(
                    "bool_parsing",
                    loc(),
                    "Input should be a valid boolean, unable to interpret input",
                    value.clone(),
                )
            } else {
                Issue::new(
                    "bool_type",
                    loc(),
                    "Input should be a valid boolean",
                    value.clone(),
                )
            }
        }),
    }
}

fn string_type(loc: Vec<Loc>, value: &Value) -> Issue {
    Issue::new(
        "string_type",
        loc,
        "Input should be a valid string",
        value.clone(),
    )
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
            "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A URL problem before it knows where it happened.
struct UrlIssue {
    kind: &'static str,
    msg: String,
    ctx: Value,
}

impl UrlIssue {
    fn at(self, loc: Vec<Loc>, value: &Value) -> Issue {
        Issue::new(self.kind, loc, self.msg, value.clone()).ctx(self.ctx)
    }
}

/// pydantic's `HttpUrl`: http or https, a host, at most 2083 characters;
/// the result is the URL's normal form (e.g. `https://a.example/`).
fn http_url(text: &str) -> Result<String, UrlIssue> {
    if text.chars().count() > URL_MAX_LEN {
        return Err(UrlIssue {
            kind: "url_too_long",
            msg: format!("URL should have at most {URL_MAX_LEN} characters"),
            ctx: json!({ "max_length": URL_MAX_LEN }),
        });
    }
    let parsed = url::Url::parse(text.trim()).map_err(|err| UrlIssue {
        kind: "url_parsing",
        msg: format!("Input should be a valid URL, {err}"),
        ctx: json!({ "error": err.to_string() }),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlIssue {
            kind: "url_scheme",
            msg: "URL scheme should be 'http' or 'https'".into(),
            ctx: json!({ "expected_schemes": "'http' or 'https'" }),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlIssue {
            kind: "url_parsing",
            msg: "Input should be a valid URL, empty host".into(),
            ctx: json!({ "error": "empty host" }),
        });
    }
    Ok(parsed.to_string())
}

/// An integer query parameter with its default and bounds (the document
/// states them from here too).
#[derive(Debug, Clone, Copy)]
pub struct QueryInt {
    pub name: &'static str,
    pub default: i64,
    pub min: i64,
    pub max: i64,
}

impl QueryInt {
    pub fn read(&self, req: &Request) -> Result<i64, Rejection> {
        query_int(req, self.name, self.default, self.min, self.max)
    }
}

/// An integer query parameter (`offset`, `limit`) with bounds.
pub fn query_int(
    req: &Request,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Rejection> {
    let Some(text) = req.query_param(name) else {
        return Ok(default);
    };
    bounded_int(vec!["query".into(), name.into()], &text, min, max)
}

/// An integer path parameter (`/users/{user_id}`).
pub fn path_int(name: &str, text: &str) -> Result<i64, Rejection> {
    bounded_int(
        vec!["path".into(), name.into()],
        text,
        i64::from(i32::MIN),
        i64::from(i32::MAX),
    )
}

fn bounded_int(loc: Vec<Loc>, text: &str, min: i64, max: i64) -> Result<i64, Rejection> {
    let input = Value::String(text.to_string());
    let value: i64 = text.trim().parse().map_err(|_| {
        Rejection::one(Issue::new(
            "int_parsing",
            loc.clone(),
            "Input should be a valid integer, unable to parse string as an integer",
            input.clone(),
        ))
    })?;
    if value < min {
        return Err(Rejection::one(
            Issue::new(
                "greater_than_equal",
                loc,
                format!("Input should be greater than or equal to {min}"),
                input,
            )
            .ctx(json!({ "ge": min })),
        ));
    }
    if value > max {
        return Err(Rejection::one(
            Issue::new(
                "less_than_equal",
                loc,
                format!("Input should be less than or equal to {max}"),
                input,
            )
            .ctx(json!({ "le": max })),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Signup {
        email: String,
        username: String,
        password: String,
        verification_url: Option<String>,
    }

    impl Model for Signup {
        const FIELDS: &'static [Field] = &[
            Field::email("email"),
            Field::string("username", 3, 50),
            Field::string("password", 8, 128),
            Field::url("verification_url").optional(),
        ];
    }

    fn request(body: &str, content_type: Option<&str>) -> Request {
        let mut req = Request::new(Method::POST, "/users/signup");
        req.body = bytes::Bytes::from(body.to_string());
        if let Some(ct) = content_type {
            req.headers.insert("content-type", ct.parse().unwrap());
        }
        req
    }

    fn issues(body: &str) -> Vec<Issue> {
        json_body::<Signup>(&request(body, Some("application/json")))
            .unwrap_err()
            .0
    }

    #[test]
    fn nul_characters_are_refused() {
        let found =
            issues(r#"{"email":"a@b.example","username":"ab\u0000c","password":"1234\u00005678"}"#);
        let kinds: Vec<_> = found.iter().map(|i| (i.kind, i.loc[1].clone())).collect();
        assert_eq!(
            kinds,
            vec![
                ("value_error", Loc::from("username")),
                ("value_error", Loc::from("password"))
            ]
        );
        assert_eq!(found[0].msg, "Value error, must not contain NUL characters");
    }

    #[test]
    fn valid_body_is_normalised() {
        let body = r#"{"email":"Ada@Example.COM","username":"ada","password":"12345678","verification_url":"https://app.example","extra":1}"#;
        let parsed: Signup = json_body(&request(body, None)).unwrap();
        assert_eq!(parsed.email, "Ada@example.com");
        assert_eq!(
            parsed.verification_url.as_deref(),
            Some("https://app.example/")
        );
    }

    #[test]
    fn missing_fields_in_model_order_with_whole_body_as_input() {
        let found = issues(r#"{"password":"x"}"#);
        let kinds: Vec<_> = found.iter().map(|i| (i.kind, i.loc.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                ("missing", vec![Loc::from("body"), Loc::from("email")]),
                ("missing", vec![Loc::from("body"), Loc::from("username")]),
                (
                    "string_too_short",
                    vec![Loc::from("body"), Loc::from("password")]
                ),
            ]
        );
        assert_eq!(found[0].input, json!({"password": "x"}));
        assert_eq!(found[0].msg, "Field required");
        assert_eq!(found[2].msg, "String should have at least 8 characters");
        assert_eq!(found[2].ctx, Some(json!({"min_length": 8})));
        assert_eq!(
            found[2].url.as_deref(),
            Some("https://errors.pydantic.dev/2.10/v/string_too_short")
        );
    }

    #[test]
    fn absent_body_and_non_objects() {
        let err = json_body::<Signup>(&request("", Some("application/json"))).unwrap_err();
        assert_eq!(err.0[0].loc, vec![Loc::from("body")]);
        assert_eq!(err.0[0].input, Value::Null);
        let err = json_body::<Signup>(&request("[1,2]", None)).unwrap_err();
        assert_eq!(err.0[0].kind, "model_attributes_type");
        let err = json_body::<Signup>(&request(
            "email=a%40b.c",
            Some("application/x-www-form-urlencoded"),
        ))
        .unwrap_err();
        assert_eq!(err.0[0].kind, "model_attributes_type");
        assert_eq!(err.0[0].input, json!("email=a%40b.c"));
    }

    #[test]
    fn invalid_json_reports_position() {
        let found = issues(r#"{"email": }"#);
        assert_eq!(found[0].kind, "json_invalid");
        assert_eq!(found[0].loc, vec![Loc::from("body"), Loc::Index(10)]);
        assert_eq!(found[0].input, json!({}));
        assert!(found[0].url.is_none());
    }

    #[test]
    fn wrong_types_and_bad_values() {
        let found = issues(
            r#"{"email":"nope","username":12,"password":"x".repeat,"verification_url":"ftp://x"}"#,
        );
        assert_eq!(found[0].kind, "json_invalid");
        let found = issues(
            r#"{"email":"nope","username":12,"password":"123456789","verification_url":"ftp://x.example"}"#,
        );
        let kinds: Vec<_> = found.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, vec!["value_error", "string_type", "url_scheme"]);
        assert_eq!(
            found[0].msg,
            "value is not a valid email address: An email address must have an @-sign."
        );
        assert!(found[0].url.is_none());
        let found = issues(
            r#"{"email":"a@b.example","username":"abc","password":"123456789","verification_url":"not a url"}"#,
        );
        assert_eq!(found[0].kind, "url_parsing");
        assert_eq!(
            found[0].msg,
            "Input should be a valid URL, relative URL without a base"
        );
    }

    #[test]
    fn too_long_strings_counted_in_characters() {
        let name = "é".repeat(51);
        let body =
            format!(r#"{{"email":"a@b.example","username":"{name}","password":"12345678"}}"#);
        let found = issues(&body);
        assert_eq!(found[0].kind, "string_too_long");
        assert_eq!(found[0].msg, "String should have at most 50 characters");
        let name = "é".repeat(50);
        let body =
            format!(r#"{{"email":"a@b.example","username":"{name}","password":"12345678"}}"#);
        assert!(json_body::<Signup>(&request(&body, None)).is_ok());
    }

    #[test]
    fn query_ints() {
        let mut req = Request::new(Method::GET, "/users/");
        req.query = Some("offset=abc&limit=-1".into());
        let err = query_int(&req, "offset", 0, 0, 1000).unwrap_err();
        assert_eq!(err.0[0].kind, "int_parsing");
        assert_eq!(err.0[0].loc, vec![Loc::from("query"), Loc::from("offset")]);
        let err = query_int(&req, "limit", 100, 0, 1000).unwrap_err();
        assert_eq!(err.0[0].kind, "greater_than_equal");
        assert_eq!(query_int(&req, "other", 100, 0, 1000).unwrap(), 100);
    }
}

/// Hostile bytes: JSON bodies and their validation, e-mail addresses,
/// URLs and query parameters over random and built input (the long run is
/// `scripts/fuzz.sh`). The strategies serve the request models' own
/// properties too (`crate::api::users`).
#[cfg(test)]
pub(crate) mod prop {
    use http::Method;
    use proptest::prelude::prop;
    use proptest::prelude::*;

    use super::*;

    /// Text that reaches the checks' branches: NUL, control and non-ASCII
    /// characters, addresses, URLs, lengths around the limits.
    pub fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-z]{0,3}",
            "[a-zA-Z0-9]{45,55}",
            "[ -~]{120,135}",
            "[a-z.]{1,10}@[a-zA-Z0-9.-]{1,20}",
            "[A-Za-z ]{0,8}<[a-z]{1,8}@[a-z]{1,8}\\.(com|test|local|123|xn--p1ai)>",
            "(https?|ftp|javascript)://[a-z0-9.:@\\[\\]-]{0,20}(/[ -~]{0,10})?",
            "[a-z]{0,4}\u{0}[a-z]{0,4}",
            "[\u{80}-\u{10ffff}]{1,10}@[\u{80}-\u{10ffff}]{1,10}",
            Just(String::from("1")),
            Just(String::from(" yes ")),
        ]
    }

    /// Any JSON value, nesting bounded.
    pub fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![Just(0.0), Just(1.0), Just(-0.0)].prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,10}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A body for a model with these field names: an object of them (some
    /// missing, of any type, beside extra keys), any JSON, broken JSON,
    /// random bytes, deep nesting.
    pub fn body(names: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
        let object: BoxedStrategy<Vec<u8>> = (
            prop::collection::vec(
                proptest::option::of(prop_oneof![text().prop_map(Value::String), value()]),
                names.len(),
            ),
            prop::collection::vec(("[a-z_]{1,10}", value()), 0..3),
        )
            .prop_map(move |(values, extra)| {
                let mut map = Map::new();
                for (name, v) in names.iter().zip(values) {
                    if let Some(v) = v {
                        map.insert((*name).to_string(), v);
                    }
                }
                for (k, v) in extra {
                    map.insert(k, v);
                }
                serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
            })
            .boxed();
        prop_oneof![
            4 => object.clone(),
            1 => value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
            1 => (object, any::<usize>(), any::<u8>()).prop_map(|(mut b, at, byte)| {
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = byte;
                }
                b
            }),
            1 => prop::collection::vec(any::<u8>(), 0..200),
            1 => (1usize..5000).prop_map(|depth| {
                let mut b = "[".repeat(depth).into_bytes();
                b.extend_from_slice(&b"]".repeat(depth));
                b
            }),
        ]
    }

    pub fn content_type() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            Just("application/json".to_string()),
            Just("Application/JSON; charset=utf-8".to_string()),
            Just("application/problem+json".to_string()),
            Just("text/plain".to_string()),
            "[ -~]{0,30}",
        ])
    }

    pub fn request(body: Vec<u8>, content_type: Option<String>) -> Request {
        let mut req = Request::new(Method::POST, "/users/");
        req.body = bytes::Bytes::from(body);
        if let Some(value) = content_type.and_then(|ct| http::HeaderValue::from_str(&ct).ok()) {
            req.headers.insert("content-type", value);
        }
        req
    }

    /// What every refusal holds: at most one issue per field (or one for
    /// the whole body), and a 422 answer of at most (fields + 1) times
    /// (6 × body + 1 KiB): each issue quotes the body at most once, and
    /// JSON writes a byte as at most six (`\u0001`).
    pub fn check_refusal<M: Model>(
        req: &Request,
        outcome: &Result<M, Rejection>,
    ) -> Result<(), TestCaseError> {
        if let Err(Rejection(issues)) = outcome {
            prop_assert!(!issues.is_empty());
            prop_assert!(issues.len() <= M::FIELDS.len().max(1));
            let answer = serde_json::to_vec(&json!({ "detail": issues })).unwrap();
            let bound = (M::FIELDS.len() + 1) * (6 * req.body.len() + 1024);
            prop_assert!(answer.len() <= bound, "{} > {bound}", answer.len());
        }
        Ok(())
    }

    #[derive(Debug, serde::Deserialize)]
    struct Every {
        text: String,
        email: String,
        url: Option<String>,
        flag: Option<bool>,
    }

    impl Model for Every {
        const FIELDS: &'static [Field] = &[
            Field::string("text", 3, 50),
            Field::email("email"),
            Field::url("url").optional(),
            Field::boolean("flag").optional(),
        ];
    }

    proptest! {
        /// A model with every kind of field: never a panic, bounded
        /// refusals, and what passes holds what the fields promise.
        #[test]
        fn json_bodies(body in body(&["text", "email", "url", "flag"]), ct in content_type()) {
            let req = request(body, ct);
            let outcome = json_body::<Every>(&req);
            check_refusal(&req, &outcome)?;
            if let Ok(every) = outcome {
                let _ = every.flag;
                let len = every.text.chars().count();
                prop_assert!((3..=50).contains(&len) && !every.text.contains('\0'));
                prop_assert_eq!(email::normalize(&every.email), Ok(every.email.clone()));
                if let Some(url) = &every.url {
                    prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                    let again = http_url(url).ok();
                    prop_assert_eq!(again.as_ref(), Some(url));
                }
            }
        }

        /// Addresses: never a panic; a normal form fits the column and is
        /// its own normal form.
        #[test]
        fn email_addresses(input in text()) {
            if let Ok(address) = email::normalize(&input) {
                prop_assert!(address.chars().count() <= email::MAX_STORED_LEN);
                prop_assert_eq!(email::normalize(&address), Ok(address.clone()));
            }
        }

        /// Integer and text query parameters: never a panic; what passes
        /// is within the bounds and of the kind.
        #[test]
        fn query_parameters(
            query in prop_oneof![
                any::<String>(),
                "(limit|offset|action|since)=[-+ 0-9a-zA-Z%:.]{0,25}(&[a-z]{1,6}=[ -~]{0,10}){0,3}",
            ],
            min in -100i64..100,
            span in 0i64..1000,
        ) {
            let mut req = Request::new(Method::GET, "/users/");
            req.query = Some(query.clone());
            let max = min + span;
            if let Ok(n) = query_int(&req, "limit", min, min, max) {
                prop_assert!((min..=max).contains(&n));
            }
            let _ = path_int("user_id", &query);
            let word = QueryText { name: "action", kind: TextKind::Word(20), description: "" };
            if let Ok(Some(w)) = word.read(&req) {
                prop_assert!(w.chars().count() <= 20);
            }
            let one = QueryText { name: "action", kind: TextKind::OneOf(&["signin", "signup"]), description: "" };
            if let Ok(Some(w)) = one.read(&req) {
                prop_assert!(w == "signin" || w == "signup");
            }
            let since = QueryText { name: "since", kind: TextKind::DateTime, description: "" };
            let _ = since.read_time(&req);
        }
    }
}
