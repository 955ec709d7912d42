//! Bad configuration stops start-up with one clear line naming the setting.

use crate::harness::{Options, run_command};

fn start_error(options: &Options) -> String {
    let out = run_command(options, &["serve"]);
    assert!(!out.status.success(), "serve must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn bad_settings_are_named() {
    let base = Options::native("postgres://authgate:authgate@127.0.0.1:1/none");
    let cases = [
        (
            "SECRET_KEY",
            "too-short",
            "authgate: SECRET_KEY must be 32 bytes for the refresh-token JWE (got 9)",
        ),
        (
            "SMTP_TLS",
            "sometimes",
            "authgate: SMTP_TLS must be starttls, tls or none",
        ),
        (
            "AUTH_BACKEND",
            "ldap",
            "authgate: AUTH_BACKEND must be native or keycloak",
        ),
        (
            "JWT_EXP_TIME_MINUTES",
            "soon",
            "authgate: JWT_EXP_TIME_MINUTES must be a number",
        ),
        (
            "COOKIE_SAMESITE",
            "maybe",
            "authgate: COOKIE_SAMESITE must be lax, strict or none",
        ),
        (
            "DATABASE_URL",
            "mysql://x/y",
            "authgate: DATABASE_URL must be a postgres:// or sqlite:// URL",
        ),
        (
            "HASHING_QUEUE_MAX",
            "0",
            "authgate: HASHING_QUEUE_MAX must be at least 1 (got 0)",
        ),
        (
            "HASHING_THREADS",
            "100000",
            "authgate: HASHING_THREADS must be at most 1024 (got 100000)",
        ),
    ];
    for (name, value, expected) in cases {
        let stderr = start_error(&base.clone().set(name, value));
        assert!(stderr.starts_with(expected), "{name}: {stderr}");
    }
    let mut missing = base.clone();
    missing.env.remove("SECRET_KEY");
    assert!(start_error(&missing).starts_with("authgate: SECRET_KEY is not set"));
}

#[test]
fn busy_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let options = Options::native("postgres://authgate:authgate@127.0.0.1:1/none")
        .set("APP_HOST", "127.0.0.1")
        .set("APP_PORT", &port);
    let stderr = start_error(&options);
    assert!(
        stderr.contains("APP_HOST/APP_PORT") && stderr.contains(&port),
        "{stderr}"
    );
}

#[test]
fn unreachable_database_is_named_after_retrying() {
    let options = Options::native("postgres://authgate:authgate@127.0.0.1:1/none")
        .set("DATABASE_TIMEOUT_MS", "200");
    let out = run_command(&options.set("MIGRATE_ON_START", "true"), &["migrate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
}

/// `check-config` shows the settings with secrets masked and probes each
/// server they name: all reachable is exit 0, any unreachable one fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_masks_secrets_and_probes_servers() {
    let db = crate::harness::TestDb::create().await;
    let smtp_password = crate::harness::env("AUTHGATE_TEST_SMTP_PASSWORD");
    // The mailbox that requires STARTTLS and a login.
    let good = crate::smtp::tls_mail(
        Options::native(&db.url),
        "starttls",
        &crate::harness::env("AUTHGATE_TEST_SMTP_TLS_PORT"),
    )
    .set("REDIS_URL", &crate::harness::env("AUTHGATE_TEST_REDIS_URL"));
    let out = run_command(&good, &["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [crate::harness::SECRET, &smtp_password, "authgate:authgate@"] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    assert!(stdout.contains("SECRET_KEY"), "{stdout}");
    assert!(
        stdout.lines().any(
            |l| l.contains("HASHING_THREADS / QUEUE_MAX / QUEUE_WAIT_MS") && l.contains(" / 60000")
        ),
        "{stdout}"
    );
    for probe in ["database postgres://", "smtp localhost:", "redis redis://"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(probe))
            .unwrap_or_else(|| panic!("no {probe} probe:\n{stdout}"));
        assert!(line.contains(" ok "), "{line}");
    }

    let bad = good
        .set("SMTP_PORT", "1")
        .set("REDIS_URL", "redis://127.0.0.1:1")
        .set(
            "DATABASE_URL",
            "postgres://authgate:authgate@127.0.0.1:1/none",
        )
        .set("DATABASE_TIMEOUT_MS", "500");
    let out = run_command(&bad, &["check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains("FAILED")).count(),
        3,
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 of 3 probes failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `migrate` lists each migration as it goes, and says so when run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_shows_progress() {
    let dir = crate::harness::TempDir::new("authgate-migrate");
    let options = Options::embedded(dir.path());
    let out = run_command(&options, &["migrate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_steps(
        &stdout,
        "0001 schema: applied in",
        "0004 address mail counts: applied in",
    );
    let out = run_command(&options, &["migrate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_steps(
        &stdout,
        "0001 schema: already applied",
        "0004 address mail counts: already applied",
    );

    let db = crate::harness::TestDb::create().await;
    let out = run_command(&Options::native(&db.url), &["migrate"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_steps(
        &stdout,
        "0001 legacy schema: applied in",
        "0014 keycloak abandoned signups: applied in",
    );
}

/// The progress lines run `[1/n]` to `[n/n]`, the first and last as given.
fn assert_steps(stdout: &str, first: &str, last: &str) {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    let n = lines.len();
    assert!(n >= 2, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("[{}/{n}] ", i + 1)), "{stdout}");
    }
    assert!(
        lines[0].ends_with(first) || lines[0].contains(first),
        "{stdout}"
    );
    assert!(lines[n - 1].contains(last), "{stdout}");
}

#[test]
fn help_explains_every_command() {
    let out = run_command(&Options::native(""), &["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for command in [
        "serve",
        "migrate",
        "check-config",
        "grant-role",
        "import-users",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing:\n{stdout}"
        );
    }
}
