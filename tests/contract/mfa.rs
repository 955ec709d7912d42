//! TOTP through Keycloak (`/auth/mfa/totp` and `otp` at sign-in), end to
//! end against the real Keycloak: the codes are computed here from the
//! secret the enrolment hands out, with `totp-rs` (RFC 6238), never by the
//! gateway's own code.

use authgate::api::docs::conform::check_answer;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::Env;
use crate::harness::{Gateway, Reply, TestUser};
use crate::kc_admin::KcAdmin;

const TOTP: &str = "/auth/mfa/totp";
const CONFIRM: &str = "/auth/mfa/totp/confirm";
const CODE_REQUIRED: &str = "One-time code required";
const CODE_INVALID: &str = "Invalid one-time code";
const INVALID_CREDENTIALS: &str = "Invalid credentials";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The authenticator app: a TOTP of the base32 secret, SHA1, 6 digits, 30 s.
fn app_of(secret: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(Secret::try_from_base32(secret).expect("base32 secret"))
        .build()
        .expect("totp")
}

/// The code `steps` steps from now.
fn code(app: &Totp, steps: i64) -> String {
    let time = now().saturating_add_signed(steps * 30);
    app.generate(time).to_string()
}

/// A code that is none of the codes Keycloak would accept now.
fn wrong_code(app: &Totp) -> String {
    let valid: Vec<String> = (-2..=2).map(|s| code(app, s)).collect();
    (0..1000)
        .map(|n| format!("{:06}", (n * 7919 + 123_456) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

async fn fits(gw: &Gateway, method: &str, template: &str, reply: &Reply) {
    let doc = gw.get("/docs/json").await.json;
    if let Err(err) = check_answer(&doc, template, method, reply.status, &reply.json) {
        panic!(
            "{method} {template} answered {} {}: {err}",
            reply.status, reply.text
        );
    }
}

async fn delete(gw: &Gateway, token: &str, body: Value) -> Reply {
    gw.send(gw.http.delete(gw.url(TOTP)).bearer_auth(token).json(&body))
        .await
}

async fn start(gw: &Gateway, token: &str) -> Reply {
    gw.send(gw.http.post(gw.url(TOTP)).bearer_auth(token)).await
}

async fn enabled(gw: &Gateway, token: &str) -> bool {
    let status = gw.get_bearer(TOTP, token).await;
    assert_eq!(status.status, 200, "{}", status.text);
    status.json["enabled"].as_bool().expect("enabled")
}

async fn signin_otp(gw: &Gateway, login: &str, password: &str, otp: &str) -> Reply {
    gw.post(
        "/users/signin",
        json!({"username": login, "password": password, "otp": otp}),
    )
    .await
}

/// Starts and confirms an enrolment; returns the authenticator app.
async fn enrol(gw: &Gateway, user: &TestUser) -> Totp {
    let started = start(gw, &user.access_token).await;
    assert_eq!(started.status, 200, "{}", started.text);
    let app = app_of(started.json["secret"].as_str().unwrap());
    let confirmed = gw
        .post_bearer(
            CONFIRM,
            &user.access_token,
            json!({"enrolment_token": started.json["enrolment_token"], "otp": code(&app, 0)}),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    app
}

impl KcAdmin {
    async fn otp_credentials(&self, user_id: &str) -> usize {
        let all = self.get(&format!("/users/{user_id}/credentials")).await;
        all.as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] == "otp")
            .count()
    }

    /// The clients of the user's open sessions, e.g. `["authgate"]` (sorted).
    async fn session_clients(&self, user_id: &str) -> Vec<String> {
        let sessions = self.get(&format!("/users/{user_id}/sessions")).await;
        let mut clients = sessions
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["clients"].as_object().unwrap().values())
            .map(|c| c.as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        clients.sort();
        clients
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_signin_and_removal() {
    let env = Env::keycloak_with(|o| o.set("RATE_LIMIT_OTP_PER_ACCOUNT", "100/minute")).await;
    let gw = &env.gw;
    let kc = KcAdmin::connect().await;
    let ada = gw.verified_user(&env.mail, "mfa").await;
    let bob = gw.verified_user(&env.mail, "mfaother").await;
    let ada_kc = kc.user_id(&ada.username.to_lowercase()).await;
    let token = ada.access_token.as_str();

    // Not enrolled yet.
    let status = gw.get_bearer(TOTP, token).await;
    assert_eq!(status.json, json!({"enabled": false, "created_at": null}));
    fits(gw, "GET", TOTP, &status).await;
    let refused = gw.get(TOTP).await;
    refused.assert_detail(403, "Unauthorized.");
    fits(gw, "GET", TOTP, &refused).await;

    // Start: a key, its URI and QR code, a sealed enrolment token.
    let started = start(gw, token).await;
    assert_eq!(started.status, 200, "{}", started.text);
    fits(gw, "POST", TOTP, &started).await;
    let secret = started.json["secret"].as_str().unwrap();
    let uri = started.json["otpauth_uri"].as_str().unwrap();
    let from_uri = Totp::from_url(uri).expect("otpauth URI");
    assert_eq!(from_uri.issuer(), Some("Authgate Test"));
    assert_eq!(from_uri.account_name(), ada.email);
    assert_eq!(from_uri.secret().to_base32(), secret);
    assert_eq!(
        (from_uri.digits(), from_uri.step(), from_uri.algorithm()),
        (6, 30, Algorithm::SHA1)
    );
    let svg = started.json["qr_svg"].as_str().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    assert_eq!(started.json["expires_in"], 600);
    let enrolment = started.json["enrolment_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!enrolment.contains(secret));
    let app = app_of(secret);

    // Bad confirmations: each refused, nothing enrolled.
    let wrong = gw
        .post_bearer(
            CONFIRM,
            token,
            json!({"enrolment_token": enrolment, "otp": wrong_code(&app)}),
        )
        .await;
    wrong.assert_detail(400, CODE_INVALID);
    fits(gw, "POST", CONFIRM, &wrong).await;
    let mut forged = enrolment.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let forged = gw
        .post_bearer(
            CONFIRM,
            token,
            json!({"enrolment_token": forged, "otp": code(&app, 0)}),
        )
        .await;
    forged.assert_detail(400, "Invalid or expired enrolment token");
    fits(gw, "POST", CONFIRM, &forged).await;
    // Another user cannot confirm Ada's pending key with their own token.
    let stolen = gw
        .post_bearer(
            CONFIRM,
            &bob.access_token,
            json!({"enrolment_token": enrolment, "otp": code(&app, 0)}),
        )
        .await;
    stolen.assert_detail(400, "Invalid or expired enrolment token");
    let invalid = gw
        .post_bearer(CONFIRM, token, json!({"enrolment_token": enrolment}))
        .await;
    assert_eq!(invalid.status, 422, "{}", invalid.text);
    fits(gw, "POST", CONFIRM, &invalid).await;
    assert!(!enabled(gw, token).await);
    assert!(!enabled(gw, &bob.access_token).await);
    assert_eq!(kc.otp_credentials(&ada_kc).await, 0);

    // The right code enrols, in Keycloak.
    let confirmed = gw
        .post_bearer(
            CONFIRM,
            token,
            json!({"enrolment_token": enrolment, "otp": code(&app, 0)}),
        )
        .await;
    assert_eq!(
        confirmed.json,
        json!({"message": "TOTP enabled"}),
        "{}",
        confirmed.text
    );
    fits(gw, "POST", CONFIRM, &confirmed).await;
    let status = gw.get_bearer(TOTP, token).await;
    assert_eq!(status.json["enabled"], true);
    assert!(status.json["created_at"].is_string(), "{}", status.text);
    assert_eq!(kc.otp_credentials(&ada_kc).await, 1);
    let again = start(gw, token).await;
    again.assert_detail(400, "TOTP is already enabled");
    fits(gw, "POST", TOTP, &again).await;
    let replayed = gw
        .post_bearer(
            CONFIRM,
            token,
            json!({"enrolment_token": enrolment, "otp": code(&app, 1)}),
        )
        .await;
    replayed.assert_detail(400, "TOTP is already enabled");
    assert_eq!(kc.otp_credentials(&ada_kc).await, 1);

    // Sign-in: no code, a wrong code, then the right one.
    let sessions_before = kc.session_clients(&ada_kc).await;
    let no_code = gw.signin(&ada.username, &ada.password).await;
    no_code.assert_detail(401, CODE_REQUIRED);
    assert!(no_code.set_cookies().is_empty());
    fits(gw, "POST", "/users/signin", &no_code).await;
    let by_email = gw.signin(&ada.email, &ada.password).await;
    by_email.assert_detail(401, CODE_REQUIRED);
    let wrong = signin_otp(gw, &ada.username, &ada.password, &wrong_code(&app)).await;
    wrong.assert_detail(401, CODE_INVALID);
    assert!(wrong.set_cookies().is_empty());
    fits(gw, "POST", "/users/signin", &wrong).await;
    // Proving the password opened no session that stays.
    assert_eq!(kc.session_clients(&ada_kc).await, sessions_before);
    assert!(
        !sessions_before
            .iter()
            .any(|c| c == "authgate-password-check"),
        "{sessions_before:?}"
    );

    // A wrong password says nothing about a second factor, code or not.
    gw.signin(&ada.username, "not the password")
        .await
        .assert_detail(401, INVALID_CREDENTIALS);
    signin_otp(gw, &ada.username, "not the password", &code(&app, -1))
        .await
        .assert_detail(401, INVALID_CREDENTIALS);
    signin_otp(gw, "nobody-at-all", "not the password", &code(&app, -1))
        .await
        .assert_detail(401, INVALID_CREDENTIALS);

    let used = code(&app, 0);
    let signed_in = signin_otp(gw, &ada.username, &ada.password, &used).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    fits(gw, "POST", "/users/signin", &signed_in).await;
    assert_eq!(signed_in.set_cookies().len(), 2);
    let access = signed_in.json["access_token"].as_str().unwrap();
    crate::harness::uuid_device_id(access);
    let me = gw.get_bearer("/users/me", access).await;
    assert_eq!(me.json["id"], ada.id);
    // Keycloak takes a code once: the same code again is wrong.
    signin_otp(gw, &ada.username, &ada.password, &used)
        .await
        .assert_detail(401, CODE_INVALID);
    // The next step's code is another code, accepted (look-ahead of one step).
    let next = signin_otp(gw, &ada.username, &ada.password, &code(&app, 1)).await;
    assert_eq!(next.status, 200, "{}", next.text);

    // Bob, without TOTP: his sign-in is unchanged, `otp` or not, and his
    // calls touch only his own (absent) TOTP.
    assert_eq!(gw.signin(&bob.username, &bob.password).await.status, 200);
    let ignored = signin_otp(gw, &bob.username, &bob.password, "123456").await;
    assert_eq!(ignored.status, 200, "{}", ignored.text);
    gw.signin(&bob.username, "not the password")
        .await
        .assert_detail(401, INVALID_CREDENTIALS);
    let not_his = delete(gw, &bob.access_token, json!({"password": bob.password})).await;
    not_his.assert_detail(404, "TOTP is not enabled");
    fits(gw, "DELETE", TOTP, &not_his).await;
    assert!(enabled(gw, token).await);
    assert!(!enabled(gw, &bob.access_token).await);

    // Removal: the password is required.
    let bad = delete(gw, token, json!({"password": "not the password"})).await;
    bad.assert_detail(400, "Invalid password");
    fits(gw, "DELETE", TOTP, &bad).await;
    let missing = delete(gw, token, json!({})).await;
    assert_eq!(missing.status, 422);
    let anonymous = gw
        .send(
            gw.http
                .delete(gw.url(TOTP))
                .json(&json!({"password": ada.password})),
        )
        .await;
    anonymous.assert_detail(403, "Unauthorized.");
    assert!(enabled(gw, token).await);
    assert_eq!(kc.otp_credentials(&ada_kc).await, 1);
    let removed = delete(gw, token, json!({"password": ada.password})).await;
    assert_eq!(
        removed.json,
        json!({"message": "TOTP disabled"}),
        "{}",
        removed.text
    );
    fits(gw, "DELETE", TOTP, &removed).await;
    assert!(!enabled(gw, token).await);
    assert_eq!(kc.otp_credentials(&ada_kc).await, 0);

    // Without TOTP, sign-in without a code works again.
    let plain = gw.signin(&ada.username, &ada.password).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_are_rate_limited_per_account() {
    let env = Env::keycloak_with(|o| o.set("RATE_LIMIT_OTP_PER_ACCOUNT", "3/hour")).await;
    let gw = &env.gw;
    let ada = gw.verified_user(&env.mail, "mfalimit").await;
    // The confirmation is the first attempt (an hour's quota: a slow
    // machine cannot see a new one come free during the test).
    let app = enrol(gw, &ada).await;
    for _ in 0..2 {
        signin_otp(gw, &ada.username, &ada.password, &wrong_code(&app))
            .await
            .assert_detail(401, CODE_INVALID);
    }
    let limited = signin_otp(gw, &ada.username, &ada.password, &wrong_code(&app)).await;
    limited.assert_detail(429, "Too many requests");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    fits(gw, "POST", "/users/signin", &limited).await;
    // While limited, no code is tried, not even the right one, under either name.
    signin_otp(gw, &ada.username, &ada.password, &code(&app, 0))
        .await
        .assert_detail(429, "Too many requests");
    signin_otp(gw, &ada.email, &ada.password, &code(&app, 0))
        .await
        .assert_detail(429, "Too many requests");
    // Sign-ins without a code still get their own answer.
    gw.signin(&ada.username, &ada.password)
        .await
        .assert_detail(401, CODE_REQUIRED);
    // Removal counts too.
    let removal = delete(gw, &ada.access_token, json!({"password": ada.password})).await;
    removal.assert_detail(429, "Too many requests");
    fits(gw, "DELETE", TOTP, &removal).await;
    assert!(enabled(gw, &ada.access_token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_routes_need_keycloak_mode() {
    let env = Env::native().await;
    let gw = &env.gw;
    let user = TestUser::new("mfanative");
    let signup = gw.post("/users/signup", user.signup_body()).await;
    let token = signup.json["access_token"].as_str().unwrap();
    let unsupported = "Two-factor authentication needs keycloak mode (AUTH_BACKEND=keycloak)";
    let status = gw.get_bearer(TOTP, token).await;
    status.assert_detail(501, unsupported);
    fits(gw, "GET", TOTP, &status).await;
    let started = start(gw, token).await;
    started.assert_detail(501, unsupported);
    fits(gw, "POST", TOTP, &started).await;
    let confirm = gw
        .post_bearer(
            CONFIRM,
            token,
            json!({"enrolment_token": "x", "otp": "123456"}),
        )
        .await;
    confirm.assert_detail(501, unsupported);
    fits(gw, "POST", CONFIRM, &confirm).await;
    let removed = delete(gw, token, json!({"password": user.password})).await;
    removed.assert_detail(501, unsupported);
    fits(gw, "DELETE", TOTP, &removed).await;
    gw.get(TOTP).await.assert_detail(403, "Unauthorized.");
    // `otp` at sign-in is accepted and ignored (the user is unverified: the
    // contract's answer for that, not a code question).
    let signin = signin_otp(gw, &user.username, &user.password, "123456").await;
    assert_eq!(signin.status, 200, "{}", signin.text);
    assert_eq!(signin.json["message"], "Please verify your email first");
    signin_otp(gw, &user.username, "not the password", "123456")
        .await
        .assert_detail(401, INVALID_CREDENTIALS);
}
