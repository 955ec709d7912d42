//! Routes reloaded while the gateway serves.
//!
//! On SIGHUP ([`crate::reload`]), and every `ROUTES_WATCH_SECONDS`
//! when the file's bytes changed (a Kubernetes ConfigMap volume swaps a
//! symlink: reading the file's content follows it, where a watch on the
//! file itself would not), the routes file is read and checked as at start
//! ([`super::parse_bytes`]). A valid file becomes the table in force at
//! once: new requests take it, requests in flight finish on the old one.
//! Upstream lists the old table had keep their balancers; new ones are
//! probed once before the table takes requests and then checked
//! periodically; checks of lists no route names any more end with their
//! last request. An invalid file changes nothing: the old table stays, the
//! log says why and `authgate_routes_reloads_total{outcome="invalid"}`
//! counts it.
//!
//! [`RoutesService`] is the pingora background service that does this; it
//! also probes the first table's upstreams before the listener opens.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::BackgroundService;

use super::RouteConfig;
use super::table::{LiveRoutes, RouteTable};
use crate::metrics::Metrics;
use crate::reload::Reloads;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Watch,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new table is in force; the prefixes added, removed and changed.
    Applied {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// The file says what the table in force says.
    Unchanged,
    /// The file cannot be read or is not valid: the old table stays.
    Invalid(String),
}

impl ReloadOutcome {
    /// The `outcome` label of `authgate_routes_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Unchanged => "unchanged",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// What a new file changes, by prefix.
pub fn diff(old: &[&RouteConfig], new: &[RouteConfig]) -> ReloadOutcome {
    let added = new
        .iter()
        .filter(|n| !old.iter().any(|o| o.prefix == n.prefix))
        .map(|n| n.prefix.clone())
        .collect::<Vec<_>>();
    let removed = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.prefix == o.prefix))
        .map(|o| o.prefix.clone())
        .collect::<Vec<_>>();
    let changed = new
        .iter()
        .filter(|n| old.iter().any(|o| o.prefix == n.prefix && *o != *n))
        .map(|n| n.prefix.clone())
        .collect::<Vec<_>>();
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        ReloadOutcome::Unchanged
    } else {
        ReloadOutcome::Applied {
            added,
            removed,
            changed,
        }
    }
}

/// The bytes last read from the file, or why it could not be read.
type Seen = Result<Vec<u8>, String>;

/// Keeps the route table in force up to date with the routes file.
pub struct RoutesService {
    live: Arc<LiveRoutes>,
    metrics: Arc<Metrics>,
    /// SIGHUP's reload requests.
    reloads: Reloads,
    /// `ROUTES_FILE`; without it there is nothing to reload.
    file: Option<PathBuf>,
    /// `ROUTES_WATCH_SECONDS`; `None`: on SIGHUP only.
    watch_every: Option<Duration>,
    /// How often each upstream is probed.
    check_every: Duration,
}

impl RoutesService {
    pub fn new(
        live: Arc<LiveRoutes>,
        metrics: Arc<Metrics>,
        reloads: Reloads,
        file: Option<PathBuf>,
        watch_every: Option<Duration>,
        check_every: Duration,
    ) -> Self {
        Self {
            live,
            metrics,
            reloads,
            file,
            watch_every,
            check_every,
        }
    }

    /// Reads the file (off the runtime: a route may name a host to resolve).
    async fn read(&self) -> Option<Seen> {
        let file = self.file.clone()?;
        let read =
            tokio::task::spawn_blocking(move || super::read(&file).map_err(|e| e.to_string()))
                .await;
        Some(read.unwrap_or_else(|err| Err(format!("ROUTES_FILE could not be read: {err}"))))
    }

    /// Reads the file and puts its table in force when it is valid and
    /// differs. A watch acts only on bytes it has not seen yet (`seen`).
    async fn reload(&self, trigger: Trigger, seen: &mut Option<Seen>) -> Option<ReloadOutcome> {
        let read = self.read().await?;
        if trigger == Trigger::Watch && seen.as_ref() == Some(&read) {
            return None;
        }
        *seen = Some(read.clone());
        let outcome = match parse(read).await {
            Err(why) => ReloadOutcome::Invalid(why),
            Ok(configs) => self.apply(configs).await,
        };
        self.report(trigger, &outcome);
        Some(outcome)
    }

