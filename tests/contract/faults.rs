//! A database that goes away and comes back. Between authgate and the real
//! PostgreSQL sits a TCP relay the test can cut, as a network fault would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, Mailbox, Options, Relay, TestDb, env};

fn pg_addr(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_gives_503_quickly_and_recovers() {
    let db = TestDb::create().await;
    let relay = Relay::start(pg_addr(&env("AUTHGATE_TEST_DATABASE_URL"))).await;
    let mut relayed = url::Url::parse(&db.url).unwrap();
    relayed.set_port(Some(relay.port)).unwrap();
    let gw =
        Gateway::start(Options::native(relayed.as_str()).set("DATABASE_TIMEOUT_MS", "1000")).await;
    let mail = Mailbox::plain();
    let user = gw.verified_user(&mail, "outage").await;

    relay.cut();
    let started = Instant::now();
    let ready = gw.get("/ready").await;
    ready.assert_detail(503, "Database unavailable");
    gw.signin(&user.username, &user.password)
        .await
        .assert_detail(503, "Database unavailable");
    // `/users/me` may answer from memory for a few seconds (the user read
    // and the session found live recently); after that it needs the store.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    gw.get_bearer("/users/me", &user.access_token)
        .await
        .assert_detail(503, "Database unavailable");
    let newcomer = crate::harness::TestUser::new("during");
    gw.post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Database unavailable");
    // What needs no database still answers.
    assert_eq!(gw.get("/health").await.status, 200);
    gw.post("/users/refresh-token", json!({"refresh_token": "junk"}))
        .await
        .assert_detail(401, "Invalid refresh token");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.get("/ready").await.status != 200 {
        assert!(Instant::now() < deadline, "recovers by itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.signin(&user.username, &user.password).await.status, 200);
    // Nothing of the refused sign-up was written: it can sign up now.
    assert_eq!(
        gw.post("/users/signup", newcomer.signup_body())
            .await
            .status,
        200
    );
}
