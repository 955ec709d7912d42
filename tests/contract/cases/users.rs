//! `/users/` administration: who may do what, and what is never shown.

use serde_json::json;

use crate::Env;
use crate::harness::TestUser;

pub async fn list_requires_token_and_pages(env: &Env) {
    let gw = &env.gw;
    let a = gw.verified_user(&env.mail, "lista").await;
    let b = gw.verified_user(&env.mail, "listb").await;
    gw.get("/users/").await.assert_detail(403, "Unauthorized.");

    let reply = gw.get_bearer("/users/", &a.access_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let users = reply.json.as_array().unwrap();
    assert!(users.iter().any(|u| u["id"] == a.id));
    assert!(users.iter().any(|u| u["id"] == b.id));
    for u in users {
        let keys: Vec<&str> = u.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["username", "email", "id"]);
    }
    let page = gw
        .get_bearer("/users/?offset=1&limit=1", &a.access_token)
        .await;
    assert_eq!(page.json.as_array().unwrap().len(), 1);
    assert_eq!(page.json[0]["id"], users[1]["id"]);

    let bad = gw.get_bearer("/users/?offset=abc", &a.access_token).await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.json["detail"][0],
        json!({
            "type": "int_parsing", "loc": ["query", "offset"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc", "url": "https://errors.pydantic.dev/2.10/v/int_parsing"
        })
    );
    assert_eq!(
        gw.get_bearer("/users/?limit=-1", &a.access_token)
            .await
            .status,
        422
    );
}

pub async fn admin_create_get_update_delete(env: &Env) {
    let gw = &env.gw;
    let admin = gw.verified_user(&env.mail, "admin").await;
    env.make_admin(&admin).await;

    let new = TestUser::new("made");
    let reply = gw
        .post_bearer(
            "/users/",
            &admin.access_token,
            json!({"username": new.username, "email": new.email, "password": new.password}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let keys: Vec<&str> = reply
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["username", "email", "id"], "never a hash");
    let id = reply.json["id"].as_i64().unwrap();

    gw.post_bearer(
        "/users/",
        &admin.access_token,
        json!({"username": new.username, "email": "x@example.com", "password": "12345678"}),
    )
    .await
    .assert_detail(400, "Username already registered");

    let got = gw
        .get_bearer(&format!("/users/{id}"), &admin.access_token)
        .await;
    assert_eq!(
        got.json,
        json!({"username": new.username, "email": new.email, "id": id})
    );
    gw.get_bearer("/users/999999999", &admin.access_token)
        .await
        .assert_detail(404, "User not found");
    let bad = gw.get_bearer("/users/abc", &admin.access_token).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json["detail"][0]["loc"], json!(["path", "user_id"]));

    // The admin verifies the new user and changes their address.
    let changed = crate::harness::unique_email("changed");
    let reply = gw
        .send(
            gw.http
                .put(gw.url(&format!("/users/{id}")))
                .bearer_auth(&admin.access_token)
                .json(&json!({"is_verified": true, "email": changed})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["email"], changed.as_str());
    let signin = gw.signin(&changed, &new.password).await;
    assert_eq!(signin.status, 200, "{}", signin.text);
    assert!(
        signin.json["access_token"].is_string(),
        "verified by the admin"
    );

    // Taken address.
    let reply = gw
        .send(
            gw.http
                .put(gw.url(&format!("/users/{id}")))
                .bearer_auth(&admin.access_token)
                .json(&json!({"email": admin.email.to_uppercase()})),
        )
        .await;
    reply.assert_detail(400, "Email already registered");

    let reply = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{id}")))
                .bearer_auth(&admin.access_token),
        )
        .await;
    assert_eq!(reply.json, json!({"message": "User deleted successfully"}));
    gw.get_bearer(&format!("/users/{id}"), &admin.access_token)
        .await
        .assert_detail(404, "User not found");
    let reply = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{id}")))
                .bearer_auth(&admin.access_token),
        )
        .await;
    reply.assert_detail(404, "User not found");
}

