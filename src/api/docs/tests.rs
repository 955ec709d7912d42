use std::collections::HashSet;

use http::Method;
use serde_json::{Value, json};

use super::conform::check;
use super::operations::operation;
use super::*;

fn doc() -> Value {
    let contact = vec![("email".to_string(), "ops@example.com".to_string())];
    document(&Info {
        title: "Test",
        version: "1.2.3",
        contact: &contact,
    })
}

/// Every `(path, method)` the router answers, HEAD aside.
fn routed() -> Vec<(&'static str, Endpoint, Method)> {
    PATHS
        .iter()
        .flat_map(|(path, route)| {
            route
                .methods()
                .iter()
                .filter(|m| **m != Method::HEAD)
                .map(move |m| (*path, *route, m.clone()))
        })
        .collect()
}

#[test]
fn every_method_of_every_path_is_documented() {
    let doc = doc();
    for (path, route, method) in routed() {
        assert!(
            operation(route, &method).is_some(),
            "{method} {path} ({route:?}) has no operation in docs/operations.rs"
        );
        let op = &doc["paths"][template(path)][method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from the document");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3')),
            "{method} {path} documents no success (2xx, or a 3xx redirect)"
        );
    }
    // HEAD is never an operation of its own: every GET answers it.
    for (path, route) in PATHS {
        assert!(operation(*route, &Method::HEAD).is_none(), "{path}");
    }
}

#[test]
fn nothing_is_documented_that_the_router_refuses() {
    let doc = doc();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), PATHS.len());
    for (path, item) in paths {
        let route = PATHS
            .iter()
            .find(|(p, _)| template(p) == *path)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("{path} is not a route"));
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            assert!(
                route.methods().contains(&method),
                "{method} {path} is documented but answered 405"
            );
        }
    }
}

#[test]
fn operation_ids_are_unique() {
    let doc = doc();
    let mut ids = HashSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "duplicate operationId {id}");
        }
    }
}

#[test]
fn an_answer_is_described_once() {
    for (path, route, method) in routed() {
        let Some(op) = operation(route, &method) else {
            continue;
        };
        let mut statuses: Vec<u16> = op.answers.iter().map(|a| a.status).collect();
        let has_params = checked_params(path) || !op.query.is_empty();
        statuses.extend(shared_answers(&op, has_params).iter().map(|a| a.status));
        let unique: HashSet<u16> = statuses.iter().copied().collect();
        assert_eq!(
            unique.len(),
            statuses.len(),
            "{method} {path}: {statuses:?}"
        );
    }
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_schema_is_used() {
    let doc = doc();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    for r in &found {
        assert!(resolve(&doc, r).is_some(), "unresolved {r}");
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let r = format!("{COMPONENTS}{name}");
        assert!(found.contains(&r), "schema {name} is never used");
    }
}

#[test]
fn examples_fit_their_schemas() {
    let doc = doc();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut checked = 0;
    for (name, schema) in schemas {
        for example in schema["examples"].as_array().into_iter().flatten() {
            check(&doc, schema, example).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        }
    }
    assert!(checked >= 12, "answer types have examples");
    // The detail texts listed for each answer fit the Detail schema.
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for answer in op["responses"].as_object().unwrap().values() {
                let media = &answer["content"]["application/json"];
                for example in media["examples"].as_object().into_iter().flatten() {
                    check(&doc, &media["schema"], &example.1["value"]).unwrap();
                }
            }
        }
    }
}

#[test]
fn security_follows_the_access_rule() {
    let doc = doc();
    let me = &doc["paths"]["/users/me"]["get"];
    assert_eq!(
        me["security"],
        json!([{ "bearerAuth": [] }, { "cookieAuth": [] }])
    );
    let texts: Vec<&str> = me["responses"]["403"]["content"]["application/json"]["examples"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(texts, ["Unauthorized.", "Invalid token or expired token."]);
    let create = &doc["paths"]["/users/"]["post"]["responses"]["403"];
    assert!(create.to_string().contains("Not enough permissions"));
    assert!(
        doc["paths"]["/users/signin"]["post"]
            .get("security")
            .is_none()
    );
    let cookie = &doc["components"]["securitySchemes"]["cookieAuth"];
    assert_eq!(cookie["in"], "cookie");
    assert_eq!(cookie["name"], ACCESS_COOKIE);
}

#[test]
fn bodies_parameters_and_shared_answers() {
    let doc = doc();
    assert_eq!(doc["openapi"], OPENAPI_VERSION);
    assert_eq!(doc["info"]["title"], "Test");
    assert_eq!(doc["info"]["contact"]["email"], "ops@example.com");
    let signup = &doc["paths"]["/users/signup"]["post"];
    assert_eq!(
        signup["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SignupBody"
    );
    let body = &doc["components"]["schemas"]["SignupBody"];
    assert_eq!(body["required"], json!(["email", "username", "password"]));
    assert_eq!(body["properties"]["username"]["minLength"], 3);
    assert_eq!(body["properties"]["password"]["maxLength"], 128);
    let statuses: Vec<&str> = signup["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(statuses, ["200", "400", "413", "422", "429", "503"]);
    assert!(signup["responses"]["429"]["headers"]["Retry-After"]["required"] == true);

    let list = &doc["paths"]["/users/"]["get"]["parameters"];
    assert_eq!(list[0]["name"], "offset");
    assert_eq!(list[1]["schema"]["maximum"], 1000);
    assert_eq!(list[1]["schema"]["default"], 100);
    let user = &doc["paths"]["/users/{user_id}"]["delete"]["parameters"][0];
    assert_eq!(
        (user["name"].as_str(), user["in"].as_str()),
        (Some("user_id"), Some("path"))
    );
    let health = doc["paths"]["/health"]["get"]["responses"]
        .as_object()
        .unwrap();
    assert_eq!(health.keys().collect::<Vec<_>>(), ["200"]);
    assert!(
        doc["paths"]["/users/me/"]["get"]["operationId"]
            != doc["paths"]["/users/me"]["get"]["operationId"]
    );
}
