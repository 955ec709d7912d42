//! Forward-auth (`/auth/forward`) behind real edge proxies: nginx with
//! `auth_request` and Caddy with `forward_auth`, run from the README's
//! configurations (`proxies.rs`), in front of the Go test upstream
//! (`scripts/upstreams.sh`), which says which handler answered and every
//! header it received.
//!
//! The gateway's routes only state policies (no upstreams): `/api`
//! authenticated, `/api/admin` and `/admin` `role:admin`, `/` public, the
//! routes the hostile set is written for. Checked through each proxy:
//! allowed, refused and role-refused requests; the caller's identity
//! arriving upstream and forged identity headers never arriving; the whole
//! hostile set (`hostile_set.rs`) refused or held as the edge rules say,
//! with no protected handler ever answering a caller its policy refuses.
//! And the endpoint itself: trusted proxies only, the original target's
//! sources, rate limits, the OpenAPI document.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::Env;
use crate::edge::{metric, metrics, routes_file};
use crate::harness::{Gateway, Reply, TestUser, env};
use crate::hostile::{
    self, Answer, Caller, Failure, IDENTITY, SHOWN, Seen, Tally, check_identity, describe, folded,
};
use crate::hostile_set::{self, Expect, Hostile, Policy};
use crate::proxies::Proxy;

const POLICIES: &str = r#"
[[routes]]
prefix = "/api"
policy = "authenticated"

[[routes]]
prefix = "/api/admin"
policy = "role:admin"

[[routes]]
prefix = "/admin"
policy = "role:admin"

[[routes]]
prefix = "/"
policy = "public"
"#;

/// A gateway that answers forward-auth for proxies on 127.0.0.1, with a
/// user and an admin (their sign-up tokens).
struct Setup {
    env: Env,
    user: (TestUser, String),
    admin: (TestUser, String),
}

async fn setup(routes: &str) -> Setup {
    let file = routes_file(routes);
    let env = Env::native_with(|o| {
        o.set("ROUTES_FILE", &file)
            .set("TRUSTED_PROXIES", "127.0.0.1")
    })
    .await;
    let mut users = Vec::new();
    for prefix in ["fwduser", "fwdadmin"] {
        let mut user = TestUser::new(prefix);
        let reply = env.gw.post("/users/signup", user.signup_body()).await;
        assert_eq!(reply.status, 200, "signup: {}", reply.text);
        let token = reply.json["access_token"].as_str().unwrap().to_string();
        user.id = env.gw.get_bearer("/users/me", &token).await.json["id"]
            .as_i64()
            .expect("the user's id");
        users.push((user, token));
    }
    env.make_admin(&users[1].0).await;
    let admin = users.pop().unwrap();
    let user = users.pop().unwrap();
    Setup { env, user, admin }
}

/// What the Go upstream says it saw, or `None` when it did not answer.
fn seen(reply: &Reply) -> Option<Seen> {
    Seen::parse("go", reply.text.as_bytes())
}

/// The identity headers the upstream received, by folded name.
fn identity_seen(seen: &Seen) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &seen.headers {
        let name = folded(name);
        if IDENTITY.contains(&name.as_str()) {
            out.entry(name).or_default().push(value.clone());
        }
    }
    out
}

async fn send(proxy: &Proxy, gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = gw.http.get(proxy.url(path)).header("host", "app.example");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    gw.send(request).await
}

