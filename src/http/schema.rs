//! JSON Schema (the dialect of OpenAPI 3.1) for the API's bodies, so that
//! the OpenAPI document is written from the code it describes:
//!
//! - a request body's schema comes from its model's fields, the very list
//!   the validator checks (`validate::request_body`);
//! - an answer's schema sits next to the type that serialises it
//!   ([`Documented`]), with an example made by serialising a real value, and
//!   the tests check every example against its schema.
//!
//! Imports: nothing of the crate (the validator builds on this, not the
//! other way round).

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Where the document keeps named schemas.
pub const COMPONENTS: &str = "#/components/schemas/";

/// A schema under construction (a JSON object).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema(Map<String, Value>);

impl Schema {
    /// A schema of the JSON type `name`.
    pub fn typed(name: &str) -> Self {
        let mut map = Map::new();
        map.insert("type".into(), Value::String(name.into()));
        Self(map)
    }

    pub fn string() -> Self {
        Self::typed("string")
    }

    pub fn integer() -> Self {
        Self::typed("integer")
    }

    pub fn boolean() -> Self {
        Self::typed("boolean")
    }

    /// Any JSON value.
    pub fn any() -> Self {
        Self(Map::new())
    }

    pub fn array(items: Self) -> Self {
        Self::typed("array").with("items", items.into_value())
    }

    /// A closed object: no properties yet, none other allowed.
    pub fn object() -> Self {
        Self::typed("object")
            .with("properties", Value::Object(Map::new()))
            .with("required", Value::Array(Vec::new()))
            .with("additionalProperties", Value::Bool(false))
    }

    /// An object whose values all follow `values` (a map).
    pub fn map_of(values: Self) -> Self {
        Self::typed("object").with("additionalProperties", values.into_value())
    }

    /// The named schema `name` of the document's components.
    pub fn reference(name: &str) -> Self {
        Self::any().with("$ref", Value::String(format!("{COMPONENTS}{name}")))
    }

    /// The schema of a documented answer type (by reference).
    pub fn of<T: Documented>() -> Self {
        Self::reference(T::NAME)
    }

    /// One of several schemas.
    pub fn any_of(options: impl IntoIterator<Item = Self>) -> Self {
        let options = options.into_iter().map(Self::into_value).collect();
        Self::any().with("anyOf", Value::Array(options))
    }

    /// A required property.
    pub fn field(self, name: &str, schema: Self) -> Self {
        self.property(name, schema, true)
    }

    /// A property that may be absent.
    pub fn optional(self, name: &str, schema: Self) -> Self {
        self.property(name, schema, false)
    }

    fn property(mut self, name: &str, schema: Self, required: bool) -> Self {
        if let Some(Value::Object(properties)) = self.0.get_mut("properties") {
            properties.insert(name.into(), schema.into_value());
        }
        if required && let Some(Value::Array(list)) = self.0.get_mut("required") {
            list.push(Value::String(name.into()));
        }
        self
    }

    /// Accepts properties it does not list (they are ignored).
    pub fn open(mut self) -> Self {
        self.0.remove("additionalProperties");
        self
    }

    /// The value may also be `null`.
    pub fn nullable(mut self) -> Self {
        if let Some(Value::Array(options)) = self.0.get_mut("anyOf") {
            options.push(Self::typed("null").into_value());
            return self;
        }
        match self.0.get("type") {
            Some(Value::String(name)) => {
                let types = json!([name, "null"]);
                self.with("type", types)
            }
            _ => Self::any_of([self, Self::typed("null")]),
        }
    }

    pub fn describe(self, text: &str) -> Self {
        self.with("description", Value::String(text.into()))
    }

    pub fn format(self, format: &str) -> Self {
        self.with("format", Value::String(format.into()))
    }

    /// Length bounds in characters.
    pub fn length(self, min: usize, max: usize) -> Self {
        let with_min = if min > 0 {
            self.with("minLength", json!(min))
        } else {
            self
        };
        with_min.with("maxLength", json!(max))
    }

    pub fn pattern(self, regex: &str) -> Self {
        self.with("pattern", Value::String(regex.into()))
    }

    pub fn range(self, min: i64, max: i64) -> Self {
        self.with("minimum", json!(min)).with("maximum", json!(max))
    }

    pub fn default_value(self, value: Value) -> Self {
        self.with("default", value)
    }

    /// One of these words.
    pub fn with_enum(self, words: &[&str]) -> Self {
        self.with("enum", json!(words))
    }

    /// The value is always exactly this.
    pub fn constant(self, value: Value) -> Self {
        self.with("const", value)
    }

    pub fn examples(self, examples: Vec<Value>) -> Self {
        self.with("examples", Value::Array(examples))
    }

    /// Sets the keyword `key` to `value`.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.into(), value);
        self
    }

    pub fn into_value(mut self) -> Value {
        if matches!(self.0.get("required"), Some(Value::Array(list)) if list.is_empty()) {
            self.0.remove("required");
        }
        Value::Object(self.0)
    }
}

/// An answer type of the API: its schema, written once beside the type, and
/// a value of it, serialised as the example of the schema.
pub trait Documented: Serialize {
    /// Its name under `#/components/schemas`.
    const NAME: &'static str;

    fn schema() -> Schema;

    /// A typical value; the tests check that it fits [`Documented::schema`].
    fn example() -> Self;

    /// The schema with its example, as the document lists it.
    fn component() -> Value
    where
        Self: Sized,
    {
        let example = serde_json::to_value(Self::example()).unwrap_or(Value::Null);
        Self::schema().examples(vec![example]).into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_reference_is_any_of() {
        let schema = Schema::reference("User").nullable().into_value();
        assert_eq!(
            schema,
            json!({"anyOf": [{"$ref": "#/components/schemas/User"}, {"type": "null"}]})
        );
    }
}
