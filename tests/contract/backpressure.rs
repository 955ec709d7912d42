//! A sign-in storm is shed, not queued: with one hashing thread and one
//! waiting place, a burst of concurrent sign-ins and sign-ups gets some
//! 503 `{"detail": ...}` answers with `Retry-After` (never a 500), while
//! `/health` and `/users/me` with a valid token keep answering 200; once the
//! burst is over, sign-ins work again. On both stores of the native backend
//! (keycloak mode hashes nothing itself: Keycloak checks the passwords).

use serde_json::{Value, json};

use crate::edge::{metric, metrics};
use crate::harness::{Gateway, Mailbox, Options, TempDir, TestUser};
use crate::{Env, Store};

/// Enough rounds that a hash takes a good part of a burst's arrival time
/// even on a fast machine (the suite's default is kept small for speed).
const ROUNDS: &str = "300000";
/// Requests in flight at once, per wave.
const BURST: usize = 24;
/// Waves at most, until one saw a refusal.
const WAVES: usize = 10;
const BUSY: &str = "Server busy, retry later";

fn tiny_queue(options: Options) -> Options {
    options
        .set("PASSWORD_PBKDF2_ROUNDS", ROUNDS)
        .set("HASHING_THREADS", "1")
        .set("HASHING_QUEUE_MAX", "1")
}

/// One answer of the burst: its status, and what a 503 must carry.
fn check_answer(what: &str, status: u16, retry_after: Option<&str>, body: &Value) {
    match status {
        200 => {}
        503 => {
            let seconds: u64 = retry_after
                .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"))
                .parse()
                .unwrap_or_else(|_| panic!("{what}: Retry-After {retry_after:?}"));
            assert!(seconds >= 1, "{what}: Retry-After {seconds}");
            assert_eq!(body, &json!({ "detail": BUSY }), "{what}");
        }
        other => panic!("{what}: {other} {body}"),
    }
}

async fn sheds_a_storm_and_recovers(env: Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "storm").await;

    let mut refused = 0;
    let mut served = 0;
    for wave in 0..WAVES {
        let burst: Vec<_> = (0..BURST)
            .map(|i| {
                let http = gw.http.clone();
                let (url, body) = if i % 3 == 2 {
                    (
                        gw.url("/users/signup"),
                        TestUser::new("storm").signup_body(),
                    )
                } else {
                    (
                        gw.url("/users/signin"),
                        json!({ "username": user.username, "password": user.password }),
                    )
                };
                tokio::spawn(async move {
                    let resp = http.post(url).json(&body).send().await.unwrap();
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    (status, retry_after, body)
                })
            })
            .collect();

        // While the burst is in flight: the cheap routes are not behind it.
        let health = gw.get("/health").await;
        assert_eq!(health.status, 200, "/health: {}", health.text);
        let me = gw.get_bearer("/users/me", &user.access_token).await;
        assert_eq!(me.status, 200, "/users/me: {}", me.text);
        assert_eq!(me.json["id"], user.id);

        for (i, request) in burst.into_iter().enumerate() {
            let (status, retry_after, body) = request.await.unwrap();
            check_answer(
                &format!("wave {wave}, request {i}"),
                status,
                retry_after.as_deref(),
                &body,
            );
            if status == 503 {
                refused += 1;
            } else {
                served += 1;
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "no refusal in {WAVES} waves of {BURST}");
    assert!(served > 0, "nothing served");

    // The burst is over: the queue is empty and sign-ins are served again.
    let again = gw.signin(&user.username, &user.password).await;
    assert_eq!(again.status, 200, "{}", again.text);
    let text = metrics(gw).await;
    assert_eq!(
        metric(&text, "authgate_hashing_refusals_total{reason=\"full\"}")
            + metric(&text, "authgate_hashing_refusals_total{reason=\"wait\"}"),
        f64::from(refused),
        "{text}"
    );
    assert_eq!(metric(&text, "authgate_hashing_queue_depth "), 0.0);
    assert!(metric(&text, "authgate_hashing_queue_wait_seconds_count ") >= f64::from(served));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_shed_with_503_and_retry_after_on_postgres() {
    sheds_a_storm_and_recovers(Env::native_with(tiny_queue).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_shed_with_503_and_retry_after_on_the_embedded_store() {
    let dir = TempDir::new("authgate-backpressure");
    let gw = Gateway::start(tiny_queue(Options::embedded(dir.path()))).await;
    sheds_a_storm_and_recovers(Env {
        gw,
        store: Store::Embedded(dir),
        mail: Mailbox::plain(),
    })
    .await;
}
