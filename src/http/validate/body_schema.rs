//! The schema of a request body model, written from the same fields the
//! validator checks, so that the document and the checks cannot drift.

use serde_json::json;

use super::email::{MAX_STORED_LEN, SPECIAL_USE};
use super::{Kind, Model, URL_MAX_LEN};
use crate::http::schema::Schema;

/// Any text without a NUL character (ECMA-262 regex).
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// The schema of a request body model, from the fields the validator checks:
/// lengths, formats and the required list. Unknown properties are ignored.
pub fn request_body<M: Model>() -> Schema {
    M::FIELDS
        .iter()
        .fold(Schema::object().open(), |object, field| {
            let schema = match field.kind {
                // The validator refuses NUL characters (no store keeps them).
                Kind::Str { min, max } => Schema::string().length(min, max).pattern(NO_NUL),
                Kind::Email => email(),
                Kind::HttpUrl => Schema::string()
                    .format("uri")
                    .length(1, URL_MAX_LEN)
                    .describe("An http or https URL."),
                Kind::Bool => lax_boolean(),
            };
            if field.required {
                object.field(field.name, schema)
            } else {
                object.optional(field.name, schema.nullable())
            }
        })
}

/// Rust's `str::trim` whitespace, spelled out (ECMA `\s` differs slightly).
const SPACE: &str = r"[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*";

/// `word` in any case, as a regular expression.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase()))
        .collect()
}

/// An address as `validate::email` accepts it. The pattern states the rule a
/// generic e-mail format does not: no special-use domain.
fn email() -> Schema {
    let special: Vec<String> = SPECIAL_USE.iter().map(|name| any_case(name)).collect();
    Schema::string()
        .format("email")
        .length(0, MAX_STORED_LEN)
        .pattern(&format!(
            "^(?![\\s\\S]*[@.](?:{})>?{SPACE}$)",
            special.join("|")
        ))
        .describe(&format!(
            "An e-mail address with a dotted domain, not a special-use one ({}); the domain \
             is compared and stored lower-cased. `Name <address>` is read as the address.",
            SPECIAL_USE.join(", ")
        ))
}

/// What a `Bool` field accepts: pydantic's lax booleans, as the validator
/// reads them (`validate::boolean`).
fn lax_boolean() -> Schema {
    let words = "[01]|[tT]([rR][uU][eE])?|[fF]([aA][lL][sS][eE])?|[yY]([eE][sS])?|[nN][oO]?|[oO][nN]|[oO][fF][fF]";
    Schema::any_of([
        Schema::boolean(),
        Schema::typed("number").with("enum", json!([0, 1])),
        Schema::string().pattern(&format!("^{SPACE}({words}){SPACE}$")),
    ])
    .describe(
        "A boolean. As in the old service, `0`/`1` and the strings `true`/`false`, `t`/`f`, \
         `yes`/`no`, `y`/`n`, `on`/`off`, `1`/`0` (any case) are read as booleans too.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::validate::Field;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        name: String,
        url: Option<String>,
        flag: Option<bool>,
    }

    impl Model for Body {
        const FIELDS: &'static [Field] = &[
            Field::email("email"),
            Field::string("name", 3, 50),
            Field::url("url").optional(),
            Field::boolean("flag").optional(),
        ];
    }

    #[test]
    fn request_body_follows_the_fields() {
        let schema = request_body::<Body>().into_value();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["email", "name"]));
        assert!(schema.get("additionalProperties").is_none());
        let props = &schema["properties"];
        assert_eq!(props["email"]["format"], "email");
        assert_eq!(props["email"]["maxLength"], 100);
        assert_eq!(props["name"]["minLength"], 3);
        assert_eq!(props["name"]["maxLength"], 50);
        assert_eq!(props["url"]["type"], json!(["string", "null"]));
        assert_eq!(props["url"]["format"], "uri");
        assert_eq!(props["flag"]["anyOf"][0]["type"], "boolean");
        assert_eq!(
            props["flag"]["anyOf"].as_array().unwrap().len(),
            4,
            "and null"
        );
    }
}
