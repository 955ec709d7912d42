//! Keycloak-mode roles and machine clients: realm and client roles from
//! Keycloak's tokens drive route policies and the admin endpoints, reach the
//! legacy token as one compact claim, and change at the next refresh; a
//! client-credentials token passes the routes that allow services.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Env;
use crate::edge::routes_file;
use crate::harness::Gateway;
use crate::kc_admin::{KcAdmin, keycloak_url};
use crate::upstream::Upstream;

impl KcAdmin {
    /// Grants (`grant = true`) or removes a client role of client `authgate`.
    async fn client_role(&self, username: &str, role: &str, grant: bool) {
        let clients = self.get("/clients?clientId=authgate").await;
        let client = clients[0]["id"].as_str().unwrap().to_string();
        let role = self.get(&format!("/clients/{client}/roles/{role}")).await;
        self.role_mapping(username, &format!("clients/{client}"), role, grant)
            .await;
    }

    /// Grants or removes a realm role.
    async fn realm_role(&self, username: &str, role: &str, grant: bool) {
        let role = self.get(&format!("/roles/{role}")).await;
        self.role_mapping(username, "realm", role, grant).await;
    }

    async fn role_mapping(&self, username: &str, kind: &str, role: Value, grant: bool) {
        let user = self.user_id(username).await;
        let method = if grant {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let path = format!("/authgate/users/{user}/role-mappings/{kind}");
        let reply = self.call(method, &path, Some(json!([role]))).await;
        assert_eq!(reply.status, 204, "role mapping: {}", reply.text);
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn refreshed(gw: &Gateway, refresh_token: &str) -> String {
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({ "refresh_token": refresh_token }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["access_token"].as_str().unwrap().to_string()
}

/// A user's own Keycloak access token (RS256), by the password grant of
/// client `authgate`.
async fn keycloak_user_token(username: &str, password: &str) -> String {
    let reply = realm_token(&[
        ("grant_type", "password"),
        ("client_id", "authgate"),
        ("client_secret", "authgate-dev-secret"),
        ("username", username),
        ("password", password),
        ("scope", "openid"),
    ])
    .await;
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// A client-credentials token of the realm's example machine client.
async fn service_token(client: &str, secret: &str) -> reqwest::Response {
    realm_token(&[
        ("grant_type", "client_credentials"),
        ("client_id", client),
        ("client_secret", secret),
    ])
    .await
}

/// A request to the `authgate` realm's token endpoint.
async fn realm_token(form: &[(&str, &str)]) -> reqwest::Response {
    let base = keycloak_url();
    reqwest::Client::new()
        .post(format!(
            "{base}/realms/authgate/protocol/openid-connect/token"
        ))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn keycloak_calls(gw: &Gateway) -> u64 {
    let text = gw.get("/metrics").await.text;
    text.lines()
        .filter(|l| l.starts_with("authgate_keycloak_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn env_with_routes(upstream: &Upstream) -> Env {
    let routes = routes_file(&format!(
        r#"
        [[routes]]
        prefix = "/billing"
        upstreams = ["{u}"]
        policy = "role:authgate:billing-reader"

        [[routes]]
        prefix = "/reports"
        upstreams = ["{u}"]
        policy = "role:reports"
        allow_services = true

        [[routes]]
        prefix = "/api"
        upstreams = ["{u}"]
        policy = "authenticated"
        "#,
        u = upstream.host_port()
    ));
    Env::keycloak_with(|o| o.set("ROUTES_FILE", &routes)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_come_from_tokens_and_change_at_refresh() {
    let upstream = Upstream::start("roles").await;
    let env = env_with_routes(&upstream).await;
    let gw = &env.gw;
    let kc = KcAdmin::connect().await;
    let user = gw.verified_user(&env.mail, "roles").await;

    // The legacy token carries the roles compactly: no Keycloak built-ins.
    let roles = claims(&user.access_token)["roles"].clone();
    assert_eq!(roles, json!(["user"]), "{roles}");

    // A client role granted in Keycloak counts from the next refresh on.
    gw.get_bearer("/billing/echo", &user.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    kc.client_role(&user.username, "billing-reader", true).await;
    gw.get_bearer("/billing/echo", &user.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    let access = refreshed(gw, &user.refresh_token).await;
    assert_eq!(
        claims(&access)["roles"],
        json!(["authgate:billing-reader", "user"])
    );
    let reply = gw.get_bearer("/billing/echo", &access).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json["headers"]["x-auth-roles"],
        "authgate:billing-reader,user"
    );
    assert_eq!(reply.json["headers"]["x-auth-user-id"], user.id.to_string());

    // Removed: the token in hand keeps it until the next refresh.
    kc.client_role(&user.username, "billing-reader", false)
        .await;
    assert_eq!(gw.get_bearer("/billing/echo", &access).await.status, 200);
    let access = refreshed(gw, &user.refresh_token).await;
    gw.get_bearer("/billing/echo", &access)
        .await
        .assert_detail(403, "Not enough permissions");

    // The admin endpoints: a token that says admin needs no Keycloak call.
    gw.get_bearer("/auth/audit", &access)
        .await
        .assert_detail(403, "Not enough permissions");
    kc.realm_role(&user.username, "admin", true).await;
    let admin_access = refreshed(gw, &user.refresh_token).await;
    assert_eq!(claims(&admin_access)["roles"], json!(["admin", "user"]));
    let before = keycloak_calls(gw).await;
    assert_eq!(
        gw.get_bearer("/auth/audit", &admin_access).await.status,
        200
    );
    assert_eq!(keycloak_calls(gw).await, before, "admin from the token");
    kc.realm_role(&user.username, "admin", false).await;
    let access = refreshed(gw, &user.refresh_token).await;
    gw.get_bearer("/auth/audit", &access)
        .await
        .assert_detail(403, "Not enough permissions");

    // Keycloak keeps its own admin events too: the gateway's creation of
    // the user, and the operator's role changes.
    let keycloak_id = kc.user_id(&user.username).await;
    let events = kc
        .get("/admin-events?resourceTypes=USER&operationTypes=CREATE&max=1000")
        .await;
    assert!(
        events.as_array().unwrap().iter().any(|e| e["resourcePath"]
            .as_str()
            .is_some_and(|p| p == format!("users/{keycloak_id}"))),
        "no CREATE admin event for the user"
    );
    let mappings = kc
        .get("/admin-events?resourceTypes=REALM_ROLE_MAPPING&max=1000")
        .await;
    assert!(
        mappings
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resourcePath"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("users/{keycloak_id}/")))),
        "no role-mapping admin event for the user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_clients_pass_only_routes_that_allow_services() {
    let upstream = Upstream::start("services").await;
    let env = env_with_routes(&upstream).await;
    let gw = &env.gw;

    let answer = service_token("reports-service", "reports-service-dev-secret").await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let token = answer["access_token"].as_str().unwrap().to_string();

    // A route that allows services: the client's id and roles go upstream,
    // no user id, and forged identity headers are dropped.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/reports/echo"))
                .bearer_auth(&token)
                .header("x-auth-user-id", "1")
                .header("x-auth-client-id", "someone-else"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let headers = &reply.json["headers"];
    assert_eq!(headers["x-auth-client-id"], "reports-service");
    assert_eq!(headers["x-auth-roles"], "reports");
    assert!(headers.get("x-auth-user-id").is_none(), "{headers}");

    // Elsewhere the token is not a user's: the contract's 403.
    gw.get_bearer("/api/echo", &token)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    gw.get_bearer("/users/me", &token)
        .await
        .assert_detail(403, "Invalid token or expired token.");

    // A tampered token, a wrong secret, a user without the role.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    gw.get_bearer("/reports/echo", &tampered)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    assert_eq!(
        service_token("reports-service", "wrong").await.status(),
        401
    );
    let user = gw.verified_user(&env.mail, "noreports").await;
    gw.get_bearer("/reports/echo", &user.access_token)
        .await
        .assert_detail(403, "Not enough permissions");
    // A user's own Keycloak token on that route is a user's: the role
    // decides, and the upstream learns the user.
    let rs256 = keycloak_user_token(&user.username, &user.password).await;
    gw.get_bearer("/reports/echo", &rs256)
        .await
        .assert_detail(403, "Not enough permissions");
    let kc = KcAdmin::connect().await;
    kc.realm_role(&user.username, "reports", true).await;
    let rs256 = keycloak_user_token(&user.username, &user.password).await;
    let reply = gw.get_bearer("/reports/echo", &rs256).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let headers = &reply.json["headers"];
    assert_eq!(headers["x-auth-user-id"], user.id.to_string());
    assert!(headers.get("x-auth-client-id").is_none(), "{headers}");
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/api/echo"))
                .bearer_auth(&user.access_token)
                .header("x-auth-client-id", "reports-service"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.json["headers"].get("x-auth-client-id").is_none());
}
