//! The test kit: real servers only. Each test gets a fresh PostgreSQL
//! database and its own `authgate serve` process on a free port; mail is read
//! back from the real SMTP server's mailbox (maildev's REST API).
//!
//! `scripts/test.sh` starts PostgreSQL and the mail servers and exports
//! `AUTHGATE_TEST_*`; without them the tests fail with a message saying so.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const SECRET: &str = "9e25a2588fcee7d21ea15fb1a63d5135";
/// Low rounds keep the suite fast; the default (600 000) is tested in unit tests.
pub const TEST_ROUNDS: &str = "30000";

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts PostgreSQL and the mail servers")
    })
}

pub fn legacy_vectors() -> Value {
    serde_json::from_str(include_str!("../fixtures/legacy.json")).expect("legacy.json")
}

/// A unique address at a domain the validator accepts.
pub fn unique_email(prefix: &str) -> String {
    format!(
        "{prefix}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A database of its own, dropped (best effort) at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let admin_url = env("AUTHGATE_TEST_DATABASE_URL");
        let name = format!("ag_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("AUTHGATE_TEST_DATABASE_URL has no database name"),
        };
        Self {
            name,
            url,
            admin_url,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Starts the legacy id sequence at a random point, so ids of users made by
    /// different test databases in the one shared Keycloak do not meet.
    pub async fn scatter_ids(&self) {
        let start = 1_000_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i64;
        self.run_script(&format!("ALTER SEQUENCE users_id_seq RESTART WITH {start}"))
            .await;
    }

    /// Runs a SQL script (several statements).
    pub async fn run_script(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect("run SQL script");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping needs no runtime: psql does it if present; otherwise the
        // database stays (CI machines are thrown away).
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .arg("-qc")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A folder of its own under the system's temporary folder, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&path).expect("create temporary folder");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings for one gateway process.
#[derive(Clone)]
pub struct Options {
    pub env: HashMap<String, String>,
    pub migrate: bool,
    /// With `TLS_CERT_FILE` set: the PEM of the CA the test client trusts
    /// (the gateway is then reached over `https://127.0.0.1`).
    pub ca_pem: Option<String>,
}

impl Options {
    pub fn native(db_url: &str) -> Self {
        let mut env = HashMap::new();
        for (k, v) in [
            ("SECRET_KEY", SECRET),
            ("AUTH_BACKEND", "native"),
            ("PASSWORD_PBKDF2_ROUNDS", TEST_ROUNDS),
            ("SMTP_TLS", "none"),
            ("SMTP_SENDER", "Authgate Tests"),
            ("SMTP_FROM", "no-reply@example.com"),
            ("APP_NAME", "Authgate Test"),
            ("APP_VERSION", "9.9.9"),
            ("APP_WORKERS", "2"),
            ("RUST_LOG", "info,pingora=warn,sqlx=warn"),
            // Generous limits so walks through the API are not throttled;
            // the rate-limit tests set their own.
            ("RATE_LIMIT_SIGNIN_PER_IP", "1000/minute"),
            ("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "1000/minute"),
            ("RATE_LIMIT_SIGNUP_PER_IP", "1000/minute"),
            ("RATE_LIMIT_EMAIL_PER_IP", "1000/minute"),
            // No password job is given up for waiting: the suite runs on
            // busy machines, and answers must not depend on their speed
            // (backpressure.rs sets its own bounds).
            ("HASHING_QUEUE_WAIT_MS", "60000"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        env.insert("DATABASE_URL".into(), db_url.to_string());
        env.insert("SMTP_HOST".into(), "127.0.0.1".into());
        env.insert("SMTP_PORT".into(), env_var("AUTHGATE_TEST_SMTP_PORT"));
        Self {
            env,
            migrate: true,
            ca_pem: None,
        }
    }

    /// The native backend on the embedded store: no database settings at all,
    /// only the data folder (the SQLite file is made there).
    pub fn embedded(data_dir: &std::path::Path) -> Self {
        let mut options = Self::native("");
        options.env.remove("DATABASE_URL");
        options.set("DATA_DIR", &data_dir.display().to_string())
    }

    /// The keycloak backend on the test Keycloak, with its registry in `db_url`.
    pub fn keycloak(db_url: &str) -> Self {
        Self::native(db_url)
            .set("AUTH_BACKEND", "keycloak")
            .set("KEYCLOAK_URL", &env("AUTHGATE_TEST_KEYCLOAK_URL"))
            .set("KEYCLOAK_TIMEOUT_MS", "5000")
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }
}

fn env_var(name: &str) -> String {
    env(name)
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authgate"))
}

fn command(options: &Options, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&options.env)
        .current_dir(std::env::temp_dir());
    command
}

/// Runs an `authgate` command to completion with the given environment.
pub fn run_command(options: &Options, args: &[&str]) -> std::process::Output {
    command(options, args).output().expect("run authgate")
}

/// Starts an `authgate` command with its stdout and stderr piped.
pub fn spawn_command(options: &Options, args: &[&str]) -> Child {
    command(options, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start authgate")
}

/// A running `authgate serve`, killed when dropped.
pub struct Gateway {
    pub base: String,
    pub port: u16,
    pub options: Options,
    pub http: reqwest::Client,
    child: Child,
    log: PathBuf,
}

impl Gateway {
    pub async fn start(mut options: Options) -> Self {
        let port = free_port();
        options.env.insert("APP_PORT".into(), port.to_string());
        options.env.insert("APP_HOST".into(), "127.0.0.1".into());
        let scheme = if options.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        options
            .env
            .entry("APP_URL".into())
            .or_insert_with(|| format!("{scheme}://localhost:{port}"));
        let log = std::env::temp_dir().join(format!("authgate-test-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut args = vec!["serve"];
        if !options.migrate {
            args.push("--no-migrate");
        }
        let child = Command::new(binary())
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&options.env)
            .current_dir(std::env::temp_dir())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawn authgate");
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if let Some(ca) = &options.ca_pem {
            let ca = reqwest::Certificate::from_pem(ca.as_bytes()).expect("the test CA");
            http = http.tls_certs_only([ca]);
        }
        let http = http.build().expect("http client");
        let mut gateway = Self {
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            options,
            http,
            child,
            log,
        };
        gateway.wait_healthy().await;
        gateway
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("authgate exited with {status}:\n{}", self.log_text());
            }
            if let Ok(resp) = self.http.get(format!("{}/health", self.base)).send().await
                && resp.status() == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("authgate did not become healthy:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(self.http.get(self.url(path)).send().await.expect("GET")).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        Reply::from(
            self.http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        Reply::from(
            self.http
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn post_bearer(&self, path: &str, token: &str, body: Value) -> Reply {
        Reply::from(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        Reply::from(request.send().await.expect("request")).await
    }

    /// Signs up a user, verifies the address through the mailed link, and
    /// returns the sign-in answer's access token.
    pub async fn verified_user(&self, mailbox: &Mailbox, prefix: &str) -> TestUser {
        let user = TestUser::new(prefix);
        let reply = self.post("/users/signup", user.signup_body()).await;
        assert_eq!(reply.status, 200, "signup: {}", reply.text);
        let link = mailbox
            .wait_for_link(&user.email, "Verify Your Email Address")
            .await;
        let token = token_of(&link);
        let reply = self
            .post("/users/verify-email", serde_json::json!({ "token": token }))
            .await;
        assert_eq!(reply.status, 200, "verify: {}", reply.text);
        let reply = self.signin(&user.username, &user.password).await;
        assert_eq!(reply.status, 200, "signin: {}", reply.text);
        let access = reply.json["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        let me = self.get_bearer("/users/me", &access).await;
        TestUser {
            id: me.json["id"].as_i64().expect("id"),
            access_token: access,
            refresh_token: reply.json["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ..user
        }
    }

    pub async fn signin(&self, login: &str, password: &str) -> Reply {
        self.post(
            "/users/signin",
            serde_json::json!({ "username": login, "password": password }),
        )
        .await
    }

    /// Grants a role through the command line (what an operator does).
    pub fn grant_role(&self, login: &str, role: &str) {
        let out = run_command(&self.options, &["grant-role", login, role]);
        assert!(
            out.status.success(),
            "grant-role failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!(
                "--- authgate log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestUser {
    pub fn new(prefix: &str) -> Self {
        Self {
            id: 0,
            email: unique_email(prefix),
            username: unique_name(prefix),
            password: "correct horse battery staple".into(),
            access_token: String::new(),
            refresh_token: String::new(),
        }
    }

    pub fn signup_body(&self) -> Value {
        serde_json::json!({
            "email": self.email,
            "username": self.username,
            "password": self.password,
        })
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts `{"detail": detail}` with this status.
    pub fn assert_detail(&self, status: u16, detail: &str) {
        assert_eq!(
            (self.status, &self.json),
            (status, &serde_json::json!({ "detail": detail })),
            "body: {}",
            self.text
        );
    }
}

/// The claims of a JWT (not verified: the test reads what it was given).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

/// The `device_id` of an access token, checked to be a UUID string.
pub fn uuid_device_id(token: &str) -> String {
    let claims = claims_of(token);
    let device_id = claims["device_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no device_id in {claims}"));
    assert!(
        uuid::Uuid::parse_str(device_id).is_ok(),
        "device_id {device_id:?} is not a UUID"
    );
    device_id.to_string()
}

/// The `token` query parameter of a link.
pub fn token_of(link: &str) -> String {
    let url = url::Url::parse(link).expect("link is a URL");
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("link has a token")
}

/// A mailbox of a real SMTP server (maildev's REST shape).
#[derive(Clone)]
pub struct Mailbox {
    pub base: String,
    http: reqwest::Client,
}

impl Mailbox {
    pub fn plain() -> Self {
        Self::at(&env("AUTHGATE_TEST_MAILBOX_URL"))
    }

    pub fn tls() -> Self {
        Self::at(&env("AUTHGATE_TEST_MAILBOX_TLS_URL"))
    }

    fn at(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// All mails to `address` with `subject`, oldest first.
    pub async fn mails(&self, address: &str, subject: &str) -> Vec<Value> {
        let all: Value = self
            .http
            .get(format!("{}/email", self.base))
            .send()
            .await
            .expect("mailbox answers")
            .json()
            .await
            .expect("mailbox JSON");
        all.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|mail| {
                mail["subject"] == subject
                    && mail["to"].as_array().is_some_and(|to| {
                        to.iter().any(|t| {
                            t["address"]
                                .as_str()
                                .is_some_and(|a| a.eq_ignore_ascii_case(address))
                        })
                    })
            })
            .collect()
    }

    /// Waits for the `n`-th (1-based) such mail and returns it.
    pub async fn wait_for_nth(&self, address: &str, subject: &str, n: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mails = self.mails(address, subject).await;
            if mails.len() >= n {
                return mails[n - 1].clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no mail #{n} {subject:?} to {address} (found {})",
                    mails.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the latest such mail and returns the link in it.
    pub async fn wait_for_link(&self, address: &str, subject: &str) -> String {
        let mail = self.wait_for_nth(address, subject, 1).await;
        let mails = self.mails(address, subject).await;
        link_in(mails.last().unwrap_or(&mail))
    }

    /// How many such mails arrived (after giving stragglers a moment).
    pub async fn count_settled(&self, address: &str, subject: &str) -> usize {
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.mails(address, subject).await.len()
    }
}

/// The first `href` of a mail's HTML, unescaped.
pub fn link_in(mail: &Value) -> String {
    let html = mail["html"].as_str().expect("mail has HTML");
    let start = html.find("href=\"").expect("mail has a link") + 6;
    let end = html[start..].find('"').expect("link ends") + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
}

/// A TCP relay to `target` on a fixed local port, that can be cut and
/// restored, and whose answers can be held back ([`Relay::hold_answers`]):
/// the requests still reach the target, which acts on them, but the caller
/// waits for answers that come late or never.
pub struct Relay {
    pub port: u16,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    hold: Arc<Mutex<Hold>>,
}

/// Which answers the relay holds back, and for how long.
#[derive(Clone, Default)]
struct Hold {
    /// Only answers to requests whose head contains this (any when empty).
    to: String,
    /// `None`: pass at once; `Some(Duration::MAX)`: never.
    delay: Option<Duration>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Self {
            port,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
            hold: Arc::new(Mutex::new(Hold::default())),
        };
        relay.serve(listener);
        relay
    }

    /// From now on, answers to requests whose head contains `to` (every
    /// answer when empty) are passed on only after `delay`
    /// (`Duration::MAX`: dropped); `None` passes them at once again.
    pub fn hold_answers(&self, to: &str, delay: Option<Duration>) {
        *self.hold.lock().unwrap() = Hold {
            to: to.to_string(),
            delay,
        };
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let tasks = Arc::clone(&self.tasks);
        let hold = Arc::clone(&self.hold);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let hold = Arc::clone(&hold);
                let conn = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay_held(client, server, hold).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the port and every open connection.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

/// Relays one connection both ways; answers after a request the hold names
/// wait (or are dropped) as it says at the time the request passed.
async fn relay_held(client: TcpStream, server: TcpStream, hold: Arc<Mutex<Hold>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // The hold of the last request sent on this connection.
    let current: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&current);
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let hold = hold.lock().unwrap().clone();
            let head = String::from_utf8_lossy(&buf[..n]);
            if hold.to.is_empty() || head.contains(&hold.to) {
                *seen.lock().unwrap() = hold.delay;
            } else if head.starts_with(|c: char| c.is_ascii_uppercase()) {
                *seen.lock().unwrap() = None;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = *current.lock().unwrap();
            match delay {
                Some(d) if d == Duration::MAX => continue,
                Some(d) => tokio::time::sleep(d).await,
                None => {}
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
