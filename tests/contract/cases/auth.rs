//! "Token required", the legacy token vectors, forged tokens, revocation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::Env;
use crate::harness::{SECRET, legacy_vectors};

const UNAUTHORIZED: &str = "Unauthorized.";
const INVALID: &str = "Invalid token or expired token.";

fn hs256(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key).unwrap(),
    )
    .unwrap()
}

fn far_future() -> f64 {
    4_102_444_800.0
}

pub async fn token_required_rules(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "rules").await;
    let good = user.access_token.as_str();

    gw.get("/users/me").await.assert_detail(403, UNAUTHORIZED);
    for header in ["Token abc", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz"] {
        let reply = gw
            .send(
                gw.http
                    .get(gw.url("/users/me"))
                    .header("authorization", header),
            )
            .await;
        reply.assert_detail(403, UNAUTHORIZED);
    }
    // The scheme is case-insensitive.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .header("authorization", format!("bearer {good}")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // Another scheme falls back to the cookie.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .header("authorization", "Token abc")
                .header("cookie", format!("access_token={good}")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A bad bearer fails even with a good cookie.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .header("authorization", "Bearer not.a.token")
                .header("cookie", format!("access_token={good}")),
        )
        .await;
    reply.assert_detail(403, INVALID);
    // Every protected endpoint applies the rule.
    gw.post("/users/signout", json!({}))
        .await
        .assert_detail(403, UNAUTHORIZED);
    gw.get("/users/").await.assert_detail(403, UNAUTHORIZED);
    gw.get("/users/1").await.assert_detail(403, UNAUTHORIZED);
    gw.send(gw.http.delete(gw.url("/users/1")))
        .await
        .assert_detail(403, UNAUTHORIZED);
}

pub async fn legacy_vectors_accepted_or_refused_by_name(env: &Env) {
    let gw = &env.gw;
    let v = legacy_vectors();
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap().to_string();

    // Valid tokens of user 42, whom this database does not hold: accepted
    // (the answer is the contract's 404, not a 403).
    for name in ["valid_signin", "valid_refreshed"] {
        let token = text(&format!("/access_tokens/{name}"));
        gw.get_bearer("/users/me/", &token)
            .await
            .assert_detail(404, "User not found");
    }
    gw.get_bearer("/users/me", &text("/access_tokens/expired"))
        .await
        .assert_detail(403, INVALID);
    gw.get_bearer("/users/me", &text("/access_tokens/wrong_secret"))
        .await
        .assert_detail(403, INVALID);

    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": text("/refresh_tokens/valid")}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let minted = reply.json["access_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(minted.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["user_id"], 42);
    assert_eq!(claims["scope"], "access_token");
    assert!(claims["exp"].is_f64(), "exp is a float: {claims}");
    assert!(claims["iat"].is_i64());

    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": text("/refresh_tokens/expired")}),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert!(reply.json["detail"].as_str().is_some_and(|d| !d.is_empty()));

    // E-mail tokens are not access tokens (deliberate difference 1).
    for name in ["email_verification", "password_reset"] {
        let token = text(&format!("/email_tokens/{name}"));
        gw.get_bearer("/users/me", &token)
            .await
            .assert_detail(403, INVALID);
    }
    // Legacy e-mail tokens have no stored row: refused, with the scope's message.
    gw.post(
        "/users/verify-email",
        json!({"token": text("/email_tokens/password_reset")}),
    )
    .await
    .assert_detail(400, "Invalid verification token");
    gw.post(
        "/users/verify-email",
        json!({"token": text("/email_tokens/email_verification")}),
    )
    .await
    .assert_detail(400, "Invalid or expired reset token");
    gw.post(
        "/users/reset-password",
        json!({"token": text("/email_tokens/email_verification"), "new_password": "12345678"}),
    )
    .await
    .assert_detail(400, "Invalid or expired password reset token");
}

pub async fn forged_and_cross_scope_tokens(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "forge").await;
    let claims = json!({"user_id": user.id, "email": user.email, "exp": far_future(), "iat": 1, "scope": "access_token"});

    // Our own key, integer exp: accepted.
    let mut int_exp = claims.clone();
    int_exp["exp"] = json!(4_102_444_800_i64);
    assert_eq!(
        gw.get_bearer("/users/me", &hs256(&int_exp, SECRET.as_bytes()))
            .await
            .status,
        200
    );

    let mut refused = vec![
        hs256(&claims, b"another-secret-another-secret-32"),
        format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        ),
    ];
    for scope in ["refresh_token", "email_verification", "password_reset", ""] {
        let mut other = claims.clone();
        other["scope"] = json!(scope);
        refused.push(hs256(&other, SECRET.as_bytes()));
    }
    let mut no_scope = claims.clone();
    no_scope.as_object_mut().unwrap().remove("scope");
    refused.push(hs256(&no_scope, SECRET.as_bytes()));
    let mut expired = claims.clone();
    expired["exp"] = json!(1_000_000_000.5);
    refused.push(hs256(&expired, SECRET.as_bytes()));
    let good = user.access_token.clone();
    refused.push(good[..good.len() - 3].to_string());
    refused.push(format!("{good}x"));
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["user_id"] = json!(user.id + 1000);
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    refused.push(parts.join("."));
    refused.push("a.b".into());
    refused.push("%%%".into());

    for token in refused {
        let reply = gw.get_bearer("/users/me", &token).await;
        reply.assert_detail(403, INVALID);
    }

    // At refresh: only a refresh token.
    for token in [user.access_token.as_str(), "garbage", ""] {
        let reply = gw
            .post("/users/refresh-token", json!({"refresh_token": token}))
            .await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.text);
    }
}

pub async fn signout_revokes_access_and_refresh(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "revoke").await;
    // A second device stays signed in.
    let other = gw.signin(&user.username, &user.password).await;
    let other_access = other.json["access_token"].as_str().unwrap().to_string();

    let reply = gw
        .post_bearer("/users/signout", &user.access_token, json!({}))
        .await;
    assert_eq!(reply.status, 200);
    gw.get_bearer("/users/me", &user.access_token)
        .await
        .assert_detail(403, INVALID);
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(gw.get_bearer("/users/me", &other_access).await.status, 200);
}
