//! Device sessions (`/auth/sessions`, an admin's force-logout) against the
//! real Keycloak, PostgreSQL and Redis: listing with the device each
//! session signed in from, revocation (access refused, refresh refused),
//! the deny-list shared by two replicas, and the fallback without Redis.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Env;
use crate::harness::{Gateway, Options, Reply, TestUser, env};
use crate::kc_admin::KcAdmin;
use crate::upstream::Upstream;

const INVALID: &str = "Invalid token or expired token.";

/// One more sign-in of `user`, from a device with this user agent and address.
struct Device {
    sid: String,
    access: String,
    refresh: String,
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// The token's session: `device_id` of a legacy token, `sid` of Keycloak's.
fn sid_of(token: &str) -> String {
    let claims = claims(token);
    claims["device_id"]
        .as_str()
        .or_else(|| claims["sid"].as_str())
        .expect("token names its session")
        .to_string()
}

async fn sign_in_from(gw: &Gateway, user: &TestUser, agent: &str, ip: &str) -> Device {
    let reply = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("user-agent", agent)
                .header("x-forwarded-for", ip)
                .json(&json!({"username": user.username, "password": user.password})),
        )
        .await;
    assert_eq!(reply.status, 200, "signin: {}", reply.text);
    let access = reply.json["access_token"].as_str().unwrap().to_string();
    Device {
        sid: sid_of(&access),
        refresh: reply.json["refresh_token"].as_str().unwrap().to_string(),
        access,
    }
}

async fn delete_bearer(gw: &Gateway, path: &str, token: &str) -> Reply {
    gw.send(gw.http.delete(gw.url(path)).bearer_auth(token))
        .await
}

