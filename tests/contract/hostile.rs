//! Hostile requests through the gateway to three real upstreams that route
//! by their own rules (scripts/upstreams.sh runs them): Starlette under
//! uvicorn, Go's net/http ServeMux, nginx with `underscores_in_headers on`.
//!
//! Each upstream sits behind a native-mode gateway with the routes `/api`
//! (authenticated), `/api/admin` and `/admin` (`role:admin`), `/` (public).
//! Every request of `hostile_set` is sent as raw bytes (no HTTP client would
//! send most of them) by three callers: anonymous, a signed-up user and an
//! admin. What each upstream answered (the handler its router chose, the
//! path and headers it saw) and what it received (its log of request ids)
//! are checked against the edge rules:
//!
//! - no protected handler answers a caller its policy refuses;
//! - no identity header arrives but the gateway's own, in its own spelling;
//! - no forwarding header of the client arrives, and the gateway sets
//!   `X-Forwarded-For`, `X-Forwarded-Host` and `X-Forwarded-Proto`;
//! - refused requests get 400 `Invalid request path` and reach no upstream;
//! - forwarded requests reach the upstream with the canonical path, under
//!   the policy of their policy path, with the caller's identity.
//!
//! Every failure is collected; the test prints a summary per upstream
//! (requests sent, forwarded, held, normalised, refused; failures by kind)
//! and fails at the end when there is any.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Env;
use crate::edge::routes_file;
use crate::harness::{Gateway, TestUser, env};
use crate::hostile_set::{self, Expect, Hostile, Policy};

/// The Host every request names.
const HOST: &str = "app.example";
/// The gateway's address as the upstreams see the peer.
const PEER: &str = "127.0.0.1";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const IDENTITY: [&str; 5] = [
    "x-auth-user-id",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-device-id",
    "x-auth-client-id",
];

/// Forwarding headers of the client that must never arrive (the gateway
/// sets `X-Forwarded-For`, `-Host` and `-Proto` itself).
const UNTRUSTED_FORWARDING: [&str; 10] = [
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-method",
];

/// A header name as the rules compare them: lower-case, `_` read as `-`.
pub(crate) fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Who sends a request.
pub(crate) struct Caller {
    pub(crate) name: &'static str,
    pub(crate) token: Option<String>,
    /// The identity headers the gateway sets for this caller, by name.
    pub(crate) identity: BTreeMap<&'static str, String>,
    pub(crate) admin: bool,
}

impl Caller {
    pub(crate) fn anonymous() -> Self {
        Self {
            name: "anonymous",
            token: None,
            identity: BTreeMap::new(),
            admin: false,
        }
    }

    /// A caller holding `token`, with the identity its claims give.
    pub(crate) fn holding(name: &'static str, token: String, admin: bool) -> Self {
        let claims = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .expect("the access token's claims");
        let mut identity = BTreeMap::new();
        identity.insert("x-auth-user-id", claims["user_id"].to_string());
        for (header, claim) in [("x-auth-email", "email"), ("x-auth-device-id", "device_id")] {
            if let Some(value) = claims[claim].as_str() {
                identity.insert(header, value.to_string());
            }
        }
        identity.insert("x-auth-roles", if admin { "admin" } else { "" }.into());
        Self {
            name,
            token: Some(token),
            identity,
            admin,
        }
    }

    pub(crate) fn passes(&self, policy: Policy) -> bool {
        match policy {
            Policy::Public => true,
            Policy::Authenticated => self.token.is_some(),
            Policy::Admin => self.admin,
        }
    }
}

/// An answer read off the socket.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// What an upstream says it saw.
pub(crate) struct Seen {
    pub(crate) handler: String,
    pub(crate) raw: String,
    /// Names as the upstream reports them; nginx reports named ones only,
    /// with "" for an absent header (so empty ones are left out).
    pub(crate) headers: Vec<(String, String)>,
}

