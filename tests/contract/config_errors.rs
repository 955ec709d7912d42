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
            "authgate: DATABASE_URL must be a postgres:// URL",
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
