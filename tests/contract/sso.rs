//! Single sign-on end to end: realm `customer` of the test Keycloak plays
//! the customer's identity provider, brokered by realm `authgate` (alias
//! `customer`, created here through the Admin API if missing). A browser is
//! played by an HTTP client that follows no redirect by itself and keeps
//! cookies per host and path; it fills in the customer realm's real login
//! form.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::Env;
use crate::harness::{Gateway, Reply, unique_name};
use crate::kc_admin::{KcAdmin, keycloak_url};

const PROVIDER: &str = "customer";
const BROKER_CLIENT: &str = "authgate-broker";
const BROKER_SECRET: &str = "customer-broker-dev-secret";
const PASSWORD: &str = "customer pass 123";
const UNSUPPORTED: &str = "Single sign-on needs keycloak mode (AUTH_BACKEND=keycloak)";

impl KcAdmin {
    /// The identity provider `customer` in realm `authgate` (idempotent).
    async fn ensure_provider(&self) {
        let path = format!("/authgate/identity-provider/instances/{PROVIDER}");
        if self.call(reqwest::Method::GET, &path, None).await.status == 200 {
            return;
        }
        let customer = format!("{}/realms/customer", self.base);
        let representation = json!({
            "alias": PROVIDER,
            "displayName": "Customer SSO",
            "providerId": "oidc",
            "enabled": true,
            "trustEmail": true,
            "storeToken": false,
            "firstBrokerLoginFlowAlias": "first broker login",
            "config": {
                "clientId": BROKER_CLIENT,
                "clientSecret": BROKER_SECRET,
                "clientAuthMethod": "client_secret_post",
                "issuer": customer,
                "authorizationUrl": format!("{customer}/protocol/openid-connect/auth"),
                "tokenUrl": format!("{customer}/protocol/openid-connect/token"),
                "userInfoUrl": format!("{customer}/protocol/openid-connect/userinfo"),
                "jwksUrl": format!("{customer}/protocol/openid-connect/certs"),
                "useJwksUrl": "true",
                "validateSignature": "true",
                "defaultScope": "openid profile email",
                "syncMode": "IMPORT",
            },
        });
        let created = self
            .call(
                reqwest::Method::POST,
                "/authgate/identity-provider/instances",
                Some(representation),
            )
            .await;
        // 409: another test made it meanwhile.
        assert!(
            created.status == 201 || created.status == 409,
            "identity provider: {} {}",
            created.status,
            created.text
        );
    }

