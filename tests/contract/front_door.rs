//! The front door: what reaches an upstream is what the gateway settled.
//! Forged identity and forwarding headers, credentials that stay at the
//! gateway, identity values outside visible ASCII, header caps, the
//! canonical path on the API and `/metrics`, against the test kit's echo
//! upstream (which reports every header it received).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Env;
use crate::edge::routes_file;
use crate::harness::Gateway;
use crate::upstream::Upstream;

async fn gateway(
    upstream: &Upstream,
    tweak: impl FnOnce(crate::harness::Options) -> crate::harness::Options,
) -> Env {
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{a}"]

        [[routes]]
        prefix = "/api"
        upstreams = ["{a}"]
        policy = "authenticated"

        [[routes]]
        prefix = "/private"
        upstreams = ["{a}"]
        policy = "authenticated"
        forward_access_token = false

        [[routes]]
        prefix = "/billing"
        upstreams = ["{a}"]
        policy = "role:billing,reader"
        "#,
        a = upstream.host_port()
    ));
    Env::native_with(|o| tweak(o.set("ROUTES_FILE", &routes))).await
}

/// Sends raw bytes and reads the whole answer (the gateway closes or the
/// body ends): status code and body.
async fn raw(gw: &Gateway, request: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return (status, body.to_string());
            }
        }
        assert!(n > 0, "closed before answering: {text:?}");
    }
}

/// The echo upstream's view of the headers of a raw request.
async fn seen_headers(gw: &Gateway, request: &str) -> Value {
    let (status, body) = raw(gw, request).await;
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    echo["headers"].clone()
}

