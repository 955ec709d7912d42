//! Stopping without cutting requests short, and without waiting for nothing.
//!
//! SIGTERM or SIGINT starts pingora's graceful shutdown: the listeners
//! close, idle keep-alive connections are closed (see [`crate::keepalive`])
//! and answers stop offering keep-alive. Left to itself, pingora then sleeps
//! the whole grace period (`SHUTDOWN_GRACE_SECONDS`) before it stops,
//! however little is left to do. [`Drain`] watches the count of requests in
//! flight ([`InFlight`]) and ends the process as soon as it reaches zero (at
//! once when nothing is in flight); the grace period stays the upper bound,
//! after which pingora stops its runtimes and whatever still runs is cut.
//! A second signal during the drain ends the process at once.
//!
//! In Kubernetes the wait for the endpoint removal to spread belongs to the
//! pod's `preStop` hook, before SIGTERM (`deploy/k8s/deployment.yaml`).
//!
//! Imports: nothing of the crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the drain looks at the count (only while shutting down).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// The number of requests being served, from their first byte until their
/// answer is written. Cheap on the request path: one atomic increment and
/// one decrement per request.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a request until the returned guard is dropped.
    pub fn begin(&self) -> Serving<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Serving(&self.0)
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One request in flight; dropping it ends the count.
pub struct Serving<'a>(&'a AtomicUsize);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        // Release: whatever the request did happens before a drain that
        // sees the count drop.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// The signals that stop the server: SIGTERM and SIGINT both drain (pingora's
/// own watch makes SIGINT a stop that cuts requests, and treats SIGQUIT as
/// an upgrade hand-over, which authgate does not use).
pub struct StopSignals;

#[async_trait]
impl ShutdownSignalWatch for StopSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (signo, name) = stop_signal().await;
        tracing::info!(
            signal = name,
            signo,
            "stopping: draining in-flight requests"
        );
        ShutdownSignal::GracefulTerminate
    }
}

/// The background service that ends the process once the shutdown has begun
/// and no request is in flight, or at once on a second stop signal.
pub struct Drain {
    in_flight: InFlight,
    grace: Duration,
}

impl Drain {
    pub fn new(in_flight: InFlight, grace: Duration) -> Self {
        Self { in_flight, grace }
    }

    /// Waits until nothing is in flight; false when the grace period ends
    /// first.
    async fn settled(&self) -> bool {
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            if self.in_flight.count() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.wait_for(|&down| down).await.is_err() {
            return;
        }
        tokio::select! {
            settled = self.settled() => {
                if settled {
                    tracing::info!("no request in flight: exiting");
                    std::process::exit(0);
                }
                // pingora's own grace period ends now too: it stops the
                // runtimes, cutting what still runs.
                tracing::warn!(
                    in_flight = self.in_flight.count(),
                    grace_seconds = self.grace.as_secs(),
                    "grace period over with requests in flight: cutting them"
                );
            }
            (signo, name) = stop_signal() => {
                tracing::warn!(
                    signal = name,
                    signo,
                    in_flight = self.in_flight.count(),
                    "second stop signal: exiting at once"
                );
                std::process::exit(1);
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT: the signal's number and name. A signal that
/// cannot be watched keeps its default action (ending the process).
async fn stop_signal() -> (i32, &'static str) {
    let mut term = watch(SignalKind::terminate(), "SIGTERM");
    let mut int = watch(SignalKind::interrupt(), "SIGINT");
    tokio::select! {
        () = next(&mut term) => (SignalKind::terminate().as_raw_value(), "SIGTERM"),
        () = next(&mut int) => (SignalKind::interrupt().as_raw_value(), "SIGINT"),
    }
}

fn watch(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|err| tracing::error!(signal = name, error = %err, "cannot watch the signal"))
        .ok()
}

/// The next delivery of `signal`; never, when it is not watched.
async fn next(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_while_their_guards_live() {
        let in_flight = InFlight::default();
        let first = in_flight.begin();
        let second = in_flight.begin();
        assert_eq!(in_flight.count(), 2);
        drop(first);
        assert_eq!(in_flight.count(), 1);
        drop(second);
        assert_eq!(in_flight.count(), 0);
    }

    #[tokio::test]
    async fn settles_when_idle_and_gives_up_after_the_grace_period() {
        let in_flight = InFlight::default();
        assert!(
            Drain::new(in_flight.clone(), Duration::from_secs(3600))
                .settled()
                .await
        );
        let _busy = in_flight.begin();
        assert!(
            !Drain::new(in_flight.clone(), Duration::from_millis(50))
                .settled()
                .await
        );
    }

    #[tokio::test]
    async fn settles_when_the_last_request_ends() {
        let in_flight = InFlight::default();
        let (done, finished) = tokio::sync::oneshot::channel();
        let counter = in_flight.clone();
        let request = tokio::spawn(async move {
            let _busy = counter.begin();
            let _ = finished.await;
        });
        while in_flight.count() == 0 {
            tokio::task::yield_now().await;
        }
        let drain = Drain::new(in_flight.clone(), Duration::from_secs(3600));
        let settled = tokio::spawn(async move { drain.settled().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!settled.is_finished(), "settled while a request ran");
        done.send(()).unwrap();
        assert!(settled.await.unwrap());
        request.await.unwrap();
    }
}