/// The plain cases through one proxy.
async fn plain_cases(setup: &Setup, proxy: &Proxy) {
    let gw = &setup.env.gw;
    let (user, user_token) = (&setup.user.0, setup.user.1.as_str());
    let admin_token = setup.admin.1.as_str();
    let bearer = |token: &str| format!("Bearer {token}");
    let name = proxy.name;

    // Public: passes, and no identity reaches the app, forged or not.
    let reply = send(proxy, gw, "/public/x", &[]).await;
    assert_eq!(reply.status, 200, "{name}: {}", reply.text);
    let upstream = seen(&reply).expect("the upstream answered");
    assert_eq!(upstream.handler, "public");
    assert!(
        identity_seen(&upstream).is_empty(),
        "{name}: {:?}",
        upstream.headers
    );
    let forged = [
        ("X-Auth-User-Id", "1"),
        ("x-auth-roles", "admin"),
        ("X_Auth_User_Id", "1"),
        ("X-Auth_Email", "forged@example.com"),
        ("X-AUTH-DEVICE-ID", "forged"),
        ("x_auth_client_id", "forged"),
    ];
    let reply = send(proxy, gw, "/public/x", &forged).await;
    let upstream = seen(&reply).expect("the upstream answered");
    assert!(
        identity_seen(&upstream).is_empty(),
        "{name}: forged identity arrived: {:?}",
        upstream.headers
    );

    // Authenticated: refused without a token (the contract's 403), passes
    // with one (bearer or cookie), with the caller's identity only.
    let reply = send(proxy, gw, "/api/x", &[]).await;
    assert_eq!(reply.status, 403, "{name}: {}", reply.text);
    assert!(seen(&reply).is_none(), "{name}: reached the upstream");
    if name == "caddy" {
        // Caddy passes authgate's refusal on as it is.
        reply.assert_detail(403, "Unauthorized.");
    }
    let reply = send(proxy, gw, "/api/x", &[("authorization", "Bearer nope")]).await;
    assert_eq!(reply.status, 403, "{name}: {}", reply.text);
    if name == "caddy" {
        reply.assert_detail(403, "Invalid token or expired token.");
    }
    for credentials in [
        ("authorization", bearer(user_token)),
        ("cookie", format!("theme=dark; access_token={user_token}")),
    ] {
        let mut headers = vec![(credentials.0, credentials.1.as_str())];
        headers.extend_from_slice(&forged);
        let reply = send(proxy, gw, "/api/x", &headers).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        let upstream = seen(&reply).expect("the upstream answered");
        assert_eq!(upstream.handler, "api");
        let identity = identity_seen(&upstream);
        assert_eq!(identity["x-auth-user-id"], [user.id.to_string()], "{name}");
        assert_eq!(identity["x-auth-email"], [user.email.as_str()], "{name}");
        // Exactly what the gateway sets for this token, nothing else.
        let expected = Caller::holding("user", user_token.to_string(), false).identity;
        for header in IDENTITY {
            let got = identity.get(header).cloned().unwrap_or_default();
            match expected.get(header) {
                Some(value) if !value.is_empty() => {
                    assert_eq!(got, [value.as_str()], "{name} {header}")
                }
                _ => assert!(got.iter().all(String::is_empty), "{name}: {header} {got:?}"),
            }
        }
        for (header, _) in &upstream.headers {
            assert!(!header.contains('_'), "{name}: {header} arrived");
        }
    }

    // Role: a user without it is refused, the admin passes as admin.
    let reply = send(
        proxy,
        gw,
        "/admin/x",
        &[("authorization", &bearer(user_token))],
    )
    .await;
    assert_eq!(reply.status, 403, "{name}: {}", reply.text);
    assert!(seen(&reply).is_none());
    if name == "caddy" {
        reply.assert_detail(403, "Not enough permissions");
    }
    let reply = send(
        proxy,
        gw,
        "/admin/x",
        &[("authorization", &bearer(admin_token))],
    )
    .await;
    assert_eq!(reply.status, 200, "{name}: {}", reply.text);
    let upstream = seen(&reply).expect("the upstream answered");
    assert_eq!(upstream.handler, "admin");
    assert_eq!(identity_seen(&upstream)["x-auth-roles"], ["admin"]);

    // A client naming another target than the one it asks for: the proxy
    // replaces its header, or passes it beside its own and authgate finds
    // them disagreeing (400). Either way the role is still asked.
    for forged_target in [
        ("x-forwarded-uri", "/public"),
        ("x-original-uri", "/public"),
        ("x-original-url", "https://app.example/public"),
        ("x-envoy-original-path", "/public"),
    ] {
        let reply = send(
            proxy,
            gw,
            "/admin/x",
            &[("authorization", &bearer(user_token)), forged_target],
        )
        .await;
        assert!(
            [400, 403].contains(&reply.status),
            "{name}: {forged_target:?}: {} {}",
            reply.status,
            reply.text
        );
        assert!(seen(&reply).is_none(), "{name}: reached the upstream");
    }
    // A path with no canonical form: the edge's 400, from either proxy.
    let reply = send(
        proxy,
        gw,
        "/admin%2fx",
        &[("authorization", &bearer(admin_token))],
    )
    .await;
    reply.assert_detail(400, "Invalid request path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_caddy_pass_only_what_the_policies_allow() {
    let setup = setup(POLICIES).await;
    let app = env("AUTHGATE_TEST_UPSTREAM_GO");
    let nginx = Proxy::nginx(setup.env.gw.port, &app).await;
    plain_cases(&setup, &nginx).await;
    let caddy = Proxy::caddy(setup.env.gw.port, &app).await;
    plain_cases(&setup, &caddy).await;

    let text = metrics(&setup.env.gw).await;
    for outcome in ["allowed", "refused", "forbidden", "invalid"] {
        let line = format!("authgate_forward_auth_decisions_total{{outcome=\"{outcome}\"}}");
        assert!(metric(&text, &line) >= 2.0, "{line}:\n{text}");
    }
    assert_eq!(
        metric(
            &text,
            "authgate_forward_auth_decisions_total{outcome=\"untrusted\"}"
        ),
        0.0
    );
}

/// How a proxy's answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The upstream received it.
    Forwarded,
    /// authgate could not judge the original request: 400 with its
    /// `{"detail": ...}` (as Caddy passes it on, or nginx's error page
    /// `Invalid request path` for any of them).
    RefusedByAuthgate,
    /// Refused as unauthorised: 401 or 403.
    Held,
    /// The proxy's own answer, without asking anyone (a request it cannot
    /// parse or will not pass on).
    ProxyRefused,
    /// Anything else, nothing received.
    Other,
}

