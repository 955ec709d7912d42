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

/// The current Unix time, in seconds.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .floor()
}

/// Half an hour ahead: within an access token's lifetime.
fn soon() -> f64 {
    now() + 1800.0
}

fn payload(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("a JWT"))
            .expect("base64url"),
    )
    .expect("JSON")
}

/// A refresh token as the gateway mints them: an HS256 JWT in a `dir`/`A256GCM` JWE.
fn refresh_token(claims: &Value) -> String {
    let inner = hs256(claims, SECRET.as_bytes());
    authgate::tokens::DirA256Gcm::new(SECRET.as_bytes())
        .unwrap()
        .encrypt(inner.as_bytes())
        .unwrap()
}

/// `/users/me` with these `Cookie` headers (one header line each).
async fn me_with_cookies(gw: &crate::harness::Gateway, lines: &[String]) -> crate::harness::Reply {
    let mut request = gw.http.get(gw.url("/users/me"));
    for line in lines {
        request = request.header("cookie", line);
    }
    gw.send(request).await
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

    // The valid vectors expire in 2100: beyond the lifetime ceiling
    // (deliberate difference 14), refused as an expired token.
    for name in ["valid_signin", "valid_refreshed"] {
        let token = text(&format!("/access_tokens/{name}"));
        gw.get_bearer("/users/me/", &token)
            .await
            .assert_detail(403, INVALID);
    }
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": text("/refresh_tokens/valid")}),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    // With ceilings that reach 2100, they verify: tokens of user 42, whom
    // this database does not hold, accepted (the answer is the contract's
    // 404, not a 403).
    let gw = &env
        .sibling(|o| {
            o.set("JWT_EXP_CEILING_MINUTES", "60000000")
                .set("JWT_REFRESH_EXP_CEILING_MINUTES", "60000000")
        })
        .await;
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
    let claims = json!({"user_id": user.id, "email": user.email, "exp": soon(), "iat": 1, "scope": "access_token"});

    // Our own key, integer exp: accepted.
    let mut int_exp = claims.clone();
    int_exp["exp"] = json!(soon() as i64);
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

/// Deliberate difference 14: an `exp` further ahead than the ceiling (by
/// default 4 times the lifetime) is refused like an expired token, at the
/// API and at refresh; refusals are counted by reason.
pub async fn tokens_beyond_the_lifetime_ceiling_are_refused(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "ceiling").await;
    let issued = now();
    let access = |exp: f64| {
        hs256(
            &json!({"user_id": user.id, "email": user.email, "exp": exp, "iat": issued, "scope": "access_token"}),
            SECRET.as_bytes(),
        )
    };
    // Within 4 hours (4 x 60 minutes): accepted.
    for exp in [issued + 3600.0, issued + 3.0 * 3600.0] {
        let reply = gw.get_bearer("/users/me", &access(exp)).await;
        assert_eq!(reply.status, 200, "exp {exp}: {}", reply.text);
    }
    // Beyond it, whatever the route or the way the token came: refused,
    // again and again (a refused token is never remembered as verified).
    let beyond = [issued + 5.0 * 3600.0, 4_102_444_800.0, 1e30];
    for exp in beyond {
        let token = access(exp);
        for _ in 0..2 {
            gw.get_bearer("/users/me", &token)
                .await
                .assert_detail(403, INVALID);
            me_with_cookies(gw, &[format!("access_token={token}")])
                .await
                .assert_detail(403, INVALID);
            gw.post_bearer("/users/signout", &token, json!({}))
                .await
                .assert_detail(403, INVALID);
        }
    }
    let metrics = gw.get("/metrics").await.text;
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("authgate_token_rejections_total{")
                && l.contains(r#"kind="access""#)
                && l.contains(r#"reason="beyond_ceiling""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(refused, Some(18.0), "{metrics}");

    // Refresh tokens, against their own lifetime (7 days; 28 at most).
    let refresh = |exp: f64| {
        refresh_token(
            &json!({"user_id": user.id, "email": user.email, "exp": exp, "iat": issued, "scope": "refresh_token"}),
        )
    };
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": refresh(issued + 8.0 * 86400.0)}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for exp in [issued + 30.0 * 86400.0, 4_102_444_800.0, 1e30] {
        let reply = gw
            .post(
                "/users/refresh-token",
                json!({"refresh_token": refresh(exp)}),
            )
            .await;
        assert_eq!(reply.status, 401, "exp {exp}: {}", reply.text);
    }
    let metrics = gw.get("/metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("authgate_token_rejections_total{")
                && l.contains(r#"kind="refresh""#)
                && l.contains(r#"reason="beyond_ceiling""#)
                && l.ends_with(" 3")),
        "{metrics}"
    );
}

/// Duplicate `access_token` cookies (a stale one of a parent domain beside
/// the current one): the answer does not depend on their order. One valid
/// token (or several of one session) decides, invalid ones beside it are
/// ignored; valid tokens of different users or sessions are refused. The
/// bearer header still wins.
pub async fn duplicate_access_cookies_decide_regardless_of_order(env: &Env) {
    let gw = &env.gw;
    let ada = gw.verified_user(&env.mail, "cookiea").await;
    let bob = gw.verified_user(&env.mail, "cookieb").await;
    let expired = hs256(
        &json!({"user_id": bob.id, "email": bob.email, "exp": 1_000_000_000.0, "iat": 1, "scope": "access_token"}),
        SECRET.as_bytes(),
    );
    let foreign = hs256(
        &json!({"user_id": bob.id, "exp": soon(), "iat": 1, "scope": "access_token"}),
        b"another-secret-another-secret-32",
    );
    // Another session of ada's, signed out: a stale token.
    let stale = gw.signin(&ada.username, &ada.password).await;
    let stale = stale.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        gw.post_bearer("/users/signout", &stale, json!({}))
            .await
            .status,
        200
    );
    // A second token of ada's first session (a refresh of it).
    let refreshed = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": ada.refresh_token}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let twin = refreshed.json["access_token"].as_str().unwrap().to_string();
    let ada_token = ada.access_token.as_str();

    let both_orders = |a: &str, b: &str| {
        [
            vec![format!("access_token={a}; access_token={b}")],
            vec![format!("access_token={b}; access_token={a}")],
            // The same two in two `Cookie` header lines.
            vec![format!("access_token={a}"), format!("access_token={b}")],
            vec![format!("access_token={b}"), format!("access_token={a}")],
        ]
    };
    for other in [
        "not.a.token",
        "",
        expired.as_str(),
        foreign.as_str(),
        stale.as_str(),
        twin.as_str(),
        ada_token,
    ] {
        for lines in both_orders(ada_token, other) {
            let reply = me_with_cookies(gw, &lines).await;
            assert_eq!(reply.status, 200, "{lines:?}: {}", reply.text);
            assert_eq!(reply.json["id"], ada.id, "{lines:?}");
        }
    }
    // Two valid tokens naming different users, or different sessions of
    // one user: refused, whatever the order.
    let ada_again = gw.signin(&ada.username, &ada.password).await;
    let ada_again = ada_again.json["access_token"].as_str().unwrap().to_string();
    for other in [bob.access_token.as_str(), ada_again.as_str()] {
        for lines in both_orders(ada_token, other) {
            me_with_cookies(gw, &lines)
                .await
                .assert_detail(403, INVALID);
        }
    }
    // Nothing valid at all: the contract's refusal.
    for lines in both_orders("not.a.token", expired.as_str()) {
        me_with_cookies(gw, &lines)
            .await
            .assert_detail(403, INVALID);
    }
    // The bearer header wins over any cookies.
    let reply = gw
        .send(
            gw.http
                .get(gw.url("/users/me"))
                .bearer_auth(&bob.access_token)
                .header(
                    "cookie",
                    format!("access_token={ada_token}; access_token={ada_again}"),
                ),
        )
        .await;
    assert_eq!(reply.json["id"], bob.id, "{}", reply.text);
}

/// Tokens name their device session with a UUID (`device_id`), in every
/// mode, and a refreshed access token keeps it.
pub async fn device_ids_are_uuids_and_survive_refresh(env: &Env) {
    let gw = &env.gw;
    let user = gw.verified_user(&env.mail, "deviceid").await;
    let device_id = payload(&user.access_token)["device_id"]
        .as_str()
        .expect("device_id")
        .to_string();
    assert!(
        uuid::Uuid::parse_str(&device_id).is_ok(),
        "device_id {device_id:?} is not a UUID"
    );
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let refreshed = reply.json["access_token"].as_str().unwrap();
    assert_eq!(payload(refreshed)["device_id"], device_id.as_str());
    assert_eq!(gw.get_bearer("/users/me", refreshed).await.status, 200);
    // Signing out with the refreshed token ends the session of both.
    assert_eq!(
        gw.post_bearer("/users/signout", refreshed, json!({}))
            .await
            .status,
        200
    );
    for token in [refreshed, user.access_token.as_str()] {
        gw.get_bearer("/users/me", token)
            .await
            .assert_detail(403, INVALID);
    }
    let reply = gw
        .post(
            "/users/refresh-token",
            json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
}
