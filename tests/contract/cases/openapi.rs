//! `/docs/json` and `/docs`: the OpenAPI document lists every route of the
//! router, and the live answers fit what it says (status documented, body
//! fits the schema, `detail` among the documented texts).
//!
//! The cases run against both backends; they register their own tests at
//! the bottom of this file.

use authgate::api::docs::conform::check_answer;
use authgate::api::docs::template;
use authgate::http::endpoints::PATHS;
use serde_json::{Value, json};

use crate::Env;
use crate::harness::{Reply, TestUser};

/// Asserts that an answer of `method template` is documented and fits.
fn fits(doc: &Value, method: &str, template: &str, reply: &Reply) {
    if let Err(err) = check_answer(doc, template, method, reply.status, &reply.json) {
        panic!(
            "{method} {template} answered {} {}: {err}",
            reply.status, reply.text
        );
    }
}

pub async fn document_lists_every_route(env: &Env) {
    let gw = &env.gw;
    let reply = gw.get("/docs/json").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = &reply.json;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Authgate Test");
    assert_eq!(doc["info"]["version"], "9.9.9");
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), PATHS.len());
    for (path, route) in PATHS {
        for method in route.methods() {
            if *method == http::Method::HEAD {
                continue;
            }
            let op = &doc["paths"][template(path)][method.as_str().to_ascii_lowercase()];
            assert!(op["responses"].is_object(), "{method} {path} undocumented");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["cookieAuth"]["name"], "access_token");
    fits(doc, "GET", "/docs/json", &reply);

    let head = gw.send(gw.http.head(gw.url("/docs/json"))).await;
    assert_eq!(head.status, 200);
    assert!(head.text.is_empty());

    let page = gw.get("/docs").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    assert!(page.text.contains("docs/json"));
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!page.text.contains(external), "the page loads {external}");
    }
    let policy = page.header("content-security-policy").expect("CSP");
    assert!(policy.starts_with("default-src 'none'"), "{policy}");

    // The router's rules hold for the new paths too.
    let twin = gw.get("/docs/").await;
    assert_eq!(twin.status, 307);
    assert!(twin.header("location").unwrap().ends_with("/docs"));
    gw.get("/docs/nope").await.assert_detail(404, "Not Found");
    let wrong = gw.post("/docs/json", json!({})).await;
    wrong.assert_detail(405, "Method Not Allowed");
}

pub async fn live_answers_fit_the_document(env: &Env) {
    let gw = &env.gw;
    let doc = gw.get("/docs/json").await.json;
    let doc = &doc;

    for path in ["/", "/health", "/ready", "/metrics"] {
        fits(doc, "GET", path, &gw.get(path).await);
    }

    // Sign-up: 422, 200, 400; sign-in: unverified 200, wrong password 401.
    fits(
        doc,
        "POST",
        "/users/signup",
        &gw.post("/users/signup", json!({})).await,
    );
    let fresh = TestUser::new("docfresh");
    let reply = gw.post("/users/signup", fresh.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    fits(doc, "POST", "/users/signup", &reply);
    let again = gw.post("/users/signup", fresh.signup_body()).await;
    assert_eq!(again.status, 400);
    fits(doc, "POST", "/users/signup", &again);
    let unverified = gw.signin(&fresh.username, &fresh.password).await;
    assert_eq!(unverified.json["access_token"], Value::Null);
    fits(doc, "POST", "/users/signin", &unverified);
    let wrong = gw.signin(&fresh.username, "not the password").await;
    assert_eq!(wrong.status, 401);
    fits(doc, "POST", "/users/signin", &wrong);
    let big = "x".repeat(70_000);
    let too_large = gw
        .post("/users/signin", json!({"username": big, "password": "p"}))
        .await;
    assert_eq!(too_large.status, 413);
    fits(doc, "POST", "/users/signin", &too_large);

    // Token required: 403 without a token.
    for path in ["/users/me", "/users/me/", "/users/"] {
        let refused = gw.get(path).await;
        assert_eq!(refused.status, 403);
        fits(doc, "GET", path, &refused);
    }

    let user = gw.verified_user(&env.mail, "docs").await;
    let token = user.access_token.as_str();
    for path in ["/users/me", "/users/me/", "/users/", "/users/?limit=1"] {
        let reply = gw.get_bearer(path, token).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        fits(doc, "GET", path.split('?').next().unwrap_or(path), &reply);
    }
    let bad_query = gw.get_bearer("/users/?limit=1001", token).await;
    assert_eq!(bad_query.status, 422);
    fits(doc, "GET", "/users/", &bad_query);
    let one = "/users/{user_id}";
    fits(
        doc,
        "GET",
        one,
        &gw.get_bearer(&format!("/users/{}", user.id), token).await,
    );
    let missing = gw.get_bearer("/users/2147483000", token).await;
    assert_eq!(missing.status, 404);
    fits(doc, "GET", one, &missing);
    let not_int = gw.get_bearer("/users/abc", token).await;
    assert_eq!(not_int.status, 422);
    fits(doc, "GET", one, &not_int);

    let refreshed = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    fits(doc, "POST", "/users/refresh-token", &refreshed);
    let refused = gw
        .post("/users/refresh-token", json!({"refresh_token": "nope"}))
        .await;
    assert_eq!(refused.status, 401);
    fits(doc, "POST", "/users/refresh-token", &refused);

    for (path, body, status) in [
        (
            "/users/resend-verification",
            json!({"email": user.email}),
            400,
        ),
        ("/users/forgot-password", json!({"email": user.email}), 200),
        (
            "/users/reset-password",
            json!({"token": "x", "new_password": "12345678"}),
            400,
        ),
        ("/users/verify-email", json!({"token": "x"}), 400),
    ] {
        let reply = gw.post(path, body).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
        fits(doc, "POST", path, &reply);
    }

    // Not an admin: 403 with the documented text.
    let create = gw
        .post_bearer(
            "/users/",
            token,
            json!({"username": "someone", "email": "someone@example.com", "password": "12345678"}),
        )
        .await;
    assert_eq!(create.status, 403);
    fits(doc, "POST", "/users/", &create);
    let test_mail = gw
        .post_bearer("/email/email/test", token, json!({"email": user.email}))
        .await;
    assert_eq!(test_mail.status, 403);
    fits(doc, "POST", "/email/email/test", &test_mail);

    let own = format!("/users/{}", user.id);
    let updated = gw
        .send(
            gw.http
                .put(gw.url(&own))
                .bearer_auth(token)
                .json(&json!({})),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    fits(doc, "PUT", one, &updated);

    let limited = env
        .sibling(|o| o.set("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "1/minute"))
        .await;
    limited.signin(&user.username, "wrong").await;
    let too_many = limited.signin(&user.username, "wrong").await;
    assert_eq!(too_many.status, 429);
    fits(doc, "POST", "/users/signin", &too_many);

    let signed_out = gw
        .send(gw.http.post(gw.url("/users/signout")).bearer_auth(token))
        .await;
    assert_eq!(signed_out.status, 200);
    fits(doc, "POST", "/users/signout", &signed_out);
    let other = gw.verified_user(&env.mail, "docsdel").await;
    let deleted = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{}", other.id)))
                .bearer_auth(&other.access_token),
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    fits(doc, "DELETE", one, &deleted);
}