/// authgate's 400 answers of forward-auth.
const UNJUDGED: [&str; 3] = [
    "Invalid request path",
    "Original request URI is ambiguous",
    "Original request URI missing",
];

fn reading(answer: Option<&Answer>, received: usize) -> Reading {
    if received > 0 {
        return Reading::Forwarded;
    }
    let Some(answer) = answer else {
        return Reading::Other;
    };
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    let detail = json.as_ref().and_then(|j| j["detail"].as_str());
    match answer.status {
        400 if detail.is_some_and(|d| UNJUDGED.contains(&d)) => Reading::RefusedByAuthgate,
        401 | 403 => Reading::Held,
        400..=499 => Reading::ProxyRefused,
        _ => Reading::Other,
    }
}

/// Tallies of one proxy beyond the hostile suite's: answers by reading,
/// and the requests of the `Other` ones.
#[derive(Default)]
struct Readings {
    counts: BTreeMap<String, usize>,
    other: Vec<String>,
}

/// The headers a client may send to name another target than its own.
const TARGET_HEADERS: [&str; 4] = [
    "x-original-uri",
    "x-original-url",
    "x-forwarded-uri",
    "x-envoy-original-path",
];

/// Whether the request carries a header naming a target (a proxy that
/// passes it on beside its own makes authgate refuse the request).
fn names_a_target(hostile: &Hostile) -> bool {
    hostile.header_lines.iter().any(|line| {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        TARGET_HEADERS.contains(&folded(&String::from_utf8_lossy(name)).as_str())
    })
}

/// The policy a request falls under when a proxy passes it on: its rules'
/// path, or the path of an absolute-form target (the proxies take its
/// authority as the host, which the gateway's own parser refuses).
fn expected_policy(hostile: &Hostile) -> Option<Policy> {
    match &hostile.expect {
        Expect::Canonical(path) | Expect::Under(path) => Some(hostile_set::policy_of(path)),
        Expect::Reject if hostile.authority().is_some() => {
            let target = String::from_utf8_lossy(&hostile.origin_form()).into_owned();
            let path = target.split(['?', '#']).next().unwrap_or_default();
            Some(hostile_set::policy_of(if path.is_empty() {
                "/"
            } else {
                path
            }))
        }
        _ => None,
    }
}

