//! Verification and reset links: single use, scoped, rate-limited, and
//! silent about which addresses exist.

use serde_json::json;

use crate::Env;
use crate::harness::{TestUser, token_of, unique_email};

const VERIFY: &str = "Verify Your Email Address";
const RESET: &str = "Reset Your Password";

pub async fn duplicates_and_case_insensitive_email(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("dup");
    assert_eq!(
        gw.post("/users/signup", user.signup_body()).await.status,
        200
    );

    let mut same_email_other_case = TestUser::new("dup2");
    same_email_other_case.email = user.email.to_uppercase();
    gw.post("/users/signup", same_email_other_case.signup_body())
        .await
        .assert_detail(400, "Email already registered");

    let mut same_username = TestUser::new("dup3");
    same_username.username = user.username.clone();
    gw.post("/users/signup", same_username.signup_body())
        .await
        .assert_detail(400, "Username already registered");

    // Both taken: the e-mail message.
    gw.post("/users/signup", user.signup_body())
        .await
        .assert_detail(400, "Email already registered");

    // Concurrent sign-ups of case variants: exactly one wins.
    let base = unique_email("race");
    let variants = [
        base.clone(),
        base.to_uppercase(),
        format!("{}{}", &base[..1].to_uppercase(), &base[1..]),
    ];
    let mut tasks = Vec::new();
    for (i, email) in variants.into_iter().enumerate() {
        let http = gw.http.clone();
        let url = gw.url("/users/signup");
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"email": email, "username": format!("racer_{i}_{}", uuid::Uuid::new_v4().simple()), "password": "12345678"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400, 400]);
}

