//! `GET /auth/audit`: what the trail keeps of each authentication event,
//! who may read it, its filters and pages, and that it is append-only.

use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::{Reply, token_of};
use crate::{Env, Store};

async fn audit(env: &Env, token: &str, query: &str) -> Reply {
    env.gw
        .get_bearer(&format!("/auth/audit{query}"), token)
        .await
}

fn events(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["events"].as_array().cloned().unwrap_or_default()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["action"].as_str().unwrap_or_default(),
                e["outcome"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

pub async fn trail_records_each_event_for_admins(env: &Env) {
    let gw = &env.gw;
    let admin = gw.verified_user(&env.mail, "auditor").await;
    env.make_admin(&admin).await;
    let user = gw.verified_user(&env.mail, "audited").await;

    // Only admins read the trail.
    gw.get("/auth/audit")
        .await
        .assert_detail(403, "Unauthorized.");
    audit(env, &user.access_token, "")
        .await
        .assert_detail(403, "Not enough permissions");

    // A failed sign-in (from a known user agent), a sign-out, a reset.
    let wrong = gw
        .send(
            gw.http
                .post(gw.url("/users/signin"))
                .header("user-agent", "audit-test/1.0")
                .json(&json!({"username": user.username, "password": "not the password"})),
        )
        .await;
    wrong.assert_detail(401, "Invalid credentials");
    let signed_in = gw.signin(&user.username, &user.password).await;
    let token = signed_in.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        gw.post_bearer("/users/signout", &token, json!({}))
            .await
            .status,
        200
    );
    let forgot = gw
        .post("/users/forgot-password", json!({ "email": user.email }))
        .await;
    assert_eq!(forgot.status, 200);
    let link = env
        .mail
        .wait_for_link(&user.email, "Reset Your Password")
        .await;
    let reset = gw
        .post(
            "/users/reset-password",
            json!({ "token": token_of(&link), "new_password": "another horse battery" }),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.text);
    let bad_reset = gw
        .post(
            "/users/reset-password",
            json!({ "token": token_of(&link), "new_password": "yet another horse" }),
        )
        .await;
    assert_eq!(bad_reset.status, 400);

    // The user's own events, newest first.
    let mine = events(&audit(env, &admin.access_token, &format!("?user_id={}", user.id)).await);
    let seen = actions(&mine);
    for expected in [
        "signup:success",
        "email.verify:success",
        "signin:success",
        "signout:success",
        "password.reset_requested:success",
        "password.reset:success",
    ] {
        assert!(seen.iter().any(|a| a == expected), "{expected} in {seen:?}");
    }
    let ids: Vec<i64> = mine.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(mine.iter().all(|e| e["actor_id"] == user.id));
    for event in &mine {
        let at = event["at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
        assert_eq!(event["ip"], "127.0.0.1");
    }

    // The failed sign-in names the login typed, never the password.
    let failures = events(&audit(env, &admin.access_token, "?action=signin&outcome=failure").await);
    let failed = failures
        .iter()
        .find(|e| e["detail"]["login"] == user.username.as_str())
        .unwrap_or_else(|| panic!("failed sign-in of {} in {failures:?}", user.username));
    assert_eq!(failed["user_agent"], "audit-test/1.0");
    assert_eq!(failed["detail"]["reason"], "invalid credentials");
    let whole = serde_json::to_string(&failures).unwrap();
    assert!(!whole.contains("not the password"));
    assert!(!whole.contains(&user.password));

    // The failed reset (used token) is there too, and a prefix filter finds both resets.
    let resets = actions(&events(
        &audit(env, &admin.access_token, "?action=password").await,
    ));
    assert!(
        resets.iter().any(|a| a == "password.reset:failure"),
        "{resets:?}"
    );
    assert!(
        resets.iter().all(|a| a.starts_with("password.")),
        "{resets:?}"
    );

    // An admin action names both sides.
    let victim = gw.verified_user(&env.mail, "auditdel").await;
    let deleted = gw
        .send(
            gw.http
                .delete(gw.url(&format!("/users/{}", victim.id)))
                .bearer_auth(&admin.access_token),
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let admin_actions = events(&audit(env, &admin.access_token, "?action=user.deleted").await);
    assert!(
        admin_actions
            .iter()
            .any(|e| e["actor_id"] == admin.id && e["subject_id"] == victim.id),
        "{admin_actions:?}"
    );

    // Pages: `limit` and `before`, without overlap, ending with null.
    let all = events(&audit(env, &admin.access_token, "?limit=500").await);
    let mut paged = Vec::new();
    let mut query = "?limit=3".to_string();
    loop {
        let page = audit(env, &admin.access_token, &query).await;
        paged.extend(events(&page));
        match page.json["next_before"].as_i64() {
            Some(before) => query = format!("?limit=3&before={before}"),
            None => break,
        }
    }
    let ids = |list: &[Value]| list.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&all));

    // Time filters.
    let future = "2999-01-01T00:00:00Z";
    assert!(events(&audit(env, &admin.access_token, &format!("?since={future}")).await).is_empty());
    assert_eq!(
        events(
            &audit(
                env,
                &admin.access_token,
                &format!("?until={future}&limit=500")
            )
            .await
        )
        .len(),
        all.len()
    );

    // Bad filters are 422 in FastAPI's shape.
    for (query, kind) in [
        ("?outcome=maybe", "enum"),
        ("?since=yesterday", "datetime_from_date_parsing"),
        ("?limit=0", "greater_than_equal"),
        ("?limit=501", "less_than_equal"),
        ("?user_id=abc", "int_parsing"),
        ("?action=sign%00in", "string_pattern_mismatch"),
    ] {
        let reply = audit(env, &admin.access_token, query).await;
        assert_eq!(reply.status, 422, "{query}: {}", reply.text);
        assert_eq!(reply.json["detail"][0]["type"], kind, "{query}");
    }

    // Append-only: the store refuses to change or remove a row.
    match &env.store {
        Store::Postgres(db) => {
            let mut conn = db.connect().await;
            for sql in [
                "UPDATE authgate_audit SET outcome = 'success'",
                "DELETE FROM authgate_audit",
                "TRUNCATE authgate_audit",
            ] {
                let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
                assert!(err.to_string().contains("append-only"), "{sql}: {err}");
            }
        }
        Store::Embedded(dir) => {
            let url = format!("sqlite://{}", dir.path().join("authgate.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for sql in [
                "UPDATE authgate_audit SET outcome = 'success'",
                "DELETE FROM authgate_audit",
            ] {
                let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
                assert!(err.to_string().contains("append-only"), "{sql}: {err}");
            }
        }
    }
    let after = events(&audit(env, &admin.access_token, "?limit=500").await);
    assert!(after.len() >= all.len());
}
