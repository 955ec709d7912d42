//! Checks answers against the document: the JSON Schema keywords the
//! document uses (`$ref` to its components, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `anyOf`, `const`, `enum`, lengths and
//! ranges; formats and patterns are not checked). The tests use it on the
//! examples of the schemas and on live answers.
//!
//! One convention of this document is checked too: a `{"detail": ...}`
//! answer lists every text it can carry as its examples, so a detail that is
//! not among them does not conform.

use serde_json::Value;

use super::resolve;

/// How deep `$ref`s may nest before the schema is taken as circular.
const MAX_DEPTH: usize = 32;

/// Where a value does not fit, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct Mismatch {
    /// A JSON-pointer-like location in the value (`$`, `$.detail[0].loc`).
    pub at: String,
    pub reason: String,
}

fn mismatch(at: &str, reason: impl Into<String>) -> Mismatch {
    Mismatch {
        at: at.to_string(),
        reason: reason.into(),
    }
}

/// Checks `value` against `schema`, resolving references in `document`.
pub fn check(document: &Value, schema: &Value, value: &Value) -> Result<(), Mismatch> {
    walk(document, schema, value, "$", 0)
}

/// Checks an answer of `method path` (a documented path template, e.g.
/// `/users/{user_id}`): its status must be documented, and a JSON body must
/// fit the documented schema (and its detail be a documented one).
pub fn check_answer(
    document: &Value,
    path: &str,
    method: &str,
    status: u16,
    body: &Value,
) -> Result<(), Mismatch> {
    let operation = document
        .get("paths")
        .and_then(|paths| paths.get(path))
        .and_then(|item| item.get(method.to_ascii_lowercase()))
        .ok_or_else(|| mismatch("$", format!("{method} {path} is not documented")))?;
    let answer = operation
        .get("responses")
        .and_then(|responses| responses.get(status.to_string()))
        .ok_or_else(|| {
            mismatch(
                "$",
                format!("{method} {path} does not document status {status}"),
            )
        })?;
    let Some(media) = answer
        .get("content")
        .and_then(|content| content.get("application/json"))
    else {
        return Ok(());
    };
    let schema = media
        .get("schema")
        .ok_or_else(|| mismatch("$", "documented JSON answer has no schema"))?;
    check(document, schema, body)?;
    if let Some(Value::Object(examples)) = media.get("examples")
        && body.get("detail").is_some_and(Value::is_string)
        && !examples
            .values()
            .any(|example| example.get("value") == Some(body))
    {
        return Err(mismatch(
            "$.detail",
            format!("{} is not a documented detail of {status}", body["detail"]),
        ));
    }
    Ok(())
}

fn walk(
    document: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    depth: usize,
) -> Result<(), Mismatch> {
    if depth > MAX_DEPTH {
        return Err(mismatch(at, "references nest too deep"));
    }
    let Value::Object(schema) = schema else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(mismatch(at, "the schema allows nothing")),
        };
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(document, reference)
            .ok_or_else(|| mismatch(at, format!("unresolved reference {reference}")))?;
        walk(document, target, value, at, depth + 1)?;
    }
    if let Some(Value::Array(options)) = schema.get("anyOf")
        && !options
            .iter()
            .any(|option| walk(document, option, value, at, depth + 1).is_ok())
    {
        return Err(mismatch(at, "fits none of anyOf"));
    }
    if let Some(kind) = schema.get("type") {
        check_type(kind, value, at)?;
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        return Err(mismatch(at, format!("is not {expected}")));
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Err(mismatch(at, "is not one of the enum"));
    }
    match value {
        Value::String(text) => check_length(schema, text, at)?,
        Value::Number(number) => check_range(schema, number.as_f64().unwrap_or(f64::NAN), at)?,
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    walk(
                        document,
                        item_schema,
                        item,
                        &format!("{at}[{index}]"),
                        depth + 1,
                    )?;
                }
            }
        }
        Value::Object(object) => {
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        return Err(mismatch(at, format!("lacks required `{name}`")));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, item) in object {
                let inner = format!("{at}.{name}");
                match (
                    properties.and_then(|p| p.get(name)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(property), _) => walk(document, property, item, &inner, depth + 1)?,
                    (None, Some(Value::Bool(false))) => {
                        return Err(mismatch(at, format!("has undocumented `{name}`")));
                    }
                    (None, Some(extra @ Value::Object(_))) => {
                        walk(document, extra, item, &inner, depth + 1)?;
                    }
                    (None, _) => {}
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
    Ok(())
}

fn check_type(kind: &Value, value: &Value, at: &str) -> Result<(), Mismatch> {
    let fits = |name: &str| match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    };
    let ok = match kind {
        Value::String(name) => fits(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(fits),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(at, format!("{value} is not of type {kind}")))
    }
}

fn check_length(
    schema: &serde_json::Map<String, Value>,
    text: &str,
    at: &str,
) -> Result<(), Mismatch> {
    let len = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        return Err(mismatch(at, format!("is shorter than {min}")));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        return Err(mismatch(at, format!("is longer than {max}")));
    }
    Ok(())
}

fn check_range(
    schema: &serde_json::Map<String, Value>,
    number: f64,
    at: &str,
) -> Result<(), Mismatch> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        return Err(mismatch(at, format!("is below {min}")));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        return Err(mismatch(at, format!("is above {max}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"components": {"schemas": {
            "Detail": {"type": "object", "properties": {"detail": {"type": "string"}},
                       "required": ["detail"], "additionalProperties": false},
        }}})
    }

    #[test]
    fn checks_types_keys_and_references() {
        let d = doc();
        let detail = json!({"$ref": "#/components/schemas/Detail"});
        assert!(check(&d, &detail, &json!({"detail": "x"})).is_ok());
        let err = check(&d, &detail, &json!({"detail": 1})).unwrap_err();
        assert_eq!(err.at, "$.detail");
        assert!(check(&d, &detail, &json!({})).is_err());
        assert!(check(&d, &detail, &json!({"detail": "x", "more": 1})).is_err());
        let nullable = json!({"type": ["string", "null"], "maxLength": 2});
        assert!(check(&d, &nullable, &Value::Null).is_ok());
        assert!(check(&d, &nullable, &json!("abc")).is_err());
        let any_of = json!({"anyOf": [{"$ref": "#/components/schemas/Detail"}, {"type": "null"}]});
        assert!(check(&d, &any_of, &Value::Null).is_ok());
        assert!(check(&d, &any_of, &json!(3)).is_err());
        let list = json!({"type": "array", "items": {"type": "integer", "minimum": 0}});
        assert!(check(&d, &list, &json!([0, 2])).is_ok());
        assert_eq!(check(&d, &list, &json!([0, -2])).unwrap_err().at, "$[1]");
        let missing = json!({"$ref": "#/components/schemas/Nope"});
        assert!(check(&d, &missing, &json!(1)).is_err());
    }

    #[test]
    fn answers_must_be_documented_with_their_details() {
        let mut d = doc();
        d["paths"] = json!({"/x": {"get": {"responses": {"403": {"description": "",
            "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Detail"},
                "examples": {"a": {"value": {"detail": "Unauthorized."}}}}}}}}}});
        assert!(check_answer(&d, "/x", "GET", 403, &json!({"detail": "Unauthorized."})).is_ok());
        assert!(check_answer(&d, "/x", "GET", 403, &json!({"detail": "Other"})).is_err());
        assert!(check_answer(&d, "/x", "GET", 404, &json!({"detail": "Unauthorized."})).is_err());
        assert!(check_answer(&d, "/y", "GET", 403, &json!({})).is_err());
    }
}
