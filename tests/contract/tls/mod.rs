//! TLS termination and HTTP/2 from clients: the API and forwarded routes
//! over HTTPS with HTTP/1.1 and HTTP/2 (ALPN), the contract's cookies, HSTS
//! and the plain listener's redirect, gRPC end to end ([`grpc`]), the
//! certificate replaced on disk or on SIGHUP while connections stay open, a
//! broken replacement kept out, the connection cap and the deadlines on TLS
//! connections, and the hostile set and HTTP/2's own attacks over HTTP/2
//! ([`hostile_h2`]). Certificates come from a CA the test makes
//! ([`kit::TestCa`]).

mod grpc;
mod hostile_h2;
mod kit;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Env;
use crate::edge::{metric, metrics, routes_file};
use crate::harness::{Options, TestUser};
use crate::upstream::Upstream;
use kit::{CertFiles, TestCa, connect, h1_exchange, h2_client, h2_send, shown};

/// A native gateway serving HTTPS with a fresh CA's certificate, and the
/// files it reads it from.
pub(crate) struct Secure {
    pub env: Env,
    pub ca: TestCa,
    pub files: CertFiles,
    pub first: kit::Leaf,
}

pub(crate) async fn secure(tweak: impl FnOnce(Options) -> Options) -> Secure {
    let ca = TestCa::new();
    let first = ca.leaf(90);
    let files = CertFiles::new(&first);
    let env = Env::native_with(|o| tweak(files.options(o, &ca))).await;
    Secure {
        env,
        ca,
        files,
        first,
    }
}

impl Secure {
    fn port(&self) -> u16 {
        self.env.gw.port
    }

    /// The certificate a new connection is shown.
    async fn served(&self) -> Vec<u8> {
        shown(&connect(self.port(), &self.ca, &[b"http/1.1"]).await)
    }

    async fn metric(&self, line_start: &str) -> f64 {
        metric(&metrics(&self.env.gw).await, line_start)
    }

    /// A reqwest client trusting the test CA: HTTP/2 when `h2` (ALPN), else
    /// HTTP/1.1 only.
    fn client(&self, h2: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap();
        let builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none());
        let builder = if h2 { builder } else { builder.http1_only() };
        builder.build().unwrap()
    }
}

