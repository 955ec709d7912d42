//! The hostile set over HTTP/2, and HTTP/2's own attacks.
//!
//! Every request of `hostile_set` is sent over TLS twice, as HTTP/1.1 (raw
//! bytes) and as HTTP/2 (the `h2` crate: `:path` carries the target as it
//! is, `:authority` the Host), by an anonymous caller, a user and an admin,
//! to one upstream behind the set's four routes. For every request HTTP/2
//! can carry, the outcome must be the same: refused alike, held alike, or
//! forwarded alike (same status, same path and query at the upstream, same
//! identity). Targets HTTP/2 cannot carry (bytes its `:path` refuses) are
//! counted; those in absolute, authority or asterisk form must reach no
//! upstream over HTTP/2 unless they did over HTTP/1.1.
//!
//! Then HTTP/2's own attacks, written frame by frame: header names in upper
//! case, connection-specific headers, CR/LF or NUL in values, hostile
//! `:path`s, `:authority` against `Host`, CONNECT and extended CONNECT,
//! pseudo-headers out of place, and a body longer than its
//! `Content-Length` carrying a request to smuggle (h2 to h1). None may reach
//! the upstream (a real one, Go's net/http, that lists every request id it
//! received).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::kit::{RawOutcome, TestCa, connect, h1_exchange, h2_client, h2_send, raw_h2};
use super::secure;
use crate::edge::routes_file;
use crate::harness::{TestUser, env};
use crate::hostile_set::{self, Expect, Hostile};
use crate::upstream::Upstream;

const HOST: &str = "app.example";

/// What came of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 400 `{"detail": "Invalid request path"}`.
    InvalidPath,
    /// Answered by the gateway (not the upstream) with this status.
    Gateway(u16),
    /// Answered by the upstream: status, path and query it saw, identity.
    Upstream {
        status: u16,
        path: String,
        query: String,
        identity: BTreeMap<String, String>,
    },
    /// No answer: reset, closed, or not readable.
    Nothing,
}

impl Outcome {
    fn forwarded(&self) -> bool {
        matches!(self, Self::Upstream { .. })
    }

