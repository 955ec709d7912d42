//! The in-process test kit: the whole application (native backend, token
//! service, mailer, audit trail, limits) on a SQLite store in memory with
//! a manual clock, called without a socket. Handler tests sit beside their
//! handlers and run in seconds; the contract suite (`tests/contract`) still
//! proves every backend over HTTP against real servers.
//!
//! Each [`Kit`] has a store of its own and an outbox folder of its own,
//! where the mailer writes what it would send (its no-SMTP mode). The store
//! is the embedded store of production, in a file on `/dev/shm` (memory)
//! where there is one: SQLite's shared-cache in-memory databases answer a
//! second writer "locked" at once instead of waiting, which the work done
//! after an answer (storing a mailed token) met beside the next request.
//!
//! Imports: anything of the crate (tests only).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::Value;

use crate::api::App;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::http::Request;

/// 2023-11-14T22:13:20Z: where every kit's clock starts.
pub const START: i64 = 1_700_000_000;

/// The application on a store and a clock of its own.
pub struct Kit {
    pub app: App,
    pub clock: Arc<ManualClock>,
    outbox: PathBuf,
    /// The store's file (and SQLite's -wal and -shm beside it).
    store: PathBuf,
}

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub json: Value,
}

impl Answer {
    /// The `detail` of an error body.
    pub fn detail(&self) -> &str {
        self.json["detail"].as_str().unwrap_or_default()
    }

    /// A string field of the body.
    pub fn text(&self, field: &str) -> String {
        self.json[field].as_str().unwrap_or_default().to_string()
    }

    /// The `Set-Cookie` lines.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// A user the kit made: signed up, and after `verified_user` verified and
/// signed in.
#[derive(Debug, Clone)]
pub struct KitUser {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub password: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Kit {
    /// Native mode with the defaults a test wants (fast hashing, roomy limits).
    pub async fn native() -> Self {
        Self::native_with(&[]).await
    }

    /// Native mode with these settings over the kit's defaults.
    pub async fn native_with(settings: &[(&str, &str)]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let outbox = std::env::temp_dir().join(format!("authgate-kit-{id}"));
        let mut map: std::collections::HashMap<String, String> = [
            ("SECRET_KEY", "kit-secret-key-of-exactly-32-byt"),
            ("PASSWORD_PBKDF2_ROUNDS", "1000"),
            ("RATE_LIMIT_SIGNIN_PER_IP", "1000/minute"),
            ("RATE_LIMIT_SIGNIN_PER_ACCOUNT", "1000/minute"),
            ("RATE_LIMIT_SIGNUP_PER_IP", "1000/minute"),
            ("RATE_LIMIT_EMAIL_PER_IP", "1000/minute"),
            ("APP_URL", "http://app.test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let memory = std::path::Path::new("/dev/shm");
        let folder = if memory.is_dir() {
            memory.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let store = folder.join(format!("authgate-kit-{id}.db"));
        map.insert(
            "DATABASE_URL".into(),
            format!("sqlite://{}", store.display()),
        );
        map.insert("MAIL_OUTBOX_DIR".into(), outbox.display().to_string());
        for (name, value) in settings {
            map.insert((*name).to_string(), (*value).to_string());
        }
        let config = Config::from_map(&map).unwrap();
        crate::store::migrate(&config.database, &mut |_| {})
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::at(START));
        let app = crate::build_app(config, Arc::clone(&clock) as _).unwrap();
        Self {
            app,
            clock,
            outbox,
            store,
        }
    }

    /// Calls the application with a JSON body (or none) and these headers.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (path_and_query, None),
        };
        let mut req = Request::new(method, path);
        req.query = query;
        req.client_ip = Some([127, 0, 0, 1].into());
        if let Some(body) = body {
            req.body = Bytes::from(body.to_string());
            req.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (name, value) in headers {
            req.headers.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let response = self.app.handle(req).await;
        Answer {
            status: response.status,
            json: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            headers: response.headers,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// With `Authorization: Bearer <token>`.
    pub async fn bearer(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let auth = format!("Bearer {token}");
        self.call(method, path, body, &[("authorization", &auth)])
            .await
    }

    pub async fn signin(&self, login: &str, password: &str) -> Answer {
        self.post(
            "/users/signin",
            serde_json::json!({ "username": login, "password": password }),
        )
        .await
    }

    /// Signs a new user up (not verified yet).
    pub async fn signed_up(&self, name: &str) -> KitUser {
        let user = KitUser {
            id: 0,
            username: name.to_string(),
            email: format!("{name}@example.com"),
            password: "correct horse battery".to_string(),
            access_token: String::new(),
            refresh_token: String::new(),
        };
        let answer = self
            .post(
                "/users/signup",
                serde_json::json!({
                    "email": user.email,
                    "username": user.username,
                    "password": user.password,
                }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "signup: {:?}", answer.json);
        user
    }

    /// Signs a user up, verifies the address with the mailed link, signs in.
    pub async fn verified_user(&self, name: &str) -> KitUser {
        let user = self.signed_up(name).await;
        let token = self.mailed_token(&user.email, "verification", 1).await;
        let answer = self
            .post("/users/verify-email", serde_json::json!({ "token": token }))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "verify: {:?}", answer.json);
        let answer = self.signin(&user.username, &user.password).await;
        assert_eq!(answer.status, StatusCode::OK, "signin: {:?}", answer.json);
        let access_token = answer.text("access_token");
        let me = self
            .bearer(Method::GET, "/users/me/", &access_token, None)
            .await;
        KitUser {
            id: me.json["id"].as_i64().unwrap_or_default(),
            access_token,
            refresh_token: answer.text("refresh_token"),
            ..user
        }
    }

    /// The mails of `kind` (`verification`, `password_reset`, ...) written
    /// to `to`, oldest first, as text (quoted-printable undone): once the
    /// work after the answers is done and at least `at_least` are there
    /// (the mailer sends in the background; waits 10 s at most).
    pub async fn mails(&self, to: &str, kind: &str, at_least: usize) -> Vec<String> {
        self.app.settle().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let found = self.outbox_mails(to, kind);
            if found.len() >= at_least || std::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn outbox_mails(&self, to: &str, kind: &str) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains(kind))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|file| std::fs::read_to_string(file).ok())
            .map(|text| quoted_printable(&text))
            .filter(|text| {
                text.lines()
                    .any(|line| line.starts_with("To:") && line.contains(to))
            })
            .collect()
    }

    /// The token of the link in the `n`-th (from 1) such mail.
    pub async fn mailed_token(&self, to: &str, kind: &str, n: usize) -> String {
        let mails = self.mails(to, kind, n).await;
        let mail = mails
            .get(n.saturating_sub(1))
            .unwrap_or_else(|| panic!("no {kind} mail #{n} to {to}"));
        let start = mail.find("token=").expect("a link with a token") + "token=".len();
        mail[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect()
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.outbox);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.store.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
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
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
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
