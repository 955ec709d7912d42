//! The first run with nothing configured: no database, no SMTP server, no
//! key. The embedded store, the generated key and the mail outbox carry a
//! whole sign-up, and survive a restart. (The contract cases themselves run
//! on the embedded store through `suite!`.)

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Gateway, Options, TempDir, TestUser, token_of};

/// Only the data folder: everything else is authgate's default.
fn bare(data_dir: &Path) -> Options {
    Options {
        env: HashMap::from([
            ("DATA_DIR".to_string(), data_dir.display().to_string()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ]),
        migrate: true,
        ca_pem: None,
    }
}

/// Undoes quoted-printable (soft line breaks and `=XX` escapes).
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the `n`-th `.eml` of `kind` in the outbox; returns its link.
async fn outbox_link(outbox: &Path, kind: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains(kind))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        if let Some(file) = files.get(n - 1) {
            let text = quoted_printable(&std::fs::read_to_string(file).expect("read .eml"));
            let start = text.find("http://").expect("a link in the mail");
            let link: String = text[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
                .collect();
            return link;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} mail #{n} in {}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_needs_nothing_configured() {
    let dir = TempDir::new("authgate-first-run");
    let outbox = dir.path().join("outbox");
    let gw = Gateway::start(bare(dir.path())).await;
    let log = gw.log_text();
    assert!(log.contains("embedded SQLite store"), "{log}");
    assert!(log.contains("SECRET_KEY is not set"), "{log}");
    assert!(dir.path().join("authgate.db").is_file());

    let key_file = dir.path().join("secret.key");
    let key = std::fs::read_to_string(&key_file).expect("generated key");
    assert_eq!(key.trim().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
    }

    let user = TestUser::new("firstrun");
    let reply = gw.post("/users/signup", user.signup_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let link = outbox_link(&outbox, "verification", 1).await;
    assert!(link.contains("token="), "{link}");
    // The log shows the mail (recipient, subject, file), never the link's token.
    let log = gw.log_text();
    assert!(log.contains("Verify Your Email Address"), "{log}");
    assert!(log.contains(&user.email), "{log}");
    assert!(!log.contains(&token_of(&link)));
    let reply = gw
        .post("/users/verify-email", json!({ "token": token_of(&link) }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let reply = gw.signin(&user.username, &user.password).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let access = reply.json["access_token"].as_str().unwrap().to_string();
    let me = gw.get_bearer("/users/me", &access).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json["email"], user.email.as_str());

    // A restart keeps the users, and the key: issued tokens stay valid.
    drop(gw);
    let gw = Gateway::start(bare(dir.path())).await;
    let me = gw.get_bearer("/users/me", &access).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);

    // The reset mail goes to the outbox too, and its link works.
    let reply = gw
        .post("/users/forgot-password", json!({ "email": user.email }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let link = outbox_link(&outbox, "password_reset", 1).await;
    let reply = gw
        .post(
            "/users/reset-password",
            json!({ "token": token_of(&link), "new_password": "another secret" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        gw.signin(&user.username, "another secret").await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_mode_refuses_the_embedded_store() {
    let dir = TempDir::new("authgate-kc-sqlite");
    let mut options = bare(dir.path()).set("AUTH_BACKEND", "keycloak");
    options
        .env
        .insert("SECRET_KEY".into(), crate::harness::SECRET.to_string());
    let out = crate::harness::run_command(&options, &["serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AUTH_BACKEND=keycloak keeps its registry in PostgreSQL"),
        "{stderr}"
    );
}