    fn from_answer(status: u16, upstream: bool, body: &[u8]) -> Self {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if !upstream {
            if status == 400 && json == serde_json::json!({"detail": "Invalid request path"}) {
                return Self::InvalidPath;
            }
            return Self::Gateway(status);
        }
        let identity = json["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .iter()
                    .filter(|(name, _)| name.starts_with("x-auth"))
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Self::Upstream {
            status,
            path: json["path"].as_str().unwrap_or("").to_string(),
            query: json["query"].as_str().unwrap_or("").to_string(),
            identity,
        }
    }
}

/// The request as raw HTTP/1.1 bytes (as `hostile.rs` sends them).
fn h1_bytes(hostile: &Hostile, token: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(hostile.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&hostile.target);
    out.extend_from_slice(format!(" HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes());
    if let Some(token) = token {
        out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    for line in &hostile.header_lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    if has_body(hostile) {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: 2\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if has_body(hostile) {
        out.extend_from_slice(b"{}");
    }
    out
}

fn has_body(hostile: &Hostile) -> bool {
    ["POST", "PUT", "PATCH"].contains(&hostile.method.as_str())
}

/// The request over HTTP/2, when HTTP/2 can carry it.
fn h2_request(hostile: &Hostile, token: Option<&str>) -> Option<http::Request<()>> {
    let path = http::uri::PathAndQuery::try_from(hostile.target.as_slice()).ok()?;
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(HOST)
        .path_and_query(path)
        .build()
        .ok()?;
    let mut request = http::Request::builder()
        .method(http::Method::from_bytes(hostile.method.as_bytes()).ok()?)
        .uri(uri)
        .body(())
        .ok()?;
    let headers = request.headers_mut();
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse().ok()?);
    }
    for line in &hostile.header_lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = http::HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    if has_body(hostile) {
        headers.insert("content-type", "application/json".parse().ok()?);
        headers.insert("content-length", "2".parse().ok()?);
    }
    Some(request)
}

async fn over_h1(port: u16, ca: &TestCa, hostile: &Hostile, token: Option<&str>) -> Outcome {
    let mut tls = connect(port, ca, &[b"http/1.1"]).await;
    let bytes = h1_bytes(hostile, token);
    let text = {
        use tokio::io::AsyncWriteExt;
        if tls.write_all(&bytes).await.is_err() {
            return Outcome::Nothing;
        }
        h1_exchange(&mut tls, "").await.1
    };
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Nothing;
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let upstream = head.to_ascii_lowercase().contains("\r\nx-upstream:");
    Outcome::from_answer(status, upstream, body.as_bytes())
}

async fn over_h2(port: u16, ca: &TestCa, request: http::Request<()>, body: bool) -> Outcome {
    let (mut send, _) = h2_client(port, ca).await;
    let body = body.then_some(&b"{}"[..]);
    match h2_send(&mut send, request, body).await {
        Ok(answer) => Outcome::from_answer(
            answer.status,
            answer.headers.contains_key("x-upstream"),
            &answer.body,
        ),
        Err(_) => Outcome::Nothing,
    }
}

fn routes_for(upstream: &str) -> String {
    routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/api"
        upstreams = ["{upstream}"]
        policy = "authenticated"

        [[routes]]
        prefix = "/api/admin"
        upstreams = ["{upstream}"]
        policy = "role:admin"

        [[routes]]
        prefix = "/admin"
        upstreams = ["{upstream}"]
        policy = "role:admin"

        [[routes]]
        prefix = "/"
        upstreams = ["{upstream}"]
        policy = "public"
        "#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_meet_the_same_policy_over_http2_as_over_http1() {
    let up = Upstream::start("hostile-h2").await;
    let routes = routes_for(&up.host_port());
    let s = secure(|o| o.set("ROUTES_FILE", &routes)).await;
    let mut tokens = Vec::new();
    for prefix in ["h2user", "h2admin"] {
        let user = TestUser::new(prefix);
        let reply = s.env.gw.post("/users/signup", user.signup_body()).await;
        assert_eq!(reply.status, 200, "signup: {}", reply.text);
        tokens.push((
            user,
            reply.json["access_token"].as_str().unwrap().to_string(),
        ));
    }
    s.env.make_admin(&tokens[1].0).await;
    let callers = [
        ("anonymous", None),
        ("user", Some(tokens[0].1.as_str())),
        ("admin", Some(tokens[1].1.as_str())),
    ];

    let set = hostile_set::load();
    let (mut same, mut unsendable, mut other_forms) = (0, 0, 0);
    let (mut forwarded, mut held, mut refused) = (0, 0, 0);
    let mut differences = String::new();
    for hostile in &set {
        let origin_form = hostile.target.first() == Some(&b'/');
        for (caller, token) in callers {
            let h1 = over_h1(s.port(), &s.ca, hostile, token).await;
            let Some(request) = h2_request(hostile, token) else {
                unsendable += 1;
                continue;
            };
            let h2 = over_h2(s.port(), &s.ca, request, has_body(hostile)).await;
            if !origin_form {
                other_forms += 1;
                if h2.forwarded() && !h1.forwarded() {
                    let _ = writeln!(
                        differences,
                        "{caller} {:?}: forwarded over h2 only: {h2:?}",
                        hostile.label
                    );
                }
                continue;
            }
            if h1 == h2 {
                same += 1;
                match &h2 {
                    Outcome::Upstream { .. } => forwarded += 1,
                    Outcome::InvalidPath => refused += 1,
                    Outcome::Gateway(403) => held += 1,
                    _ => {}
                }
            } else {
                let _ = writeln!(
                    differences,
                    "{caller} {:?} ({:?}):\n    h1 {h1:?}\n    h2 {h2:?}",
                    hostile.label, hostile.expect
                );
            }
            // Whatever the protocol, a refused target reaches no upstream.
            if matches!(hostile.expect, Expect::Refuse | Expect::Reject) && h2.forwarded() {
                let _ = writeln!(
                    differences,
                    "{caller} {:?}: forwarded over h2",
                    hostile.label
                );
            }
        }
    }
    println!(
        "hostile set over HTTP/2: {same} outcomes the same as HTTP/1.1 (forwarded {forwarded}, \
         held {held}, refused {refused}); {other_forms} in other forms; {unsendable} not \
         expressible in HTTP/2"
    );
    assert!(differences.is_empty(), "HTTP/2 differs:\n{differences}");
    assert!(same > 600, "only {same} compared");
    assert!(held > 50 && refused > 100 && forwarded > 200);
}

/// The request ids the Go upstream received with this prefix.
async fn received(upstream: &str, prefix: &str) -> Vec<String> {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = reqwest::get(format!("http://{upstream}/__received?prefix={prefix}"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("the upstream lists what it received")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|id| id.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_attacks_reach_no_upstream() {
    let go = env("AUTHGATE_TEST_UPSTREAM_GO");
    let routes = routes_for(&go);
    let s = secure(|o| o.set("ROUTES_FILE", &routes)).await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("h2attack-{run}-");

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    let base = |path: &str, id: &str| -> Fields {
        vec![
            (b":method".to_vec(), b"GET".to_vec()),
            (b":scheme".to_vec(), b"https".to_vec()),
            (b":authority".to_vec(), HOST.as_bytes().to_vec()),
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b"x-request-id".to_vec(), id.as_bytes().to_vec()),
        ]
    };
    let with = |mut fields: Fields, name: &[u8], value: &[u8]| {
        fields.push((name.to_vec(), value.to_vec()));
        fields
    };
    let replace = |fields: Fields, name: &[u8], value: Option<&[u8]>| -> Fields {
        fields
            .into_iter()
            .filter_map(|(n, v)| {
                if n == name {
                    value.map(|value| (n, value.to_vec()))
                } else {
                    Some((n, v))
                }
            })
            .collect()
    };

    // The control: a well-formed request over the same raw client arrives.
    let control = format!("{prefix}control");
    let outcome = raw_h2(
        s.env.gw.port,
        &s.ca,
        &pairs(&base("/public/control", &control)),
        &[],
    )
    .await;
    assert_eq!(outcome, RawOutcome::Status(200));

    let smuggled = format!("{prefix}smuggled");
    let smuggling_body =
        format!("aaaaaGET /admin/x HTTP/1.1\r\nHost: {HOST}\r\nX-Request-Id: {smuggled}\r\n\r\n");
    let mut cases: Vec<(&str, Fields, Vec<Vec<u8>>)> = Vec::new();
    let id = |n: usize| format!("{prefix}{n}");
    let mut n = 0;
    let mut next = || {
        n += 1;
        id(n)
    };
    let i = next();
    cases.push((
        "upper-case name",
        with(base("/admin/x", &i), b"X-Auth-User-Id", b"1"),
        vec![],
    ));
    let i = next();
    cases.push((
        "transfer-encoding",
        with(base("/public/x", &i), b"transfer-encoding", b"chunked"),
        vec![],
    ));
    let i = next();
    cases.push((
        "connection",
        with(base("/public/x", &i), b"connection", b"keep-alive"),
        vec![],
    ));
    let i = next();
    cases.push((
        "keep-alive",
        with(base("/public/x", &i), b"keep-alive", b"timeout=5"),
        vec![],
    ));
    let i = next();
    cases.push((
        "upgrade",
        with(base("/public/x", &i), b"upgrade", b"websocket"),
        vec![],
    ));
    let i = next();
    cases.push((
        "te: gzip",
        with(base("/public/x", &i), b"te", b"gzip"),
        vec![],
    ));
    let i = next();
    cases.push((
        "CRLF in a value",
        with(base("/public/x", &i), b"x-a", b"b\r\nx-auth-user-id: 1"),
        vec![],
    ));
    let i = next();
    cases.push((
        "NUL in a value",
        with(base("/public/x", &i), b"x-a", b"b\0c"),
        vec![],
    ));
    let i = next();
    cases.push((
        "space in a name",
        with(base("/public/x", &i), b"x a", b"b"),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path with a request inside",
        replace(
            base("", &i),
            b":path",
            Some(b"/public/x HTTP/1.1\r\nHost: b\r\n\r\nGET /admin/x"),
        ),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path with a control byte",
        replace(base("", &i), b":path", Some(b"/admin\x01x")),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path with a space",
        replace(base("", &i), b":path", Some(b"/public/x /admin/x")),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path missing",
        replace(base("", &i), b":path", None),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path empty",
        replace(base("", &i), b":path", Some(b"")),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path absolute",
        replace(base("", &i), b":path", Some(b"http://app.example/admin/x")),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path twice",
        with(base("/public/x", &i), b":path", b"/admin/x"),
        vec![],
    ));
    let i = next();
    cases.push((
        ":path after a header",
        {
            let mut fields = replace(base("", &i), b":path", None);
            fields.push((b":path".to_vec(), b"/admin/x".to_vec()));
            fields
        },
        vec![],
    ));
    let i = next();
    cases.push((
        "unknown pseudo-header",
        with(base("/public/x", &i), b":x-auth-user-id", b"1"),
        vec![],
    ));
    let i = next();
    cases.push((
        ":authority against Host",
        with(base("/public/x", &i), b"host", b"evil.example"),
        vec![],
    ));
    let i = next();
    cases.push((
        ":authority with userinfo",
        replace(
            base("/public/x", &i),
            b":authority",
            Some(b"admin@app.example"),
        ),
        vec![],
    ));
    let i = next();
    cases.push((
        "two Host headers",
        with(
            with(
                replace(base("/public/x", &i), b":authority", None),
                b"host",
                HOST.as_bytes(),
            ),
            b"host",
            b"evil.example",
        ),
        vec![],
    ));
    let i = next();
    cases.push((
        "CONNECT",
        vec![
            (b":method".to_vec(), b"CONNECT".to_vec()),
            (b":authority".to_vec(), b"evil.example:443".to_vec()),
            (b"x-request-id".to_vec(), i.as_bytes().to_vec()),
        ],
        vec![],
    ));
    let i = next();
    cases.push((
        "extended CONNECT",
        {
            let fields = replace(base("/public/ws", &i), b":method", Some(b"CONNECT"));
            with(fields, b":protocol", b"websocket")
        },
        vec![],
    ));
    let i = next();
    cases.push((
        "method with a space",
        replace(base("/public/x", &i), b":method", Some(b"GET /admin/x")),
        vec![],
    ));
    let i = next();
    cases.push((
        "body past its content-length (smuggling)",
        {
            let fields = replace(base("/public/x", &i), b":method", Some(b"POST"));
            with(fields, b"content-length", b"5")
        },
        vec![smuggling_body.as_bytes().to_vec()],
    ));
    let i = next();
    cases.push((
        "body short of its content-length",
        {
            let fields = replace(base("/public/x", &i), b":method", Some(b"POST"));
            with(fields, b"content-length", b"100")
        },
        vec![b"abc".to_vec()],
    ));
    let i = next();
    cases.push((
        "conflicting content-lengths",
        {
            let fields = replace(base("/public/x", &i), b":method", Some(b"POST"));
            with(
                with(fields, b"content-length", b"3"),
                b"content-length",
                b"30",
            )
        },
        vec![b"abc".to_vec()],
    ));

    let mut report = String::new();
    let mut answered_badly = Vec::new();
    for (label, fields, data) in &cases {
        let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let outcome = raw_h2(s.env.gw.port, &s.ca, &pairs(fields), &data).await;
        let _ = writeln!(report, "  {label}: {outcome:?}");
        let refused = match outcome {
            RawOutcome::Status(status) => (400..500).contains(&status),
            RawOutcome::Reset(_) | RawOutcome::GoAway(_) | RawOutcome::Closed => true,
        };
        if !refused {
            answered_badly.push(format!("{label}: {outcome:?}"));
        }
    }
    println!("HTTP/2 attacks:\n{report}");
    let got = received(&go, &prefix).await;
    // The requests whose body does not fit their Content-Length may have
    // had their head forwarded before the body went wrong (the upstream
    // connection is then dropped); nothing else may arrive, the smuggled
    // request above all.
    let cut = [id(25), id(26)];
    let leaked: Vec<&String> = got
        .iter()
        .filter(|id| **id != control && !cut.contains(id))
        .collect();
    assert!(
        got.contains(&control),
        "the control request did not arrive: {got:?}"
    );
    assert!(
        !got.contains(&smuggled),
        "a smuggled request arrived: {got:?}"
    );
    assert!(
        leaked.is_empty(),
        "attacks reached the upstream: {leaked:?}\n{report}"
    );
    assert!(answered_badly.is_empty(), "not refused: {answered_badly:?}");
}

fn pairs(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect()
}