/// Judges one answer of the hostile set through a proxy.
fn judge(
    tally: &mut Tally,
    readings: &mut Readings,
    hostile: &Hostile,
    caller: &Caller,
    answer: Option<&Answer>,
    received: usize,
) {
    tally.sent += 1;
    let read = reading(answer, received);
    *readings.counts.entry(format!("{read:?}")).or_default() += 1;
    match read {
        Reading::Forwarded => tally.forwarded += 1,
        Reading::Held => tally.held += 1,
        Reading::RefusedByAuthgate | Reading::ProxyRefused => tally.refused += 1,
        Reading::Other => readings.other.push(format!(
            "{} [{}]: {}",
            hostile.label,
            caller.name,
            answer.map_or("no answer".to_string(), |a| a.status.to_string())
        )),
    }
    let seen = answer.and_then(|a| Seen::parse("go", &a.body));
    // The invariants: no protected handler for a refused caller, no
    // identity but the caller's, in no other spelling.
    if let Some(seen) = &seen {
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
                    let detail = format!("{name}: {value}");
                    tally.fail(Failure::ForgedIdentity, hostile, caller, detail);
                }
                if name.contains('_') {
                    let detail = format!("{name}: {value}");
                    tally.fail(Failure::IdentitySpelling, hostile, caller, detail);
                }
            }
        }
    }
    let got = || describe(answer, seen.as_ref());
    // Paths of authgate's own API and forms the rules leave open: the
    // invariants above only.
    if matches!(hostile.expect, Expect::Api | Expect::Open) {
        return;
    }
    let Some(policy) = expected_policy(hostile) else {
        // No canonical form: refused, by authgate or the proxy itself.
        tally.expected_refused += 1;
        if !matches!(read, Reading::RefusedByAuthgate | Reading::ProxyRefused) {
            tally.fail(Failure::NotRefused, hostile, caller, got());
        }
        return;
    };
    // A proxy may refuse more than the rules (never less); authgate
    // refuses a request naming another target than its own, and what the
    // gateway's parser would have rejected.
    let refused_fine = read == Reading::ProxyRefused
        || (read == Reading::RefusedByAuthgate
            && (names_a_target(hostile) || hostile.expect == Expect::Reject));
    if !caller.passes(policy) {
        tally.expected_held += 1;
        if read != Reading::Held && !refused_fine {
            let detail = format!("{policy:?}, not held: {}", got());
            tally.fail(Failure::Admission, hostile, caller, detail);
        }
        return;
    }
    match read {
        Reading::Forwarded => {
            if let Some(seen) = &seen {
                check_identity(tally, hostile, caller, seen, policy);
            }
        }
        _ if refused_fine => {}
        _ => {
            let detail = format!("{policy:?}, not forwarded: {}", got());
            tally.fail(Failure::Admission, hostile, caller, detail);
        }
    }
}

