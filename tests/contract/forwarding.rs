//! The lean forwarding path (requests without a body) against a scripted
//! raw HTTP/1.1 upstream: connection reuse, upstreams that close pooled
//! connections, the framing of every kind of answer, hop-by-hop headers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Env;
use crate::edge::{metrics, routes_file};
use crate::upstream::Upstream;

/// What the scripted upstream does with one request.
enum Act {
    /// Writes these bytes and keeps the connection.
    Answer(Vec<u8>),
    /// Writes these bytes, then closes the connection after a pause.
    AnswerThenClose(Vec<u8>, Duration),
    /// Closes the connection without answering.
    Hangup,
}

/// The request line and the index of its connection among those that sent
/// a request, and of the request on its connection.
struct Seen {
    request_line: String,
    head: String,
    connection: usize,
    nth_on_connection: usize,
}

/// A raw upstream that reads request heads (no bodies) and acts as `script`
/// says; it records what it saw. Health checks connect and send nothing, so
/// connections are counted from their first request.
struct Scripted {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

type Script = dyn Fn(&str, usize, usize) -> Act + Send + Sync;

impl Scripted {
    async fn start(script: impl Fn(&str, usize, usize) -> Act + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let connections = Arc::new(AtomicUsize::new(0));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(
                    socket,
                    Arc::clone(&script),
                    Arc::clone(&record),
                    Arc::clone(&connections),
                ));
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<(String, usize, usize)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| (s.request_line.clone(), s.connection, s.nth_on_connection))
            .collect()
    }

    fn last_head(&self) -> String {
        self.seen.lock().unwrap().last().unwrap().head.clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut socket: TcpStream,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
) {
    let mut connection = None;
    let mut nth = 0;
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut more = [0u8; 4096];
            match socket.read(&mut more).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&more[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let connection =
            *connection.get_or_insert_with(|| connections.fetch_add(1, Ordering::SeqCst));
        let request_line = head.lines().next().unwrap_or("").to_string();
        let act = script(&request_line, connection, nth);
        seen.lock().unwrap().push(Seen {
            request_line,
            head,
            connection,
            nth_on_connection: nth,
        });
        nth += 1;
        match act {
            Act::Answer(bytes) => {
                if socket.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::AnswerThenClose(bytes, pause) => {
                let _ = socket.write_all(&bytes).await;
                tokio::time::sleep(pause).await;
                return;
            }
            Act::Hangup => return,
        }
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: scripted\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn gateway_for(upstream: std::net::SocketAddr) -> Env {
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/s\"\nupstreams = [\"{upstream}\"]\nread_timeout_ms = 2000\n"
    ));
    Env::native_with(|o| o.set("ROUTES_FILE", &routes)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_and_replaced_when_the_upstream_closes_them() {
    let upstream = Scripted::start(|line, connection, _| {
        if line.contains("/s/hangup-on-second") && connection == 0 {
            // The upstream closes the kept connection just as it is reused.
            Act::Hangup
        } else if line.contains("/s/then-idle-close") {
            Act::AnswerThenClose(ok("bye"), Duration::from_millis(50))
        } else if line.contains("/s/conn-close") {
            Act::Answer(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
            )
        } else {
            Act::Answer(ok("ok"))
        }
    })
    .await;
    let env = gateway_for(upstream.addr).await;
    let gw = &env.gw;

    // One connection carries sequential requests.
    for _ in 0..3 {
        let reply = gw.get("/s/plain").await;
        assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|(_, connection, _)| *connection == 0),
        "{seen:?}"
    );

    // Reused and found closed while the request was on its way: sent again
    // on a new connection, and the client never knows.
    let reply = gw.get("/s/hangup-on-second").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));
    let seen = upstream.seen();
    let tries: Vec<_> = seen
        .iter()
        .filter(|(line, _, _)| line.contains("hangup-on-second"))
        .map(|(_, connection, nth)| (*connection, *nth))
        .collect();
    assert_eq!(tries, [(0, 3), (1, 0)], "{seen:?}");

    // Closed by the upstream while idle in the pool: not used again.
    let reply = gw.get("/s/then-idle-close").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "bye"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = gw.get("/s/after").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));
    let (_, after_connection, after_nth) = upstream.seen().last().cloned().unwrap();
    assert_eq!((after_connection, after_nth), (2, 0));

    // `Connection: close` from the upstream: the next request opens anew.
    assert_eq!(gw.get("/s/conn-close").await.status, 200);
    assert_eq!(gw.get("/s/plain").await.status, 200);
    let seen = upstream.seen();
    let last_two: Vec<_> = seen[seen.len() - 2..]
        .iter()
        .map(|(_, connection, nth)| (*connection, *nth))
        .collect();
    assert_eq!(last_two, [(2, 1), (3, 0)], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_answer_is_framed_for_the_client() {
    let upstream = Scripted::start(|line, _, _| {
        let answer = |raw: &str| Act::Answer(raw.as_bytes().to_vec());
        if line.starts_with("HEAD ") {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Head: yes\r\n\r\n")
        } else if line.contains("/s/chunked") {
            answer(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            )
        } else if line.contains("/s/no-content") {
            answer("HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n")
        } else if line.contains("/s/not-modified") {
            answer("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n")
        } else if line.contains("/s/informational") {
            answer(
                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
            )
        } else if line.contains("/s/until-close") {
            Act::AnswerThenClose(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it".to_vec(),
                Duration::ZERO,
            )
        } else if line.contains("/s/garbage") {
            answer("HTTP/1.1 abc\r\n\r\n")
        } else if line.contains("/s/hangup") {
            Act::Hangup
        } else if line.contains("/s/reason") {
            answer("HTTP/1.1 418 Short And Stout\r\nContent-Length: 0\r\n\r\n")
        } else {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let env = gateway_for(upstream.addr).await;
    let gw = &env.gw;

    let reply = gw.send(gw.http.head(gw.url("/s/thing"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length").as_deref(), Some("5"));
    assert_eq!(reply.header("x-head").as_deref(), Some("yes"));
    assert_eq!(reply.text, "");

    let reply = gw.get("/s/chunked").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "hello, world"));

    let reply = gw.get("/s/no-content").await;
    assert_eq!((reply.status, reply.text.as_str()), (204, ""));
    assert_eq!(reply.header("x-kind").as_deref(), Some("204"));

    let reply = gw.get("/s/not-modified").await;
    assert_eq!(reply.status, 304);
    assert_eq!(reply.header("etag").as_deref(), Some("\"v1\""));

    let reply = gw.get("/s/informational").await;
    assert_eq!((reply.status, reply.text.as_str()), (201, "made"));

    let reply = gw.get("/s/until-close").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "all of it"));

    // The gateway goes on forwarding after each of these.
    let reply = gw.get("/s/plain").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));

    gw.get("/s/garbage").await.assert_detail(502, "Bad Gateway");
    gw.get("/s/hangup").await.assert_detail(502, "Bad Gateway");

    // The upstream's own reason phrase reaches the client.
    let mut raw = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    raw.write_all(b"GET /s/reason HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 418 Short And Stout\r\n"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_gateway() {
    let upstream = Scripted::start(|_, _, _| Act::Answer(ok("ok"))).await;
    let env = gateway_for(upstream.addr).await;
    let gw = &env.gw;

    let reply = gw
        .send(
            gw.http
                .get(gw.url("/s/hop?q=1"))
                .header("Connection", "keep-alive, X-Hop")
                .header("X-Hop", "for the gateway only")
                .header("Keep-Alive", "timeout=5")
                .header("TE", "trailers")
                .header("X-Custom-Case", "kept")
                .header("X-Request-Id", "client-chosen-id-1"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let head = upstream.last_head();
    assert!(head.starts_with("GET /s/hop?q=1 HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    for gone in ["connection:", "x-hop:", "keep-alive:", "te:"] {
        assert!(!lower.contains(gone), "{gone} forwarded: {head}");
    }
    assert!(lower.contains("x-custom-case: kept"), "{head}");
    assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    assert_eq!(
        lower.matches("x-request-id:").count(),
        1,
        "one request id: {head}"
    );
    assert!(lower.contains("x-request-id: client-chosen-id-1"), "{head}");

    // The same request with a body takes the full-duplex path and is
    // treated alike.
    let echo = Upstream::start("echo").await;
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/e\"\nupstreams = [\"{}\"]\n",
        echo.host_port()
    ));
    let gw2 = env.sibling(|o| o.set("ROUTES_FILE", &routes)).await;
    for body in ["", "payload"] {
        let reply = gw2
            .send(
                gw2.http
                    .post(gw2.url("/e/echo"))
                    .header("X-Auth-User-Id", "forged")
                    .header("X-Request-Id", "client-chosen-id-2")
                    .body(body),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let headers = &reply.json["headers"];
        assert!(headers.get("x-auth-user-id").is_none(), "{headers}");
        assert_eq!(headers["x-request-id"], "client-chosen-id-2");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(reply.json["body"], body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_request_body_is_a_400_not_an_upstream_error() {
    let echo = Upstream::start("echo").await;
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/e\"\nupstreams = [\"{}\"]\n",
        echo.host_port()
    ));
    let env = Env::native_with(|o| o.set("ROUTES_FILE", &routes)).await;
    let gw = &env.gw;
    for broken in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"] {
        let mut raw = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let request = format!(
            "POST /e/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{broken}"
        );
        raw.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), raw.read_to_string(&mut answer))
            .await
            .expect("the gateway answers and closes")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{broken:?}: {answer}");
        assert!(
            answer.ends_with(r#"{"detail":"Request body could not be read"}"#),
            "{answer}"
        );
    }
    let text = metrics(gw).await;
    assert!(
        !text.contains("authgate_upstream_errors_total{"),
        "no upstream error counted: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_idempotent_requests_are_sent_again_after_a_pooled_connection_closed() {
    // The upstream reads the request, then closes a reused connection
    // without answering: it may have acted on it.
    let upstream = Scripted::start(|line, _, nth| {
        if line.contains("/s/hang") && nth == 1 {
            Act::Hangup
        } else {
            Act::Answer(ok("ok"))
        }
    })
    .await;
    let env = gateway_for(upstream.addr).await;
    let gw = &env.gw;

    assert_eq!(gw.get("/s/warm").await.status, 200);
    let reply = gw.send(gw.http.post(gw.url("/s/hang-post"))).await;
    reply.assert_detail(502, "Bad Gateway");
    let posts = upstream
        .seen()
        .iter()
        .filter(|(line, _, _)| line.starts_with("POST /s/hang-post"))
        .count();
    assert_eq!(posts, 1, "a POST is never sent twice");

    assert_eq!(gw.get("/s/warm").await.status, 200);
    let reply = gw.get("/s/hang-get").await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "ok"));
    let gets = upstream
        .seen()
        .iter()
        .filter(|(line, _, _)| line.starts_with("GET /s/hang-get"))
        .count();
    assert_eq!(gets, 2, "a GET goes again on a new connection");
}

/// A connection refused means nothing was sent: while one of a route's two
/// upstreams is down, and before a health check has noticed, every request
/// (GET on the lean path, POST with and without a body on pingora's path)
/// goes to the other one instead of failing. With both down, the contract's
/// 502 as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_goes_to_the_routes_other_upstream() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let routes = routes_file(&format!(
        "[[routes]]\nprefix = \"/pair\"\nupstreams = [\"{}\", \"{}\"]\n",
        a.host_port(),
        b.host_port()
    ));
    let env = Env::native_with(|o| o.set("ROUTES_FILE", &routes)).await;
    let gw = &env.gw;
    // Both up, as the first probe found them: both take turns.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let reply = gw.get("/pair/echo").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        seen.insert(reply.json["upstream"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // b stops; the next probe is seconds away.
    let (a_addr, b_addr) = (a.host_port(), b.host_port());
    drop(b);
    while TcpStream::connect(&b_addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..6 {
        let reply = gw.get("/pair/echo").await;
        assert_eq!(
            (reply.status, reply.json["upstream"].as_str()),
            (200, Some("a")),
            "GET {i}: {}",
            reply.text
        );
        let with_body = gw
            .send(gw.http.post(gw.url("/pair/echo")).body("payload"))
            .await;
        assert_eq!(
            (with_body.status, with_body.json["upstream"].as_str()),
            (200, Some("a")),
            "POST {i}: {}",
            with_body.text
        );
        assert_eq!(with_body.json["body"], "payload");
        let without_body = gw.send(gw.http.post(gw.url("/pair/echo"))).await;
        assert_eq!(
            (without_body.status, without_body.json["upstream"].as_str()),
            (200, Some("a")),
            "empty POST {i}: {}",
            without_body.text
        );
    }

    // Both down: nothing left to try.
    drop(a);
    while TcpStream::connect(&a_addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.get("/pair/echo").await.assert_detail(502, "Bad Gateway");
    gw.send(gw.http.post(gw.url("/pair/echo")).body("payload"))
        .await
        .assert_detail(502, "Bad Gateway");
    gw.send(gw.http.post(gw.url("/pair/echo")))
        .await
        .assert_detail(502, "Bad Gateway");
}
