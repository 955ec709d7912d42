//! Keycloak's Admin REST API as the tests' operator uses it (the master
//! realm's admin): one client, which each test module extends with the
//! calls it needs (`impl KcAdmin` blocks of their own).

use serde_json::Value;

use crate::harness::{Reply, env};

pub struct KcAdmin {
    pub base: String,
    token: String,
    http: reqwest::Client,
}

/// The test Keycloak's base URL, without a trailing slash.
pub fn keycloak_url() -> String {
    env("AUTHGATE_TEST_KEYCLOAK_URL")
        .trim_end_matches('/')
        .to_string()
}

impl KcAdmin {
    pub async fn connect() -> Self {
        let base = keycloak_url();
        let http = reqwest::Client::new();
        let grant: Value = http
            .post(format!(
                "{base}/realms/master/protocol/openid-connect/token"
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin"),
            ])
            .send()
            .await
            .expect("master token")
            .json()
            .await
            .expect("master token JSON");
        let token = grant["access_token"]
            .as_str()
            .expect("master access token")
            .to_string();
        Self { base, token, http }
    }

    /// A call below `/admin/realms` (`path` names the realm: `/authgate/users`).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}/admin/realms{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("Admin API")).await
    }

    /// A read of realm `authgate` (`path` below it: `/users?...`).
    pub async fn get(&self, path: &str) -> Value {
        let reply = self
            .call(reqwest::Method::GET, &format!("/authgate{path}"), None)
            .await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text);
        reply.json
    }

    /// The Keycloak id of a user of realm `authgate`.
    pub async fn user_id(&self, username: &str) -> String {
        let found = self
            .get(&format!("/users?exact=true&username={username}"))
            .await;
        found[0]["id"].as_str().expect("user id").to_string()
    }
}
