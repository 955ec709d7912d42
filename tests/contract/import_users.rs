//! `authgate import-users` against the real Keycloak and PostgreSQL: users
//! keep their ids, verified flags and passwords; a batch Keycloak refuses
//! costs only its bad rows; a run cut short (a crash, Ctrl-C) continues
//! where it stopped and creates nobody twice; a second run skips everyone.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::spawn_command;
use crate::harness::{Gateway, Options, TempDir, TestDb, legacy_vectors, run_command, unique_name};
use crate::kc_admin::KcAdmin;

/// A legacy user as the test wrote it.
#[derive(Debug, Clone)]
struct Legacy {
    id: i64,
    username: String,
    email: String,
    password: String,
    hash: String,
}

/// A fresh database with the legacy schema and authgate's tables, as
/// `authgate migrate` makes them.
async fn migrated_db() -> (TestDb, Options) {
    let db = TestDb::create().await;
    let options = Options::keycloak(&db.url);
    let out = run_command(&options, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (db, options)
}

/// `count` legacy users named `<tag>_<n>`, from a random id on (so that
/// tests sharing the one Keycloak never meet), cycling through the old
/// service's hashes (shared salt and random salt).
fn legacy_users(tag: &str, count: usize) -> Vec<Legacy> {
    let vectors = legacy_vectors();
    let hashes = vectors["password_hashes"].as_array().unwrap();
    let base = 3_000_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i64;
    (0..count)
        .map(|n| {
            let entry = &hashes[n % hashes.len()];
            Legacy {
                id: base + n as i64,
                username: format!("{tag}_{n}"),
                email: format!("{tag}_{n}@example.com"),
                password: entry["password"].as_str().unwrap().to_string(),
                hash: entry["hash"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

async fn insert(db: &TestDb, users: &[Legacy]) {
    let mut sql = String::new();
    for user in users {
        sql.push_str(&format!(
            "INSERT INTO users (id, username, email, password, is_verified, verification_attempts, \
             created_at, updated_at, is_active, is_deleted) VALUES ({}, '{}', '{}', '{}', true, 0, \
             now(), now(), true, false);\n",
            user.id, user.username, user.email, user.hash
        ));
    }
    db.run_script(&sql).await;
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// The Keycloak users holding `legacy_id`.
async fn holders(admin: &KcAdmin, legacy_id: i64) -> Vec<Value> {
    let found = admin
        .get(&format!(
            "/users?briefRepresentation=false&q=legacy_id:{legacy_id}"
        ))
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["attributes"]["legacy_id"] == json!([legacy_id.to_string()]))
        .cloned()
        .collect()
}

/// Every user is in Keycloak exactly once, under their name, with their
/// legacy id, and recorded by authgate with that Keycloak id.
async fn assert_each_imported_once(db: &TestDb, admin: &KcAdmin, users: &[Legacy]) {
    let mut conn = db.connect().await;
    for user in users {
        let found = holders(admin, user.id).await;
        assert_eq!(found.len(), 1, "{}: {found:?}", user.username);
        assert_eq!(found[0]["username"], user.username);
        assert_eq!(found[0]["emailVerified"], true);
        let recorded: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT keycloak_id FROM authgate_identities WHERE legacy_id = $1")
                .bind(user.id as i32)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            recorded.map(|id| id.to_string()),
            found[0]["id"].as_str().map(str::to_string),
            "{}",
            user.username
        );
    }
}

/// These users sign in through authgate with their old passwords and keep
/// their old ids.
async fn assert_sign_in(options: &Options, users: &[&Legacy]) {
    let mut options = options.clone();
    options.migrate = false;
    let gw = Gateway::start(options).await;
    for user in users {
        let reply = gw.signin(&user.username, &user.password).await;
        assert_eq!(reply.status, 200, "{}: {}", user.username, reply.text);
        let token = reply.json["access_token"].as_str().unwrap();
        let me = gw.get_bearer("/users/me", token).await;
        assert_eq!(
            me.json,
            json!({"username": user.username, "email": user.email, "id": user.id})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_users_moves_legacy_users_with_their_passwords() {
    let db = TestDb::create().await;
    let options = Options::keycloak(&db.url);
    let out = run_command(&options, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Legacy users with the old service's hashes, under fresh names and ids.
    let vectors = legacy_vectors();
    let base_id = 2_000_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i64;
    let mut people = Vec::new();
    let mut sql = String::new();
    for (i, entry) in vectors["password_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let id = base_id + i as i64;
        let name = unique_name("legacy");
        let verified = i != 3;
        sql.push_str(&format!(
            "INSERT INTO users (id, username, email, password, is_verified, verification_attempts, \
             created_at, updated_at, is_active, is_deleted) VALUES ({id}, '{name}', '{name}@example.com', \
             '{}', {verified}, 0, now(), now(), true, false);\n",
            entry["hash"].as_str().unwrap()
        ));
        people.push((
            id,
            name,
            entry["password"].as_str().unwrap().to_string(),
            verified,
        ));
    }
    let broken = unique_name("broken");
    sql.push_str(&format!(
        "INSERT INTO users (id, username, email, password, is_verified, verification_attempts, \
         created_at, updated_at, is_active, is_deleted) VALUES ({}, '{broken}', '{broken}@example.com', \
         'not-a-hash', true, 0, now(), now(), true, false);\n",
        base_id + 100
    ));
    sql.push_str(&format!(
        "SELECT setval('users_id_seq', {});\n",
        base_id + 1000
    ));
    db.run_script(&sql).await;

    // Dry run: a report, nothing written.
    let out = run_command(&options, &["import-users", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("imported 5, skipped 0, failed 1 (dry run: nothing written)"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("failed: {broken}")), "{stdout}");
    assert!(!out.status.success(), "a failure is a non-zero exit");

    let out = run_command(&options, &["import-users"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stdout.contains("imported 5, skipped 0, failed 1"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("[6/6]"), "progress is shown: {stderr}");

    // Idempotent: the second run skips everyone it imported.
    let out = run_command(&options, &["import-users"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("imported 0, skipped 5, failed 1"),
        "{stdout}"
    );

    // Everyone signs in with the password they already had, under their old id.
    let mut options = options;
    options.migrate = false;
    let gw = Gateway::start(options).await;
    for (id, name, password, verified) in &people {
        let reply = gw.signin(name, password).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text);
        if *verified {
            let token = reply.json["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {}", reply.text));
            let me = gw.get_bearer("/users/me", token).await;
            assert_eq!(
                me.json,
                json!({"username": name, "email": format!("{name}@example.com"), "id": id})
            );
        } else {
            assert_eq!(reply.json["message"], "Please verify your email first");
        }
        gw.signin(name, "not the password")
            .await
            .assert_detail(401, "Invalid credentials");
    }
}

/// Rows Keycloak refuses cost only themselves: a batch refused as a whole
/// is split until its bad rows are alone, and the rest go in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_broken_rows_imports_the_rest() {
    let (db, options) = migrated_db().await;
    let admin = KcAdmin::connect().await;
    let tag = unique_name("batch");
    let mut users = legacy_users(&tag, 24);

    // Someone already in Keycloak (no legacy id), made there meanwhile.
    let outsider = unique_name("outsider");
    let made = admin
        .call(
            reqwest::Method::POST,
            "/authgate/users",
            Some(json!({"username": outsider, "email": format!("{outsider}@example.com"), "enabled": true})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text);

    // Batches of 8. Batch 1: a username that differs from another of the
    // batch only in case (Keycloak refuses the whole request: 409).
    users[2].username = users[1].username.to_uppercase();
    // Batch 2: the outsider's address (the whole request: 500) and the
    // outsider's username (Keycloak skips that user).
    users[10].email = format!("{outsider}@example.com");
    users[13].username = outsider.clone();
    // Batch 3: a hash that is not one.
    users[20].hash = "not-a-hash".into();
    insert(&db, &users).await;

    let report = TempDir::new("import-report");
    let report_file = report.path().join("report.json");
    let out = run_command(
        &options,
        &[
            "import-users",
            "--batch-size",
            "8",
            "--concurrency",
            "2",
            "--report",
            report_file.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("imported 20, skipped 0, failed 4"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("partial import, batches of 8, 2 in flight"),
        "{stderr}"
    );
    assert!(
        stderr.contains("batch 1: Keycloak refused it as a whole (409"),
        "{stderr}"
    );
    assert!(
        stderr.contains("batch 2: Keycloak refused it as a whole (500"),
        "{stderr}"
    );
    let reasons = [
        (
            2,
            format!(
                "username taken in Keycloak: by the user with legacy_id {}",
                users[1].id
            ),
        ),
        (
            10,
            "email taken in Keycloak: by a user without a legacy_id".to_string(),
        ),
        (
            13,
            "username taken in Keycloak: by a user without a legacy_id".to_string(),
        ),
        (
            20,
            "password hash not importable: stored password is not a pbkdf2-sha256 hash".to_string(),
        ),
    ];
    for (n, reason) in &reasons {
        let line = format!(
            "failed: {} (id {}): {reason}",
            users[*n].username, users[*n].id
        );
        assert!(stdout.contains(&line), "{line}\n{stdout}");
    }

    // The report file says the same, machine-readably.
    let written: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(written["ending"]["state"], "complete");
    assert_eq!(written["mode"], "partial_import");
    assert_eq!(
        written["totals"],
        json!({"imported": 20, "skipped": 0, "failed": 4})
    );
    let failures: Vec<(i64, String)> = written["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["legacy_id"].as_i64().unwrap(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(i64, String)> = reasons
        .iter()
        .map(|(n, reason)| (users[*n].id, reason.clone()))
        .collect();
    assert_eq!(failures, expected);

    // Everyone else is in Keycloak once; the failed ones are not; the
    // outsider is as it was.
    let failed: Vec<usize> = reasons.iter().map(|(n, _)| *n).collect();
    let imported: Vec<Legacy> = users
        .iter()
        .enumerate()
        .filter(|(n, _)| !failed.contains(n))
        .map(|(_, u)| u.clone())
        .collect();
    assert_each_imported_once(&db, &admin, &imported).await;
    for n in &failed {
        assert!(holders(&admin, users[*n].id).await.is_empty(), "{n}");
    }
    let outsider_now = admin
        .get(&format!(
            "/users?exact=true&briefRepresentation=false&username={outsider}"
        ))
        .await;
    assert_eq!(outsider_now.as_array().unwrap().len(), 1);
    assert_eq!(outsider_now[0]["email"], format!("{outsider}@example.com"));
    assert_eq!(outsider_now[0]["attributes"]["legacy_id"], Value::Null);

    // Users of the refused batches sign in with their old passwords and ids.
    assert_sign_in(&options, &[&users[0], &users[1], &users[9], &users[15]]).await;
}

/// How many users authgate has recorded.
async fn recorded(db: &TestDb) -> usize {
    let mut conn = db.connect().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM authgate_identities")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    count as usize
}

/// `imported X, skipped Y, failed Z` of a report on stdout.
fn totals(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    let numbers: Vec<u64> = line
        .split([' ', ','])
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2])
}

/// Reads `child`'s stderr until a line contains `wanted` (bounded).
fn wait_for_line(child: &mut std::process::Child, wanted: &str) -> Vec<String> {
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end, so the child never writes into a closed pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let found = line.contains(wanted);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("no line with {wanted:?} within 60 s: {seen:?}");
}

/// A crash after Keycloak took a batch and before it was recorded, then a
/// Ctrl-C part-way: each next run continues where the last one stopped,
/// and in the end every user is in Keycloak exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_and_creates_nobody_twice() {
    let (db, options) = migrated_db().await;
    let admin = KcAdmin::connect().await;
    let tag = unique_name("resume");
    let users = legacy_users(&tag, 150);
    insert(&db, &users).await;

    // 1. Batches of 5, two in flight; the process dies as soon as Keycloak
    // has taken batch 4 (users 15 to 19), before recording it.
    let out = run_command(
        &options,
        &[
            "import-users",
            "--batch-size",
            "5",
            "--concurrency",
            "2",
            "--crash-at-batch",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let mut conn = db.connect().await;
    let checkpoint: i32 = sqlx::query_scalar("SELECT last_legacy_id FROM authgate_import_progress")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        i64::from(checkpoint) >= users[9].id && i64::from(checkpoint) < users[15].id,
        "batches 1 and 2 are complete, 4 is not: {checkpoint}"
    );
    for user in &users[15..20] {
        assert_eq!(holders(&admin, user.id).await.len(), 1, "Keycloak took it");
        let known: Option<i32> =
            sqlx::query_scalar("SELECT legacy_id FROM authgate_identities WHERE legacy_id = $1")
                .bind(user.id as i32)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        assert_eq!(known, None, "not recorded before the crash");
    }

    // 2. One user per request; Ctrl-C once it has begun.
    let report = TempDir::new("import-report");
    let report_file = report.path().join("report.json");
    let mut child = spawn_command(
        &options,
        &[
            "import-users",
            "--batch-size",
            "1",
            "--concurrency",
            "1",
            "--report",
            report_file.to_str().unwrap(),
        ],
    );
    let seen = wait_for_line(&mut child, "continuing after legacy id");
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("continuing after legacy id {checkpoint}"))),
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a plain kill(2) of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("interrupted: every user up to legacy id"),
        "{stdout}"
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(written["ending"]["state"], "interrupted");
    assert_eq!(written["resumed_after"], checkpoint);
    let stopped_at = written["handled_up_to"].as_i64().unwrap();
    assert!(stopped_at > i64::from(checkpoint), "{written}");
    let part_way = recorded(&db).await;
    assert!(part_way < users.len(), "stopped part-way: {part_way}");

    // 3. The rest.
    let out = run_command(
        &options,
        &["import-users", "--batch-size", "7", "--concurrency", "3"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("this run continued after legacy id {stopped_at}")),
        "{stdout}"
    );
    // The whole import: the users Keycloak took before the crash were found
    // there (skipped: batch 4, and batch 3 or 5 when it was in flight too),
    // everyone else was created.
    let (imported, skipped, failed) = totals(&stdout);
    assert_eq!((imported + skipped, failed), (150, 0), "{stdout}");
    assert!((5..=10).contains(&skipped), "{stdout}");
    assert_each_imported_once(&db, &admin, &users).await;
    let named = admin.get(&format!("/users?username={tag}_&max=1000")).await;
    assert_eq!(named.as_array().unwrap().len(), users.len());

    // 4. A second run skips everyone and writes nothing.
    let out = run_command(&options, &["import-users"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("imported 0, skipped 150, failed 0"),
        "{stdout}"
    );
    assert_each_imported_once(&db, &admin, &users[..10]).await;

    // Users of each run sign in with their old passwords and ids.
    assert_sign_in(&options, &[&users[0], &users[16], &users[60], &users[149]]).await;
}

/// Without a client that may use partial import, users go one at a time
/// through the gateway's own client, with the same outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_import_client_users_go_one_at_a_time() {
    let (db, options) = migrated_db().await;
    let admin = KcAdmin::connect().await;
    let mut users = legacy_users(&unique_name("single"), 6);
    users[4].hash = "$pbkdf2-sha256$29000$bad".into();
    insert(&db, &users).await;

    // The gateway's client: a token, but no manage-realm (403).
    let out = run_command(
        &options
            .clone()
            .set("KEYCLOAK_IMPORT_CLIENT_ID", "authgate")
            .set("KEYCLOAK_IMPORT_CLIENT_SECRET", "authgate-dev-secret"),
        &["import-users"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("needs realm-management manage-realm); importing one user at a time"),
        "{stderr}"
    );
    assert!(
        stdout.contains("imported 5, skipped 0, failed 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "failed: {} (id {}): password hash not importable",
            users[4].username, users[4].id
        )),
        "{stdout}"
    );

    // A client Keycloak does not know: no token at all.
    let out = run_command(
        &options
            .clone()
            .set("KEYCLOAK_IMPORT_CLIENT_ID", "no-such-client"),
        &["import-users", "--restart"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("the import client no-such-client is not usable"),
        "{stderr}"
    );
    assert!(
        stdout.contains("imported 0, skipped 5, failed 1"),
        "{stdout}"
    );

    let imported: Vec<Legacy> = users
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != 4)
        .map(|(_, u)| u.clone())
        .collect();
    assert_each_imported_once(&db, &admin, &imported).await;
    assert_sign_in(&options, &[&users[0], &users[1]]).await;
}
