//! Slow and greedy clients cannot pin the gateway: a request head that does
//! not end in time is answered 408 and closed (on the first request of a
//! connection and on later ones), a slow body is not cut by that deadline,
//! connections over the cap are refused (health probes still answered, the
//! oldest waiting connection giving way to the newest) and served again
//! once others close, and a client that never reads a large
//! forwarded answer is dropped, its upstream connection released.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Env;
use crate::edge::{closed_after, exchange, metric, metrics, routes_file};
use crate::upstream::Upstream;

/// A gateway forwarding `/pub` to one upstream of its own.
struct Slow {
    env: Env,
    up: Upstream,
}

async fn slow_edge(tweak: impl FnOnce(crate::harness::Options) -> crate::harness::Options) -> Slow {
    let up = Upstream::start("slow").await;
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{up}"]
        policy = "public"
        "#,
        up = up.host_port(),
    ));
    let env = Env::native_with(|o| tweak(o.set("ROUTES_FILE", &routes))).await;
    Slow { env, up }
}

impl Slow {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.env.gw.port))
            .await
            .unwrap()
    }

    async fn metric(&self, line_start: &str) -> f64 {
        metric(&metrics(&self.env.gw).await, line_start)
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Sends `start`, then one more header byte every 300 ms, never ending the
/// head, until the server answers; returns everything it sent until it
/// closed the connection.
async fn dribble_until_answered(conn: &mut TcpStream, start: &str) -> String {
    conn.write_all(start.as_bytes()).await.unwrap();
    let given_up = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            Instant::now() < given_up,
            "no answer to a never-ending head"
        );
        match tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
            Err(_) => {
                // Still waiting: one more byte of the same header value.
                if conn.write_all(b"a").await.is_err() {
                    break;
                }
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Writes `request` and reads one answer with a Content-Length body: its
/// head (lower-cased) and body; None when the connection is closed with
/// nothing sent.
async fn ask(conn: &mut TcpStream, request: &str) -> Option<(String, String)> {
    // A refused connection may already be gone: the write may fail.
    let _ = conn.write_all(request.as_bytes()).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf))
            .await
            .expect("an answer or a close within 15 s")
            .unwrap_or(0);
        if n == 0 {
            assert!(
                seen.is_empty(),
                "closed in the middle of an answer: {:?}",
                String::from_utf8_lossy(&seen)
            );
            return None;
        }
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("a Content-Length answer");
            if body.len() >= length {
                return Some((head, body.to_string()));
            }
        }
    }
}

