//! What only keycloak mode has: no Keycloak call on the request path,
//! Keycloak's own tokens, and Keycloak outages (moving legacy users across
//! is `import_users`).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Env;
use crate::harness::{Gateway, Options, Relay, env};

/// Calls to Keycloak the gateway has made, from its own `/metrics`.
async fn keycloak_calls(gw: &Gateway) -> u64 {
    keycloak_calls_of(gw, "").await
}

/// The admin-event reader's calls, made in the background (not for a request).
const BACKGROUND: [&str; 2] = [
    "operation=\"admin_events\"",
    "operation=\"service_account_token\"",
];

/// Calls of one operation (all of them but the background's when
/// `operation` is empty).
async fn keycloak_calls_of(gw: &Gateway, operation: &str) -> u64 {
    let text = crate::edge::metrics(gw).await;
    let label = format!("operation=\"{operation}\"");
    text.lines()
        .filter(|l| l.starts_with("authgate_keycloak_requests_total{"))
        .filter(|l| {
            if operation.is_empty() {
                !BACKGROUND.iter().any(|b| l.contains(b))
            } else {
                l.contains(&label)
            }
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn header_alg(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["alg"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_me_makes_no_keycloak_call() {
    let env = Env::keycloak().await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "quiet").await;
    let before = keycloak_calls(gw).await;
    assert!(before > 0, "sign-up and sign-in did reach Keycloak");
    for path in ["/users/me", "/users/me/"].iter().cycle().take(50) {
        assert_eq!(gw.get_bearer(path, &user.access_token).await.status, 200);
    }
    let by_cookie = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .header("cookie", format!("access_token={}", user.access_token)),
        )
        .await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(
        keycloak_calls(gw).await,
        before,
        "no Keycloak call for /users/me"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_token_format_hands_out_keycloaks_tokens() {
    let env = Env::keycloak_with(|o| o.set("TOKEN_FORMAT", "keycloak")).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "kctoken").await;
    assert_eq!(header_alg(&user.access_token), "RS256");
    let me = gw.get_bearer("/users/me", &user.access_token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["id"], user.id);

    // Verified locally: after the first (key-fetching) request, no more calls.
    let before = keycloak_calls(gw).await;
    for _ in 0..20 {
        assert_eq!(
            gw.get_bearer("/users/me/", &user.access_token).await.status,
            200
        );
    }
    assert_eq!(keycloak_calls(gw).await, before);

    // Keycloak's refresh token refreshes through Keycloak.
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let refreshed = reply.json["access_token"].as_str().unwrap();
    assert_eq!(header_alg(refreshed), "RS256");
    assert_eq!(gw.get_bearer("/users/me", refreshed).await.status, 200);

    // Unknown key ids fetch the keys again, but at most once per floor interval.
    let jwks_before = keycloak_calls_of(gw, "jwks").await;
    for i in 0..10 {
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"RS256","typ":"JWT","kid":"unknown-{i}"}}"#
        ));
        let body = user.access_token.split('.').nth(1).unwrap();
        let forged = format!("{header}.{body}.{}", URL_SAFE_NO_PAD.encode([1u8; 256]));
        gw.get_bearer("/users/me", &forged)
            .await
            .assert_detail(403, "Invalid token or expired token.");
    }
    let refetches = keycloak_calls_of(gw, "jwks").await - jwks_before;
    assert!(
        refetches <= 1,
        "{refetches} JWKS fetches for 10 unknown kids"
    );

    // A forged RS256 token (another key) is refused.
    let mut parts: Vec<&str> = user.access_token.split('.').collect();
    let fake_sig = URL_SAFE_NO_PAD.encode([7u8; 256]);
    parts[2] = &fake_sig;
    gw.get_bearer("/users/me", &parts.join("."))
        .await
        .assert_detail(403, "Invalid token or expired token.");

    // Sign-out ends the Keycloak session: its tokens stop working.
    assert_eq!(
        gw.post_bearer("/users/signout", &user.access_token, json!({}))
            .await
            .status,
        200
    );
    gw.get_bearer("/users/me", &user.access_token)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}

