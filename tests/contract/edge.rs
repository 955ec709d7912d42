//! The gateway edge: forwarding to real upstream servers, policies,
//! identity headers, upstream failures, rate limits (in-process and through
//! a real Redis), client IPs behind trusted proxies, metrics, shutdown.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Env;
use crate::harness::{Gateway, Relay, env};
use crate::upstream::Upstream;

/// Writes a routes file and returns its path.
pub(crate) fn routes_file(toml: &str) -> String {
    let path = std::env::temp_dir().join(format!("authgate-routes-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, toml).unwrap();
    path.to_string_lossy().into_owned()
}

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Edge {
    env: Env,
    a: Upstream,
    b: Upstream,
}

async fn edge() -> Edge {
    edge_with(|o| o).await
}

async fn edge_with(tweak: impl FnOnce(crate::harness::Options) -> crate::harness::Options) -> Edge {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{a}"]
        policy = "public"

        [[routes]]
        prefix = "/api"
        upstreams = ["{a}", "{b}"]
        policy = "authenticated"

        [[routes]]
        prefix = "/admin"
        upstreams = ["{a}"]
        policy = "role:admin"

        [[routes]]
        prefix = "/dead"
        upstreams = ["127.0.0.1:{dead}"]

        [[routes]]
        prefix = "/impatient"
        upstreams = ["{a}"]
        read_timeout_ms = 300

        [[routes]]
        prefix = "/limited"
        upstreams = ["{a}"]
        rate_limit = "3/minute"
        "#,
        a = a.host_port(),
        b = b.host_port(),
        dead = dead_port(),
    ));
    let env = Env::native_with(|o| tweak(o.set("ROUTES_FILE", &routes))).await;
    Edge { env, a, b }
}

pub(crate) async fn metrics(gw: &Gateway) -> String {
    gw.http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric line (exact labels), 0 when absent.
pub(crate) fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_requests_untouched_and_streams() {
    let edge = edge().await;
    let gw = &edge.env.gw;

    let reply = gw.get("/pub/echo?x=1&y=two").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["upstream"], "a");
    assert_eq!(reply.json["method"], "GET");
    assert_eq!(reply.json["path"], "/pub/echo");
    assert_eq!(reply.json["query"], "x=1&y=two");
    let request_id = reply.header("x-request-id").expect("request id returned");
    assert_eq!(reply.json["headers"]["x-request-id"], request_id.as_str());
    assert_eq!(
        reply.header("x-upstream").as_deref(),
        Some("a"),
        "upstream headers pass back"
    );

    for method in ["PUT", "DELETE", "PATCH", "POST"] {
        let reply = gw
            .send(
                gw.http
                    .request(method.parse().unwrap(), gw.url("/pub/thing/7"))
                    .header("content-type", "text/plain")
                    .body("payload"),
            )
            .await;
        assert_eq!(reply.json["method"], method);
        assert_eq!(reply.json["body"], "payload");
        assert_eq!(reply.json["headers"]["content-type"], "text/plain");
    }

    // A body far over the API's limit streams through to the upstream.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let reply = gw
        .send(gw.http.post(gw.url("/pub/upload")).body(body))
        .await;
    assert_eq!(reply.json["body_len"], 3_000_000);
    assert_eq!(reply.json["sha256"], digest.as_str());

    // The answer streams: the first chunk arrives long before the last.
    let started = Instant::now();
    let mut response = gw
        .http
        .get(gw.url("/pub/stream?chunks=5&delay_ms=200"))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("chunk-0"));
    assert!(String::from_utf8_lossy(&rest).contains("chunk-4"));
    assert!(
        first_at < Duration::from_millis(500),
        "first chunk after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(800),
        "all chunks after {total:?}"
    );

    // The API is still the API; other paths are 404.
    assert_eq!(gw.get("/health").await.status, 200);
    gw.get("/elsewhere").await.assert_detail(404, "Not Found");
}