async fn sessions(gw: &Gateway, token: &str) -> Vec<Value> {
    let reply = gw.get_bearer("/auth/sessions", token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json.as_array().expect("a list").clone()
}

fn ids(list: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = list
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn refresh(gw: &Gateway, refresh_token: &str) -> Reply {
    gw.post(
        "/users/refresh-token",
        json!({ "refresh_token": refresh_token }),
    )
    .await
}

fn redis_url() -> String {
    env("AUTHGATE_TEST_REDIS_URL")
}

/// Keycloak mode behind a trusted proxy (so `X-Forwarded-For` names the
/// device), with the given tweaks.
async fn keycloak_env(tweak: impl FnOnce(Options) -> Options) -> Env {
    Env::keycloak_with(|o| tweak(o.set("TRUSTED_PROXIES", "127.0.0.1/32"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_revoke_one_and_the_others() {
    let env_ = keycloak_env(|o| o.set("REDIS_URL", &redis_url())).await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "devices").await;
    let first = sid_of(&user.access_token);
    let phone = sign_in_from(gw, &user, "phone-app/1.0", "203.0.113.7").await;
    let laptop = sign_in_from(gw, &user, "laptop-browser/2.0", "198.51.100.9").await;

    // Listed with the device each one signed in from; the caller's is current.
    let list = sessions(gw, &phone.access).await;
    assert_eq!(
        ids(&list),
        sorted(vec![first.clone(), phone.sid.clone(), laptop.sid.clone()])
    );
    let of = |sid: &str| list.iter().find(|s| s["id"] == sid).unwrap().clone();
    assert_eq!(of(&phone.sid)["user_agent"], "phone-app/1.0");
    assert_eq!(of(&phone.sid)["ip_address"], "203.0.113.7");
    assert_eq!(of(&laptop.sid)["user_agent"], "laptop-browser/2.0");
    assert_eq!(of(&laptop.sid)["ip_address"], "198.51.100.9");
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    assert_eq!(current[0]["id"], phone.sid.as_str());
    for session in &list {
        for field in ["started_at", "last_access"] {
            let at = session[field].as_str().unwrap();
            chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
        }
    }
    // The laptop sees the same sessions, its own current.
    let seen_by_laptop = sessions(gw, &laptop.access).await;
    assert_eq!(ids(&seen_by_laptop), ids(&list));
    let current: Vec<&Value> = seen_by_laptop
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], laptop.sid.as_str());

    // Revoke the laptop from the phone.
    let reply = delete_bearer(gw, &format!("/auth/sessions/{}", laptop.sid), &phone.access).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({"message": "Session ended", "ended": 1}));
    gw.get_bearer("/users/me", &laptop.access)
        .await
        .assert_detail(403, INVALID);
    refresh(gw, &laptop.refresh)
        .await
        .assert_detail(401, "Session has ended");
    assert_eq!(gw.get_bearer("/users/me", &phone.access).await.status, 200);
    let renewed = refresh(gw, &phone.refresh).await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(
        ids(&sessions(gw, &phone.access).await),
        sorted(vec![first.clone(), phone.sid.clone()])
    );

    // Bad input: no token, an ended session, an unknown id. Nothing changes.
    let path = format!("/auth/sessions/{first}");
    gw.send(gw.http.delete(gw.url(&path)))
        .await
        .assert_detail(403, "Unauthorized.");
    delete_bearer(gw, &path, "not-a-token")
        .await
        .assert_detail(403, INVALID);
    for unknown in [
        laptop.sid.clone(),
        "AxkkMuB3PsvHBgx0lrb6MwQA".into(),
        "x".repeat(300),
    ] {
        delete_bearer(gw, &format!("/auth/sessions/{unknown}"), &phone.access)
            .await
            .assert_detail(404, "Session not found");
    }
    assert_eq!(
        ids(&sessions(gw, &phone.access).await),
        sorted(vec![first.clone(), phone.sid.clone()])
    );
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        200
    );

    // All but the current one.
    let reply = delete_bearer(gw, "/auth/sessions", &phone.access).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"message": "Other sessions ended", "ended": 1})
    );
    gw.get_bearer("/users/me", &user.access_token)
        .await
        .assert_detail(403, INVALID);
    assert_eq!(
        refresh(gw, &user.refresh_token).await.status,
        401,
        "the first session's refresh is refused"
    );
    let left = sessions(gw, &phone.access).await;
    assert_eq!(ids(&left), vec![phone.sid.clone()]);
    assert_eq!(left[0]["current"], true);
    // Nothing else to end.
    let reply = delete_bearer(gw, "/auth/sessions", &phone.access).await;
    assert_eq!(reply.json["ended"], 0, "{}", reply.text);
    assert_eq!(gw.get_bearer("/users/me", &phone.access).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_session_is_not_found_and_keeps_working() {
    let env_ = keycloak_env(|o| o).await;
    let gw = &env_.gw;
    let alice = gw.verified_user(&env_.mail, "alice").await;
    let bob = gw.verified_user(&env_.mail, "bob").await;
    let bobs = sid_of(&bob.access_token);
    delete_bearer(gw, &format!("/auth/sessions/{bobs}"), &alice.access_token)
        .await
        .assert_detail(404, "Session not found");
    assert_eq!(
        gw.get_bearer("/users/me", &bob.access_token).await.status,
        200
    );
    assert_eq!(refresh(gw, &bob.refresh_token).await.status, 200);
    assert_eq!(ids(&sessions(gw, &bob.access_token).await), vec![bobs]);
    // Alice's "all but current" leaves Bob alone too.
    assert_eq!(
        delete_bearer(gw, "/auth/sessions", &alice.access_token)
            .await
            .status,
        200
    );
    assert_eq!(
        gw.get_bearer("/users/me", &bob.access_token).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_force_logout_ends_every_session() {
    let env_ = keycloak_env(|o| o.set("REDIS_URL", &redis_url())).await;
    let gw = &env_.gw;
    let target = gw.verified_user(&env_.mail, "target").await;
    let other = sign_in_from(gw, &target, "tablet/3.0", "192.0.2.44").await;
    let bystander = gw.verified_user(&env_.mail, "bystander").await;
    let path = format!("/auth/admin/users/{}/sessions", target.id);

    // Not an admin (nor the user themself): refused, nothing ends.
    delete_bearer(gw, &path, &bystander.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    delete_bearer(gw, &path, &target.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    gw.send(gw.http.delete(gw.url(&path)))
        .await
        .assert_detail(403, "Unauthorized.");
    assert_eq!(gw.get_bearer("/users/me", &other.access).await.status, 200);
    assert_eq!(sessions(gw, &target.access_token).await.len(), 2);

    let admin = gw.verified_user(&env_.mail, "sessadmin").await;
    env_.make_admin(&admin).await;
    delete_bearer(
        gw,
        "/auth/admin/users/2147483000/sessions",
        &admin.access_token,
    )
    .await
    .assert_detail(404, "User not found");
    let reply = delete_bearer(gw, "/auth/admin/users/abc/sessions", &admin.access_token).await;
    assert_eq!(reply.status, 422, "{}", reply.text);

    let reply = delete_bearer(gw, &path, &admin.access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"message": "All sessions of the user ended", "ended": 2})
    );
    for access in [&target.access_token, &other.access] {
        gw.get_bearer("/users/me", access)
            .await
            .assert_detail(403, INVALID);
    }
    for refresh_token in [&target.refresh_token, &other.refresh] {
        assert_eq!(refresh(gw, refresh_token).await.status, 401);
    }
    // The admin and the bystander are untouched; the user can sign in again.
    assert_eq!(
        gw.get_bearer("/users/me", &admin.access_token).await.status,
        200
    );
    assert_eq!(
        gw.get_bearer("/users/me", &bystander.access_token)
            .await
            .status,
        200
    );
    let back = sign_in_from(gw, &target, "tablet/3.0", "192.0.2.44").await;
    assert_eq!(
        ids(&sessions(gw, &back.access).await),
        vec![back.sid.clone()]
    );
}

/// Two replicas on one database (and the given Redis): a session revoked
/// through the first is refused by the second; returns the second replica,
/// how many requests it took (the last one refused) and how long. The
/// second replica has just found the token live (its 5-second cache), so
/// only the deny-list can refuse it at the first request.
async fn revoke_across_replicas(env_: &Env) -> (Gateway, u32, Duration) {
    let a = &env_.gw;
    let b = env_.sibling(|o| o).await;
    let user = a.verified_user(&env_.mail, "replicas").await;
    let other = sign_in_from(a, &user, "other/1.0", "203.0.113.50").await;
    assert_eq!(b.get_bearer("/users/me", &other.access).await.status, 200);
    let reply = delete_bearer(
        a,
        &format!("/auth/sessions/{}", other.sid),
        &user.access_token,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let revoked = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let reply = b.get_bearer("/users/me", &other.access).await;
        if reply.status == 403 {
            reply.assert_detail(403, INVALID);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "replica B still accepts the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = revoked.elapsed();
    assert_eq!(refresh(&b, &other.refresh).await.status, 401);
    assert_eq!(
        b.get_bearer("/users/me", &user.access_token).await.status,
        200
    );
    (b, attempts, took)
}

async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = gw.get("/metrics").await.text;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_revocations_through_redis() {
    let upstream = Upstream::start("sessions-upstream").await;
    let routes =
        std::env::temp_dir().join(format!("authgate-routes-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &routes,
        format!(
            "[[routes]]\nprefix = \"/api\"\nupstreams = [\"{}\"]\npolicy = \"authenticated\"\n",
            upstream.host_port()
        ),
    )
    .unwrap();
    let env_ = keycloak_env(|o| {
        o.set("REDIS_URL", &redis_url())
            .set("ROUTES_FILE", &routes.to_string_lossy())
    })
    .await;
    let (b, attempts, _) = revoke_across_replicas(&env_).await;
    // Refused at B's very first request after the revocation, although B
    // held the token as live: the shared deny-list decided, not the cache.
    assert_eq!(attempts, 1);
    assert_eq!(metric(&b, "authgate_redis_up").await, Some(1.0));

    // Forwarding stops the same way; the entry is namespaced and lives as
    // long as an access token.
    let a = &env_.gw;
    let user = a.verified_user(&env_.mail, "ttl").await;
    let other = sign_in_from(a, &user, "ttl/1.0", "203.0.113.51").await;
    let forwarded = b.get_bearer("/api/echo", &other.access).await;
    assert_eq!(forwarded.status, 200, "{}", forwarded.text);
    assert_eq!(forwarded.json["upstream"], "sessions-upstream");
    let reply = delete_bearer(
        a,
        &format!("/auth/sessions/{}", other.sid),
        &user.access_token,
    )
    .await;
    assert_eq!(reply.status, 200);
    b.get_bearer("/api/echo", &other.access)
        .await
        .assert_detail(403, INVALID);
    assert_eq!(
        b.get_bearer("/api/echo", &user.access_token).await.status,
        200
    );
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // The revocation is kept in Redis's sorted set until it no longer
    // matters: an access-token lifetime from now at most.
    let until: Option<f64> = redis::cmd("ZSCORE")
        .arg("authgate:revocations")
        .arg(format!("s {}", other.sid))
        .query_async(&mut conn)
        .await
        .unwrap();
    let until = until.expect("the ended session is in authgate:revocations");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let lifetime = claims(&other.access)["exp"].as_f64().unwrap()
        - claims(&other.access)["iat"].as_f64().unwrap();
    let ttl = until - now;
    assert!(
        ttl > 0.0 && ttl <= lifetime + 1.0,
        "kept {ttl} s more, access lifetime {lifetime} s"
    );
    let _ = std::fs::remove_file(&routes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_revocations_reach_replicas_within_the_cache_time() {
    let env_ = keycloak_env(|o| o).await;
    let (_, _, took) = revoke_across_replicas(&env_).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_revocations_fall_back_to_the_registry() {
    // Nothing listens on port 1: Redis is down from the start.
    let env_ = keycloak_env(|o| o.set("REDIS_URL", "redis://127.0.0.1:1")).await;
    let (b, _, took) = revoke_across_replicas(&env_).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Not following the others' revocations through Redis.
    assert_eq!(metric(&b, "authgate_revocation_push_up").await, Some(0.0));
    assert!(
        env_.gw
            .log_text()
            .contains("Redis unreachable: revocations reach the other replicas"),
        "the outage is logged"
    );
}

/// With `TOKEN_FORMAT=keycloak` the tokens are Keycloak's own and name
/// their session by Keycloak's `sid`; authgate shows and revokes the
/// session under its UUID all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_tokens_are_denied_through_their_session_uuid() {
    let env_ = keycloak_env(|o| {
        o.set("TOKEN_FORMAT", "keycloak")
            .set("REDIS_URL", &redis_url())
    })
    .await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "kcsid").await;
    let other = sign_in_from(gw, &user, "kc-device/1.0", "203.0.113.60").await;
    assert!(
        uuid::Uuid::parse_str(&other.sid).is_err(),
        "Keycloak's own token carries its sid: {}",
        other.sid
    );
    let list = sessions(gw, &user.access_token).await;
    assert_eq!(list.len(), 2, "{list:?}");
    for session in &list {
        let id = session["id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id} is not a UUID");
    }
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list:?}");
    let others: Vec<&Value> = list.iter().filter(|s| s["current"] == false).collect();
    assert_eq!(others[0]["user_agent"], "kc-device/1.0");
    let other_id = others[0]["id"].as_str().unwrap().to_string();
    // The other device sees the same ids, its own current.
    let seen = sessions(gw, &other.access).await;
    assert_eq!(ids(&seen), ids(&list));
    assert!(
        seen.iter()
            .any(|s| s["id"] == other_id.as_str() && s["current"] == true)
    );

    let b = env_.sibling(|o| o).await;
    assert_eq!(b.get_bearer("/users/me", &other.access).await.status, 200);
    let reply = delete_bearer(
        gw,
        &format!("/auth/sessions/{other_id}"),
        &user.access_token,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for replica in [gw, &b] {
        replica
            .get_bearer("/users/me", &other.access)
            .await
            .assert_detail(403, INVALID);
    }
    assert_eq!(refresh(gw, &other.refresh).await.status, 401);
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        200
    );
    assert_eq!(refresh(gw, &user.refresh_token).await.status, 200);
    // Signing out with Keycloak's token ends its Keycloak session too.
    let kc_id = KcAdmin::connect()
        .await
        .user_id(&user.username.to_lowercase())
        .await;
    assert_eq!(
        gw.post_bearer("/users/signout", &user.access_token, json!({}))
            .await
            .status,
        200
    );
    assert!(keycloak_sids(&kc_id).await.is_empty());
}

/// The user's open sessions in Keycloak (their `sid`s), sorted.
async fn keycloak_sids(keycloak_id: &str) -> Vec<String> {
    let admin = KcAdmin::connect().await;
    let open = admin.get(&format!("/users/{keycloak_id}/sessions")).await;
    let mut sids: Vec<String> = open
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    sids.sort();
    sids
}

/// The registry of keycloak mode on the test's database, as authgate opens it.
fn registry_of(env_: &Env) -> authgate::identity::keycloak::registry::Registry {
    let crate::Store::Postgres(db) = &env_.store else {
        panic!("keycloak mode keeps its registry in PostgreSQL");
    };
    let settings = authgate::config::DatabaseSettings {
        url: db.url.clone(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        migrate_on_start: false,
    };
    authgate::identity::keycloak::registry::Registry::new(
        std::sync::Arc::new(authgate::store::Database::new(&settings).unwrap()),
        std::sync::Arc::new(authgate::clock::SystemClock),
        authgate::identity::MailLimit {
            count: 3,
            window: Duration::from_secs(3600),
        },
    )
}

/// Keycloak 26's session ids are not UUIDs: every session gets a UUID of
/// authgate's own (the tokens' `device_id`), mapped to Keycloak's `sid`
/// wherever one is needed from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_ids_are_uuids_mapped_to_keycloak_sessions() {
    let env_ = keycloak_env(|o| o).await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "uuidmap").await;
    let first = crate::harness::uuid_device_id(&user.access_token);
    let phone = sign_in_from(gw, &user, "phone-app/1.0", "203.0.113.70").await;
    let phone_id = crate::harness::uuid_device_id(&phone.access);
    assert_ne!(first, phone_id);
    let kc_id = KcAdmin::connect()
        .await
        .user_id(&user.username.to_lowercase())
        .await;
    let sids = keycloak_sids(&kc_id).await;
    assert_eq!(sids.len(), 2, "{sids:?}");
    assert!(sids.iter().all(|sid| uuid::Uuid::parse_str(sid).is_err()));

    // The lookups a back-channel logout needs: sid -> UUID, user -> UUIDs.
    let registry = registry_of(&env_);
    let mut mapped = Vec::new();
    for sid in &sids {
        let device = registry
            .device_of_session(sid)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no device for {sid}"));
        mapped.push(device.to_string());
    }
    assert_eq!(
        sorted(mapped),
        sorted(vec![first.clone(), phone_id.clone()])
    );
    assert_eq!(
        registry.device_of_session("no-such-sid").await.unwrap(),
        None
    );
    let of_user: Vec<String> = registry
        .devices_of_user(uuid::Uuid::parse_str(&kc_id).unwrap())
        .await
        .unwrap()
        .iter()
        .map(uuid::Uuid::to_string)
        .collect();
    assert_eq!(
        sorted(of_user),
        sorted(vec![first.clone(), phone_id.clone()])
    );
    assert!(
        registry
            .devices_of_user(uuid::Uuid::new_v4())
            .await
            .unwrap()
            .is_empty()
    );

    // Listed under the UUIDs.
    let list = sessions(gw, &phone.access).await;
    assert_eq!(ids(&list), sorted(vec![first.clone(), phone_id.clone()]));
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current[0]["id"], phone_id.as_str());

    // Sign-out ends the Keycloak session behind the UUID.
    assert_eq!(
        gw.post_bearer("/users/signout", &phone.access, json!({}))
            .await
            .status,
        200
    );
    let left = keycloak_sids(&kc_id).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        registry
            .device_of_session(&left[0])
            .await
            .unwrap()
            .map(|d| d.to_string()),
        Some(first.clone())
    );
    refresh(gw, &phone.refresh)
        .await
        .assert_detail(401, "Session has ended");

    // Ending a session by its UUID ends it in Keycloak.
    let laptop = sign_in_from(gw, &user, "laptop/1.0", "203.0.113.71").await;
    let laptop_id = crate::harness::uuid_device_id(&laptop.access);
    assert_eq!(keycloak_sids(&kc_id).await.len(), 2);
    let reply = delete_bearer(
        gw,
        &format!("/auth/sessions/{laptop_id}"),
        &user.access_token,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(keycloak_sids(&kc_id).await, left);
    gw.get_bearer("/users/me", &laptop.access)
        .await
        .assert_detail(403, INVALID);
    // Keycloak's sid is not an id of the API.
    delete_bearer(
        gw,
        &format!("/auth/sessions/{}", left[0]),
        &user.access_token,
    )
    .await
    .assert_detail(404, "Session not found");
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        200
    );
}

/// A legacy token minted before sessions had UUIDs names its session by
/// Keycloak's `sid`: it is read as that session's UUID everywhere (the
/// current session, sign-out, refresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_naming_a_keycloak_sid_are_read_as_its_uuid() {
    let env_ = keycloak_env(|o| o).await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "oldsid").await;
    let first = crate::harness::uuid_device_id(&user.access_token);
    let kc_id = KcAdmin::connect()
        .await
        .user_id(&user.username.to_lowercase())
        .await;
    let sids = keycloak_sids(&kc_id).await;
    assert_eq!(sids.len(), 1, "{sids:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |scope: &str| {
        json!({"user_id": user.id, "email": user.email, "device_id": sids[0],
               "exp": (now + 1800) as f64, "iat": now, "scope": scope})
    };
    let secret = jsonwebtoken::EncodingKey::from_secret(crate::harness::SECRET.as_bytes()).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let old_access = jsonwebtoken::encode(&header, &claims("access_token"), &secret).unwrap();
    let old_refresh = authgate::tokens::DirA256Gcm::new(crate::harness::SECRET.as_bytes())
        .unwrap()
        .encrypt(
            jsonwebtoken::encode(&header, &claims("refresh_token"), &secret)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();

    assert_eq!(gw.get_bearer("/users/me", &old_access).await.status, 200);
    let list = sessions(gw, &old_access).await;
    assert_eq!(ids(&list), vec![first.clone()]);
    assert_eq!(list[0]["current"], true);
    // A refresh hands out a token with the session's UUID.
    let renewed = refresh(gw, &old_refresh).await;
    assert_eq!(renewed.status, 200, "{}", renewed.text);
    assert_eq!(
        crate::harness::uuid_device_id(renewed.json["access_token"].as_str().unwrap()),
        first
    );
    // Signing out with the old token ends the session, whichever id names it.
    assert_eq!(
        gw.post_bearer("/users/signout", &old_access, json!({}))
            .await
            .status,
        200
    );
    assert!(keycloak_sids(&kc_id).await.is_empty());
    for token in [&old_access, &user.access_token] {
        gw.get_bearer("/users/me", token)
            .await
            .assert_detail(403, INVALID);
    }
    assert_eq!(refresh(gw, &old_refresh).await.status, 401);
    assert_eq!(refresh(gw, &user.refresh_token).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_answers_501() {
    let env_ = Env::native().await;
    let gw = &env_.gw;
    let user = gw.verified_user(&env_.mail, "nativesess").await;
    let doc = gw.get("/docs/json").await.json;
    let detail = "Device sessions needs keycloak mode (AUTH_BACKEND=keycloak)";
    let cases = [
        ("GET", "/auth/sessions", "/auth/sessions"),
        ("DELETE", "/auth/sessions", "/auth/sessions"),
        (
            "DELETE",
            "/auth/sessions/abc",
            "/auth/sessions/{session_id}",
        ),
        (
            "DELETE",
            "/auth/admin/users/1/sessions",
            "/auth/admin/users/{user_id}/sessions",
        ),
    ];
    for (method, path, template) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let reply = gw
            .send(
                gw.http
                    .request(method.clone(), gw.url(path))
                    .bearer_auth(&user.access_token),
            )
            .await;
        reply.assert_detail(501, detail);
        authgate::api::docs::conform::check_answer(
            &doc,
            template,
            method.as_str(),
            reply.status,
            &reply.json,
        )
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let anonymous = gw.send(gw.http.request(method, gw.url(path))).await;
        anonymous.assert_detail(403, "Unauthorized.");
    }
    // The user's session is untouched.
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        200
    );
}
