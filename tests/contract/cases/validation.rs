//! FastAPI-shaped 422 answers: one entry per problem, in the model's field order.

use serde_json::{Value, json};

use crate::Env;
use crate::harness::TestUser;

const PYDANTIC: &str = "https://errors.pydantic.dev/2.10/v/";

fn entry(kind: &str, loc: Value, msg: &str, input: Value) -> Value {
    json!({ "type": kind, "loc": loc, "msg": msg, "input": input, "url": format!("{PYDANTIC}{kind}") })
}

pub async fn signup_validation_shapes(env: &Env) {
    let gw = &env.gw;

    // No body at all.
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signup"))
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.json,
        json!({"detail": [entry("missing", json!(["body"]), "Field required", json!(null))]})
    );

    // Missing fields, in model order, with the whole body as input.
    let body = json!({"password": "short"});
    let reply = gw.post("/users/signup", body.clone()).await;
    assert_eq!(reply.status, 422);
    // ctx comes before url in pydantic's entries.
    let too_short = json!({
        "type": "string_too_short", "loc": ["body", "password"],
        "msg": "String should have at least 8 characters", "input": "short",
        "ctx": {"min_length": 8}, "url": format!("{PYDANTIC}string_too_short")
    });
    assert_eq!(
        reply.json,
        json!({"detail": [
            entry("missing", json!(["body", "email"]), "Field required", body.clone()),
            entry("missing", json!(["body", "username"]), "Field required", body.clone()),
            too_short,
        ]})
    );
    assert_eq!(
        serde_json::to_string(&reply.json["detail"][2]).unwrap(),
        serde_json::to_string(&json!({
            "type": "string_too_short", "loc": ["body", "password"],
            "msg": "String should have at least 8 characters", "input": "short",
            "ctx": {"min_length": 8}, "url": format!("{PYDANTIC}string_too_short")
        }))
        .unwrap(),
        "key order"
    );

    // Bad e-mail (value_error has no url), short username, bad URL.
    let reply = gw
        .post(
            "/users/signup",
            json!({"email": "not-an-email", "username": "ab", "password": "12345678", "verification_url": "nope"}),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    let detail = reply.json["detail"].as_array().unwrap();
    assert_eq!(detail.len(), 3);
    assert_eq!(detail[0]["type"], "value_error");
    assert_eq!(detail[0]["loc"], json!(["body", "email"]));
    assert!(
        detail[0]["msg"]
            .as_str()
            .unwrap()
            .starts_with("value is not a valid email address: ")
    );
    assert!(detail[0]["ctx"]["reason"].is_string());
    assert!(detail[0].get("url").is_none());
    assert_eq!(detail[1]["type"], "string_too_short");
    assert_eq!(detail[1]["msg"], "String should have at least 3 characters");
    assert_eq!(detail[1]["ctx"], json!({"min_length": 3}));
    assert_eq!(detail[2]["type"], "url_parsing");
    assert!(
        detail[2]["msg"]
            .as_str()
            .unwrap()
            .starts_with("Input should be a valid URL, ")
    );
    assert!(detail[2]["ctx"]["error"].is_string());

    // Wrong types.
    let reply = gw
        .post(
            "/users/signup",
            json!({"email": 5, "username": ["x"], "password": true}),
        )
        .await;
    let kinds: Vec<&str> = reply.json["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["string_type", "string_type", "string_type"]);
    assert_eq!(
        reply.json["detail"][0]["msg"],
        "Input should be a valid string"
    );

    // Unknown fields are ignored.
    let user = TestUser::new("extra");
    let mut body = user.signup_body();
    body["role"] = json!("admin");
    assert_eq!(gw.post("/users/signup", body).await.status, 200);
}

pub async fn bodies_that_are_not_json_objects(env: &Env) {
    let gw = &env.gw;
    // JSON, but not an object.
    for body in [json!([1, 2]), json!("text"), json!(12)] {
        let reply = gw.post("/users/signin", body.clone()).await;
        assert_eq!(
            reply.json,
            json!({"detail": [entry(
                "model_attributes_type", json!(["body"]),
                "Input should be a valid dictionary or object to extract fields from", body
            )]})
        );
    }
    // Form-encoded.
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("username=a&password=b"),
        )
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json["detail"][0]["type"], "model_attributes_type");
    assert_eq!(reply.json["detail"][0]["input"], "username=a&password=b");

    // Malformed JSON: json_invalid at the offset of the error.
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("content-type", "application/json")
                .body("{\"username\": }"),
        )
        .await;
    assert_eq!(reply.status, 422);
    let entry = &reply.json["detail"][0];
    assert_eq!(entry["type"], "json_invalid");
    assert_eq!(entry["loc"], json!(["body", 13]));
    assert_eq!(entry["msg"], "JSON decode error");
    assert_eq!(entry["input"], json!({}));
    assert!(entry["ctx"]["error"].is_string());
    assert!(entry.get("url").is_none());
}

