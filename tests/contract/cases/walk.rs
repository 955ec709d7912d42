//! The main journeys, with the links read out of the real mails.

use serde_json::json;

use crate::Env;
use crate::harness::{TestUser, token_of};

const VERIFY: &str = "Verify Your Email Address";
const RESET: &str = "Reset Your Password";

fn cookie<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

/// signup → mail → verify → signin → me → refresh → signout → forgot → reset → signin
pub async fn signup_verify_signin_refresh_signout_reset(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("walk");

    // Sign-up: tokens for the unverified user, no cookies, a mail.
    let reply = gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["expires_in"], 3600);
    assert_eq!(reply.json["fallback_url"], json!(null));
    assert_eq!(
        reply.json["message"],
        "Verification email sent successfully"
    );
    assert!(reply.set_cookies().is_empty());
    let keys: Vec<&str> = reply
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "refresh_token",
            "expires_in",
            "fallback_url",
            "message"
        ]
    );

    let link = env.mail.wait_for_link(&user.email, VERIFY).await;
    let prefix = format!("{}/verify-email?token=", gw.options.env["APP_URL"]);
    assert!(link.starts_with(&prefix), "{link}");

    // Verify: signed in, cookies set.
    let reply = gw
        .post(
            "/users/verify-email",
            json!({ "token": token_of(&link), "redirect_url": "https://app.example/home" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["message"], "Email verified successfully");
    assert_eq!(reply.json["verified"], true);
    assert_eq!(reply.json["redirect_url"], "https://app.example/home");
    assert_eq!(reply.json["expires_in"], 3600);
    let cookies = reply.set_cookies();
    let access = reply.json["access_token"].as_str().unwrap();
    assert_eq!(
        cookie(&cookies, "access_token"),
        format!("access_token={access}; HttpOnly; Max-Age=3600; Path=/; SameSite=lax")
    );
    assert!(
        cookie(&cookies, "refresh_token")
            .ends_with("; HttpOnly; Max-Age=604800; Path=/; SameSite=lax")
    );

    // Sign-in by username: both cookies and both tokens.
    let reply = gw.signin(&user.username, &user.password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["fallback_url"], json!(null));
    assert_eq!(reply.json["message"], json!(null));
    assert_eq!(reply.set_cookies().len(), 2);
    let access = reply.json["access_token"].as_str().unwrap().to_string();
    let refresh = reply.json["refresh_token"].as_str().unwrap().to_string();

    // /users/me, with and without the trailing slash, bearer or cookie.
    for path in ["/users/me", "/users/me/"] {
        let me = gw.get_bearer(path, &access).await;
        assert_eq!(me.status, 200, "{}", me.text);
        assert_eq!(me.json["username"], user.username.as_str());
        assert_eq!(me.json["email"], user.email.as_str());
        assert!(me.json["id"].as_i64().is_some());
        let keys: Vec<&str> = me
            .json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["username", "email", "id"]);
    }
    let by_cookie = gw
        .send(
            gw.http
                .get(gw.url("/users/me/"))
                .header("cookie", format!("access_token={access}")),
        )
        .await;
    assert_eq!(by_cookie.status, 200);

    // Refresh: a working access token that carries user_id.
    let reply = gw
        .post("/users/refresh-token", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json.as_object().unwrap().len(), 2);
    assert_eq!(reply.json["expires_in"], 3600);
    let refreshed = reply.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.get_bearer("/users/me", &refreshed).await.status, 200);

    // Sign-out: cookies cleared as Starlette did.
    let reply = gw.post_bearer("/users/signout", &access, json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"message": "Successfully signed out", "status": "success"})
    );
    let cleared = reply.set_cookies();
    for name in ["access_token", "refresh_token"] {
        assert_eq!(
            cookie(&cleared, name),
            format!(
                "{name}=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Max-Age=0; Path=/; SameSite=lax"
            )
        );
    }

    // Forgot → mail → reset → the new password works, the old does not.
    let reply = gw
        .post("/users/forgot-password", json!({ "email": user.email }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"message": "Password reset instructions have been sent to your email."})
    );
    let link = env.mail.wait_for_link(&user.email, RESET).await;
    let prefix = format!("{}/reset-password?token=", gw.options.env["APP_URL"]);
    assert!(link.starts_with(&prefix), "{link}");
    let reply = gw
        .post(
            "/users/reset-password",
            json!({ "token": token_of(&link), "new_password": "a brand new secret" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({"message": "Password has been reset successfully"})
    );
    gw.signin(&user.username, &user.password)
        .await
        .assert_detail(401, "Invalid credentials");
    let reply = gw
        .signin(&user.email.to_uppercase(), "a brand new secret")
        .await;
    assert_eq!(
        reply.status, 200,
        "sign-in by e-mail ignores case: {}",
        reply.text
    );
}

pub async fn links_follow_the_given_urls(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("links");
    let mut body = user.signup_body();
    body["verification_url"] = json!("https://app.example/verify");
    assert_eq!(gw.post("/users/signup", body).await.status, 200);
    let link = env.mail.wait_for_link(&user.email, VERIFY).await;
    assert!(
        link.starts_with("https://app.example/verify?token="),
        "{link}"
    );

    for (reset_url, expected) in [
        (
            "https://front.example",
            "https://front.example/reset-password?token=",
        ),
        (
            "https://front.example/",
            "https://front.example/reset-password?token=",
        ),
        (
            "https://front.example/app/",
            "https://front.example/app/reset-password?token=",
        ),
    ] {
        let before = env.mail.mails(&user.email, RESET).await.len();
        let reply = gw
            .post(
                "/users/forgot-password",
                json!({ "email": user.email, "reset_url": reset_url }),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let mail = env.mail.wait_for_nth(&user.email, RESET, before + 1).await;
        let link = crate::harness::link_in(&mail);
        assert!(link.starts_with(expected), "{reset_url}: {link}");
    }

    let reply = gw
        .post(
            "/users/resend-verification",
            json!({ "email": user.email, "verification_url": "https://app.example/v2" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mail = env.mail.wait_for_nth(&user.email, VERIFY, 2).await;
    assert!(crate::harness::link_in(&mail).starts_with("https://app.example/v2?token="));
}

pub async fn signup_tokens_work_before_verification(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("early");
    let reply = gw.post("/users/signup", user.signup_body()).await;
    let access = reply.json["access_token"].as_str().unwrap().to_string();
    let refresh = reply.json["refresh_token"].as_str().unwrap().to_string();
    let me = gw.get_bearer("/users/me/", &access).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["email"], user.email.as_str());
    let reply = gw
        .post("/users/refresh-token", json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

pub async fn unverified_signin_mails_a_link_and_sets_no_cookies(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("unverified");
    assert_eq!(
        gw.post("/users/signup", user.signup_body()).await.status,
        200
    );
    env.mail.wait_for_nth(&user.email, VERIFY, 1).await;

    let reply = gw.signin(&user.username, &user.password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.json,
        json!({
            "access_token": null, "refresh_token": null, "expires_in": null,
            "fallback_url": "/verify-email", "message": "Please verify your email first"
        })
    );
    assert!(reply.set_cookies().is_empty());
    let mail = env.mail.wait_for_nth(&user.email, VERIFY, 2).await;
    let link = crate::harness::link_in(&mail);
    assert!(link.contains("/verify-email?token="));

    let reply = gw
        .post(
            "/users/signin",
            json!({ "username": user.email, "password": user.password, "fallback_url": "/custom" }),
        )
        .await;
    assert_eq!(reply.json["fallback_url"], "/custom");

    // The link mailed at sign-in works (deliberate difference 5: it is stored).
    let reply = gw
        .post("/users/verify-email", json!({ "token": token_of(&link) }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // A wrong password on an unverified account is still just invalid.
    gw.signin(&user.username, "not the password")
        .await
        .assert_detail(401, "Invalid credentials");
}