impl Seen {
    pub(crate) fn parse(server: &str, body: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(body);
        match serde_json::from_str::<Value>(&text) {
            Ok(json) if json["server"] == server => {
                let headers = json["headers"]
                    .as_array()?
                    .iter()
                    .filter_map(|pair| {
                        Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string()))
                    })
                    .filter(|(_, value)| server != "nginx" || !value.is_empty())
                    .collect();
                Some(Self {
                    handler: json["handler"].as_str()?.to_string(),
                    raw: json["raw"].as_str()?.to_string(),
                    headers,
                })
            }
            Ok(_) => None,
            // nginx cannot escape what it writes: a value holding `"` or
            // `\` breaks its JSON, whose every value is on a line of its own.
            Err(_) if server == "nginx" && text.starts_with("{\"server\": \"nginx\",") => {
                Some(Self::nginx_lines(&text))
            }
            Err(_) => None,
        }
    }

    fn nginx_lines(text: &str) -> Self {
        let field = |key: &str| {
            let start = format!("\"{key}\": \"");
            text.lines()
                .find_map(|l| l.strip_prefix(start.as_str()))
                .map(|v| v.strip_suffix("\",").unwrap_or(v).to_string())
                .unwrap_or_default()
        };
        let headers = text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.strip_prefix("[\"")?.split_once("\", \"")?;
                let value = value.strip_suffix("\"],").or(value.strip_suffix("\"]"))?;
                (!value.is_empty()).then(|| (name.to_string(), value.to_string()))
            })
            .collect();
        Self {
            handler: field("handler"),
            raw: field("raw"),
            headers,
        }
    }

    /// Values of the headers whose folded name is `name`, with the names.
    pub(crate) fn named(&self, name: &str) -> Vec<&(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| folded(n) == name)
            .collect()
    }
}

/// The raw request: the hostile target and header lines, the caller's
/// token, a request id for counting, `Connection: close`.
pub(crate) fn request_bytes(hostile: &Hostile, caller: &Caller, request_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(hostile.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&hostile.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(format!("Host: {HOST}\r\nX-Request-Id: {request_id}\r\n").as_bytes());
    if let Some(token) = &caller.token {
        out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    for line in &hostile.header_lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    let body: &[u8] = if ["POST", "PUT", "PATCH"].contains(&hostile.method.as_str()) {
        b"{}"
    } else {
        b""
    };
    if !body.is_empty() {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends raw bytes and reads one answer (None: closed or silent).
pub(crate) async fn exchange(port: u16, request: &[u8], head_only: bool) -> Option<Answer> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    socket.write_all(request).await.ok()?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        if let Some(answer) = complete_answer(&seen, head_only, false) {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            Ok(_) => return complete_answer(&seen, head_only, true),
            Err(_) => return None,
        }
    }
}

/// The answer in `bytes` once it is whole (at `eof`, whatever came).
fn complete_answer(bytes: &[u8], head_only: bool, eof: bool) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
        return None;
    };
    let status = response.code?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &bytes[head_len..];
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length").and_then(|l| l.parse().ok()) {
        rest.get(..length)?.to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Answer { status, body })
}

/// A whole chunked body, decoded (None until its last chunk came).
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size + 2..)?;
    }
}

/// The kinds of failure, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    Bypass,
    ForgedIdentity,
    IdentitySpelling,
    ClientForwarding,
    ForwardedSet,
    NotRefused,
    ReachedUpstream,
    NotCanonical,
    Admission,
    IdentityNotCallers,
}

impl Failure {
    fn text(self) -> &'static str {
        match self {
            Self::Bypass => "bypass: protected handler answered a refused caller",
            Self::ForgedIdentity => "forged identity header arrived",
            Self::IdentitySpelling => "identity header in another spelling arrived",
            Self::ClientForwarding => "client forwarding header arrived",
            Self::ForwardedSet => "X-Forwarded-* not as the gateway sets them",
            Self::NotRefused => "not refused with 400 Invalid request path",
            Self::ReachedUpstream => "refused or held request reached the upstream",
            Self::NotCanonical => "upstream did not see the canonical path",
            Self::Admission => "admission not as the policy says",
            Self::IdentityNotCallers => "identity not the caller's",
        }
    }
}

/// Failures and tallies of one upstream.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) sent: usize,
    pub(crate) forwarded: usize,
    pub(crate) held: usize,
    pub(crate) normalised: usize,
    pub(crate) refused: usize,
    pub(crate) expected_held: usize,
    pub(crate) expected_normalised: usize,
    pub(crate) expected_refused: usize,
    /// kind -> hostile label -> what went wrong, per caller
    pub(crate) failures: BTreeMap<Failure, BTreeMap<String, Vec<String>>>,
}

impl Tally {
    pub(crate) fn fail(
        &mut self,
        kind: Failure,
        hostile: &Hostile,
        caller: &Caller,
        detail: String,
    ) {
        self.failures
            .entry(kind)
            .or_default()
            .entry(hostile.label.clone())
            .or_default()
            .push(format!("{}: {detail}", caller.name));
    }

    pub(crate) fn failure_count(&self) -> usize {
        self.failures
            .values()
            .flat_map(|m| m.values())
            .map(Vec::len)
            .sum()
    }
}