pub async fn email_tokens_are_single_use_and_scoped(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("single");
    assert_eq!(
        gw.post("/users/signup", user.signup_body()).await.status,
        200
    );
    let verify_token = token_of(&env.mail.wait_for_link(&user.email, VERIFY).await);

    // A verification token is not a reset token.
    gw.post(
        "/users/reset-password",
        json!({"token": verify_token, "new_password": "12345678"}),
    )
    .await
    .assert_detail(400, "Invalid or expired password reset token");
    assert_eq!(
        gw.post("/users/verify-email", json!({"token": verify_token}))
            .await
            .status,
        200
    );
    gw.post("/users/verify-email", json!({"token": verify_token}))
        .await
        .assert_detail(400, "Invalid or expired reset token");

    // Two reset requests in the same second: two distinct, working tokens.
    for _ in 0..2 {
        let reply = gw
            .post("/users/forgot-password", json!({"email": user.email}))
            .await;
        assert_eq!(reply.status, 200);
    }
    let first = token_of(&crate::harness::link_in(
        &env.mail.wait_for_nth(&user.email, RESET, 1).await,
    ));
    let second = token_of(&crate::harness::link_in(
        &env.mail.wait_for_nth(&user.email, RESET, 2).await,
    ));
    assert_ne!(first, second);

    // A reset token is not a verification token.
    gw.post("/users/verify-email", json!({"token": first}))
        .await
        .assert_detail(400, "Invalid verification token");
    let ok = gw
        .post(
            "/users/reset-password",
            json!({"token": first, "new_password": "first new pw"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    gw.post(
        "/users/reset-password",
        json!({"token": first, "new_password": "again new pw"}),
    )
    .await
    .assert_detail(400, "Invalid or expired reset token");
    let ok = gw
        .post(
            "/users/reset-password",
            json!({"token": second, "new_password": "second new pw"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(gw.signin(&user.username, "second new pw").await.status, 200);

    for junk in ["", "junk", "a.b.c"] {
        gw.post("/users/verify-email", json!({"token": junk}))
            .await
            .assert_detail(400, "Invalid or expired reset token");
        gw.post(
            "/users/reset-password",
            json!({"token": junk, "new_password": "12345678"}),
        )
        .await
        .assert_detail(400, "Invalid or expired reset token");
    }
}

pub async fn unknown_addresses_answer_like_known_ones(env: &Env) {
    let gw = &env.gw;
    let known = TestUser::new("known");
    assert_eq!(
        gw.post("/users/signup", known.signup_body()).await.status,
        200
    );
    let unknown = unique_email("ghost");

    let a = gw
        .post("/users/forgot-password", json!({"email": known.email}))
        .await;
    let b = gw
        .post("/users/forgot-password", json!({"email": unknown}))
        .await;
    assert_eq!((a.status, &a.json), (b.status, &b.json));

    let a = gw
        .post("/users/resend-verification", json!({"email": known.email}))
        .await;
    let b = gw
        .post("/users/resend-verification", json!({"email": unknown}))
        .await;
    assert_eq!((a.status, &a.json), (b.status, &b.json));
    assert_eq!(
        b.json,
        json!({"message": "Verification email sent successfully", "retry_after": null})
    );
    assert_eq!(env.mail.count_settled(&unknown, RESET).await, 0);
    assert_eq!(env.mail.count_settled(&unknown, VERIFY).await, 0);
    assert_eq!(env.mail.count_settled(&known.email, RESET).await, 1);

    // The limit holds for unknown addresses too (in any case): three
    // "mails" (none sent), then the limit's answer, like a known address.
    for _ in 0..2 {
        let reply = gw
            .post(
                "/users/resend-verification",
                json!({"email": unknown.to_uppercase()}),
            )
            .await;
        assert_eq!(
            reply.json,
            json!({"message": "Verification email sent successfully", "retry_after": null})
        );
    }
    assert_too_many(
        &gw.post("/users/resend-verification", json!({"email": unknown}))
            .await,
    );
    assert_eq!(env.mail.count_settled(&unknown, VERIFY).await, 0);
}

/// The answer of a sign-in with the right password and an unverified address.
fn verify_first() -> serde_json::Value {
    json!({
        "access_token": null,
        "refresh_token": null,
        "expires_in": null,
        "fallback_url": "/verify-email",
        "message": "Please verify your email first",
    })
}

/// Asserts the limit's answer, with an hour (less the test's seconds) to wait.
fn assert_too_many(reply: &crate::harness::Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["message"], "Too many verification attempts");
    let retry_after = reply.json["retry_after"].as_u64().unwrap();
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");
}

pub async fn resend_limit_and_retry_after(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("resend");
    assert_eq!(
        gw.post("/users/signup", user.signup_body()).await.status,
        200
    );
    // The sign-up mail counts: two resends make three mails.
    for _ in 0..2 {
        let reply = gw
            .post("/users/resend-verification", json!({"email": user.email}))
            .await;
        assert_eq!(
            reply.json,
            json!({"message": "Verification email sent successfully", "retry_after": null})
        );
    }
    // The third resend would be a fourth mail: refused, nothing sent.
    assert_too_many(
        &gw.post("/users/resend-verification", json!({"email": user.email}))
            .await,
    );
    assert_eq!(env.mail.count_settled(&user.email, VERIFY).await, 3);
    // Every mailed link is stored and works (deliberate difference 5).
    let mails = env.mail.mails(&user.email, VERIFY).await;
    let last = token_of(&crate::harness::link_in(mails.last().unwrap()));
    assert_eq!(
        gw.post("/users/verify-email", json!({"token": last}))
            .await
            .status,
        200
    );
}

pub async fn unverified_signins_count_toward_the_limit(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("signinlimit");
    assert_eq!(
        gw.post("/users/signup", user.signup_body()).await.status,
        200
    );
    // Sign-up mail, then one mail per unverified sign-in: three.
    for _ in 0..2 {
        let reply = gw.signin(&user.username, &user.password).await;
        assert_eq!((reply.status, &reply.json), (200, &verify_first()));
    }
    assert_too_many(
        &gw.post("/users/resend-verification", json!({"email": user.email}))
            .await,
    );
    // A sign-in over the limit still answers as the contract says, sets no
    // cookie, and mails nothing.
    let reply = gw.signin(&user.email, &user.password).await;
    assert_eq!((reply.status, &reply.json), (200, &verify_first()));
    assert!(reply.set_cookies().is_empty());
    assert_eq!(env.mail.count_settled(&user.email, VERIFY).await, 3);
    // The three mailed links work (the last one verifies the address).
    let mails = env.mail.mails(&user.email, VERIFY).await;
    let last = token_of(&crate::harness::link_in(mails.last().unwrap()));
    assert_eq!(
        gw.post("/users/verify-email", json!({"token": last}))
            .await
            .status,
        200
    );
}

pub async fn already_verified(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "done").await;
    gw.post(
        "/users/resend-verification",
        json!({"email": user.email.to_uppercase()}),
    )
    .await
    .assert_detail(400, "Email already verified");
}

pub async fn reset_ends_sessions(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "resetend").await;
    assert_eq!(
        gw.post("/users/forgot-password", json!({"email": user.email}))
            .await
            .status,
        200
    );
    let token = token_of(&env.mail.wait_for_link(&user.email, RESET).await);
    let reply = gw
        .post(
            "/users/reset-password",
            json!({"token": token, "new_password": "reset pw 123"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    // Sessions opened with the old password end.
    assert_eq!(
        gw.get_bearer("/users/me", &user.access_token).await.status,
        403
    );
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 401);
}

/// Deliberate difference 15: a reset ends every token of the user issued
/// before it, the sign-up's too (they name no device session).
pub async fn reset_ends_signup_tokens(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("resetsignup");
    let signup = gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(signup.status, 200, "{}", signup.text);
    let access = signup.json["access_token"].as_str().unwrap().to_string();
    let refresh = signup.json["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(gw.get_bearer("/users/me", &access).await.status, 200);
    let verify = token_of(&env.mail.wait_for_link(&user.email, VERIFY).await);
    assert_eq!(
        gw.post("/users/verify-email", json!({"token": verify}))
            .await
            .status,
        200
    );
    // Tokens say when they were issued in whole seconds: the reset comes
    // in a later second than the sign-up.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        gw.post("/users/forgot-password", json!({"email": user.email}))
            .await
            .status,
        200
    );
    let reset = token_of(&env.mail.wait_for_link(&user.email, RESET).await);
    let reply = gw
        .post(
            "/users/reset-password",
            json!({"token": reset, "new_password": "a brand new pw"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    gw.get_bearer("/users/me", &access)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    let cookie = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .header("cookie", format!("access_token={access}")),
        )
        .await;
    cookie.assert_detail(403, "Invalid token or expired token.");
    let refused = gw
        .post("/users/refresh-token", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);

    // Tokens issued after the reset work.
    let signin = gw.signin(&user.username, "a brand new pw").await;
    assert_eq!(signin.status, 200, "{}", signin.text);
    let fresh = signin.json["access_token"].as_str().unwrap();
    assert_eq!(gw.get_bearer("/users/me", fresh).await.status, 200);
    let refreshed = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": signin.json["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
}