    /// A user of the customer's identity provider.
    async fn customer_user(&self, prefix: &str) -> String {
        let username = unique_name(prefix).to_lowercase();
        let reply = self
            .call(
                reqwest::Method::POST,
                "/customer/users",
                Some(json!({
                    "username": username,
                    "email": format!("{username}@customer.example.com"),
                    "firstName": "Grace",
                    "lastName": "Hopper",
                    "enabled": true,
                    "emailVerified": true,
                    "credentials": [{"type": "password", "value": PASSWORD, "temporary": false}],
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "customer user: {}", reply.text);
        username
    }

    /// The brokered user of that name in realm `authgate`, if any.
    async fn authgate_user(&self, username: &str) -> Option<Value> {
        let reply = self
            .call(
                reqwest::Method::GET,
                &format!(
                    "/authgate/users?username={username}&exact=true&briefRepresentation=false"
                ),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply
            .json
            .as_array()
            .and_then(|users| users.first().cloned())
    }
}

/// A browser: follows no redirect by itself, keeps cookies per host and path.
struct Browser {
    http: reqwest::Client,
    /// (host, path, name) → value
    cookies: HashMap<(String, String, String), String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self, url: &url::Url) -> String {
        let host = url.host_str().unwrap_or_default();
        self.cookies
            .iter()
            .filter(|((h, path, _), _)| h == host && url.path().starts_with(path.as_str()))
            .map(|((_, _, name), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, url: &url::Url, reply: &Reply) {
        let host = url.host_str().unwrap_or_default().to_string();
        for header in reply.set_cookies() {
            let Ok(cookie) = cookie::Cookie::parse(header) else {
                continue;
            };
            let path = cookie.path().unwrap_or("/").to_string();
            let key = (host.clone(), path, cookie.name().to_string());
            let gone = cookie.max_age().is_some_and(|age| age.is_zero())
                || cookie.value().is_empty()
                || cookie.value() == "\"\"";
            if gone {
                self.cookies.remove(&key);
            } else {
                self.cookies.insert(key, cookie.value().to_string());
            }
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: &url::Url) -> Reply {
        let cookies = self.cookie_header(url);
        let request = if cookies.is_empty() {
            request
        } else {
            request.header("cookie", cookies)
        };
        let reply = Reply::from(request.send().await.expect("request")).await;
        self.keep(url, &reply);
        reply
    }

    async fn get(&mut self, url: &str) -> Reply {
        let parsed = url::Url::parse(url).expect("URL");
        self.send(self.http.get(url), &parsed).await
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Reply {
        let parsed = url::Url::parse(url).expect("URL");
        self.send(self.http.post(url).form(form), &parsed).await
    }

    /// The gateway's cookie of this name.
    fn gateway_cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|((host, _, n), _)| host == "localhost" && n == name)
            .map(|(_, value)| value.clone())
    }
}

/// The gateway as the browser reaches it: `APP_URL` (localhost), where the
/// default `SSO_CALLBACK_URL` points.
fn site(gw: &Gateway) -> String {
    format!("http://localhost:{}", gw.port)
}

fn location(reply: &Reply, base: &str) -> String {
    let location = reply
        .header("location")
        .unwrap_or_else(|| panic!("no Location in {} {}", reply.status, reply.text));
    url::Url::parse(base)
        .and_then(|b| b.join(&location))
        .expect("Location is a URL")
        .to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `action` of the login form of a Keycloak page.
fn form_action(html: &str) -> String {
    let form = html
        .find("id=\"kc-form-login\"")
        .unwrap_or_else(|| panic!("no login form in: {}", &html[..html.len().min(2000)]));
    let start = html[form..].find("action=\"").expect("form action") + form + 8;
    let end = html[start..].find('"').expect("action ends") + start;
    html[start..end].replace("&amp;", "&")
}

/// GET `/auth/login`: 302 to Keycloak.
async fn begin(browser: &mut Browser, gw: &Gateway, redirect: &str) -> String {
    let url = format!(
        "{}/auth/login?provider={PROVIDER}&redirect={}",
        site(gw),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let reply = browser.get(&url).await;
    assert_eq!(reply.status, 302, "{}", reply.text);
    assert!(
        browser.gateway_cookie("authgate_sso").is_some(),
        "login cookie set: {:?}",
        reply.set_cookies()
    );
    let to = location(&reply, &url);
    assert!(
        to.starts_with(&format!(
            "{}/realms/authgate/protocol/openid-connect/auth?",
            keycloak_url()
        )),
        "{to}"
    );
    for (name, value) in [
        ("kc_idp_hint", PROVIDER),
        ("code_challenge_method", "S256"),
        ("response_type", "code"),
    ] {
        assert_eq!(query_param(&to, name).as_deref(), Some(value), "{to}");
    }
    to
}

/// From Keycloak's authorization URL through the customer's login form to
/// the gateway's callback URL (not followed).
async fn through_identity_provider(
    browser: &mut Browser,
    gw: &Gateway,
    start: &str,
    username: &str,
) -> String {
    let callback = format!("{}/auth/callback", site(gw));
    let mut url = start.to_string();
    let mut filled = false;
    for _ in 0..20 {
        if url.starts_with(&callback) {
            return url;
        }
        let reply = browser.get(&url).await;
        match reply.status {
            302 | 303 => url = location(&reply, &url),
            200 => {
                assert!(
                    !filled,
                    "a second page after the login form: {}",
                    reply.text
                );
                let action = form_action(&reply.text);
                assert!(
                    action.contains("/realms/customer/"),
                    "the customer realm's form: {action}"
                );
                let posted = browser
                    .post_form(
                        &action,
                        &[
                            ("username", username),
                            ("password", PASSWORD),
                            ("credentialId", ""),
                        ],
                    )
                    .await;
                assert!(
                    matches!(posted.status, 302 | 303),
                    "login form answered {}: {}",
                    posted.status,
                    &posted.text[..posted.text.len().min(2000)]
                );
                filled = true;
                url = location(&posted, &action);
            }
            other => panic!("{url} answered {other}: {}", reply.text),
        }
    }
    panic!("no callback after 20 steps (last {url})")
}

fn token_cookies(reply: &Reply) -> Vec<String> {
    reply
        .set_cookies()
        .into_iter()
        .filter(|c| c.starts_with("access_token=") || c.starts_with("refresh_token="))
        .collect()
}

async fn count(env: &Env, sql: &str) -> i64 {
    let crate::Store::Postgres(db) = &env.store else {
        panic!("keycloak mode runs on PostgreSQL");
    };
    let mut conn = db.connect().await;
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

async fn run(env: &Env, sql: &str) {
    let crate::Store::Postgres(db) = &env.store else {
        panic!("keycloak mode runs on PostgreSQL");
    };
    db.run_script(sql).await;
}

/// `/users/me` with the `access_token` cookie.
async fn me(gw: &Gateway, access_token: &str) -> Reply {
    gw.send(
        gw.http
            .get(gw.url("/users/me"))
            .header("cookie", format!("access_token={access_token}")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_provisions_an_id_and_the_next_keeps_it() {
    let admin = KcAdmin::connect().await;
    admin.ensure_provider().await;
    let username = admin.customer_user("ssofirst").await;
    let env = Env::keycloak().await;
    let gw = &env.gw;
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        0
    );

    let mut browser = Browser::new();
    let start = begin(&mut browser, gw, "/welcome?tab=1").await;
    let callback = through_identity_provider(&mut browser, gw, &start, &username).await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text);
    assert_eq!(done.header("location").as_deref(), Some("/welcome?tab=1"));
    assert_eq!(token_cookies(&done).len(), 2, "{:?}", done.set_cookies());
    assert!(
        browser.gateway_cookie("authgate_sso").is_none(),
        "login cookie cleared"
    );
    let access = browser
        .gateway_cookie("access_token")
        .expect("access_token cookie");
    let refresh = browser
        .gateway_cookie("refresh_token")
        .expect("refresh_token cookie");

    // The session's device_id is a UUID of authgate's, not Keycloak's sid.
    let device_id = crate::harness::uuid_device_id(&access);
    let first = me(gw, &access).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json["id"].as_i64().expect("integer id");
    assert_eq!(first.json["username"], username.as_str());
    assert_eq!(
        first.json["email"],
        format!("{username}@customer.example.com").as_str()
    );
    assert_eq!(
        count(
            &env,
            &format!("SELECT count(*) FROM authgate_identities WHERE legacy_id = {id}")
        )
        .await,
        1
    );
    // Keycloak holds the id too.
    let kc_user = admin.authgate_user(&username).await.expect("brokered user");
    assert_eq!(kc_user["attributes"]["legacy_id"], json!([id.to_string()]));

    // The session is a real one: it refreshes, and it signs out.
    let refreshed = gw
        .post("/users/refresh-token", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    assert_eq!(
        crate::harness::uuid_device_id(refreshed.json["access_token"].as_str().unwrap()),
        device_id
    );

    // Again, in a fresh browser (the login form once more): the same id.
    let mut second = Browser::new();
    let start = begin(&mut second, gw, "/").await;
    let callback = through_identity_provider(&mut second, gw, &start, &username).await;
    let done = second.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text);
    assert_eq!(done.header("location").as_deref(), Some("/"));
    let access2 = second
        .gateway_cookie("access_token")
        .expect("access_token cookie");
    assert_ne!(access2, access);
    let again = me(gw, &access2).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["id"].as_i64(), Some(id));
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        1
    );

    // And in the first browser, where Keycloak still has a session: no form.
    let start = begin(&mut browser, gw, "/").await;
    let callback = through_identity_provider(&mut browser, gw, &start, &username).await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text);
    let access3 = browser
        .gateway_cookie("access_token")
        .expect("access_token cookie");
    assert_eq!(me(gw, &access3).await.json["id"].as_i64(), Some(id));

    let signed_out = gw.post_bearer("/users/signout", &access3, json!({})).await;
    assert_eq!(signed_out.status, 200, "{}", signed_out.text);
    me(gw, &access3)
        .await
        .assert_detail(403, "Invalid token or expired token.");
}

/// With `TOKEN_FORMAT=keycloak` the cookies hold Keycloak's own tokens: a
/// first-time user's must already carry the id they were just given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_with_keycloak_tokens_carries_the_new_id() {
    let admin = KcAdmin::connect().await;
    admin.ensure_provider().await;
    let username = admin.customer_user("ssokctoken").await;
    let env = Env::keycloak_with(|o| o.set("TOKEN_FORMAT", "keycloak")).await;
    let gw = &env.gw;
    let mut browser = Browser::new();
    let start = begin(&mut browser, gw, "/").await;
    let callback = through_identity_provider(&mut browser, gw, &start, &username).await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status, 302, "{}", done.text);
    let access = browser
        .gateway_cookie("access_token")
        .expect("access_token cookie");
    let me = me(gw, &access).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let kc_user = admin.authgate_user(&username).await.expect("brokered user");
    assert_eq!(
        kc_user["attributes"]["legacy_id"],
        json!([me.json["id"].as_i64().expect("id").to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refuses_forged_foreign_replayed_and_expired_state() {
    let admin = KcAdmin::connect().await;
    admin.ensure_provider().await;
    let username = admin.customer_user("ssostate").await;
    let env = Env::keycloak().await;
    let gw = &env.gw;
    let callback = format!("{}/auth/callback", site(gw));

    // Forged: a state the gateway never gave.
    let mut browser = Browser::new();
    let start = begin(&mut browser, gw, "/").await;
    let forged = browser
        .get(&format!("{callback}?state=forged-state&code=forged-code"))
        .await;
    forged.assert_detail(400, "Unknown sign-in state");
    assert!(
        forged.set_cookies().is_empty(),
        "{:?}",
        forged.set_cookies()
    );
    let missing = browser.get(&format!("{callback}?code=abc")).await;
    missing.assert_detail(400, "Missing code or state");
    assert!(missing.set_cookies().is_empty());

    // The real login, whose callback is first tried without the cookie.
    let url = through_identity_provider(&mut browser, gw, &start, &username).await;
    let mut stranger = Browser::new();
    let foreign = stranger.get(&url).await;
    foreign.assert_detail(400, "Sign-in state does not belong to this browser");
    assert!(
        foreign.set_cookies().is_empty(),
        "{:?}",
        foreign.set_cookies()
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        0
    );
    let kc_user = admin.authgate_user(&username).await.expect("brokered user");
    assert!(kc_user["attributes"]["legacy_id"].is_null(), "{kc_user}");

    // The right browser is not hindered by that.
    let done = browser.get(&url).await;
    assert_eq!(done.status, 302, "{}", done.text);
    assert_eq!(token_cookies(&done).len(), 2);
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        1
    );

    // Replayed: the same code and state again, in the same browser.
    let replay = browser.get(&url).await;
    // The login cookie was cleared by the success: the browser no longer matches.
    replay.assert_detail(400, "Sign-in state does not belong to this browser");
    assert!(token_cookies(&replay).is_empty());

    // Replayed with the very cookie it was given: used up.
    let mut again = Browser::new();
    let start = begin(&mut again, gw, "/").await;
    let key = again.gateway_cookie("authgate_sso").expect("login cookie");
    let url2 = through_identity_provider(&mut again, gw, &start, &username).await;
    let first = again.get(&url2).await;
    assert_eq!(first.status, 302, "{}", first.text);
    let replay = gw
        .send(
            gw.http
                .get(url2.replace(&site(gw), &gw.base))
                .header("cookie", format!("authgate_sso={key}")),
        )
        .await;
    replay.assert_detail(400, "Sign-in state already used");
    assert!(replay.set_cookies().is_empty());

    // A state that is this browser's but whose code is not this login's:
    // Keycloak refuses the code (a used one here), no session.
    let mut third = Browser::new();
    let start = begin(&mut third, gw, "/").await;
    let state = query_param(&start, "state").expect("state");
    let used_code = query_param(&url2, "code").expect("code");
    let refused = third
        .get(&format!("{callback}?state={state}&code={used_code}"))
        .await;
    refused.assert_detail(400, "Authorization code refused (expired or already used)");
    assert!(token_cookies(&refused).is_empty());

    // Expired: the pending login outlived SSO_LOGIN_TTL_SECONDS.
    let other = admin.customer_user("ssoexpired").await;
    let mut late = Browser::new();
    let start = begin(&mut late, gw, "/").await;
    run(
        &env,
        "UPDATE authgate_sso_logins SET expires_at = expires_at - interval '1 hour' WHERE used_at IS NULL",
    )
    .await;
    let url = through_identity_provider(&mut late, gw, &start, &other).await;
    let expired = late.get(&url).await;
    expired.assert_detail(400, "Sign-in state expired");
    assert!(token_cookies(&expired).is_empty());
    let kc_user = admin.authgate_user(&other).await.expect("brokered user");
    assert!(kc_user["attributes"]["legacy_id"].is_null(), "{kc_user}");
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refuses_unknown_providers_and_open_redirects() {
    let admin = KcAdmin::connect().await;
    admin.ensure_provider().await;
    let env =
        Env::keycloak_with(|o| o.set("SSO_REDIRECT_ALLOWLIST", "https://app.example.com/sso/"))
            .await;
    let gw = &env.gw;
    for (query, detail) in [
        ("provider=nobody", "Unknown identity provider"),
        ("provider=..%2F..%2Fusers", "Unknown identity provider"),
        ("redirect=/", "Missing provider"),
        (
            "provider=customer&redirect=https://evil.example/",
            "Redirect URL is not allowed",
        ),
        (
            "provider=customer&redirect=//evil.example/",
            "Redirect URL is not allowed",
        ),
        (
            "provider=customer&redirect=https://app.example.com.evil.example/sso/",
            "Redirect URL is not allowed",
        ),
        (
            "provider=customer&redirect=https://app.example.com/other",
            "Redirect URL is not allowed",
        ),
        (
            "provider=customer&redirect=javascript:alert(1)",
            "Redirect URL is not allowed",
        ),
    ] {
        let reply = gw.get(&format!("/auth/login?{query}")).await;
        reply.assert_detail(400, detail);
        assert!(
            reply.set_cookies().is_empty(),
            "{query}: {:?}",
            reply.set_cookies()
        );
        assert!(reply.header("location").is_none(), "{query}");
    }
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_sso_logins").await,
        0
    );

    // Allowed: under the allow-list, or a path of this site.
    for redirect in ["https://app.example.com/sso/done", "/home"] {
        let reply = gw
            .get(&format!(
                "/auth/login?provider=customer&redirect={redirect}"
            ))
            .await;
        assert_eq!(reply.status, 302, "{redirect}: {}", reply.text);
    }
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_sso_logins").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_end_the_login_without_a_session() {
    let admin = KcAdmin::connect().await;
    admin.ensure_provider().await;
    let env = Env::keycloak().await;
    let gw = &env.gw;
    let mut browser = Browser::new();
    let start = begin(&mut browser, gw, "/").await;
    let state = query_param(&start, "state").expect("state");
    let callback = format!("{}/auth/callback", site(gw));
    let url = format!("{callback}?error=access_denied&error_description=denied&state={state}");
    let denied = browser.get(&url).await;
    denied.assert_detail(400, "Sign-in refused by the identity provider");
    assert!(
        denied.set_cookies().is_empty(),
        "{:?}",
        denied.set_cookies()
    );
    // The state is used up by it.
    let again = browser
        .get(&format!("{callback}?code=x&state={state}"))
        .await;
    again.assert_detail(400, "Sign-in state already used");
    // An error without a state (the provider lost it) is still the provider's.
    let lost = browser
        .get(&format!("{callback}?error=access_denied"))
        .await;
    lost.assert_detail(400, "Sign-in refused by the identity provider");
    assert!(lost.set_cookies().is_empty());
    assert_eq!(
        count(&env, "SELECT count(*) FROM authgate_identities").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_answers_501_as_documented() {
    let env = Env::native().await;
    let gw = &env.gw;
    let doc = gw.get("/docs/json").await.json;
    for (path, query) in [
        ("/auth/login", "?provider=customer"),
        ("/auth/callback", "?code=x&state=y"),
    ] {
        let reply = gw.get(&format!("{path}{query}")).await;
        reply.assert_detail(501, UNSUPPORTED);
        if let Err(err) =
            authgate::api::docs::conform::check_answer(&doc, path, "GET", reply.status, &reply.json)
        {
            panic!("{path}: {err}");
        }
    }
}
