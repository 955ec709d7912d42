//! Routes reloaded while the gateway serves: SIGHUP, and a watched file
//! swapped as a Kubernetes ConfigMap volume swaps it (a `..data` symlink
//! renamed over). Routes are added, changed and removed under a bounded
//! loop of requests on loopback, none of which may fail; a request in
//! flight finishes on the route it started on; an invalid file changes
//! nothing but the metric; health checks start and stop with their routes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Env;
use crate::edge::{metric, metrics};
use crate::harness::{Gateway, TempDir, TestUser};
use crate::upstream::Upstream;

/// How many requests each client of the load may send at most.
const LOAD_BOUND: usize = 20_000;
const LOAD_CLIENTS: usize = 4;

async fn reloads(gw: &Gateway, outcome: &str) -> f64 {
    let line = format!("authgate_routes_reloads_total{{outcome=\"{outcome}\"}}");
    metric(&metrics(gw).await, &line)
}

async fn routes_loaded(gw: &Gateway) -> f64 {
    metric(&metrics(gw).await, "authgate_routes_loaded ")
}

/// Waits until `authgate_routes_reloads_total{outcome}` exceeds `before`.
async fn reloaded(gw: &Gateway, outcome: &str, before: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while reloads(gw, outcome).await <= before {
        assert!(
            Instant::now() < deadline,
            "no {outcome} reload:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `text` to `file` and sends SIGHUP; returns once the gateway
/// counted a reload with `outcome`.
async fn reload(gw: &Gateway, file: &Path, text: &str, outcome: &str) {
    let before = reloads(gw, outcome).await;
    std::fs::write(file, text).expect("write the routes file");
    let pid = i32::try_from(gw.pid()).expect("pid");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP");
    reloaded(gw, outcome, before).await;
}

fn routes(pub_upstream: SocketAddr, api_upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
        [[routes]]
        prefix = "/pub"
        upstreams = ["{pub_upstream}"]
        policy = "public"

        [[routes]]
        prefix = "/api"
        upstreams = ["{api_upstream}"]
        policy = "authenticated"
        {extra}
        "#
    )
}

/// A bounded loop of requests whose answers no version of the routes file
/// changes: `/pub/echo` (public) and `/api/echo` (authenticated, with a
/// token) answer 200 from an upstream. Every other answer is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(base: &str, token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..LOAD_CLIENTS)
            .map(|client| {
                let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
                let (base, token) = (base.to_string(), token.to_string());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    let mut failures = Vec::new();
                    for i in 0..LOAD_BOUND {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let path = if (client + i) % 2 == 0 {
                            "/pub/echo"
                        } else {
                            "/api/echo"
                        };
                        let answer = http
                            .get(format!("{base}{path}"))
                            .bearer_auth(&token)
                            .send()
                            .await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        match answer {
                            Ok(reply)
                                if reply.status() == 200
                                    && reply.headers().contains_key("x-upstream") => {}
                            Ok(reply) => {
                                let status = reply.status();
                                let text = reply.text().await.unwrap_or_default();
                                failures.push(format!("{path}: {status} {text}"));
                            }
                            Err(err) => failures.push(format!("{path}: {err}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, sent, tasks }
    }

    /// Stops the loop; every failure, and how many requests were sent.
    async fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(task.await.expect("load task"));
        }
        (failures, self.sent.load(Ordering::Relaxed))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_change_under_load_and_no_request_fails() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("authgate-reload");
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, routes(a.addr, a.addr, "")).unwrap();
    let file_text = file.display().to_string();
    // SIGHUP only: each reload here is the one the test asks for.
    let env = Env::native_with(|o| {
        o.set("ROUTES_FILE", &file_text)
            .set("ROUTES_WATCH_SECONDS", "0")
    })
    .await;
    let gw = &env.gw;
    let user = TestUser::new("reload");
    let signup = gw.post("/users/signup", user.signup_body()).await;
    let token = signup.json["access_token"].as_str().unwrap().to_string();
    assert_eq!(routes_loaded(gw).await, 2.0);
    gw.get("/new/echo").await.assert_detail(404, "Not Found");

    let load = Load::start(&gw.base, &token);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Added: /new, public, on b.
    let new_public = r#"
        [[routes]]
        prefix = "/new"
        upstreams = ["NEW"]
        policy = "public"
    "#;
    let with_new = |upstream: SocketAddr, policy: &str| {
        new_public
            .replace("NEW", &upstream.to_string())
            .replace("\"public\"", &format!("\"{policy}\""))
    };
    reload(
        gw,
        &file,
        &routes(a.addr, a.addr, &with_new(b.addr, "public")),
        "applied",
    )
    .await;
    let reply = gw.get("/new/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-upstream").as_deref(), Some("b"));
    assert_eq!(routes_loaded(gw).await, 3.0);

    // Changed: /new needs a role, /pub moves to b. A request that started
    // on a before the reload finishes on a.
    let slow = {
        let http = gw.http.clone();
        let url = gw.url("/pub/slow?ms=1500");
        tokio::spawn(async move { http.get(url).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    reload(
        gw,
        &file,
        &routes(b.addr, a.addr, &with_new(b.addr, "role:admin")),
        "applied",
    )
    .await;
    gw.get_bearer("/new/echo", &token)
        .await
        .assert_detail(403, "Not enough permissions");
    let reply = gw.get("/pub/echo").await;
    assert_eq!(
        reply.header("x-upstream").as_deref(),
        Some("b"),
        "{}",
        reply.text
    );
    let slow = slow.await.unwrap().expect("the slow request");
    assert_eq!(slow.status(), 200);
    assert_eq!(
        slow.headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("a"),
        "a request in flight finishes on the route it started on"
    );

    // Removed: /new answers as an unknown path again.
    reload(gw, &file, &routes(b.addr, a.addr, ""), "applied").await;
    gw.get("/new/echo").await.assert_detail(404, "Not Found");
    assert_eq!(routes_loaded(gw).await, 2.0);

    // The same file again: nothing to change.
    reload(gw, &file, &routes(b.addr, a.addr, ""), "unchanged").await;

    // An invalid file (and one naming a prefix twice): the routes in force
    // stay, the metric and the log say why.
    let applied = reloads(gw, "applied").await;
    reload(
        gw,
        &file,
        "[[routes]]\nprefix = \"/pub\"\nupstreams = [",
        "invalid",
    )
    .await;
    let twice = format!(
        "{}{}",
        routes(a.addr, a.addr, ""),
        routes(a.addr, a.addr, "")
    );
    reload(gw, &file, &twice, "invalid").await;
    assert_eq!(reloads(gw, "invalid").await, 2.0);
    assert_eq!(reloads(gw, "applied").await, applied);
    assert_eq!(routes_loaded(gw).await, 2.0);
    let reply = gw.get("/pub/echo").await;
    assert_eq!(reply.header("x-upstream").as_deref(), Some("b"));
    gw.get("/new/echo").await.assert_detail(404, "Not Found");
    let log = gw.log_text();
    assert!(log.contains("routes file refused"), "{log}");
    assert!(log.contains("prefix given twice"), "{log}");

    let (failures, sent) = load.finish().await;
    println!(
        "{sent} requests during 6 reloads, {} failed",
        failures.len()
    );
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

/// A folder laid out as Kubernetes mounts a ConfigMap: `routes.toml` links
/// to `..data/routes.toml`, and `..data` to the current version's folder,
/// swapped by renaming a new link over it.
struct ConfigMapDir {
    dir: TempDir,
    version: usize,
}

impl ConfigMapDir {
    fn new(text: &str) -> Self {
        let mut map = Self {
            dir: TempDir::new("authgate-configmap"),
            version: 0,
        };
        map.publish(text);
        std::os::unix::fs::symlink("..data/routes.toml", map.file()).unwrap();
        map
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("routes.toml")
    }

    /// Writes a new version and swaps `..data` to it at once.
    fn publish(&mut self, text: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.path().join(&version)).unwrap();
        std::fs::write(self.dir.path().join(&version).join("routes.toml"), text).unwrap();
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.path().join("..data")).unwrap();
    }
}

/// Counts the connections a listener accepts: each TCP health check is one.
async fn probe_counter() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_configmap_swap_applies_and_health_checks_follow_the_routes() {
    let a = Upstream::start("a").await;
    let (probed, probes) = probe_counter().await;
    let base = routes(a.addr, a.addr, "");
    let mut map = ConfigMapDir::new(&base);
    let file = map.file().display().to_string();
    let env =
        Env::native_with(|o| o.set("ROUTES_FILE", &file).set("ROUTES_WATCH_SECONDS", "1")).await;
    let gw = &env.gw;

    // A route to a new upstream: probed once before it takes requests,
    // then every 5 s.
    let applied = reloads(gw, "applied").await;
    let with_probed = routes(
        a.addr,
        a.addr,
        &format!("[[routes]]\nprefix = \"/probed\"\nupstreams = [\"{probed}\"]\n"),
    );
    map.publish(&with_probed);
    reloaded(gw, "applied", applied).await;
    assert!(
        probes.load(Ordering::SeqCst) >= 1,
        "the new upstream was probed first"
    );
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert!(probes.load(Ordering::SeqCst) >= 2, "and then periodically");

    // Removed: its checks stop (one may have been under way).
    map.publish(&base);
    reloaded(gw, "applied", applied + 1.0).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after_removal = probes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    assert_eq!(
        probes.load(Ordering::SeqCst),
        after_removal,
        "a removed route's upstream is no longer probed"
    );

    // An invalid version is refused once, not at every look.
    map.publish("[[routes]]\nprefix = \"nope\"\nupstreams = [\"127.0.0.1:1\"]\n");
    reloaded(gw, "invalid", 0.0).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(reloads(gw, "invalid").await, 1.0);
    let reply = gw.get("/pub/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(routes_loaded(gw).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_routes_file_changes_nothing() {
    let env = Env::native().await;
    let gw = &env.gw;
    let pid = i32::try_from(gw.pid()).expect("pid");
    for _ in 0..2 {
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        gw.get("/health").await.status,
        200,
        "SIGHUP ended the process"
    );
    assert!(
        gw.log_text().contains("no ROUTES_FILE to reload"),
        "{}",
        gw.log_text()
    );
    assert_eq!(
        reloads(gw, "applied").await + reloads(gw, "invalid").await,
        0.0
    );
}