/// Checks one answer against the invariants and the rules.
fn judge(
    tally: &mut Tally,
    server: &str,
    hostile: &Hostile,
    caller: &Caller,
    answer: Option<&Answer>,
    received: usize,
) {
    tally.sent += 1;
    let seen = answer.and_then(|a| Seen::parse(server, &a.body));
    let status = answer.map(|a| a.status);
    let invalid_path = answer.is_some_and(|a| {
        a.status == 400
            && serde_json::from_slice::<Value>(&a.body).ok()
                == Some(json!({"detail": "Invalid request path"}))
    });
    if received > 0 {
        tally.forwarded += 1;
    } else if status == Some(403) {
        tally.held += 1;
    } else if status == Some(400) {
        tally.refused += 1;
    }
    if let Some(seen) = &seen {
        if seen.raw.as_bytes() != hostile.origin_form().as_slice() {
            tally.normalised += 1;
        }
        check_invariants(tally, hostile, caller, seen);
    }

    match &hostile.expect {
        Expect::Refuse => {
            tally.expected_refused += 1;
            if !invalid_path {
                let got = describe(answer, seen.as_ref());
                tally.fail(Failure::NotRefused, hostile, caller, got);
            }
            if received > 0 {
                tally.fail(
                    Failure::ReachedUpstream,
                    hostile,
                    caller,
                    format!("received {received}x"),
                );
            }
        }
        Expect::Reject => {
            tally.expected_refused += 1;
            if status != Some(400) {
                let got = describe(answer, seen.as_ref());
                tally.fail(Failure::NotRefused, hostile, caller, got);
            }
            if received > 0 {
                tally.fail(
                    Failure::ReachedUpstream,
                    hostile,
                    caller,
                    format!("received {received}x"),
                );
            }
        }
        Expect::Api => {
            if received > 0 {
                tally.fail(
                    Failure::ReachedUpstream,
                    hostile,
                    caller,
                    format!("received {received}x"),
                );
            }
        }
        Expect::Open => {}
        Expect::Canonical(path) | Expect::Under(path) => {
            let policy = hostile_set::policy_of(path);
            if !caller.passes(policy) {
                tally.expected_held += 1;
                if status != Some(403) {
                    let got = describe(answer, seen.as_ref());
                    tally.fail(
                        Failure::Admission,
                        hostile,
                        caller,
                        format!("{policy:?}, not held: {got}"),
                    );
                }
                if received > 0 {
                    tally.fail(
                        Failure::ReachedUpstream,
                        hostile,
                        caller,
                        format!("received {received}x"),
                    );
                }
                return;
            }
            let canonical = hostile.canonical_target();
            let normalises = canonical
                .as_ref()
                .is_some_and(|c| c.as_bytes() != hostile.origin_form().as_slice());
            if normalises {
                tally.expected_normalised += 1;
            }
            if received == 0 {
                let got = describe(answer, seen.as_ref());
                tally.fail(
                    Failure::Admission,
                    hostile,
                    caller,
                    format!("{policy:?}, not forwarded: {got}"),
                );
                return;
            }
            if hostile.method == "HEAD" {
                return; // no body to read what the upstream saw
            }
            let Some(seen) = &seen else {
                let got = describe(answer, None);
                tally.fail(
                    Failure::NotCanonical,
                    hostile,
                    caller,
                    format!("no answer of the upstream: {got}"),
                );
                return;
            };
            if let Some(canonical) = canonical
                && seen.raw != canonical
            {
                let detail = format!("saw {:?}, canonical {canonical:?}", seen.raw);
                tally.fail(Failure::NotCanonical, hostile, caller, detail);
            }
            check_identity(tally, hostile, caller, seen, policy);
        }
    }
}

