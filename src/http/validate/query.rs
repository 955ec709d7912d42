//! Text query parameters (`?action=...&since=...`): read, checked, and
//! refused in FastAPI's 422 shape like the integer ones.

use serde_json::{Value, json};

use super::{Issue, Rejection};
use crate::http::Request;
use crate::http::schema::Schema;

/// The characters of a `Word`, as the document states them.
const WORD_PATTERN: &str = "^[a-z0-9._-]*$";

fn is_word_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// What a text query parameter may hold.
#[derive(Debug, Clone, Copy)]
pub enum TextKind {
    /// Up to this many characters of `a-z`, `0-9`, `.`, `_` and `-`.
    Word(usize),
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// An RFC 3339 date-time (`2026-11-29T10:00:00Z`).
    DateTime,
}

/// An optional text query parameter.
#[derive(Debug, Clone, Copy)]
pub struct QueryText {
    pub name: &'static str,
    pub kind: TextKind,
    pub description: &'static str,
}

impl QueryText {
    /// The value, if given; a bad one is a 422.
    pub fn read(&self, req: &Request) -> Result<Option<String>, Rejection> {
        let Some(text) = req.query_param(self.name) else {
            return Ok(None);
        };
        let loc = vec!["query".into(), self.name.into()];
        let input = Value::String(text.clone());
        match self.kind {
            TextKind::Word(max) if text.chars().count() > max => Err(Rejection::one(
                Issue::new(
                    "string_too_long",
                    loc,
                    format!("String should have at most {max} characters"),
                    input,
                )
                .ctx(json!({ "max_length": max })),
            )),
            TextKind::Word(_) if !text.chars().all(is_word_char) => Err(Rejection::one(
                Issue::new(
                    "string_pattern_mismatch",
                    loc,
                    format!("String should match pattern '{WORD_PATTERN}'"),
                    input,
                )
                .ctx(json!({ "pattern": WORD_PATTERN })),
            )),
            TextKind::OneOf(words) if !words.contains(&text.as_str()) => {
                let expected = words
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(" or ");
                Err(Rejection::one(
                    Issue::new("enum", loc, format!("Input should be {expected}"), input)
                        .ctx(json!({ "expected": expected })),
                ))
            }
            TextKind::DateTime if chrono::DateTime::parse_from_rfc3339(&text).is_err() => {
                Err(Rejection::one(Issue::new(
                    "datetime_from_date_parsing",
                    loc,
                    "Input should be a valid datetime (RFC 3339)",
                    input,
                )))
            }
            _ => Ok(Some(text)),
        }
    }

    /// The value as a UTC time (for a `DateTime` parameter).
    pub fn read_time(&self, req: &Request) -> Result<Option<chrono::NaiveDateTime>, Rejection> {
        Ok(self.read(req)?.and_then(|text| {
            chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|t| t.naive_utc())
        }))
    }

    /// Its schema in the OpenAPI document.
    pub fn schema(&self) -> Schema {
        let schema = Schema::string().describe(self.description);
        match self.kind {
            TextKind::Word(max) => schema.length(0, max).pattern(WORD_PATTERN),
            TextKind::OneOf(words) => schema.with_enum(words),
            TextKind::DateTime => schema.format("date-time"),
        }
    }
}