/// Polls until `check` holds, for up to 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/metrics` read on a connection of its own, closed after the answer.
async fn scrape(s: &Secure) -> String {
    let mut conn = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
    let request = "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    h1_exchange(&mut conn, request).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https_and_http2_keeps_the_contract_and_its_cookies() {
    let plain_port = free_port();
    let s = secure(|o| {
        o.set("COOKIE_SECURE", "true")
            .set("HSTS_MAX_AGE_SECONDS", "600")
            .set("HTTP_REDIRECT_PORT", &plain_port.to_string())
    })
    .await;
    let user = s.env.gw.verified_user(&s.env.mail, "tlsuser").await;
    let base = s.env.gw.base.clone();
    assert!(base.starts_with("https://"), "{base}");

    for (h2, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let client = s.client(h2);
        let signin = client
            .post(format!("{base}/users/signin"))
            .json(&json!({"username": user.username, "password": user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(signin.version(), version);
        assert_eq!(signin.status(), 200);
        assert_eq!(signin.headers()["strict-transport-security"], "max-age=600");
        let cookies: Vec<String> = signin
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        for name in ["access_token", "refresh_token"] {
            let cookie = cookies
                .iter()
                .find(|c| c.starts_with(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} cookie: {cookies:?}"));
            for attribute in ["; HttpOnly", "; Secure", "; SameSite=lax", "; Path=/"] {
                assert!(cookie.contains(attribute), "{name}: {cookie}");
            }
        }
        let access = cookies
            .iter()
            .find_map(|c| c.strip_prefix("access_token="))
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_string();
        // The cookie alone authenticates, on either protocol.
        let me = client
            .get(format!("{base}/users/me"))
            .header("cookie", format!("access_token={access}"))
            .send()
            .await
            .unwrap();
        assert_eq!(me.version(), version);
        assert_eq!(me.status(), 200);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["username"], user.username.as_str());
        // Errors keep their shape.
        let refused = client.get(format!("{base}/users/me")).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(
            refused.json::<Value>().await.unwrap(),
            json!({"detail": "Unauthorized."})
        );
    }

    // The plain listener: probes answered (no HSTS in clear), the rest sent
    // to HTTPS with the canonical path and the query.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let health = plain
        .get(format!("http://127.0.0.1:{plain_port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("strict-transport-security").is_none());
    let moved = plain
        .post(format!(
            "http://127.0.0.1:{plain_port}/users/./%73ignin?x=1"
        ))
        .header("host", "app.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(
        moved.headers()["location"],
        format!("https://app.example:{}/users/signin?x=1", s.port()).as_str()
    );
    // Plain HTTP on the TLS port is no request at all.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", s.port()))
        .await
        .unwrap();
    raw.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = h1_exchange(&mut raw, "").await;
    assert!(!status.starts_with("HTTP/1.1 200"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_routes_over_http2_reach_an_http1_upstream_under_the_edge_rules() {
    let up = Upstream::start("h1").await;
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{up}"]
        policy = "public"

        [[routes]]
        prefix = "/api"
        upstreams = ["{up}"]
        policy = "authenticated"
        "#,
        up = up.host_port(),
    ));
    let s = secure(|o| o.set("ROUTES_FILE", &routes)).await;
    let signup = TestUser::new("tlsfwd");
    let reply = s.env.gw.post("/users/signup", signup.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let token = reply.json["access_token"].as_str().unwrap().to_string();

    let (mut h2, _) = h2_client(s.port(), &s.ca).await;
    let get = |path: &str| {
        http::Request::get(format!("https://localhost:{}{path}", s.port()))
            .header("x-request-id", "tls-fwd-1")
            .body(())
            .unwrap()
    };
    // Forged identity and forwarding headers, in every spelling h2 allows.
    let mut forged = get("/pub/./x/../echo?q=%2e&r=1");
    for (name, value) in [
        ("x-auth-user-id", "1"),
        ("x_auth_roles", "admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "http"),
        ("x-original-url", "/api/x"),
        ("forwarded", "for=6.6.6.6"),
    ] {
        forged
            .headers_mut()
            .insert(http::HeaderName::from_static(name), value.parse().unwrap());
    }
    let answer = h2_send(&mut h2, forged, None).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-upstream"], "h1");
    assert_eq!(answer.headers["x-request-id"], "tls-fwd-1");
    let seen: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/pub/echo");
    assert_eq!(seen["query"], "q=%2e&r=1");
    let headers = &seen["headers"];
    // The :authority is the Host, for the upstream and X-Forwarded-Host.
    assert_eq!(headers["host"], format!("localhost:{}", s.port()).as_str());
    assert_eq!(
        headers["x-forwarded-host"],
        format!("localhost:{}", s.port()).as_str()
    );
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    for gone in [
        "x-auth-user-id",
        "x_auth_roles",
        "x-auth-roles",
        "x-original-url",
        "forwarded",
    ] {
        assert!(headers.get(gone).is_none(), "{gone} arrived: {headers}");
    }

    // A body, streamed to pingora's proxy path.
    let body = vec![b'z'; 300_000];
    let upload = http::Request::post(format!("https://localhost:{}/pub/upload", s.port()))
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let answer = h2_send(&mut h2, upload, Some(&body)).await.unwrap();
    assert_eq!(answer.status, 200);
    let seen: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(seen["body_len"], 300_000);

    // A chunked answer streams back as DATA frames.
    let answer = h2_send(&mut h2, get("/pub/stream?chunks=4&delay_ms=10"), None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        "chunk-0\nchunk-1\nchunk-2\nchunk-3\n"
    );

    // The policy: refused without a token, the caller's identity with one.
    let answer = h2_send(&mut h2, get("/api/echo"), None).await.unwrap();
    assert_eq!(answer.status, 403);
    let mut with_token = get("/api/echo");
    with_token
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let answer = h2_send(&mut h2, with_token, None).await.unwrap();
    assert_eq!(answer.status, 200);
    let seen: Value = serde_json::from_slice(&answer.body).unwrap();
    assert!(seen["headers"]["x-auth-user-id"].is_string(), "{seen}");
    // An unsettled path is refused the same way as over HTTP/1.1.
    let answer = h2_send(&mut h2, get("/pub/%2e%2e%2fapi/echo"), None)
        .await
        .unwrap();
    assert_eq!(answer.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&answer.body).unwrap(),
        json!({"detail": "Invalid request path"})
    );

    // HTTP/1.1 over TLS takes the lean path: the same rules.
    let mut tls = connect(s.port(), &s.ca, &[b"h2", b"http/1.1"]).await;
    drop(tls);
    tls = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
    assert_eq!(kit::alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let (status, text) = h1_exchange(
        &mut tls,
        "GET /pub/echo HTTP/1.1\r\nHost: app.example\r\nX_Auth_User_Id: 7\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let seen: Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.example");
    assert!(seen["headers"].get("x_auth_user_id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections_while_open_ones_carry_on() {
    let s = secure(|o| o.set("TLS_RELOAD_CHECK_SECONDS", "1")).await;
    assert_eq!(s.served().await, s.first.der);
    let expiry = "authgate_tls_certificate_expiry_timestamp_seconds";
    let first_expiry = s.metric(expiry).await;
    assert!(first_expiry > 0.0);

    // Connections opened before the change: HTTP/2 and HTTP/1.1.
    let (mut h2, info) = h2_client(s.port(), &s.ca).await;
    assert_eq!(info.shown, s.first.der);
    let health = || {
        http::Request::get(format!("https://localhost:{}/health", s.port()))
            .body(())
            .unwrap()
    };
    assert_eq!(h2_send(&mut h2, health(), None).await.unwrap().status, 200);
    let mut h1 = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
    let get = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(h1_exchange(&mut h1, get).await.0, "HTTP/1.1 200 OK");

    // A new pair, valid for less time, replaces the old on disk.
    let second = s.ca.leaf(30);
    s.files.install(&second.cert_pem, &second.key_pem);
    eventually("new connections are shown the new certificate", || async {
        s.served().await == second.der
    })
    .await;
    assert!(s.metric(expiry).await < first_expiry);

    // The old connections still work, on their old certificate.
    assert_eq!(h2_send(&mut h2, health(), None).await.unwrap().status, 200);
    assert_eq!(h1_exchange(&mut h1, get).await.0, "HTTP/1.1 200 OK");
    assert_eq!(shown(&h1), s.first.der);
    assert_eq!(s.metric("authgate_tls_reload_failures_total").await, 0.0);

    // Without periodic checks, SIGHUP reloads; it never stops the process.
    let other = secure(|o| o.set("TLS_RELOAD_CHECK_SECONDS", "0")).await;
    let third = other.ca.leaf(60);
    other.files.install(&third.cert_pem, &third.key_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(other.served().await, other.first.der, "no SIGHUP yet");
    let (mut kept, _) = h2_client(other.port(), &other.ca).await;
    for _ in 0..2 {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &other.env.gw.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    eventually("SIGHUP loaded the new pair", || async {
        other.served().await == third.der
    })
    .await;
    let health = http::Request::get(format!("https://localhost:{}/health", other.port()))
        .body(())
        .unwrap();
    assert_eq!(h2_send(&mut kept, health, None).await.unwrap().status, 200);
    assert!(other.env.gw.log_text().contains("reloading"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_is_kept_out_and_counted() {
    let s = secure(|o| o.set("TLS_RELOAD_CHECK_SECONDS", "1")).await;
    let failures = "authgate_tls_reload_failures_total";
    let other = s.ca.leaf(90);
    let expired = s.ca.leaf(-1);
    let broken = [
        // A key that is not the certificate's.
        (other.cert_pem.clone(), s.first.key_pem.clone()),
        // Not PEM at all.
        ("not a certificate".to_string(), s.first.key_pem.clone()),
        // An expired certificate.
        (expired.cert_pem.clone(), expired.key_pem.clone()),
    ];
    let (mut h2, _) = h2_client(s.port(), &s.ca).await;
    for (i, (cert, key)) in broken.iter().enumerate() {
        s.files.install(cert, key);
        let counted = (i + 1) as f64;
        eventually("the broken pair is counted", || async {
            s.metric(failures).await == counted
        })
        .await;
        // Once per content: not counted again at the next checks.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(s.metric(failures).await, counted);
        assert_eq!(s.served().await, s.first.der, "case {i}");
        let health = http::Request::get(format!("https://localhost:{}/health", s.port()))
            .body(())
            .unwrap();
        assert_eq!(h2_send(&mut h2, health, None).await.unwrap().status, 200);
    }
    assert!(
        s.env
            .gw
            .log_text()
            .contains("the new TLS certificate pair is refused"),
        "no error in the log"
    );
    // A good pair after the broken ones is taken.
    s.files.install(&other.cert_pem, &other.key_pem);
    eventually("the good pair is served", || async {
        s.served().await == other.der
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_held_to_the_deadlines_and_the_cap() {
    let up = Upstream::start("cap").await;
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{up}"]
        policy = "public"
        "#,
        up = up.host_port(),
    ));
    let mut s = secure(|o| {
        o.set("ROUTES_FILE", &routes)
            .set("CLIENT_HEADER_TIMEOUT_SECONDS", "1")
            .set("CLIENT_WRITE_TIMEOUT_SECONDS", "2")
            .set("MAX_CLIENT_CONNECTIONS", "3")
    })
    .await;
    let timeouts = "authgate_client_header_timeouts_total";

    // A TCP connection that never starts its handshake is closed.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", s.port()))
        .await
        .unwrap();
    crate::edge::closed_after(&mut silent, Duration::from_secs(5)).await;
    // So is an HTTP/2 connection that never sends its preface.
    let mut quiet = connect(s.port(), &s.ca, &[b"h2"]).await;
    assert_eq!(kit::alpn(&quiet).as_deref(), Some(&b"h2"[..]));
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut quiet, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an h2 connection without preface stayed open"
    );
    // An HTTP/1.1 head dribbled over TLS: 408.
    let mut dribbler = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
    dribbler
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let (status, _) = h1_exchange(&mut dribbler, "").await;
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    eventually("three head timeouts counted", || async {
        s.metric(timeouts).await == 3.0
    })
    .await;

    // A client that never reads a large forwarded answer is dropped.
    let mut sink = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
    sink.write_all(
        b"GET /pub/stream?chunks=2048&delay_ms=0&size=65536 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await
    .unwrap();
    eventually("the stalled TLS client is dropped", || async {
        s.metric("authgate_client_write_timeouts_total").await == 1.0
    })
    .await;
    drop(sink);

    // The cap counts TLS connections; past it, one probe over HTTP/1.1
    // (even for a client that offers h2), anything else 503.
    s.env.gw.http = s.client(false);
    eventually("only the asking connection is open", || async {
        metric(&scrape(&s).await, "authgate_client_connections ") == 1.0
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect(s.port(), &s.ca, &[b"http/1.1"]).await;
        let request = "GET /pub/bench HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(h1_exchange(&mut conn, request).await.0, "HTTP/1.1 200 OK");
        held.push(conn);
    }
    let mut probe = connect(s.port(), &s.ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(kit::alpn(&probe).as_deref(), Some(&b"http/1.1"[..]));
    let (status, text) = h1_exchange(&mut probe, "GET /health HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let mut other = connect(s.port(), &s.ca, &[b"h2", b"http/1.1"]).await;
    let (status, _) = h1_exchange(&mut other, "GET /pub/bench HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    drop(held);
    eventually("served again once the held connections closed", || async {
        let Ok(mut conn) = kit::try_connect(s.port(), &s.ca, &[b"h2"]).await else {
            return false;
        };
        kit::alpn(&conn).as_deref() == Some(&b"h2"[..]) && {
            let _ = conn.shutdown().await;
            true
        }
    })
    .await;
}