/// What every upstream answer must satisfy, whatever the request.
fn check_invariants(tally: &mut Tally, hostile: &Hostile, caller: &Caller, seen: &Seen) {
    let protected = match seen.handler.as_str() {
        "admin" | "api-admin" => !caller.admin,
        "api" => caller.token.is_none(),
        _ => false,
    };
    if protected {
        let detail = format!("handler {} saw {:?}", seen.handler, seen.raw);
        tally.fail(Failure::Bypass, hostile, caller, detail);
    }
    for (name, value) in &seen.headers {
        let folded = folded(name);
        if IDENTITY.contains(&folded.as_str()) {
            if caller.identity.get(folded.as_str()) != Some(value) {
                tally.fail(
                    Failure::ForgedIdentity,
                    hostile,
                    caller,
                    format!("{name}: {value}"),
                );
            }
            if name.contains('_') {
                tally.fail(
                    Failure::IdentitySpelling,
                    hostile,
                    caller,
                    format!("{name}: {value}"),
                );
            }
        }
        if UNTRUSTED_FORWARDING.contains(&folded.as_str()) {
            tally.fail(
                Failure::ClientForwarding,
                hostile,
                caller,
                format!("{name}: {value}"),
            );
        }
        if folded.starts_with("x-forwarded-") && name.contains('_') {
            tally.fail(
                Failure::ClientForwarding,
                hostile,
                caller,
                format!("{name}: {value}"),
            );
        }
    }
    let hosts: Vec<String> = [Some(HOST.to_string()), hostile.authority()]
        .into_iter()
        .flatten()
        .collect();
    for (header, allowed) in [
        ("x-forwarded-for", vec![PEER.to_string()]),
        ("x-forwarded-host", hosts),
        ("x-forwarded-proto", vec!["http".to_string()]),
    ] {
        let values: Vec<&String> = seen.named(header).into_iter().map(|(_, v)| v).collect();
        if values.len() != 1 || !allowed.contains(values[0]) {
            tally.fail(
                Failure::ForwardedSet,
                hostile,
                caller,
                format!("{header}: {values:?}"),
            );
        }
    }
}

/// The caller's identity on a protected route, none on a public one.
pub(crate) fn check_identity(
    tally: &mut Tally,
    hostile: &Hostile,
    caller: &Caller,
    seen: &Seen,
    policy: Policy,
) {
    for name in IDENTITY {
        let values: Vec<&String> = seen.named(name).into_iter().map(|(_, v)| v).collect();
        let expected = match policy {
            Policy::Public => None,
            _ => caller.identity.get(name),
        };
        let fine = match expected {
            // An empty value (a user without roles) may be left out.
            Some(value) if value.is_empty() => values.iter().all(|v| v.is_empty()),
            Some(value) => values == [value],
            None => values.is_empty(),
        };
        if !fine {
            let detail = format!("{policy:?}: {name} {values:?}, expected {expected:?}");
            tally.fail(Failure::IdentityNotCallers, hostile, caller, detail);
        }
    }
}

pub(crate) fn describe(answer: Option<&Answer>, seen: Option<&Seen>) -> String {
    match (answer, seen) {
        (None, _) => "no answer".into(),
        (Some(a), Some(s)) => format!("{} from handler {} ({:?})", a.status, s.handler, s.raw),
        (Some(a), None) => {
            let body = String::from_utf8_lossy(&a.body);
            let body: String = body.chars().take(80).collect();
            format!("{} {body:?}", a.status)
        }
    }
}

/// Whether `answer` is the upstream server's own refusal, given before its
/// app (or nginx's log) could note the request id: uvicorn's, Go's and
/// nginx's answers to a request they cannot parse.
pub(crate) fn upstream_refusal(server: &str, answer: Option<&Answer>) -> bool {
    let Some(answer) = answer else {
        return false;
    };
    let body = String::from_utf8_lossy(&answer.body);
    match server {
        "starlette" => body == "Invalid HTTP request received.",
        "go" => body.starts_with("400 Bad Request"),
        "nginx" => body.contains("<hr><center>nginx"),
        _ => false,
    }
}

