//! Keycloak stays the authority: what ends in Keycloak ends in authgate.
//! Two replicas share PostgreSQL and Redis; Keycloak's sign-outs arrive by
//! back-channel logout, its other changes through the admin events one
//! replica reads.
//!
//! The test Keycloak is shared with the other tests: the `authgate`
//! client's back-channel logout URL is pointed at this module's gateway
//! only while a test needs it (one such test at a time) and put back after;
//! the forged logout tokens are signed by a passive key added to the realm
//! for the test (published in its JWKS, never used by Keycloak to sign).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Env;
use crate::harness::{Gateway, Relay, Reply, TestUser, claims_of, env};
use crate::kc_admin::{KcAdmin, keycloak_url};

const INVALID: &str = "Invalid token or expired token.";
/// How long a change made through the Admin API may take to be refused
/// here (the bound is a few seconds; this is generous for a shared machine).
const PATIENCE: Duration = Duration::from_secs(45);
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A key the realm gets as a passive key for the forged-token test.
const REALM_PASSIVE_KEY: &str = include_str!("keys/realm-passive.pem");
/// The same, PKCS #1 DER, to sign with.
const REALM_PASSIVE_DER: &[u8] = include_bytes!("keys/realm-passive.der");
/// A key the realm never knows (PKCS #1 DER).
const STRANGER_DER: &[u8] = include_bytes!("keys/stranger.der");

/// One test at a time points the shared client's back-channel URL here.
static BACKCHANNEL_URL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    env("AUTHGATE_TEST_REDIS_URL")
}

/// Two replicas on one database and one Redis, admin events read every
/// second.
async fn cluster(
    tweak: impl FnOnce(crate::harness::Options) -> crate::harness::Options,
) -> (Env, Gateway) {
    let env_ = Env::keycloak_with(|o| {
        tweak(
            o.set("REDIS_URL", &redis_url())
                .set("KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS", "1"),
        )
    })
    .await;
    let b = env_.sibling(|o| o).await;
    (env_, b)
}

async fn metrics_text(gw: &Gateway) -> String {
    gw.get("/metrics").await.text
}