/// Keycloak's own tokens, verified in-process, get the access tokens'
/// lifetime ceiling too: the dev realm's live 5 minutes, beyond the 4
/// minutes of a gateway whose access tokens live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_tokens_beyond_the_lifetime_ceiling_are_refused() {
    let env = Env::keycloak_with(|o| o.set("TOKEN_FORMAT", "keycloak")).await;
    let user = env.gw.verified_user(&env.mail, "kcceiling").await;
    assert_eq!(header_alg(&user.access_token), "RS256");
    let exp = crate::harness::claims_of(&user.access_token)["exp"]
        .as_f64()
        .unwrap();
    let iat = crate::harness::claims_of(&user.access_token)["iat"]
        .as_f64()
        .unwrap();
    assert!(exp - iat > 240.0, "the realm's tokens live {} s", exp - iat);
    let tight = env.sibling(|o| o.set("JWT_EXP_TIME_MINUTES", "1")).await;
    for _ in 0..2 {
        tight
            .get_bearer("/users/me", &user.access_token)
            .await
            .assert_detail(403, "Invalid token or expired token.");
    }
    let metrics = crate::edge::metrics(&tight).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("authgate_token_rejections_total{")
                && l.contains(r#"reason="beyond_ceiling""#)
                && l.ends_with(" 2")),
        "{metrics}"
    );
    // A ceiling that reaches them: accepted there too.
    let roomy = env
        .sibling(|o| {
            o.set("JWT_EXP_TIME_MINUTES", "1")
                .set("JWT_EXP_CEILING_MINUTES", "10")
        })
        .await;
    let me = roomy.get_bearer("/users/me", &user.access_token).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        env.gw
            .get_bearer("/users/me", &user.access_token)
            .await
            .status,
        200
    );
}