/// The request ids an upstream received, by how often.
pub(crate) async fn received_ids(upstream: &str, prefix: &str) -> HashMap<String, usize> {
    // nginx writes its log line once the answer is sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = reqwest::get(format!("http://{upstream}/__received?prefix={prefix}"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("the upstream lists what it received")
        .text()
        .await
        .expect("the list");
    let mut counts = HashMap::new();
    // (nginx serves its whole log, unfiltered.)
    for id in text.lines().filter(|id| id.starts_with(prefix)) {
        *counts.entry(id.to_string()).or_default() += 1;
    }
    counts
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

/// Sends the whole set as every caller through `gw` to `upstream`, judges
/// every answer; returns the report of this upstream (whole, and shortened
/// for the test's output) and how many checks failed.
async fn run_against(
    gw: &Gateway,
    server: &str,
    upstream: &str,
    set: &[Hostile],
    callers: &[Caller],
    run: &str,
) -> (String, String, usize) {
    let prefix = format!("hostile-{run}-{server}-");
    let mut answers = Vec::new();
    for (i, hostile) in set.iter().enumerate() {
        for (j, caller) in callers.iter().enumerate() {
            let id = format!("{prefix}{i}-{j}");
            let bytes = request_bytes(hostile, caller, &id);
            let answer = exchange(gw.port, &bytes, hostile.method == "HEAD").await;
            answers.push((i, j, id, answer));
        }
    }
    let received = received_ids(upstream, &prefix).await;
    let mut tally = Tally::default();
    let mut total_received = 0;
    for (i, j, id, answer) in &answers {
        let mut count = received.get(id).copied().unwrap_or(0);
        if count == 0 && upstream_refusal(server, answer.as_ref()) {
            count = 1;
        }
        total_received += count;
        judge(
            &mut tally,
            server,
            &set[*i],
            &callers[*j],
            answer.as_ref(),
            count,
        );
    }
    let full = report(
        server,
        upstream,
        set.len(),
        total_received,
        &tally,
        usize::MAX,
    );
    let short = report(server, upstream, set.len(), total_received, &tally, SHOWN);
    (full, short, tally.failure_count())
}

/// How many distinct requests the printed report lists per kind of failure
/// (all of them for bypasses; the whole report goes to a file).
pub(crate) const SHOWN: usize = 12;

pub(crate) fn report(
    server: &str,
    upstream: &str,
    distinct: usize,
    received: usize,
    t: &Tally,
    shown: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {server} ({upstream}): {} requests sent ({distinct} distinct x 3 callers); \
         upstream received {received}",
        t.sent,
    );
    let _ = writeln!(
        out,
        "   forwarded {}, held {} (rules: {}), normalised {} (rules: {}), refused {} (rules: {})",
        t.forwarded,
        t.held,
        t.expected_held,
        t.normalised,
        t.expected_normalised,
        t.refused,
        t.expected_refused,
    );
    if t.failures.is_empty() {
        let _ = writeln!(out, "   no failure");
    }
    for (kind, cases) in &t.failures {
        let count: usize = cases.values().map(Vec::len).sum();
        let _ = writeln!(
            out,
            "   FAIL {}: {count} ({} distinct requests)",
            kind.text(),
            cases.len()
        );
        let shown = if *kind == Failure::Bypass {
            usize::MAX
        } else {
            shown
        };
        for (label, callers) in cases.iter().take(shown) {
            let _ = writeln!(out, "     {label:?}  [{}]", callers.join("; "));
        }
        if cases.len() > shown {
            let _ = writeln!(out, "     ... and {} more", cases.len() - shown);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_gets_around_a_policy_at_three_real_upstreams() {
    let upstreams = [
        ("starlette", env("AUTHGATE_TEST_UPSTREAM_STARLETTE")),
        ("go", env("AUTHGATE_TEST_UPSTREAM_GO")),
        ("nginx", env("AUTHGATE_TEST_UPSTREAM_NGINX")),
    ];
    let set = hostile_set::load();
    let first = routes_for(&upstreams[0].1);
    let env = Env::native_with(|o| o.set("ROUTES_FILE", &first)).await;
    let mut gateways = Vec::new();
    for (_, upstream) in &upstreams[1..] {
        let routes = routes_for(upstream);
        gateways.push(env.sibling(|o| o.set("ROUTES_FILE", &routes)).await);
    }

    // Sign-up answers carry working tokens; the admin is made one by an
    // operator's grant before the gateways see its token.
    let mut tokens = Vec::new();
    for prefix in ["hostile", "hostileadmin"] {
        let user = TestUser::new(prefix);
        let reply = env.gw.post("/users/signup", user.signup_body()).await;
        assert_eq!(reply.status, 200, "signup: {}", reply.text);
        tokens.push((
            user,
            reply.json["access_token"].as_str().unwrap().to_string(),
        ));
    }
    env.make_admin(&tokens[1].0).await;
    let callers = [
        Caller::anonymous(),
        Caller::holding("user", tokens[0].1.clone(), false),
        Caller::holding("admin", tokens[1].1.clone(), true),
    ];

    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut full = String::new();
    let mut short = String::new();
    let mut failures = 0;
    for (k, (server, upstream)) in upstreams.iter().enumerate() {
        let gw = if k == 0 { &env.gw } else { &gateways[k - 1] };
        let (whole, shortened, failed) =
            run_against(gw, server, upstream, &set, &callers, &run).await;
        full.push_str(&whole);
        short.push_str(&shortened);
        failures += failed;
    }
    let path = std::env::temp_dir().join(format!("authgate-hostile-{run}.txt"));
    std::fs::write(&path, &full).expect("write the report");
    println!("{short}(whole report: {})", path.display());
    assert_eq!(
        failures,
        0,
        "hostile requests got through (whole report: {}):\n{short}",
        path.display()
    );
}