/// Sends the whole set as every caller through `proxy`; returns its report
/// and how many checks failed.
async fn run_through(
    proxy: &Proxy,
    set: &[Hostile],
    callers: &[Caller],
    upstream: &str,
    run: &str,
) -> (String, usize) {
    let prefix = format!("fwd-{run}-{}-", proxy.name);
    let mut answers = Vec::new();
    for (i, hostile) in set.iter().enumerate() {
        for (j, caller) in callers.iter().enumerate() {
            let id = format!("{prefix}{i}-{j}");
            let bytes = hostile::request_bytes(hostile, caller, &id);
            let answer = hostile::exchange(proxy.port, &bytes, hostile.method == "HEAD").await;
            answers.push((i, j, id, answer));
        }
    }
    let received = hostile::received_ids(upstream, &prefix).await;
    let mut tally = Tally::default();
    let mut readings = Readings::default();
    let mut total_received = 0;
    for (i, j, id, answer) in &answers {
        let mut count = received.get(id).copied().unwrap_or(0);
        // nginx passed it on and the Go upstream's own parser refused it
        // (Caddy parses as Go does: what it passes on, Go reads).
        if count == 0 && proxy.name == "nginx" && hostile::upstream_refusal("go", answer.as_ref()) {
            count = 1;
        }
        total_received += count;
        judge(
            &mut tally,
            &mut readings,
            &set[*i],
            &callers[*j],
            answer.as_ref(),
            count,
        );
    }
    let mut report = hostile::report(
        &format!("{} -> forward-auth -> go", proxy.name),
        upstream,
        set.len(),
        total_received,
        &tally,
        SHOWN,
    );
    let _ = writeln!(report, "   answers: {:?}", readings.counts);
    for other in &readings.other {
        let _ = writeln!(report, "     other: {other}");
    }
    (report, tally.failure_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_set_gets_nothing_past_nginx_or_caddy() {
    let setup = setup(POLICIES).await;
    let upstream = env("AUTHGATE_TEST_UPSTREAM_GO");
    let callers = [
        Caller::anonymous(),
        Caller::holding("user", setup.user.1.clone(), false),
        Caller::holding("admin", setup.admin.1.clone(), true),
    ];
    let set = hostile_set::load();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut reports = String::new();
    let mut failures = 0;
    let gateway_port = setup.env.gw.port;
    for proxy in [
        Proxy::nginx(gateway_port, &upstream).await,
        Proxy::caddy(gateway_port, &upstream).await,
    ] {
        let (report, failed) = run_through(&proxy, &set, &callers, &upstream, &run).await;
        reports.push_str(&report);
        failures += failed;
    }
    println!("{reports}");
    assert_eq!(failures, 0, "hostile requests got through:\n{reports}");
}

/// Asks `/auth/forward` directly, as a proxy would.
async fn ask(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = gw.http.request(method, gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    gw.send(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_trusted_proxies_by_the_route_policies() {
    let routes = format!(
        "{POLICIES}\n[[routes]]\nprefix = \"/limited\"\npolicy = \"public\"\nrate_limit = \"2/minute\"\n"
    );
    let setup = setup(&routes).await;
    let gw = &setup.env.gw;
    let doc = gw.get("/docs/json").await.json;
    let fits = |method: &str, template: &str, reply: &Reply| {
        authgate::api::docs::conform::check_answer(
            &doc,
            template,
            method,
            reply.status,
            &reply.json,
        )
        .unwrap_or_else(|e| panic!("{method} {template} {}: {e}", reply.status));
    };
    let user_token = setup.user.1.as_str();
    let bearer = format!("Bearer {user_token}");

    // Every method is the original's; the target comes from any source.
    for method in [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND",
    ] {
        let reply = ask(
            gw,
            method,
            "/auth/forward",
            &[("x-original-uri", "/public/x")],
        )
        .await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text);
    }
    let allowed = ask(
        gw,
        "GET",
        "/auth/forward",
        &[
            ("x-forwarded-uri", "/api/x?y=1"),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    fits("GET", "/auth/forward", &allowed);
    assert_eq!(
        allowed.header("x-auth-user-id"),
        Some(setup.user.0.id.to_string())
    );
    assert_eq!(
        allowed.header("x-auth-email"),
        Some(setup.user.0.email.clone())
    );
    // A sign-up token names no device: no X-Auth-Device-Id, no roles.
    assert_eq!(allowed.header("x-auth-device-id"), None);
    // Envoy's ext_authz: the target after the prefix, read raw (an HTTP
    // client would resolve the dots itself), climbing resolved on the
    // target alone.
    for (target, status) in [
        ("/auth/forward/api/x", 403),
        ("/auth/forward/public/../api/x", 403),
        ("/auth/forward/x/../../public", 200),
        ("/auth/forward/", 200),
    ] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: app.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = hostile::exchange(gw.port, request.as_bytes(), false)
            .await
            .expect("an answer");
        assert_eq!(answer.status, status, "{target}");
        let body = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        authgate::api::docs::conform::check_answer(
            &doc,
            "/auth/forward/{original}",
            "POST",
            answer.status,
            &body,
        )
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    }
    let reply = ask(
        gw,
        "GET",
        "/auth/forward/admin/x",
        &[("authorization", &bearer)],
    )
    .await;
    reply.assert_detail(403, "Not enough permissions");
    let reply = ask(
        gw,
        "GET",
        "/auth/forward",
        &[
            ("x-original-url", "https://app.example/%61pi/x"),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // What cannot be judged: 400.
    for (headers, detail) in [
        (vec![], "Original request URI missing"),
        (
            vec![("x-original-uri", "/admin%2Fx")],
            "Invalid request path",
        ),
        (vec![("x-original-uri", "/a\\b")], "Invalid request path"),
        (
            vec![
                ("x-original-uri", "/admin/x"),
                ("x-forwarded-uri", "/public"),
            ],
            "Original request URI is ambiguous",
        ),
        (
            vec![("x-envoy-original-path", "/public")],
            "Original request URI is ambiguous",
        ),
    ] {
        let path = if headers.iter().any(|(n, _)| *n == "x-envoy-original-path") {
            "/auth/forward/admin"
        } else {
            "/auth/forward"
        };
        let reply = ask(gw, "GET", path, &headers).await;
        reply.assert_detail(400, detail);
    }
    // `/auth/forward/...` spelled as no proxy sends it.
    ask(gw, "GET", "/auth/%66orward/public", &[])
        .await
        .assert_detail(400, "Invalid request path");

    // Route rate limits count as on forwarded routes.
    for _ in 0..2 {
        let reply = ask(
            gw,
            "GET",
            "/auth/forward",
            &[("x-original-uri", "/limited/x")],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let limited = ask(
        gw,
        "GET",
        "/auth/forward",
        &[("x-original-uri", "/limited/x")],
    )
    .await;
    limited.assert_detail(429, "Too many requests");
    assert!(limited.header("retry-after").is_some());
    fits("GET", "/auth/forward", &limited);

    // A peer that is not a trusted proxy: 403, whatever it asks.
    let untrusted = setup
        .env
        .sibling(|o| o.set("TRUSTED_PROXIES", "10.0.0.0/8"))
        .await;
    for path in ["/auth/forward", "/auth/forward/public"] {
        let reply = ask(&untrusted, "GET", path, &[("x-original-uri", "/public")]).await;
        reply.assert_detail(403, "Forward-auth answers trusted proxies only");
    }
    let text = metrics(&untrusted).await;
    assert_eq!(
        metric(
            &text,
            "authgate_forward_auth_decisions_total{outcome=\"untrusted\"}"
        ),
        2.0
    );

    // With no route for a path, FORWARD_AUTH_DEFAULT_POLICY decides.
    let no_routes = setup
        .env
        .sibling(|o| {
            o.set("ROUTES_FILE", &routes_file("routes = []"))
                .set("FORWARD_AUTH_DEFAULT_POLICY", "role:admin")
        })
        .await;
    let reply = ask(
        &no_routes,
        "GET",
        "/auth/forward",
        &[("x-original-uri", "/x"), ("authorization", &bearer)],
    )
    .await;
    reply.assert_detail(403, "Not enough permissions");
    let admin = format!("Bearer {}", setup.admin.1);
    let reply = ask(
        &no_routes,
        "GET",
        "/auth/forward",
        &[("x-original-uri", "/x"), ("authorization", &admin)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-auth-roles").as_deref(), Some("admin"));
    let default_gw = setup
        .env
        .sibling(|o| o.set("ROUTES_FILE", &routes_file("routes = []")))
        .await;
    let reply = ask(
        &default_gw,
        "GET",
        "/auth/forward",
        &[("x-original-uri", "/x")],
    )
    .await;
    reply.assert_detail(403, "Unauthorized.");
}