fn names(headers: &Value) -> Vec<String> {
    headers.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_and_forwarding_headers_never_arrive() {
    let upstream = Upstream::start("a").await;
    let env = gateway(&upstream, |o| o).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "door").await;
    let forged = "X_Auth_User_Id: 1\r\nX_Auth_Roles: admin\r\nx-auth_email: boss@example.com\r\n\
        X-AUTH-DEVICE-ID: d\r\nx_auth_client_id: c\r\nX-Auth-User-Id: 2\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 7.7.7.7\r\nX-Forwarded-Host: evil.example\r\n\
        X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
        X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-Prefix: /admin\r\n\
        Proxy-Authorization: Basic eDp5\r\n";
    let request = |path: &str, auth: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: door.test\r\n{auth}{forged}Connection: close\r\n\r\n")
    };

    // Anonymous on a public route: none of it arrives; the gateway's own
    // forwarding headers do.
    let seen = seen_headers(gw, &request("/pub/echo", "")).await;
    let arrived = names(&seen);
    for name in &arrived {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !folded.starts_with("x-auth-")
                && ![
                    "forwarded",
                    "x-real-ip",
                    "x-original-url",
                    "x-rewrite-url",
                    "x-forwarded-prefix",
                    "proxy-authorization"
                ]
                .contains(&folded.as_str()),
            "{name} reached the upstream: {seen}"
        );
    }
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "door.test");
    assert_eq!(seen["x-forwarded-proto"], "http");

    // A user: exactly the gateway's identity, in one spelling each.
    let bearer = format!("Authorization: Bearer {}\r\n", user.access_token);
    let seen = seen_headers(gw, &request("/api/echo", &bearer)).await;
    assert_eq!(seen["x-auth-user-id"], user.id.to_string());
    assert_eq!(seen["x-auth-email"], user.email.as_str());
    assert_eq!(seen["x-auth-roles"], "");
    assert!(seen.get("x-auth-client-id").is_none(), "{seen}");
    let identity: Vec<String> = names(&seen)
        .into_iter()
        .filter(|n| {
            n.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-auth-")
        })
        .collect();
    assert_eq!(
        identity,
        [
            "x-auth-user-id",
            "x-auth-email",
            "x-auth-roles",
            "x-auth-device-id"
        ],
        "{seen}"
    );

    // Behind a trusted proxy: its forwarding headers are believed, every
    // X-Forwarded-For line in order; identity is still the gateway's alone.
    let trusted = env.sibling(|o| o.set("TRUSTED_PROXIES", "127.0.0.1")).await;
    let seen = seen_headers(
        &trusted,
        "GET /pub/echo HTTP/1.1\r\nHost: door.test\r\nX-Forwarded-For: 203.0.113.1\r\n\
         X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-Host: app.example\r\n\
         X-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.1\r\nX_Auth_User_Id: 1\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        seen["x-forwarded-for"],
        "203.0.113.1, 10.0.0.1, 10.0.0.2, 127.0.0.1"
    );
    assert_eq!(seen["x-forwarded-host"], "app.example");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-real-ip"], "203.0.113.1");
    assert!(seen.get("x_auth_user_id").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stay_where_they_belong() {
    let upstream = Upstream::start("a").await;
    let env = gateway(&upstream, |o| o).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "creds").await;
    let cookies = format!(
        "Cookie: theme=dark; refresh_token={refresh}; access_token={access}\r\nCookie: refresh_token=again; lang=en\r\n",
        refresh = user.refresh_token,
        access = user.access_token
    );
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{cookies}Connection: close\r\n\r\n")
    };
    // The refresh token never goes upstream; the access token does.
    let seen = seen_headers(gw, &request("/api/echo")).await;
    assert_eq!(
        seen["cookie"],
        format!("theme=dark; access_token={}, lang=en", user.access_token)
    );
    let seen = seen_headers(gw, &request("/pub/echo")).await;
    assert!(!seen["cookie"].as_str().unwrap().contains("refresh_token"));
    // A route that keeps the access token to itself: neither cookie nor bearer.
    let seen = seen_headers(gw, &request("/private/echo")).await;
    assert_eq!(seen["cookie"], "theme=dark, lang=en");
    let seen = seen_headers(
        gw,
        &format!(
            "GET /private/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            user.access_token
        ),
    )
    .await;
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(seen["x-auth-user-id"], user.id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_values_outside_visible_ascii_are_encoded_not_dropped() {
    let upstream = Upstream::start("a").await;
    let env = gateway(&upstream, |o| o).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "roles").await;
    gw.grant_role(&user.username, "billing,reader");
    gw.grant_role(&user.username, "ünïcode");
    let reply = gw.get_bearer("/billing/echo", &user.access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut roles: Vec<&str> = reply.json["headers"]["x-auth-roles"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["%C3%BCn%C3%AFcode", "billing%2Creader"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_caps_hold_on_both_forwarding_paths() {
    let upstream = Upstream::start("a").await;
    let env = gateway(&upstream, |o| o.set("MAX_REQUEST_HEADERS", "20")).await;
    let gw = &env.gw;
    let many: String = (0..21).map(|i| format!("X-H{i}: v\r\n")).collect();
    let options: Vec<String> = (0..17).map(|i| format!("opt{i}")).collect();
    let connection = format!("Connection: {}\r\n", options.join(", "));
    for body in ["", "Content-Length: 2\r\n"] {
        let payload = if body.is_empty() { "" } else { "ok" };
        let (status, text) = raw(
            gw,
            &format!("POST /pub/echo HTTP/1.1\r\nHost: t\r\n{body}{many}\r\n{payload}"),
        )
        .await;
        assert_eq!(status, 431, "{text}");
        assert_eq!(text, r#"{"detail":"Request Header Fields Too Large"}"#);
        let (status, text) = raw(
            gw,
            &format!("POST /pub/echo HTTP/1.1\r\nHost: t\r\n{body}{connection}\r\n{payload}"),
        )
        .await;
        assert_eq!(status, 400, "{text}");
        assert_eq!(text, r#"{"detail":"Bad Request"}"#);
    }
    // At the caps: served.
    let few: String = (0..18).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = raw(
        gw,
        &format!("GET /pub/echo HTTP/1.1\r\nHost: t\r\n{few}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    let metrics = crate::edge::metrics(gw).await;
    assert!(
        metrics.contains("authgate_requests_refused_total{reason=\"too_many_headers\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_metrics_see_the_canonical_path() {
    let upstream = Upstream::start("a").await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = gateway(&upstream, |o| {
        o.set("METRICS_ADDR", &format!("127.0.0.1:{metrics_port}"))
    })
    .await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "canon").await;
    let auth = format!("Authorization: Bearer {}\r\n", user.access_token);
    for path in [
        "/users/me/",
        "//users//me/",
        "/%75sers/me/",
        "/x/../users/./me/",
    ] {
        let (status, body) = raw(
            gw,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200, "{path}: {body}");
        let me: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(me["id"], user.id, "{path}");
    }
    for path in [
        "/users/me%2f",
        "/users%5cme/",
        "/users/me/%00",
        "/%2575sers/me/",
        "/caf%C0%AE",
    ] {
        let (status, body) = raw(
            gw,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (400, r#"{"detail":"Invalid request path"}"#),
            "{path}"
        );
    }
    // `/metrics` lives on its own listener only, whatever the spelling.
    for path in [
        "/metrics",
        "/%6detrics",
        "//metrics",
        "/metrics;x",
        "/x/../metrics",
    ] {
        let (status, body) = raw(
            gw,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"detail":"Not Found"}"#),
            "{path}"
        );
    }
    let reply = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    assert!(
        text.contains("authgate_requests_refused_total{reason=\"encoded_separator\"} 2"),
        "{text}"
    );
}

/// Opens a WebSocket tunnel through the gateway: the `101` head is read.
async fn open_tunnel(gw: &Gateway, path: &str, token: &str) -> TcpStream {
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The tunnel carries bytes both ways.
    conn.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    conn.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    conn
}

/// Waits (up to 15 s) for the gateway to close the tunnel.
async fn ended(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_end_with_their_session_or_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(crate::edge::switch_and_echo(socket));
        }
    });
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/ws\"\nupstreams = [\"{ws}\"]\npolicy = \"authenticated\"\n\n\
         [[routes]]\nprefix = \"/open\"\nupstreams = [\"{ws}\"]\n"
    ));
    let env = Env::native_with(|o| o.set("ROUTES_FILE", &routes)).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "tunnel").await;

    // Signed out: the open tunnel ends.
    let mut signed_in = open_tunnel(gw, "/ws/chat", &user.access_token).await;
    let mut public = open_tunnel(gw, "/open/chat", &user.access_token).await;
    let reply = gw
        .post_bearer("/users/signout", &user.access_token, serde_json::json!({}))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        ended(&mut signed_in).await,
        "the tunnel outlived its session"
    );

    // A token that expires: the tunnel ends with it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let short = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({
            "user_id": user.id, "email": user.email, "scope": "access_token",
            "iat": now, "exp": now + 3.0,
        }),
        &jsonwebtoken::EncodingKey::from_secret(crate::harness::SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut expiring = open_tunnel(gw, "/ws/chat", &short).await;
    assert!(ended(&mut expiring).await, "the tunnel outlived its token");

    // A public route's tunnel has nothing to end it but its sides.
    public.write_all(b"pong").await.unwrap();
    let mut echo = [0u8; 4];
    public.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"pong");
    let metrics = crate::edge::metrics(gw).await;
    assert!(
        metrics.contains("authgate_tunnels_ended_total{reason=\"refused\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_forwarding_paths_send_the_same_head() {
    // Requests without a body take the lean path, requests with one
    // pingora's proxy: the upstream must see the same head from both.
    let upstream = Upstream::start("a").await;
    let env = gateway(&upstream, |o| o).await;
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "alike").await;
    let mut cases: Vec<(String, Vec<Vec<u8>>)> = crate::hostile_set::load()
        .into_iter()
        .filter(|h| !h.header_lines.is_empty())
        .map(|h| (h.label, h.header_lines))
        .collect();
    for extra in [
        "TE: trailers\r\nTrailer: X-T\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive",
        "Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nX-Kept: 2",
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings",
        "Proxy-Authorization: Basic eDp5\r\nX-Forwarded-Proto: https",
        "Cookie: a=1; refresh_token=r\r\nCookie: b=2",
        "Accept: a\r\nAccept: b\r\nX-Dup: 1\r\nx-dup: 2",
    ] {
        let lines = extra.split("\r\n").map(|l| l.as_bytes().to_vec()).collect();
        cases.push((extra.to_string(), lines));
    }
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let bearer = format!("Authorization: Bearer {}\r\n", user.access_token);
    for (label, lines) in &cases {
        let mut extra = Vec::new();
        for line in lines {
            extra.extend_from_slice(line);
            extra.extend_from_slice(b"\r\n");
        }
        let extra = String::from_utf8_lossy(&extra).into_owned();
        let mut seen = Vec::new();
        for body in ["", "hi"] {
            let (method, length) = if body.is_empty() {
                ("GET", String::new())
            } else {
                ("POST", format!("Content-Length: {}\r\n", body.len()))
            };
            let request = format!(
                "{method} /api/echo HTTP/1.1\r\nHost: alike.test\r\nX-Request-Id: alike-1\r\n{bearer}{length}{extra}Connection: close\r\n\r\n{body}"
            );
            let (status, text) = raw(gw, &request).await;
            if status != 200 {
                seen.push(Err(status));
                continue;
            }
            let echo: Value = serde_json::from_str(&text).unwrap();
            let mut headers = echo["headers"].as_object().unwrap().clone();
            headers.remove("content-length");
            headers.remove("transfer-encoding");
            seen.push(Ok(headers));
        }
        assert_eq!(seen[0], seen[1], "{label}: the two paths differ");
    }
}
