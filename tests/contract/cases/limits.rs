//! Brute-force protection (deliberate difference 13) and concurrency
//! (deliberate difference 9).

use serde_json::json;

use crate::Env;

pub async fn signin_is_rate_limited(env: &Env) {
    let user = env.gw.verified_user(&env.mail, "limited").await;
    let gw = env
        .sibling(|o| o.set("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "3/minute"))
        .await;
    for _ in 0..3 {
        gw.signin(&user.username, "wrong password")
            .await
            .assert_detail(401, "Invalid credentials");
    }
    let reply = gw.signin(&user.username, &user.password).await;
    reply.assert_detail(429, "Too many requests");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The limit is per account: another account still signs in.
    let other = env.gw.verified_user(&env.mail, "free").await;
    assert_eq!(
        gw.signin(&other.username, &other.password).await.status,
        200
    );

    let gw = env
        .sibling(|o| o.set("RATE_LIMIT_SIGNIN_PER_IP", "2/minute"))
        .await;
    assert_eq!(
        gw.signin(&other.username, &other.password).await.status,
        200
    );
    assert_eq!(gw.signin(&other.email, &other.password).await.status, 200);
    let reply = gw.signin(&user.username, &user.password).await;
    reply.assert_detail(429, "Too many requests");
    assert!(reply.header("retry-after").is_some());
}

pub async fn concurrent_signins_all_succeed(env: &Env) {
    let gw = &env.gw;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(gw.verified_user(&env.mail, &format!("storm{i}")).await);
    }
    let target = gw.verified_user(&env.mail, "stormwrong").await;
    // Twelve accounts sign in at once while another is guessed at.
    // (Keycloak's brute-force detector refuses a login of an account while
    // another of the same account is in flight, so each account signs in once.)
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = gw.http.clone();
        let url = gw.url("/users/signin");
        let body = if i % 4 == 0 {
            json!({"username": target.username, "password": "wrong"})
        } else {
            let user = &users[i - 1 - i / 4];
            json!({"username": user.username, "password": user.password})
        };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&body)
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
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        12,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        4,
        "{statuses:?}"
    );
    // And the server still answers normally afterwards.
    for user in &users {
        assert_eq!(
            gw.get_bearer("/users/me", &user.access_token).await.status,
            200
        );
    }
}
