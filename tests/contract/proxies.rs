//! Private edge proxies in front of one gateway, run from the very
//! configurations the README gives operators
//! (`deploy/examples/forward-auth/`): nginx with `auth_request` and Caddy
//! with `forward_auth`, each asking the gateway's `/auth/forward` before it
//! passes a request on to a test upstream. Their binaries come from
//! `scripts/services.sh` (`AUTHGATE_TEST_NGINX_BIN`,
//! `AUTHGATE_TEST_CADDY_BIN`); each proxy is a process of its own on
//! 127.0.0.1, killed when dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{TempDir, env};

const NGINX_EXAMPLE: &str = include_str!("../../deploy/examples/forward-auth/nginx.conf");
const CADDY_EXAMPLE: &str = include_str!("../../deploy/examples/forward-auth/Caddyfile");

/// The example's placeholders.
const GATEWAY: &str = "authgate:5000";
const APP: &str = "app:8000";

/// Replaces `from` in `text`, which must hold it.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the example config has no {from:?}");
    text.replace(from, to)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running proxy, killed when dropped.
pub struct Proxy {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// nginx with `deploy/examples/forward-auth/nginx.conf` in its http
    /// block, asking the gateway on `gateway_port`, passing on to `app`.
    pub async fn nginx(gateway_port: u16, app: &str) -> Self {
        let dir = TempDir::new("authgate-nginx");
        let port = free_port();
        let site = replaced(NGINX_EXAMPLE, GATEWAY, &format!("127.0.0.1:{gateway_port}"));
        let site = replaced(&site, APP, app);
        let site = replaced(&site, "listen 8080;", &format!("listen 127.0.0.1:{port};"));
        let path = dir.path().display().to_string();
        // One process (no master), so that killing it stops nginx. As
        // root, nginx would serve as nobody, who may not read the folder.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}master_process off;\ndaemon off;\npid {path}/nginx.pid;\n\
             error_log {path}/error.log info;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {path}/body;\n\
             proxy_temp_path {path}/proxy;\n  fastcgi_temp_path {path}/fastcgi;\n\
             uwsgi_temp_path {path}/uwsgi;\n  scgi_temp_path {path}/scgi;\n{site}\n}}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).expect("write nginx.conf");
        let log = dir.path().join("error.log");
        let child = Command::new(env("AUTHGATE_TEST_NGINX_BIN"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Self::started("nginx", port, child, log, dir).await
    }

    /// Caddy with `deploy/examples/forward-auth/Caddyfile`, asking the
    /// gateway on `gateway_port`, passing on to `app`.
    pub async fn caddy(gateway_port: u16, app: &str) -> Self {
        let dir = TempDir::new("authgate-caddy");
        let port = free_port();
        let site = replaced(CADDY_EXAMPLE, GATEWAY, &format!("127.0.0.1:{gateway_port}"));
        let site = replaced(&site, APP, app);
        let site = replaced(&site, ":8080 {", &format!(":{port} {{\n\tbind 127.0.0.1"));
        let conf = format!("{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n\n{site}");
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, conf).expect("write Caddyfile");
        let log = dir.path().join("caddy.log");
        let out = std::fs::File::create(&log).expect("caddy log");
        let child = Command::new(env("AUTHGATE_TEST_CADDY_BIN"))
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            // Caddy keeps data and config under these; none of it matters.
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("caddy log"))
            .stderr(out)
            .spawn()
            .expect("start caddy");
        Self::started("caddy", port, child, log, dir).await
    }

    async fn started(
        name: &'static str,
        port: u16,
        mut child: Child,
        log: PathBuf,
        dir: TempDir,
    ) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{name} exited with {status}:\n{text}");
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            name,
            port,
            child,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}

/// A configuration's directives: comments dropped, words and `;`, `{`, `}`
/// apart, whatever the layout.
fn directives(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(at) if at == 0 || line[..at].ends_with(char::is_whitespace) => &line[..at],
            _ => line,
        };
        let spaced = line
            .replace(';', " ; ")
            .replace('{', " { ")
            .replace('}', " } ");
        out.extend(spaced.split_whitespace().map(str::to_string));
    }
    out
}

/// The first fenced block of `language` in the README.
fn readme_block(language: &str) -> String {
    let readme = include_str!("../../README.md");
    let fence = format!("```{language}\n");
    let start = readme.find(&fence).expect("the README's block") + fence.len();
    let end = readme[start..].find("```").expect("its end") + start;
    readme[start..end].to_string()
}

#[test]
fn the_readme_gives_the_configurations_the_tests_run() {
    assert_eq!(
        directives(&readme_block("nginx")),
        directives(NGINX_EXAMPLE)
    );
    assert_eq!(
        directives(&readme_block("caddyfile")),
        directives(CADDY_EXAMPLE)
    );
}