/// The value of one sample (`name{labels}` as written), 0 when absent.
async fn sample(gw: &Gateway, series: &str) -> f64 {
    metrics_text(gw)
        .await
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every sample of a family.
async fn family_total(gw: &Gateway, family: &str) -> f64 {
    metrics_text(gw)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn refresh(gw: &Gateway, refresh_token: &str) -> Reply {
    gw.post(
        "/users/refresh-token",
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {}", reply.text);
    reply.assert_detail(403, INVALID);
}

/// Waits until `token` is refused by `gw`, asserting it was accepted until
/// then (no other answer).
async fn refused_within(gw: &Gateway, token: &str, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = gw.get_bearer("/users/me", token).await;
        if reply.status == 403 {
            reply.assert_detail(403, INVALID);
            return;
        }
        assert_eq!(reply.status, 200, "{what}: {}", reply.text);
        assert!(
            Instant::now() < deadline,
            "{what}: still accepted {} s after the change in Keycloak:\n{}",
            PATIENCE.as_secs(),
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl KcAdmin {
    /// The Keycloak id of a user of realm `authgate`.
    async fn id_of(&self, user: &TestUser) -> String {
        self.user_id(&user.username).await
    }

    /// The service account of the `authgate` client gets the realm-management
    /// roles the realm file gives it (reading admin events and clients);
    /// granting them again changes nothing.
    async fn grant_reader_roles(&self) {
        let client = self.client("authgate").await;
        let account = self
            .get(&format!(
                "/clients/{}/service-account-user",
                client["id"].as_str().unwrap()
            ))
            .await;
        let management = self.client("realm-management").await;
        let management_id = management["id"].as_str().unwrap();
        let mappings = format!(
            "/users/{}/role-mappings/clients/{management_id}",
            account["id"].as_str().unwrap()
        );
        let names = ["view-events", "view-clients"];
        let held = |mapped: &Value| {
            names.iter().all(|name| {
                mapped
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|role| role["name"] == *name)
            })
        };
        if held(&self.get(&mappings).await) {
            return;
        }
        let mut wanted = Vec::new();
        for name in names {
            wanted.push(
                self.get(&format!("/clients/{management_id}/roles/{name}"))
                    .await,
            );
        }
        // Another test may be granting them at the same time.
        self.call(
            Method::POST,
            &format!("/authgate{mappings}"),
            Some(Value::Array(wanted)),
        )
        .await;
        assert!(held(&self.get(&mappings).await), "roles not granted");
    }

    async fn client(&self, client_id: &str) -> Value {
        let found = self.get(&format!("/clients?clientId={client_id}")).await;
        found[0].clone()
    }

    /// Sets (or with `None`, removes) one attribute of the `authgate` client;
    /// returns its previous value.
    async fn set_client_attribute(&self, name: &str, value: Option<&str>) -> Option<String> {
        let mut client = self.client("authgate").await;
        let id = client["id"].as_str().unwrap().to_string();
        let before = client["attributes"][name].as_str().map(str::to_string);
        match value {
            Some(value) => client["attributes"][name] = json!(value),
            None => client["attributes"][name] = json!(""),
        }
        let reply = self
            .call(
                Method::PUT,
                &format!("/authgate/clients/{id}"),
                Some(client),
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text);
        before
    }

    async fn user_call(&self, method: Method, id: &str, rest: &str, body: Option<Value>) {
        let reply = self
            .call(method, &format!("/authgate/users/{id}{rest}"), body)
            .await;
        assert!(
            reply.status == 204 || reply.status == 200,
            "{rest}: {} {}",
            reply.status,
            reply.text
        );
    }

    /// Adds the passive RS256 key; returns its component id and key id.
    async fn add_passive_key(&self) -> (String, String) {
        let realm = self.get("").await;
        let name = format!("authgate-test-passive-{}", uuid::Uuid::new_v4());
        let reply = self
            .call(
                Method::POST,
                "/authgate/components",
                Some(json!({
                    "name": name,
                    "providerId": "rsa",
                    "providerType": "org.keycloak.keys.KeyProvider",
                    "parentId": realm["id"],
                    "config": {
                        "privateKey": [REALM_PASSIVE_KEY],
                        "active": ["false"],
                        "enabled": ["true"],
                        "priority": ["0"],
                        "algorithm": ["RS256"],
                    },
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let component = reply
            .header("location")
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let keys = self.get("/keys").await;
        let kid = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["providerId"] == component.as_str())
            .and_then(|k| k["kid"].as_str())
            .expect("the passive key's kid")
            .to_string();
        (component, kid)
    }

    async fn remove_component(&self, id: &str) {
        self.call(Method::DELETE, &format!("/authgate/components/{id}"), None)
            .await;
    }
}

fn issuer() -> String {
    format!("{}/realms/authgate", keycloak_url())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a valid logout token for every session of `sub`.
fn logout_claims(sub: &str) -> Value {
    json!({
        "iss": issuer(),
        "aud": "authgate",
        "iat": now(),
        "exp": now() + 120,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": sub,
        "typ": "Logout",
        "events": { EVENT: {} },
    })
}

fn rs256(key_der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    header.typ = Some("logout+jwt".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(key_der)).unwrap()
}

async fn post_logout(gw: &Gateway, token: &str) -> Reply {
    gw.send(
        gw.http
            .post(gw.url("/auth/backchannel-logout"))
            .form(&[("logout_token", token)]),
    )
    .await
}

/// Sign-out in Keycloak (the Admin API's user logout) reaches both replicas
/// by back-channel logout before Keycloak's call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_sign_out_ends_the_session_on_both_replicas() {
    let _only = BACKCHANNEL_URL.lock().await;
    let admin = KcAdmin::connect().await;
    admin.grant_reader_roles().await;
    let (env_, b) = cluster(|o| o).await;
    let a = &env_.gw;
    let previous = admin
        .set_client_attribute(
            "backchannel.logout.url",
            Some(&a.url("/auth/backchannel-logout")),
        )
        .await;

    // check-config sees the URL.
    let out = crate::harness::run_command(&a.options, &["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("back-channel logout URL"))
        .unwrap_or_else(|| panic!("no back-channel probe:\n{stdout}"));
    assert!(line.contains(" ok "), "{line}");

    let user = a.verified_user(&env_.mail, "kcout").await;
    let bystander = a.verified_user(&env_.mail, "kcstay").await;
    assert_eq!(
        b.get_bearer("/users/me", &user.access_token).await.status,
        200
    );
    let before = sample(a, "authgate_revocations_total{source=\"backchannel\"}").await
        + sample(&b, "authgate_revocations_total{source=\"backchannel\"}").await;

    let id = admin.id_of(&user).await;
    admin.user_call(Method::POST, &id, "/logout", None).await;
    // The first request after Keycloak's call returned, on either replica.
    assert_refused(&b.get_bearer("/users/me", &user.access_token).await, "B");
    assert_refused(&a.get_bearer("/users/me", &user.access_token).await, "A");
    assert_eq!(refresh(&b, &user.refresh_token).await.status, 401);
    assert_eq!(refresh(a, &user.refresh_token).await.status, 401);
    for gw in [a, &b] {
        assert_eq!(
            gw.get_bearer("/users/me", &bystander.access_token)
                .await
                .status,
            200
        );
    }
    let after = sample(a, "authgate_revocations_total{source=\"backchannel\"}").await
        + sample(&b, "authgate_revocations_total{source=\"backchannel\"}").await;
    assert!(
        after > before,
        "revocations by back-channel: {before} -> {after}"
    );

    // The audit trail names the source.
    let db = match &env_.store {
        crate::Store::Postgres(db) => db,
        crate::Store::Embedded(_) => unreachable!(),
    };
    let mut conn = db.connect().await;
    let details: Vec<(String,)> = sqlx::query_as(
        "SELECT detail FROM authgate_audit WHERE action = 'session.revoked' AND outcome = 'success'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        details
            .iter()
            .filter_map(|(d,)| serde_json::from_str::<Value>(d).ok())
            .any(|d| d["source"] == "backchannel"),
        "{details:?}"
    );

    admin
        .set_client_attribute("backchannel.logout.url", previous.as_deref())
        .await;
}

/// The end-session endpoint (a client's logout with its refresh token)
/// ends the session in authgate too, by back-channel logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_session_logout_ends_the_session_on_both_replicas() {
    let _only = BACKCHANNEL_URL.lock().await;
    let admin = KcAdmin::connect().await;
    admin.grant_reader_roles().await;
    let (env_, b) = cluster(|o| o.set("TOKEN_FORMAT", "keycloak")).await;
    let a = &env_.gw;
    let previous = admin
        .set_client_attribute(
            "backchannel.logout.url",
            Some(&a.url("/auth/backchannel-logout")),
        )
        .await;
    let user = a.verified_user(&env_.mail, "kcend").await;
    assert_eq!(
        b.get_bearer("/users/me", &user.access_token).await.status,
        200
    );

    let ended = reqwest::Client::new()
        .post(format!("{}/protocol/openid-connect/logout", issuer()))
        .form(&[
            ("client_id", "authgate"),
            ("client_secret", "authgate-dev-secret"),
            ("refresh_token", user.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204, "{}", ended.text().await.unwrap());
    assert_refused(&b.get_bearer("/users/me", &user.access_token).await, "B");
    assert_refused(&a.get_bearer("/users/me", &user.access_token).await, "A");
    assert_ne!(refresh(&b, &user.refresh_token).await.status, 200);

    admin
        .set_client_attribute("backchannel.logout.url", previous.as_deref())
        .await;
}

/// Disable, delete, password reset and "sign out all sessions" through
/// the Admin API: Keycloak announces none of them to authgate (the
/// back-channel URL is not ours here), the admin events do, within the
/// bound, on both replicas; a user nobody touched keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_changes_are_refused_on_both_replicas() {
    let admin = KcAdmin::connect().await;
    admin.grant_reader_roles().await;
    let (env_, b) = cluster(|o| o).await;
    let a = &env_.gw;
    let disabled = a.verified_user(&env_.mail, "kcdisable").await;
    let deleted = a.verified_user(&env_.mail, "kcdelete").await;
    let reset = a.verified_user(&env_.mail, "kcreset").await;
    let logged_out = a.verified_user(&env_.mail, "kcall").await;
    let bystander = a.verified_user(&env_.mail, "kcuntouched").await;
    for user in [&disabled, &deleted, &reset, &logged_out] {
        assert_eq!(
            b.get_bearer("/users/me", &user.access_token).await.status,
            200
        );
    }

    let id = admin.id_of(&disabled).await;
    admin
        .user_call(Method::PUT, &id, "", Some(json!({"enabled": false})))
        .await;
    let id = admin.id_of(&deleted).await;
    admin.user_call(Method::DELETE, &id, "", None).await;
    let id = admin.id_of(&reset).await;
    admin
        .user_call(
            Method::PUT,
            &id,
            "/reset-password",
            Some(json!({"type": "password", "value": "another horse battery staple", "temporary": false})),
        )
        .await;
    let id = admin.id_of(&logged_out).await;
    admin.user_call(Method::POST, &id, "/logout", None).await;

    for (user, what) in [
        (&disabled, "disabled"),
        (&deleted, "deleted"),
        (&reset, "password reset"),
        (&logged_out, "signed out of all sessions"),
    ] {
        refused_within(a, &user.access_token, &format!("{what}, replica A")).await;
        refused_within(&b, &user.access_token, &format!("{what}, replica B")).await;
        assert_eq!(
            refresh(&b, &user.refresh_token).await.status,
            401,
            "{what}: refresh"
        );
    }
    for gw in [a, &b] {
        assert_eq!(
            gw.get_bearer("/users/me", &bystander.access_token)
                .await
                .status,
            200
        );
    }
    assert_eq!(refresh(&b, &bystander.refresh_token).await.status, 200);
    // The reset password signs in again.
    let again = a
        .signin(&reset.username, "another horse battery staple")
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    let fresh = again.json["access_token"].as_str().unwrap();
    assert_eq!(b.get_bearer("/users/me", fresh).await.status, 200);

    let by_events = sample(a, "authgate_revocations_total{source=\"admin_event\"}").await
        + sample(&b, "authgate_revocations_total{source=\"admin_event\"}").await;
    assert!(by_events >= 4.0, "revocations by admin event: {by_events}");
}

/// Forged logout tokens: 400, and nothing revoked on either replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_logout_tokens_revoke_nothing() {
    let admin = KcAdmin::connect().await;
    let (component, kid) = admin.add_passive_key().await;
    let (env_, b) = cluster(|o| o).await;
    let a = &env_.gw;
    let user = a.verified_user(&env_.mail, "kcforged").await;
    let sub = admin.id_of(&user).await;
    let sid = claims_of(&user.access_token)["device_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let valid = logout_claims(&sub);
    let with = |name: &str, value: Value| {
        let mut claims = valid.clone();
        claims[name] = value;
        claims
    };
    let without = |name: &str| {
        let mut claims = valid.clone();
        claims.as_object_mut().unwrap().remove(name);
        claims
    };
    let unsigned = |alg: &str, claims: &Value| {
        let header = URL_SAFE_NO_PAD
            .encode(json!({"alg": alg, "typ": "logout+jwt", "kid": kid}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{body}.")
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &header,
            &valid,
            &EncodingKey::from_secret(b"authgate-dev-secret").unwrap(),
        )
        .unwrap()
    };
    let forged: Vec<(&str, String, &str)> = vec![
        (
            "another key",
            rs256(STRANGER_DER, &kid, &valid),
            "signature",
        ),
        ("alg none", unsigned("none", &valid), "algorithm"),
        ("HS256", hs256, "algorithm"),
        (
            "wrong iss",
            rs256(
                REALM_PASSIVE_DER,
                &kid,
                &with("iss", json!("http://127.0.0.1:8080/realms/master")),
            ),
            "issuer",
        ),
        (
            "wrong aud",
            rs256(REALM_PASSIVE_DER, &kid, &with("aud", json!("account"))),
            "audience",
        ),
        (
            "expired",
            rs256(REALM_PASSIVE_DER, &kid, &with("exp", json!(now() - 300))),
            "expired",
        ),
        (
            "nonce",
            rs256(
                REALM_PASSIVE_DER,
                &kid,
                &with("nonce", json!("n-0S6_WzA2Mj")),
            ),
            "nonce",
        ),
        (
            "event missing",
            rs256(REALM_PASSIVE_DER, &kid, &without("events")),
            "event",
        ),
        (
            "sid of the session, wrong aud",
            rs256(
                REALM_PASSIVE_DER,
                &kid,
                &with("sid", json!(sid))
                    .as_object()
                    .map(|o| {
                        let mut o = o.clone();
                        o.insert("aud".into(), json!("someone-else"));
                        Value::Object(o)
                    })
                    .unwrap(),
            ),
            "audience",
        ),
    ];
    for (what, token, reason) in &forged {
        let reply = post_logout(a, token).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert_eq!(reply.json["error"], "invalid_request", "{what}");
        assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
        let refused = sample(
            a,
            &format!("authgate_backchannel_logout_refused_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert!(refused >= 1.0, "{what}: no refusal counted as {reason}");
    }

    // A valid token, for a user authgate never saw: 200; its replay, on
    // either replica, 400.
    let stranger = logout_claims(&uuid::Uuid::new_v4().to_string());
    let token = rs256(REALM_PASSIVE_DER, &kid, &stranger);
    let reply = post_logout(a, &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control").as_deref(), Some("no-store"));
    for gw in [a, &b] {
        let reply = post_logout(gw, &token).await;
        assert_eq!(reply.status, 400, "replayed: {}", reply.text);
    }
    assert!(
        sample(
            a,
            "authgate_backchannel_logout_refused_total{reason=\"replayed\"}"
        )
        .await
            + sample(
                &b,
                "authgate_backchannel_logout_refused_total{reason=\"replayed\"}"
            )
            .await
            >= 2.0
    );

    // Nothing of the user's was revoked.
    for gw in [a, &b] {
        assert_eq!(
            gw.get_bearer("/users/me", &user.access_token).await.status,
            200
        );
        assert_eq!(family_total(gw, "authgate_revocations_total").await, 0.0);
    }
    assert_eq!(refresh(&b, &user.refresh_token).await.status, 200);

    admin.remove_component(&component).await;
}

/// Keycloak unreachable for the admin-event reader: requests are served as
/// before, and the events of the outage are applied once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_missed_while_keycloak_is_away_are_applied_after() {
    let admin = KcAdmin::connect().await;
    admin.grant_reader_roles().await;
    let kc = url::Url::parse(&env("AUTHGATE_TEST_KEYCLOAK_URL")).unwrap();
    let target = format!(
        "{}:{}",
        kc.host_str().unwrap(),
        kc.port_or_known_default().unwrap()
    )
    .parse()
    .unwrap();
    let relay = Relay::start(target).await;
    let env_ = Env::keycloak_with(|o| {
        o.set("REDIS_URL", &redis_url())
            .set("KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS", "1")
            .set("KEYCLOAK_URL", &format!("http://127.0.0.1:{}", relay.port))
            .set("KEYCLOAK_TIMEOUT_MS", "1000")
    })
    .await;
    let a = &env_.gw;
    let user = a.verified_user(&env_.mail, "kcaway").await;
    let bystander = a.verified_user(&env_.mail, "kcawaystay").await;
    // The reader has polled once at least.
    let deadline = Instant::now() + PATIENCE;
    while sample(
        a,
        "authgate_keycloak_admin_event_polls_total{outcome=\"ok\"}",
    )
    .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    relay.cut();
    let id = admin.id_of(&user).await;
    admin
        .user_call(Method::PUT, &id, "", Some(json!({"enabled": false})))
        .await;
    // Failed polls, and the hot path unaffected meanwhile.
    let failed_before = family_total(a, "authgate_keycloak_admin_event_polls_total").await
        - sample(
            a,
            "authgate_keycloak_admin_event_polls_total{outcome=\"ok\"}",
        )
        .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert_eq!(
            a.get_bearer("/users/me", &bystander.access_token)
                .await
                .status,
            200
        );
        let failed = family_total(a, "authgate_keycloak_admin_event_polls_total").await
            - sample(
                a,
                "authgate_keycloak_admin_event_polls_total{outcome=\"ok\"}",
            )
            .await;
        if failed >= failed_before + 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed poll counted:\n{}",
            metrics_text(a).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    relay.restore().await;
    refused_within(a, &user.access_token, "disabled while Keycloak was away").await;
    assert_eq!(
        a.get_bearer("/users/me", &bystander.access_token)
            .await
            .status,
        200
    );
}