/// Answers one WebSocket upgrade with 101, then echoes whatever bytes come
/// (the gateway relays the upgraded connection without reading it).
pub(crate) async fn switch_and_echo(mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    socket
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await?;
    let mut buf = [0u8; 64];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        socket.write_all(&buf[..n]).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let edge = edge().await;
    let gw = &edge.env.gw;
    // A raw upstream that accepts the WebSocket upgrade and echoes bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // (Health checks connect and hang up too: every connection is served.)
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(switch_and_echo(socket));
        }
    });
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/ws\"\nupstreams = [\"127.0.0.1:{port}\"]\n"
    ));
    let gw2 = edge.env.sibling(|o| o.set("ROUTES_FILE", &routes)).await;
    let port = gw2.port;
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(
                b"GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        stream
            .write_all(b"ping over the upgraded connection")
            .unwrap();
        let mut echoed = vec![0u8; 33];
        stream.read_exact(&mut echoed).unwrap();
        (head, String::from_utf8_lossy(&echoed).to_string())
    })
    .await
    .unwrap();
    assert!(echoed.0.starts_with("HTTP/1.1 101"), "{}", echoed.0);
    assert_eq!(echoed.1, "ping over the upgraded connection");
    assert_eq!(gw.get("/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_identity_headers_and_balancing() {
    let edge = edge().await;
    let env = &edge.env;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "edge").await;
    let admin = gw.verified_user(&env.mail, "edgeadmin").await;
    env.make_admin(&admin).await;

    // Authenticated route: the contract's 403s, and the upstream untouched.
    gw.get("/api/echo")
        .await
        .assert_detail(403, "Unauthorized.");
    gw.get_bearer("/api/echo", "bad.token.here")
        .await
        .assert_detail(403, "Invalid token or expired token.");
    let before = metrics(gw).await;
    assert_eq!(
        metric(
            &before,
            "authgate_upstream_requests_total{route=\"proxy:/api\""
        ),
        0.0
    );

    // Admitted: identity headers, forged ones replaced.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/api/echo"))
                .bearer_auth(&user.access_token)
                .header("x-auth-user-id", "999999")
                .header("x-auth-roles", "admin"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = &reply.json["headers"];
    assert_eq!(seen["x-auth-user-id"], user.id.to_string());
    assert_eq!(seen["x-auth-email"], user.email.as_str());
    assert_eq!(seen["x-auth-roles"], "");
    assert!(
        seen["x-auth-device-id"]
            .as_str()
            .is_some_and(|d| d.len() == 36)
    );
    assert_eq!(
        seen["authorization"],
        format!("Bearer {}", user.access_token)
    );
    // The cookie works as well as the bearer.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/api/echo"))
                .header("cookie", format!("access_token={}", user.access_token)),
        )
        .await;
    assert_eq!(reply.status, 200);

    // Public route: forged identity headers are stripped, none are added.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/pub/echo"))
                .bearer_auth(&user.access_token)
                .header("X-Auth-User-Id", "1")
                .header("x-auth-email", "boss@example.com")
                .header("x-auth-device-id", "forged"),
        )
        .await;
    for name in [
        "x-auth-user-id",
        "x-auth-email",
        "x-auth-roles",
        "x-auth-device-id",
    ] {
        assert!(
            reply.json["headers"].get(name).is_none(),
            "{name} reached the upstream"
        );
    }

    // Role route.
    gw.get_bearer("/admin/echo", &user.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    let reply = gw.get_bearer("/admin/echo", &admin.access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["headers"]["x-auth-roles"], "admin");

    // Two upstreams share the authenticated route.
    let mut names = Vec::new();
    for _ in 0..6 {
        let reply = gw.get_bearer("/api/echo", &user.access_token).await;
        names.push(reply.json["upstream"].as_str().unwrap().to_string());
    }
    assert!(
        names.contains(&"a".to_string()) && names.contains(&"b".to_string()),
        "{names:?}"
    );

    // A signed-out session is refused on forwarded routes at once.
    assert_eq!(
        gw.post_bearer("/users/signout", &user.access_token, json!({}))
            .await
            .status,
        200
    );
    gw.get_bearer("/api/echo", &user.access_token)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    drop(edge.b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_502_and_504() {
    let edge = edge().await;
    let gw = &edge.env.gw;
    let reply = gw.get("/dead/x").await;
    reply.assert_detail(502, "Bad Gateway");
    assert!(reply.header("x-request-id").is_some());
    let started = Instant::now();
    gw.get("/impatient/slow?ms=3000")
        .await
        .assert_detail(504, "Gateway Timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Upstream statuses themselves pass through unchanged.
    let reply = gw.get("/pub/status/418").await;
    assert_eq!(
        (reply.status, reply.json.clone()),
        (418, json!({"status": 418}))
    );

    // An upstream that goes away, the only one of its route: 502 at once,
    // whatever the health check last said.
    drop(edge.a);
    gw.get("/pub/echo").await.assert_detail(502, "Bad Gateway");
    let text = metrics(gw).await;
    assert!(
        metric(
            &text,
            "authgate_upstream_errors_total{kind=\"connect_refused\",route=\"proxy:/dead\"}",
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "authgate_upstream_errors_total{kind=\"timeout\",route=\"proxy:/impatient\"}"
        ) >= 1.0
    );
}

/// Upstreams are probed before the gateway listens, so the first requests
/// already skip one that is down; and a route whose upstreams are all
/// marked down still tries them, so one that starts after the gateway (and
/// after the first probe) is reached as soon as it listens, not at the next
/// probe 5 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_are_reached_from_the_first_request_and_as_soon_as_they_listen() {
    let a = Upstream::start("a").await;
    let late_port = dead_port();
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pair"
        upstreams = ["127.0.0.1:{dead}", "{a}"]

        [[routes]]
        prefix = "/late"
        upstreams = ["127.0.0.1:{late_port}"]
        "#,
        a = a.host_port(),
        dead = dead_port(),
    ));
    let env = Env::native_with(|o| o.set("ROUTES_FILE", &routes)).await;
    let gw = &env.gw;
    for _ in 0..4 {
        let reply = gw.get("/pair/echo").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["upstream"], "a");
    }

    // Nothing listens yet: 502 as for any upstream that refuses.
    gw.get("/late/echo").await.assert_detail(502, "Bad Gateway");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", late_port))
        .await
        .unwrap();
    let _late = Upstream::start_on(listener, "late").await;
    for _ in 0..3 {
        let reply = gw.get("/late/echo").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["upstream"], "late");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rate_limit_and_metrics_after_known_traffic() {
    let edge = edge().await;
    let gw = &edge.env.gw;
    for _ in 0..3 {
        assert_eq!(gw.get("/limited/echo").await.status, 200);
    }
    let reply = gw.get("/limited/echo").await;
    reply.assert_detail(429, "Too many requests");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));

    for _ in 0..5 {
        assert_eq!(gw.get("/pub/echo").await.status, 200);
    }
    gw.get_bearer("/users/me", "x.y.z")
        .await
        .assert_detail(403, "Invalid token or expired token.");
    gw.signin("nobody", "wrong password")
        .await
        .assert_detail(401, "Invalid credentials");
    let text = metrics(gw).await;
    assert_eq!(
        metric(
            &text,
            "authgate_upstream_requests_total{route=\"proxy:/pub\",status=\"200\"}"
        ),
        5.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "authgate_http_requests_total{method=\"GET\",route=\"proxy:/pub\",status=\"200\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &text,
            "authgate_rate_limited_total{limit=\"route:/limited\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "authgate_signins_total{outcome=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "authgate_http_requests_total{method=\"POST\",route=\"/users/signin\",status=\"401\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            "authgate_token_rejections_total{kind=\"access\",reason=\"malformed\"}"
        ) >= 1.0
            || metric(
                &text,
                "authgate_token_rejections_total{kind=\"access\",reason=\"claims\"}"
            ) >= 1.0,
        "{text}"
    );
    assert!(text.contains("authgate_upstream_duration_seconds_bucket{route=\"proxy:/pub\""));
    assert!(text.contains("authgate_http_request_duration_seconds_bucket{route=\"/users/signin\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_from_forwarded_for_only_behind_trusted_proxies() {
    let edge = edge_with(|o| o.set("RATE_LIMIT_SIGNIN_PER_IP", "2/minute")).await;
    let gw = &edge.env.gw;
    let signin = |ip: &'static str| {
        gw.http
            .post(gw.url("/users/signin"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": "nobody", "password": "x"}))
    };
    // Not trusted: the header is ignored, every request is 127.0.0.1.
    assert_eq!(gw.send(signin("1.1.1.1")).await.status, 401);
    assert_eq!(gw.send(signin("2.2.2.2")).await.status, 401);
    assert_eq!(gw.send(signin("3.3.3.3")).await.status, 429);

    let trusted = edge
        .env
        .sibling(|o| o.set("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"))
        .await;
    let signin = |ip: &'static str| {
        trusted
            .http
            .post(trusted.url("/users/signin"))
            .header("x-forwarded-for", ip)
            .json(&json!({"username": "nobody", "password": "x"}))
    };
    assert_eq!(trusted.send(signin("1.1.1.1")).await.status, 401);
    assert_eq!(trusted.send(signin("1.1.1.1, 10.0.0.5")).await.status, 401);
    assert_eq!(trusted.send(signin("1.1.1.1")).await.status, 429);
    assert_eq!(
        trusted.send(signin("2.2.2.2")).await.status,
        401,
        "another client"
    );
    // Upstreams see the chain with the gateway's peer appended.
    let reply = trusted
        .send(
            trusted
                .http
                .get(trusted.url("/pub/echo"))
                .header("x-forwarded-for", "203.0.113.9"),
        )
        .await;
    assert_eq!(
        reply.json["headers"]["x-forwarded-for"],
        "203.0.113.9, 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_limits_through_redis_fall_back_and_resume() {
    let redis = url::Url::parse(&env("AUTHGATE_TEST_REDIS_URL")).unwrap();
    let target = format!(
        "{}:{}",
        redis.host_str().unwrap(),
        redis.port().unwrap_or(6379)
    )
    .parse()
    .unwrap();
    let relay = Relay::start(target).await;
    let edge = edge_with(|o| {
        o.set("REDIS_URL", &format!("redis://127.0.0.1:{}", relay.port))
            .set("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "4/minute")
    })
    .await;
    let one = &edge.env.gw;
    let two = edge.env.sibling(|o| o).await;
    let attempt = |gw: &Gateway, account: &str| {
        gw.http
            .post(gw.url("/users/signin"))
            .json(&json!({"username": account, "password": "wrong"}))
    };
    // Four attempts spread over two replicas use up one shared quota.
    let account = format!("shared-{}", uuid::Uuid::new_v4().simple());
    for gw in [one, &two, one, &two] {
        assert_eq!(gw.send(attempt(gw, &account)).await.status, 401);
    }
    assert_eq!(one.send(attempt(one, &account)).await.status, 429);
    assert_eq!(two.send(attempt(&two, &account)).await.status, 429);
    assert_eq!(metric(&metrics(one).await, "authgate_redis_up"), 1.0);

    // Redis gone: each replica limits on its own, and keeps serving.
    relay.cut();
    let local = format!("local-{}", uuid::Uuid::new_v4().simple());
    for _ in 0..4 {
        assert_eq!(one.send(attempt(one, &local)).await.status, 401);
    }
    assert_eq!(one.send(attempt(one, &local)).await.status, 429);
    assert_eq!(
        two.send(attempt(&two, &local)).await.status,
        401,
        "not shared while Redis is down"
    );
    let text = metrics(one).await;
    assert_eq!(metric(&text, "authgate_redis_up"), 0.0);
    assert!(metric(&text, "authgate_ratelimit_local_fallbacks_total") >= 5.0);
    assert!(one.log_text().contains("Redis unreachable"));
    assert_eq!(one.get("/health").await.status, 200);

    // Redis back: shared counting resumes by itself.
    relay.restore().await;
    let resumed = format!("resumed-{}", uuid::Uuid::new_v4().simple());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = one
            .send(attempt(one, &format!("probe-{}", uuid::Uuid::new_v4())))
            .await
            .status;
        if status == 401 && metric(&metrics(one).await, "authgate_redis_up") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis use resumes");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for gw in [one, &two, one, &two] {
        assert_eq!(gw.send(attempt(gw, &resumed)).await.status, 401);
    }
    assert_eq!(
        two.send(attempt(&two, &resumed)).await.status,
        429,
        "shared again"
    );
}

/// Sends `signal` (`TERM`, `INT`) to the gateway's process.
fn send_signal(gw: &Gateway, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Far longer than any test waits: a gateway that exits sooner did not wait
/// for the grace period to end.
const LONG_GRACE: &str = "60";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    in_flight_requests_finish_then_the_gateway_exits("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_requests_too() {
    in_flight_requests_finish_then_the_gateway_exits("INT").await;
}

async fn in_flight_requests_finish_then_the_gateway_exits(signal: &str) {
    let mut edge = edge_with(|o| o.set("SHUTDOWN_GRACE_SECONDS", LONG_GRACE)).await;
    let url = edge.env.gw.url("/pub/slow?ms=1500");
    let http = edge.env.gw.http.clone();
    let in_flight = tokio::spawn(async move {
        let response = http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body)
    });
    // A kept-alive connection that is idle when the signal comes.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", edge.env.gw.port))
        .await
        .unwrap();
    let health = "GET /health HTTP/1.1\r\nHost: test\r\n\r\n";
    assert_eq!(
        exchange(&mut idle, &[health], Duration::ZERO).await,
        "HTTP/1.1 200 OK"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_signal(&edge.env.gw, signal);
    // The listener closes first: new connections are refused at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = reqwest::Client::new()
        .get(edge.env.gw.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections refused after SIG{signal}"
    );
    // The idle connection has nothing to finish: it is closed at once.
    closed_after(&mut idle, Duration::from_secs(10)).await;
    assert!(
        !in_flight.is_finished(),
        "closed while the slow request still ran"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request finished");
    assert_eq!(body["upstream"], "a");
    // Then the process leaves, long before the grace period ends.
    let exited = edge.env.gw.wait_exit(Duration::from_secs(15));
    assert!(
        exited.is_some_and(|status| status.success()),
        "SIG{signal}: the gateway stopped after its in-flight work: {exited:?}\n{}",
        edge.env.gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_exits_at_once() {
    for signal in ["TERM", "INT"] {
        let mut env = Env::native_with(|o| o.set("SHUTDOWN_GRACE_SECONDS", LONG_GRACE)).await;
        assert_eq!(env.gw.get("/health").await.status, 200);
        send_signal(&env.gw, signal);
        let exited = env.gw.wait_exit(Duration::from_secs(10));
        assert!(
            exited.is_some_and(|status| status.success()),
            "SIG{signal}: an idle gateway waited for the grace period: {exited:?}\n{}",
            env.gw.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_the_drain() {
    let mut edge = edge_with(|o| o.set("SHUTDOWN_GRACE_SECONDS", LONG_GRACE)).await;
    let url = edge.env.gw.url("/pub/slow?ms=20000");
    let http = edge.env.gw.http.clone();
    let in_flight = tokio::spawn(async move { http.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_signal(&edge.env.gw, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        edge.env.gw.wait_exit(Duration::from_millis(100)).is_none(),
        "draining"
    );
    send_signal(&edge.env.gw, "INT");
    let exited = edge.env.gw.wait_exit(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|status| status.code() == Some(1)),
        "{exited:?}\n{}",
        edge.env.gw.log_text()
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the slow request was cut"
    );
}

/// Writes `request` (in the given pieces, `gap` apart) on a kept-alive
/// connection and reads one whole answer (headers and a Content-Length
/// body): its status line.
pub(crate) async fn exchange(
    conn: &mut tokio::net::TcpStream,
    pieces: &[&str],
    gap: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        conn.write_all(piece.as_bytes()).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length answer");
            if body.len() >= length {
                return head.lines().next().unwrap_or_default().to_string();
            }
        }
    }
}

/// How long until the server closes the connection (reads nothing more).
pub(crate) async fn closed_after(conn: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => panic!("still open after {limit:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_serve_many_requests_and_close_when_idle() {
    let edge = edge_with(|o| o.set("CLIENT_IDLE_TIMEOUT_SECONDS", "1")).await;
    let addr = ("127.0.0.1", edge.env.gw.port);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");

    // API answers and forwarded ones on one connection, including a request
    // that arrives in pieces and one after a pause shorter than the timeout.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let no_gap = Duration::ZERO;
    assert_eq!(
        exchange(&mut conn, &[&get("/health")], no_gap).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        exchange(&mut conn, &[&get("/pub/bench")], no_gap).await,
        "HTTP/1.1 200 OK"
    );
    let split = [
        "G",
        "ET /pub/echo?x=1 HTT",
        "P/1.1\r\nHost: test\r\n",
        "\r\n",
    ];
    let gap = Duration::from_millis(150);
    assert_eq!(exchange(&mut conn, &split, gap).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        exchange(&mut conn, &[&get("/health")], no_gap).await,
        "HTTP/1.1 200 OK"
    );
    // Then silence: closed after the idle timeout, not before.
    let waited = closed_after(&mut conn, Duration::from_secs(15)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );

    // A connection that never sends a request is closed too.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let waited = closed_after(&mut silent, Duration::from_secs(15)).await;
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );

    // A client that asks for the connection to close gets its answer first.
    let mut quick = tokio::net::TcpStream::connect(addr).await.unwrap();
    let close = "GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    assert_eq!(
        exchange(&mut quick, &[close], no_gap).await,
        "HTTP/1.1 200 OK"
    );
    closed_after(&mut quick, Duration::from_secs(5)).await;
}