    /// Builds the table of `configs` beside the one in force, probes its new
    /// upstreams, then puts it in force.
    async fn apply(&self, configs: Vec<RouteConfig>) -> ReloadOutcome {
        let current = self.live.load_full();
        let outcome = diff(&current.configs().collect::<Vec<_>>(), &configs);
        if outcome == ReloadOutcome::Unchanged {
            return outcome;
        }
        let (table, made) = match RouteTable::build(&configs, &current, self.check_every) {
            Ok(built) => built,
            Err(err) => return ReloadOutcome::Invalid(format!("ROUTES_FILE {err}")),
        };
        join_all(made.iter().map(|b| b.probe())).await;
        for balancer in &made {
            balancer.keep_checking();
        }
        let count = table.len();
        self.live.replace(Arc::new(table));
        self.metrics.routes_loaded.set(gauge(count));
        outcome
    }

    fn report(&self, trigger: Trigger, outcome: &ReloadOutcome) {
        self.metrics
            .routes_reloads
            .with_label_values(&[outcome.label()])
            .inc();
        let trigger = match trigger {
            Trigger::Signal => "SIGHUP",
            Trigger::Watch => "file changed",
        };
        match outcome {
            ReloadOutcome::Applied {
                added,
                removed,
                changed,
            } => tracing::info!(
                trigger,
                routes = self.live.load().len(),
                ?added,
                ?removed,
                ?changed,
                "routes reloaded"
            ),
            ReloadOutcome::Unchanged => tracing::info!(trigger, "routes file unchanged"),
            ReloadOutcome::Invalid(why) => tracing::error!(
                trigger,
                error = %why,
                routes = self.live.load().len(),
                "routes file refused: the routes in force stay"
            ),
        }
    }
}

/// The routes of bytes read from the file (off the runtime: a route may
/// name a host to resolve).
async fn parse(read: Seen) -> Result<Vec<RouteConfig>, String> {
    let bytes = read?;
    tokio::task::spawn_blocking(move || super::parse_bytes(&bytes).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|err| Err(format!("ROUTES_FILE could not be checked: {err}")))
}

async fn shutdown_begins(shutdown: &mut ShutdownWatch) {
    let _ = shutdown.wait_for(|&down| down).await;
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[async_trait]
impl BackgroundService for RoutesService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        // Every upstream of the first table is probed once before the
        // listener opens (it depends on this service being ready).
        let first = self.live.load_full();
        let balancers = first.balancers();
        join_all(balancers.iter().map(|b| b.probe())).await;
        for balancer in &balancers {
            balancer.keep_checking();
        }
        drop((first, balancers));
        self.metrics
            .routes_loaded
            .set(gauge(self.live.load().len()));
        ready.notify_ready();

        let mut hangups = self.reloads.subscribe();
        // The bytes the first table came from, as a watch would have seen
        // them; if they changed since, the first tick applies them.
        let mut seen = None;
        if let Some(read) = self.read().await {
            let current: Vec<RouteConfig> = self.live.load().configs().cloned().collect();
            if parse(read.clone())
                .await
                .is_ok_and(|configs| configs == current)
            {
                seen = Some(read);
            }
        }
        let every = self.watch_every.unwrap_or(Duration::MAX);
        let watching = self.watch_every.is_some() && self.file.is_some();
        loop {
            tokio::select! {
                asked = hangups.next() => {
                    if !asked {
                        return;
                    }
                    if self.file.is_none() {
                        tracing::info!("SIGHUP: no ROUTES_FILE to reload");
                        continue;
                    }
                    self.reload(Trigger::Signal, &mut seen).await;
                }
                () = tokio::time::sleep(every), if watching => {
                    self.reload(Trigger::Watch, &mut seen).await;
                }
                () = shutdown_begins(&mut shutdown) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(text: &str) -> Vec<RouteConfig> {
        super::super::parse(text).unwrap()
    }

    #[test]
    fn a_reload_names_what_it_changes() {
        let old = routes(
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\n\
             [[routes]]\nprefix = \"/b\"\nupstreams = [\"127.0.0.1:1\"]\n",
        );
        let new = routes(
            "[[routes]]\nprefix = \"/a\"\nupstreams = [\"127.0.0.1:1\"]\npolicy = \"authenticated\"\n\
             [[routes]]\nprefix = \"/c\"\nupstreams = [\"127.0.0.1:2\"]\n",
        );
        let old_refs: Vec<&RouteConfig> = old.iter().collect();
        assert_eq!(
            diff(&old_refs, &new),
            ReloadOutcome::Applied {
                added: vec!["/c".into()],
                removed: vec!["/b".into()],
                changed: vec!["/a".into()],
            }
        );
        assert_eq!(diff(&old_refs, &old), ReloadOutcome::Unchanged);
        assert_eq!(diff(&old_refs, &old).label(), "unchanged");
        assert_eq!(ReloadOutcome::Invalid("x".into()).label(), "invalid");
    }
}
