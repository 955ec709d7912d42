//! Choosing one of a route's upstreams.
//!
//! Round robin over the upstreams that pass the TCP health check, probed
//! every few seconds, and the first time before the gateway starts
//! listening, so that the first requests already avoid an upstream that is
//! down. When none passes, every one is tried anyway and the attempt decides
//! (as Envoy's panic threshold does): a health check is only a guess made up
//! to a few seconds ago, and an upstream that starts together with authgate,
//! or comes back, is reached at once instead of after the next probe. An
//! upstream that really is down still answers its caller 502 (connection
//! refused) or 504 (connect timeout).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::server::ShutdownWatch;
use pingora::services::ServiceReadyNotifier;
use pingora::services::background::{BackgroundService, GenBackgroundService};

/// How many round-robin steps a pick may take to find a healthy upstream.
const MAX_STEPS: usize = 256;

/// A route's upstreams.
pub struct Balancer {
    lb: LoadBalancer<RoundRobin>,
    /// The turn among all upstreams when none is healthy (the balancer's own
    /// turn has just gone round every upstream in vain).
    any_turn: AtomicUsize,
}

impl Balancer {
    /// The upstreams, probed every `check_every` once [`Self::health_checks`]
    /// runs; all assumed healthy until the first probe.
    pub fn new(upstreams: &[SocketAddr], check_every: Duration) -> std::io::Result<Self> {
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(upstreams.iter().copied())?;
        balancer.set_health_check(TcpHealthCheck::new());
        balancer.health_check_frequency = Some(check_every);
        balancer.parallel_health_check = true;
        Ok(Self {
            lb: balancer,
            any_turn: AtomicUsize::new(0),
        })
    }

    /// The next upstream: round robin over the healthy ones, or over all of
    /// them when none is healthy. None only for a route without upstreams.
    pub fn pick(&self) -> Option<SocketAddr> {
        match self.lb.select(b"", MAX_STEPS) {
            Some(backend) => address(&backend),
            None => {
                let all = self.lb.backends().get_backend();
                let turn = self.any_turn.fetch_add(1, Ordering::Relaxed);
                let backend = all.iter().nth(turn.checked_rem(all.len())?)?;
                address(backend)
            }
        }
    }

    /// The background service that probes the upstreams; it reports ready
    /// (see [`pingora::services::ServiceHandle`]) once it has probed each of
    /// them once.
    pub fn health_checks(self: &Arc<Self>, name: &str) -> GenBackgroundService<HealthChecks> {
        GenBackgroundService::new(
            format!("health {name}"),
            Arc::new(HealthChecks(Arc::clone(self))),
        )
    }

    /// Probes every upstream once, side by side (each gives up after
    /// TcpHealthCheck's 1 s connect timeout).
    async fn probe(&self) {
        self.lb.backends().run_health_check(true).await;
    }
}

fn address(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}

/// A route's periodic health checks, the first before it reports ready.
pub struct HealthChecks(Arc<Balancer>);

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        let balancer = &self.0;
        balancer.probe().await;
        ready.notify_ready();
        let every = balancer.lb.health_check_frequency.unwrap_or(Duration::MAX);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown_begins(shutdown.clone()) => return,
        }
        // pingora's own loop: a probe at once, then one every `every`.
        balancer.lb.run(shutdown, None).await;
    }
}

async fn shutdown_begins(mut shutdown: ShutdownWatch) {
    let _ = shutdown.wait_for(|&down| down).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn skips_an_upstream_that_is_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (live, dead) = (listener.local_addr().unwrap(), closed_port());
        let balancer = Balancer::new(&[dead, live], Duration::from_secs(5)).unwrap();
        balancer.probe().await;
        for _ in 0..4 {
            assert_eq!(balancer.pick(), Some(live));
        }
    }

    #[tokio::test]
    async fn tries_every_upstream_when_none_is_healthy() {
        let (first, second) = (closed_port(), closed_port());
        let balancer = Balancer::new(&[first, second], Duration::from_secs(5)).unwrap();
        balancer.probe().await;
        let picked: std::collections::BTreeSet<_> =
            (0..4).filter_map(|_| balancer.pick()).collect();
        assert_eq!(picked, [first, second].into_iter().collect());
    }
}