pub async fn over_long_fields_are_422_not_500(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("long");
    let mut body = user.signup_body();
    body["username"] = json!("u".repeat(51));
    let reply = gw.post("/users/signup", body).await;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json["detail"][0]["type"], "string_too_long");
    assert_eq!(
        reply.json["detail"][0]["msg"],
        "String should have at most 50 characters"
    );
    assert_eq!(reply.json["detail"][0]["ctx"], json!({"max_length": 50}));

    let mut body = user.signup_body();
    body["password"] = json!("p".repeat(129));
    let reply = gw.post("/users/signup", body).await;
    assert_eq!(reply.json["detail"][0]["ctx"], json!({"max_length": 128}));

    // Longer than the legacy column (varchar(100)), though a valid address.
    let mut body = user.signup_body();
    body["email"] = json!(format!("{}@{}.example.com", "a".repeat(60), "b".repeat(40)));
    let reply = gw.post("/users/signup", body).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.json["detail"][0]["loc"], json!(["body", "email"]));

    // Nothing was written by the refused requests.
    let reply = gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Headers too long for the device-session columns are cut, not refused.
    let verified = gw.verified_user(&env.mail, "ua").await;
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("user-agent", "x".repeat(2000))
                .header("sec-ch-ua", "y".repeat(500))
                .header("sec-ch-ua-platform", "z".repeat(500))
                .json(&json!({"username": verified.username, "password": verified.password})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

pub async fn signin_refresh_and_reset_validation(env: &Env) {
    let gw = &env.gw;
    let reply = gw.post("/users/signin", json!({"username": "x"})).await;
    assert_eq!(reply.json["detail"][0]["loc"], json!(["body", "password"]));
    assert_eq!(reply.json["detail"][0]["type"], "missing");

    // The refresh token is read from the body only: a cookie alone is a 422.
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/refresh-token"))
                .header("cookie", "refresh_token=abc"),
        )
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);

    let reply = gw
        .post(
            "/users/reset-password",
            json!({"token": "x", "new_password": "short"}),
        )
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.json["detail"][0]["loc"],
        json!(["body", "new_password"])
    );

    let reply = gw
        .post("/users/forgot-password", json!({"email": "nobody"}))
        .await;
    assert_eq!(reply.json["detail"][0]["type"], "value_error");
    let reply = gw.post("/users/resend-verification", json!({})).await;
    assert_eq!(reply.json["detail"][0]["loc"], json!(["body", "email"]));
    let reply = gw
        .post(
            "/users/verify-email",
            json!({"token": "x", "redirect_url": "ftp://x.example"}),
        )
        .await;
    assert_eq!(reply.json["detail"][0]["type"], "url_scheme");
}

pub async fn oversized_body_is_413(env: &Env) {
    let gw = &env.gw;
    let huge = format!(
        "{{\"username\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(200_000)
    );
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    reply.assert_detail(413, "Request body too large");
    // The server is still fine afterwards.
    assert_eq!(gw.get("/health").await.status, 200);
}
