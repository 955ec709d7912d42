//! Taking over the old service's live database, and creating the schema on
//! an empty one (native backend).

use serde_json::json;
use sqlx::Row;

use crate::harness::{Gateway, Options, SECRET, TestDb, legacy_vectors, run_command};

const LEGACY_SCHEMA: &str = include_str!("../fixtures/legacy_schema.sql");

async fn legacy_db() -> TestDb {
    let db = TestDb::create().await;
    db.run_script(LEGACY_SCHEMA).await;
    db
}

async fn stored_hash(db: &TestDb, username: &str) -> String {
    let mut conn = db.connect().await;
    sqlx::query("SELECT password FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_legacy_database_and_keeps_every_password() {
    let db = legacy_db().await;
    let gw = Gateway::start(Options::native(&db.url)).await;
    let mut conn = db.connect().await;

    // Untouched: the alembic marker and every row.
    let version: String = sqlx::query_scalar("SELECT version_num FROM alembic_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(version, "7c1f9e2a4b3d");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 9);
    // What authgate added.
    let roles: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('authgate_user_roles')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(roles.is_some());
    // The case-duplicates kept the case-insensitive unique index from being built.
    let unique: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('authgate_users_email_lower_unique')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(unique, None);

    // Every legacy hash signs in with its password, and is upgraded on the way.
    let vectors = legacy_vectors();
    let hashes = vectors["password_hashes"].as_array().unwrap();
    let users = ["horse", "pat", "unicode", "digits", "salty"];
    for (username, entry) in users.iter().zip(hashes) {
        let password = entry["password"].as_str().unwrap();
        let old = stored_hash(&db, username).await;
        assert_eq!(old, entry["hash"].as_str().unwrap());
        let reply = gw.signin(username, password).await;
        assert_eq!(reply.status, 200, "{username}: {}", reply.text);
        assert!(
            reply.json["access_token"].is_string(),
            "{username}: {}",
            reply.text
        );
        let new = stored_hash(&db, username).await;
        assert_ne!(new, old, "{username} re-hashed");
        assert!(new.starts_with("$pbkdf2-sha256$30000$"), "{new}");
        assert!(
            !new.contains("$OWUyNWEyNTg4ZmNlZTdkMjFlYTE1ZmIxYTYzZDUxMzU$"),
            "random salt"
        );
        // The new hash works, and a second sign-in leaves it as it is.
        assert_eq!(gw.signin(username, password).await.status, 200);
        assert_eq!(stored_hash(&db, username).await, new);
        gw.signin(username, "wrong password")
            .await
            .assert_detail(401, "Invalid credentials");
    }
    let wrong = vectors["wrong_password_for_first_hash"].as_str().unwrap();
    gw.signin("horse", wrong)
        .await
        .assert_detail(401, "Invalid credentials");

    // Sign-in by e-mail ignores case; the exact-case account wins among legacy twins.
    assert_eq!(gw.signin("pat@example.com", "P@ssw0rd!").await.status, 200);
    assert_eq!(gw.signin("Case@example.com", "12345678").await.status, 200);
    assert_eq!(
        gw.signin("case@example.com", "correct horse battery staple")
            .await
            .status,
        200
    );
    // A soft-deleted legacy user cannot sign in.
    gw.signin("removed", "correct horse battery staple")
        .await
        .assert_detail(401, "Invalid credentials");
    // New case variants of an existing address are refused.
    gw.post(
        "/users/signup",
        json!({"email": "HORSE@example.com", "username": "newhorse", "password": "12345678"}),
    )
    .await
    .assert_detail(400, "Email already registered");
    // New ids continue after the legacy ones.
    let reply = gw
        .post(
            "/users/signup",
            json!({"email": crate::harness::unique_email("fresh"), "username": "fresh_user", "password": "12345678"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let token = reply.json["access_token"].as_str().unwrap();
    let me = gw.get_bearer("/users/me", token).await;
    assert_eq!(me.json["id"], 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_tokens_and_rows_keep_working() {
    let db = legacy_db().await;
    // The vectors expire in 2100: the lifetime ceiling must reach that far.
    let gw = Gateway::start(
        Options::native(&db.url)
            .set("JWT_EXP_CEILING_MINUTES", "60000000")
            .set("JWT_REFRESH_EXP_CEILING_MINUTES", "60000000"),
    )
    .await;
    let vectors = legacy_vectors();
    let text = |p: &str| vectors.pointer(p).unwrap().as_str().unwrap().to_string();

    // The old service's access token for user 42 reads ada's record.
    let me = gw
        .get_bearer("/users/me/", &text("/access_tokens/valid_signin"))
        .await;
    assert_eq!(
        me.json,
        json!({"username": "ada", "email": "ada@example.com", "id": 42})
    );

    // Ada is unverified: right password → the verify answer.
    let reply = gw.signin("ada", "correct horse battery staple").await;
    assert_eq!(reply.json["message"], "Please verify your email first");

    // A verification link the old service stored (plain token) still works, once.
    let token = text("/email_tokens/email_verification");
    let reply = gw
        .post("/users/verify-email", json!({"token": token}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    gw.post("/users/verify-email", json!({"token": token}))
        .await
        .assert_detail(400, "Invalid or expired reset token");
    assert_eq!(
        gw.signin("ada@example.com", "correct horse battery staple")
            .await
            .status,
        200
    );

    // A session the old service ended: its tokens are refused.
    let ended = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"user_id": 1, "device_id": "11111111-2222-4333-8444-555555555555",
                "exp": 4_102_444_800.0, "iat": 1, "scope": "access_token"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    gw.get_bearer("/users/me", &ended)
        .await
        .assert_detail(403, "Invalid token or expired token.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_is_idempotent() {
    let db = TestDb::create().await;
    let options = Options::native(&db.url);
    for _ in 0..2 {
        let out = run_command(&options, &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = db.connect().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        columns,
        [
            "id",
            "username",
            "email",
            "password",
            "is_verified",
            "verification_attempts",
            "verification_sent_at",
            "created_at",
            "updated_at",
            "deleted_at",
            "is_active",
            "is_deleted"
        ]
    );
    for table in ["device_sessions", "temporary_tokens", "authgate_user_roles"] {
        let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(found.is_some(), "{table}");
    }
    let alembic: Option<String> = sqlx::query_scalar("SELECT to_regclass('alembic_version')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(alembic, None, "authgate does not invent an alembic marker");

    // `serve --no-migrate` runs on the migrated database.
    let mut options = options;
    options.migrate = false;
    let gw = Gateway::start(options).await;
    let reply = gw
        .post(
            "/users/signup",
            json!({"email": "first@example.com", "username": "first", "password": "12345678"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