/// Polls until `check` holds, for up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_dribbled_past_its_deadline_is_closed_while_others_are_served() {
    let slow = slow_edge(|o| o.set("CLIENT_HEADER_TIMEOUT_SECONDS", "2")).await;
    let mut dribbler = slow.connect().await;
    let dribbling = tokio::spawn(async move {
        dribble_until_answered(
            &mut dribbler,
            "GET /pub/echo HTTP/1.1\r\nHost: test\r\nX-Slow: ",
        )
        .await
    });

    // Meanwhile another client is served, API and forwarded requests alike.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = slow.connect().await;
    for path in ["/health", "/pub/bench", "/health", "/pub/echo"] {
        assert_eq!(
            exchange(&mut other, &[&get(path)], Duration::ZERO).await,
            "HTTP/1.1 200 OK",
            "{path}"
        );
    }

    let answer = dribbling.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("\r\n\r\n{\"detail\":\"Request Timeout\"}"));
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    );
    assert_eq!(
        slow.metric("authgate_client_header_timeouts_total").await,
        1.0
    );
    // The other client's connection is still there.
    assert_eq!(
        exchange(&mut other, &[&get("/health")], Duration::ZERO).await,
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_holds_for_each_request_of_a_kept_alive_connection() {
    let slow = slow_edge(|o| o.set("CLIENT_HEADER_TIMEOUT_SECONDS", "2")).await;
    let mut conn = slow.connect().await;
    // Heads that arrive in pieces, each within the deadline, with idle time
    // between them: the connection lives far longer than the deadline.
    let pieces = [
        "GET /pub/echo HTTP/1.1\r\n",
        "Host: test\r\n",
        "X-A: b\r\n",
        "\r\n",
    ];
    let gap = Duration::from_millis(400);
    assert_eq!(exchange(&mut conn, &pieces, gap).await, "HTTP/1.1 200 OK");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(exchange(&mut conn, &pieces, gap).await, "HTTP/1.1 200 OK");
    assert_eq!(
        exchange(&mut conn, &[&get("/health")], Duration::ZERO).await,
        "HTTP/1.1 200 OK"
    );

    // The fourth request's head never ends: 408, and the connection closed.
    let answer = dribble_until_answered(&mut conn, "GET /health HTTP/1.1\r\nX-Slow: ").await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert_eq!(
        slow.metric("authgate_client_header_timeouts_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_not_cut_by_the_head_deadline() {
    let slow = slow_edge(|o| o.set("CLIENT_HEADER_TIMEOUT_SECONDS", "2")).await;
    let body = "0123456789";

    // Forwarded (pingora's full proxy path): the body takes 4 s.
    let mut conn = slow.connect().await;
    let head = format!(
        "POST /pub/upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut pieces = vec![head.as_str()];
    pieces.extend((0..body.len()).map(|i| &body[i..=i]));
    let gap = Duration::from_millis(400);
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        conn.write_all(piece.as_bytes()).await.unwrap();
    }
    let (head, answer) = ask(&mut conn, "").await.expect("an answer");
    let status = head.lines().next().unwrap_or_default();
    assert_eq!(status, "http/1.1 200 ok", "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["body_len"], 10);

    // An API request whose body takes 3 s: answered by the API (422 for an
    // empty object), not cut.
    let mut conn = slow.connect().await;
    let head = "POST /users/signup HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n";
    let status = exchange(&mut conn, &[head, "{", "}"], Duration::from_millis(1500)).await;
    assert_eq!(status, "HTTP/1.1 422 Unprocessable Entity");

    assert_eq!(
        slow.metric("authgate_client_header_timeouts_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_probes_answered_then_served_again() {
    const CAP: usize = 3;
    // Past the cap, this many connections may still ask for a health probe.
    const RESERVE: usize = 64;
    let mut slow = slow_edge(|o| o.set("MAX_CLIENT_CONNECTIONS", &CAP.to_string())).await;
    // The harness's own pooled connection goes with its client.
    slow.env.gw.http = reqwest::Client::new();
    let open = "authgate_client_connections ";
    eventually("only the asking connection is open", || async {
        let mut conn = slow.connect().await;
        let Some((_, text)) = ask(&mut conn, &get("/metrics")).await else {
            return false;
        };
        metric(&text, open) == 1.0
    })
    .await;

    // Up to the cap: served and kept alive.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut conn = slow.connect().await;
        let (head, _) = ask(&mut conn, &get("/pub/bench")).await.expect("served");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        held.push(conn);
    }

    // Over it: anything but a probe gets 503, and the connection closes.
    let mut extra = slow.connect().await;
    let (head, body) = ask(&mut extra, &get("/pub/bench")).await.expect("a 503");
    assert!(
        head.starts_with("http/1.1 503 service unavailable"),
        "{head}"
    );
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body, r#"{"detail":"Service Unavailable"}"#);
    closed_after(&mut extra, Duration::from_secs(5)).await;
    // A health probe is answered, and its connection closed after it.
    let mut probe = slow.connect().await;
    let (head, _) = ask(&mut probe, &get("/health")).await.expect("answered");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    closed_after(&mut probe, Duration::from_secs(5)).await;
    // So is a scrape: the held connections and its own are open.
    let mut scrape = slow.connect().await;
    let (_, text) = ask(&mut scrape, &get("/metrics")).await.expect("answered");
    assert_eq!(metric(&text, open), (CAP + 1) as f64);
    assert_eq!(metric(&text, "authgate_connections_refused_total"), 1.0);
    closed_after(&mut scrape, Duration::from_secs(5)).await;
    // Closed connections are handed back at once, but let the server finish.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A full reserve: the newest connection takes the place of the oldest
    // one still waiting for its request, which is closed unanswered.
    let mut crowd = Vec::new();
    for _ in 0..=RESERVE {
        crowd.push(slow.connect().await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut answered, mut unanswered) = (0, 0);
    for conn in &mut crowd {
        match ask(conn, &get("/health")).await {
            Some((head, _)) => {
                assert!(head.starts_with("http/1.1 200"), "{head}");
                answered += 1;
            }
            None => unanswered += 1,
        }
    }
    assert_eq!((answered, unanswered), (RESERVE, 1));
    drop(crowd);

    // Once the held connections close, new ones are served as usual again
    // (asked through /metrics, which is answered either way, so that the
    // wait refuses nothing).
    drop(held);
    eventually("every other connection is closed", || async {
        let mut conn = slow.connect().await;
        let Some((_, text)) = ask(&mut conn, &get("/metrics")).await else {
            return false;
        };
        metric(&text, open) == 1.0
    })
    .await;
    let mut conn = slow.connect().await;
    for path in ["/pub/bench", "/health", "/pub/bench"] {
        assert_eq!(
            exchange(&mut conn, &[&get(path)], Duration::ZERO).await,
            "HTTP/1.1 200 OK"
        );
    }
    assert_eq!(slow.metric("authgate_connections_refused_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answer_is_dropped_and_the_upstream_released() {
    let slow = slow_edge(|o| o.set("CLIENT_WRITE_TIMEOUT_SECONDS", "2")).await;
    // 64 KiB chunks, as fast as the upstream can: 128 MiB, far more than
    // every socket buffer on the way holds.
    let stream = "/pub/stream?chunks=2048&delay_ms=0&size=65536";
    let full_length: usize = 2048 * 65536;
    let requests = [
        // The lean path (no body) ...
        format!("GET {stream} HTTP/1.1\r\nHost: test\r\n\r\n"),
        // ... and pingora's full proxy path (a body).
        format!("POST {stream} HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n\r\nx"),
    ];
    for (i, request) in requests.iter().enumerate() {
        let mut conn = slow.connect().await;
        conn.write_all(request.as_bytes()).await.unwrap();
        // The client reads nothing: the gateway's writes stall, and after
        // the write timeout it gives up on the client.
        let dropped = (i + 1) as f64;
        eventually("the stalled client is counted", || async {
            slow.metric("authgate_client_write_timeouts_total").await == dropped
        })
        .await;
        eventually("the upstream connection is released", || async {
            slow.up.open_connections() == 0
        })
        .await;
        // What reached the client ends before the answer did.
        let mut received = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf))
                .await
                .expect("the connection ends")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        assert!(
            received < full_length,
            "got {received} bytes of {full_length}"
        );
    }
    // Other clients were served all along.
    assert_eq!(slow.env.gw.get("/health").await.status, 200);
}
