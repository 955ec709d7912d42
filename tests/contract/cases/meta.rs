//! `/`, health, readiness, and the router's 404 / 405 / 307 answers.

use serde_json::json;

use crate::Env;

pub async fn root_health_ready(env: &Env) {
    let gw = &env.gw;
    let root = gw.get("/").await;
    assert_eq!(root.status, 200);
    assert_eq!(root.json["name"], "Authgate Test");
    assert_eq!(root.json["version"], "9.9.9");
    assert!(root.json["contact"].is_object());
    assert_eq!(
        root.header("content-type").as_deref(),
        Some("application/json")
    );

    let health = gw.get("/health").await;
    assert_eq!(
        (health.status, health.json.clone()),
        (200, json!({"status": "ok"}))
    );
    let ready = gw.get("/ready").await;
    assert_eq!(
        (ready.status, ready.json.clone()),
        (200, json!({"status": "ready"}))
    );

    let head = gw.send(gw.http.head(gw.url("/health"))).await;
    assert_eq!(head.status, 200);
    assert!(head.text.is_empty());
}

pub async fn routing_like_starlette(env: &Env) {
    let gw = &env.gw;
    gw.get("/nope").await.assert_detail(404, "Not Found");
    gw.get("/users/signin/extra/deep")
        .await
        .assert_detail(404, "Not Found");

    let wrong = gw.get("/users/signin").await;
    wrong.assert_detail(405, "Method Not Allowed");
    assert_eq!(wrong.header("allow").as_deref(), Some("POST"));
    gw.send(gw.http.delete(gw.url("/users/me")))
        .await
        .assert_detail(405, "Method Not Allowed");

    let redirect = gw.send(gw.http.get(gw.url("/users?offset=1"))).await;
    assert_eq!(redirect.status, 307);
    let location = redirect.header("location").unwrap();
    assert!(location.ends_with("/users/?offset=1"), "{location}");

    let redirect = gw
        .send(gw.http.post(gw.url("/users/signin/")).json(&json!({})))
        .await;
    assert_eq!(redirect.status, 307);
    assert!(
        redirect
            .header("location")
            .unwrap()
            .ends_with("/users/signin")
    );
}