/// A keycloak-mode gateway that reaches Keycloak through a relay the test
/// controls (cut, hold answers, restore), with `tweak`'s settings.
async fn behind_relay(tweak: impl FnOnce(Options) -> Options) -> (Relay, Env) {
    let kc = url::Url::parse(&env("AUTHGATE_TEST_KEYCLOAK_URL")).unwrap();
    let target = format!("{}:{}", kc.host_str().unwrap(), kc.port().unwrap_or(80))
        .parse()
        .unwrap();
    let relay = Relay::start(target).await;
    let url = format!("http://127.0.0.1:{}", relay.port);
    let env_ = Env::keycloak_with(|o| tweak(o.set("KEYCLOAK_URL", &url))).await;
    (relay, env_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_down_gives_503_quickly_and_recovers() {
    let (relay, env_) = behind_relay(|o| o.set("KEYCLOAK_TIMEOUT_MS", "2000")).await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "kcdown").await;

    relay.cut();
    let started = Instant::now();
    gw.signin(&user.username, &user.password)
        .await
        .assert_detail(503, "Keycloak unavailable");
    let newcomer = crate::harness::TestUser::new("kcdownnew");
    gw.post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Keycloak unavailable");
    gw.get("/ready")
        .await
        .assert_detail(503, "Keycloak unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded: {:?}",
        started.elapsed()
    );
    // The request path does not need Keycloak.
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        200
    );

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.get("/ready").await.status != 200 {
        assert!(Instant::now() < deadline, "recovers by itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.signin(&user.username, &user.password).await.status, 200);
    // Nothing of the refused sign-up was created.
    let reply = gw.post("/users/signup", newcomer.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_is_fetched_once_under_concurrency() {
    let env = Env::keycloak().await;
    let gw = &env.gw;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let http = gw.http.clone();
        let url = gw.url("/users/signup");
        let user = crate::harness::TestUser::new(&format!("burst{i}"));
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&user.signup_body())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    // Eight sign-ups, dozens of Admin API calls, one service-account token.
    assert!(keycloak_calls_of(gw, "create_user").await >= 8);
    assert_eq!(keycloak_calls_of(gw, "service_account_token").await, 1);
}

/// `KEYCLOAK_TIMEOUT_MS` bounds each call; a request that makes several
/// calls in a row to a slow Keycloak (each answering within that bound) is
/// bounded as a whole by `KEYCLOAK_REQUEST_DEADLINE_MS`: the contract's 503,
/// cut by the deadline (as the log says), not the sum of its calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_keycloak_costs_a_request_its_deadline_not_the_sum_of_its_calls() {
    let (relay, env_) = behind_relay(|o| {
        o.set("KEYCLOAK_TIMEOUT_MS", "5000")
            .set("KEYCLOAK_REQUEST_DEADLINE_MS", "2000")
    })
    .await;
    let gw = &env_.gw;

    // Every answer comes 900 ms late: each call is within its timeout, a
    // sign-up's several calls are not within the deadline.
    relay.hold_answers("", Some(Duration::from_millis(900)));
    let newcomer = crate::harness::TestUser::new("kcslow");
    gw.post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Keycloak unavailable");
    let log = gw.log_text();
    assert!(log.contains("the request's deadline passed"), "{log}");

    // Keycloak quick again: the same sign-up goes through.
    relay.hold_answers("", None);
    let reply = gw.post("/users/signup", newcomer.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// A `create_user` whose answer never comes (Keycloak slow just after it
/// came back): the client gets 503, but Keycloak created the user, which
/// no registry row names. The same sign-up again succeeds, and leaves one
/// Keycloak user, never an address that can never sign up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_whose_create_timed_out_converges_on_its_retry() {
    let (relay, env_) = behind_relay(|o| o.set("KEYCLOAK_TIMEOUT_MS", "1500")).await;
    let gw = &env_.gw;
    let admin = crate::kc_admin::KcAdmin::connect().await;

    relay.hold_answers(
        "POST /admin/realms/authgate/users HTTP",
        Some(Duration::MAX),
    );
    let newcomer = crate::harness::TestUser::new("kcorphan");
    gw.post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Keycloak unavailable");
    let by_name = format!("/users?exact=true&username={}", newcomer.username);
    let mut orphan = Value::Null;
    for _ in 0..100 {
        orphan = admin.get(&by_name).await;
        if orphan.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orphan_id = orphan[0]["id"]
        .as_str()
        .expect("Keycloak created the user")
        .to_string();

    relay.hold_answers("", None);
    let reply = gw.post("/users/signup", newcomer.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let users = admin.get(&by_name).await;
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
    assert_ne!(users[0]["id"].as_str(), Some(orphan_id.as_str()));
}

/// The record of an abandoned sign-up outlives the replica that made it: a
/// gateway killed right after the failed `create_user` (before any look of
/// its own) leaves the Keycloak user behind, and the next gateway on the
/// same database removes it at its start-up sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_sign_up_is_removed_after_a_restart() {
    let (relay, env_) = behind_relay(|o| o.set("KEYCLOAK_TIMEOUT_MS", "1500")).await;
    let admin = crate::kc_admin::KcAdmin::connect().await;

    relay.hold_answers(
        "POST /admin/realms/authgate/users HTTP",
        Some(Duration::MAX),
    );
    let newcomer = crate::harness::TestUser::new("kcrestart");
    env_.gw
        .post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Keycloak unavailable");
    // Killed before its first look (one second after the failure).
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &env_.gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let by_name = format!("/users?exact=true&username={}", newcomer.username);
    let mut orphan = Value::Null;
    for _ in 0..100 {
        orphan = admin.get(&by_name).await;
        if orphan.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        orphan[0]["id"].is_string(),
        "Keycloak created the user: {orphan}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        admin.get(&by_name).await.as_array().map(Vec::len),
        Some(1),
        "nobody removed it while no gateway ran"
    );

    relay.hold_answers("", None);
    let _next = Gateway::start(env_.gw.options.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let users = admin.get(&by_name).await;
        if users.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted gateway did not remove {users}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Nothing of an outage lingers in the gateway (admin token, JWKS, pooled
/// connections, a back-off): the first requests once Keycloak is reachable
/// again succeed, on the first or second try, without waiting for `/ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_requests_after_keycloak_returns_succeed() {
    let (relay, env_) = behind_relay(|o| o.set("KEYCLOAK_TIMEOUT_MS", "2000")).await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "kcback").await;

    relay.cut();
    let newcomer = crate::harness::TestUser::new("kcbacknew");
    for _ in 0..3 {
        gw.signin(&user.username, &user.password)
            .await
            .assert_detail(503, "Keycloak unavailable");
        gw.post("/users/signup", newcomer.signup_body())
            .await
            .assert_detail(503, "Keycloak unavailable");
        gw.post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    }

    relay.restore().await;
    let mut signin = gw.signin(&user.username, &user.password).await;
    if signin.status != 200 {
        signin = gw.signin(&user.username, &user.password).await;
    }
    assert_eq!(signin.status, 200, "{}", signin.text);
    let mut signup = gw.post("/users/signup", newcomer.signup_body()).await;
    if signup.status != 200 {
        signup = gw.post("/users/signup", newcomer.signup_body()).await;
    }
    assert_eq!(signup.status, 200, "{}", signup.text);
}

/// The same, without a retry: the gateway removes the user Keycloak created
/// for the failed sign-up by itself, once Keycloak answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_of_a_sign_up_whose_create_timed_out_is_removed_in_the_background() {
    let (relay, env_) = behind_relay(|o| o.set("KEYCLOAK_TIMEOUT_MS", "1500")).await;
    let gw = &env_.gw;
    let admin = crate::kc_admin::KcAdmin::connect().await;

    relay.hold_answers(
        "POST /admin/realms/authgate/users HTTP",
        Some(Duration::MAX),
    );
    let newcomer = crate::harness::TestUser::new("kcgone");
    gw.post("/users/signup", newcomer.signup_body())
        .await
        .assert_detail(503, "Keycloak unavailable");
    relay.hold_answers("", None);
    let by_name = format!("/users?exact=true&username={}", newcomer.username);
    let mut seen = false;
    let mut gone = false;
    // The looks come after 1, 2, 4, 8 ... s: the first ones are enough.
    for _ in 0..300 {
        let users = admin.get(&by_name).await;
        let present = users.as_array().is_some_and(|a| !a.is_empty());
        seen |= present;
        if seen && !present {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "Keycloak created the user");
    assert!(gone, "the user is removed:\n{}", gw.log_text());
    let reply = gw.post("/users/signup", newcomer.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
