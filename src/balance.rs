//! Choosing one of a route's upstreams.
//!
//! Round robin over the upstreams that pass the TCP health check, probed
//! every few seconds, and the first time before the gateway starts
//! listening (or before a reloaded route takes requests), so that the
//! first requests already avoid an upstream that is down. When none passes,
//! every one is tried anyway and the attempt decides (as Envoy's panic
//! threshold does): a health check is only a guess made up to a few seconds
//! ago, and an upstream that starts together with authgate, or comes back,
//! is reached at once instead of after the next probe. An upstream that
//! really is down still answers its caller 502 (connection refused) or 504
//! (connect timeout).
//!
//! An upstream that refuses a connection (or fails it otherwise, before a
//! byte was sent) is marked down at once ([`Balancer::mark_down`], passive
//! health) until the next periodic probe decides again, and the request goes
//! to the route's next upstream ([`Balancer::pick_avoiding`]) whatever its
//! method: nothing of it reached anyone.
//!
//! A balancer's periodic checks ([`Balancer::keep_checking`]) live exactly
//! as long as the balancer: a route removed by a reload stops being probed
//! once the last request that chose it is done.
//!
//! Imports: nothing of the crate.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use tokio::task::AbortHandle;

/// How many round-robin steps a pick may take to find a healthy upstream.
const MAX_STEPS: usize = 256;

/// A route's upstreams.
pub struct Balancer {
    lb: LoadBalancer<RoundRobin>,
    /// The upstreams, in the order the route lists them.
    upstreams: Vec<SocketAddr>,
    /// The turn among all upstreams when none is healthy (the balancer's own
    /// turn has just gone round every upstream in vain).
    any_turn: AtomicUsize,
    check_every: Duration,
    /// Upstreams that refused a connection since the last probe: skipped
    /// like the ones the probe found down, until the next probe.
    refused: Mutex<HashSet<SocketAddr>>,
    /// The periodic checks, ended with the balancer.
    checks: Mutex<Option<AbortHandle>>,
}

impl Balancer {
    /// The upstreams, probed every `check_every` once [`Self::keep_checking`]
    /// runs; all assumed healthy until the first probe.
    pub fn new(upstreams: &[SocketAddr], check_every: Duration) -> std::io::Result<Self> {
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(upstreams.iter().copied())?;
        balancer.set_health_check(TcpHealthCheck::new());
        balancer.parallel_health_check = true;
        Ok(Self {
            lb: balancer,
            upstreams: upstreams.to_vec(),
            any_turn: AtomicUsize::new(0),
            check_every,
            refused: Mutex::new(HashSet::new()),
            checks: Mutex::new(None),
        })
    }

    /// The upstreams it chooses among, as the route lists them.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The next upstream: round robin over the healthy ones, or over all of
    /// them when none is healthy. None only for a route without upstreams.
    pub fn pick(&self) -> Option<SocketAddr> {
        self.pick_avoiding(&[])
    }

    /// The next upstream that is not in `tried`: round robin over the
    /// healthy ones (neither found down by the last probe nor refused since),
    /// or over all the others when none is. None once every upstream is
    /// in `tried`.
    pub fn pick_avoiding(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let healthy = {
            let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            self.lb.select_with(b"", MAX_STEPS, |backend, healthy| {
                healthy
                    && address(backend)
                        .is_some_and(|addr| !refused.contains(&addr) && !tried.contains(&addr))
            })
        };
        if let Some(addr) = healthy.as_ref().and_then(address) {
            return Some(addr);
        }
        let left: Vec<SocketAddr> = self
            .upstreams
            .iter()
            .filter(|addr| !tried.contains(addr))
            .copied()
            .collect();
        let turn = self.any_turn.fetch_add(1, Ordering::Relaxed);
        left.get(turn.checked_rem(left.len())?).copied()
    }

    /// Whether an upstream not in `tried` is left to try.
    pub fn has_untried(&self, tried: &[SocketAddr]) -> bool {
        self.upstreams.iter().any(|addr| !tried.contains(addr))
    }

    /// Marks `addr` down until the next probe: it refused a connection.
    pub fn mark_down(&self, addr: SocketAddr) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr);
    }

    /// Probes every upstream once, side by side (each gives up after
    /// TcpHealthCheck's 1 s connect timeout).
    pub async fn probe(&self) {
        self.lb.backends().run_health_check(true).await;
        // The probe has the last word on what the refusals said before it.
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Probes the upstreams every `check_every` from now on, on the current
    /// tokio runtime, until the balancer is dropped. Once is enough: a
    /// second call replaces the first task.
    pub fn keep_checking(self: &Arc<Self>) {
        let balancer = Arc::downgrade(self);
        let every = self.check_every;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // Held only while probing: the checks never keep a
                // balancer alive.
                let Some(balancer) = balancer.upgrade() else {
                    return;
                };
                balancer.probe().await;
            }
        });
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = checks.replace(task.abort_handle()) {
            previous.abort();
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let checks = self
            .checks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = checks.take() {
            task.abort();
        }
    }
}

fn address(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
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

    /// Counts the connections a listener accepts (each TCP probe is one).
    async fn probed() -> (SocketAddr, Arc<AtomicUsize>) {
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

    #[tokio::test]
    async fn checks_run_while_the_balancer_lives_and_end_with_it() {
        let (addr, probes) = probed().await;
        let balancer = Arc::new(Balancer::new(&[addr], Duration::from_millis(20)).unwrap());
        balancer.keep_checking();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(probes.load(Ordering::SeqCst) >= 3, "{probes:?}");
        drop(balancer);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after_drop = probes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(probes.load(Ordering::SeqCst), after_drop);
    }

    #[tokio::test]
    async fn an_upstream_marked_down_is_skipped_until_the_next_probe() {
        let (first, second) = (probed().await.0, probed().await.0);
        let balancer = Balancer::new(&[first, second], Duration::from_secs(5)).unwrap();
        balancer.probe().await;
        balancer.mark_down(first);
        for _ in 0..4 {
            assert_eq!(balancer.pick(), Some(second));
        }
        // Nothing else left: the one marked down is tried after all.
        assert_eq!(balancer.pick_avoiding(&[second]), Some(first));
        assert_eq!(balancer.pick_avoiding(&[first, second]), None);
        assert!(!balancer.has_untried(&[first, second]));
        balancer.probe().await;
        let picked: std::collections::BTreeSet<_> =
            (0..4).filter_map(|_| balancer.pick()).collect();
        assert_eq!(picked, [first, second].into_iter().collect());
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