pub async fn non_admins_are_refused(env: &Env) {
    let gw = &env.gw;
    let alice = gw.verified_user(&env.mail, "alice").await;
    let bob = gw.verified_user(&env.mail, "bob").await;
    let denied = "Not enough permissions";

    gw.post_bearer(
        "/users/",
        &alice.access_token,
        json!({"username": "newbie", "email": "newbie@example.com", "password": "12345678"}),
    )
    .await
    .assert_detail(403, denied);
    gw.send(
        gw.http
            .put(gw.url(&format!("/users/{}", bob.id)))
            .bearer_auth(&alice.access_token)
            .json(&json!({"password": "hijacked pw"})),
    )
    .await
    .assert_detail(403, denied);
    gw.send(
        gw.http
            .delete(gw.url(&format!("/users/{}", bob.id)))
            .bearer_auth(&alice.access_token),
    )
    .await
    .assert_detail(403, denied);
    // Only an admin sets is_verified, even on oneself.
    gw.send(
        gw.http
            .put(gw.url(&format!("/users/{}", alice.id)))
            .bearer_auth(&alice.access_token)
            .json(&json!({"is_verified": false})),
    )
    .await
    .assert_detail(403, denied);
    // Bob is untouched.
    assert_eq!(gw.signin(&bob.username, &bob.password).await.status, 200);

    // A user changes their own password.
    let reply = gw
        .send(
            gw.http
                .put(gw.url(&format!("/users/{}", alice.id)))
                .bearer_auth(&alice.access_token)
                .json(&json!({"password": "alice new pw"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(gw.signin(&alice.username, "alice new pw").await.status, 200);
    let reply = gw
        .send(
            gw.http
                .put(gw.url(&format!("/users/{}", alice.id)))
                .bearer_auth(&alice.access_token)
                .json(&json!({"password": "short"})),
        )
        .await;
    assert_eq!(reply.status, 422);
}

pub async fn deleted_user_cannot_sign_in(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "gone").await;
    let reply = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{}", user.id)))
                .bearer_auth(&user.access_token),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    gw.signin(&user.username, &user.password)
        .await
        .assert_detail(401, "Invalid credentials");
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

pub async fn email_test_is_admin_only(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "mailtest").await;
    let to = crate::harness::unique_email("probe");
    gw.post("/email/email/test", json!({"email": to}))
        .await
        .assert_detail(403, "Unauthorized.");
    gw.post_bearer(
        "/email/email/test",
        &user.access_token,
        json!({"email": to}),
    )
    .await
    .assert_detail(403, "Not enough permissions");
    env.make_admin(&user).await;
    let reply = gw
        .post_bearer(
            "/email/email/test",
            &user.access_token,
            json!({"email": to}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    env.mail.wait_for_nth(&to, "Test email", 1).await;
}

/// Sign-up tokens belong to no device session: deleting the user must still
/// end them, admin rights included.
pub async fn deleted_users_signup_tokens_stop_working(env: &Env) {
    let gw = &env.gw;
    let user = TestUser::new("signupgone");
    let reply = gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let access = reply.json["access_token"].as_str().unwrap().to_string();
    let me = gw.get_bearer("/users/me", &access).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let id = me.json["id"].as_i64().unwrap();
    env.make_admin(&user).await;
    let reply = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{id}")))
                .bearer_auth(&access),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    gw.get_bearer("/users/me", &access)
        .await
        .assert_detail(403, "Invalid token or expired token.");
    let other = TestUser::new("afterdelete");
    gw.post_bearer("/users/", &access, other.signup_body())
        .await
        .assert_detail(403, "Invalid token or expired token.");
}

/// `/users/me` answers from memory for a few seconds; a change made through
/// the gateway is seen at once all the same.
pub async fn me_shows_an_update_at_once(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "meupdate").await;
    let before = gw.get_bearer("/users/me", &user.access_token).await;
    assert_eq!(before.status, 200, "{}", before.text);
    let new_email = crate::harness::unique_email("meupdated");
    let reply = gw
        .send(
            gw.http
                .put(gw.url(&format!("/users/{}", user.id)))
                .bearer_auth(&user.access_token)
                .json(&json!({"email": new_email})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["email"], new_email.to_lowercase().as_str());
    let after = gw.get_bearer("/users/me/", &user.access_token).await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.json["email"], reply.json["email"], "{}", after.text);
    assert_ne!(after.json["email"], before.json["email"]);
}
