//! Work done after the answer, for answers whose duration must not tell
//! anything (deliberate difference 3): whether an address is known to
//! forgot-password, and the token written for a known one at
//! resend-verification. The answer goes out first, the work follows.
//!
//! A job starts [`AFTER`] its request answered: spawned at once, it could
//! take the answering thread (or the other core of a small machine) before
//! the answer is written, and the answer's time would tell that there was a
//! job. At most [`RUNNING`] jobs run at once; past that a request waits for
//! a free place before it answers (known and unknown addresses alike), so a
//! flood of requests cannot pile up unbounded work behind quick answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::audit::{AuditEvent, AuditLog};
use crate::clock::Clock;
use crate::config::Config;
use crate::identity::IdentityBackend;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::tokens::TokenService;

/// Jobs running at once, at most.
pub const RUNNING: usize = 64;
/// How long after its answer a job starts.
pub const AFTER: Duration = Duration::from_millis(2);

/// Runs jobs in the background, [`RUNNING`] at a time.
#[derive(Debug)]
pub struct Deferred {
    places: Arc<Semaphore>,
}

impl Default for Deferred {
    fn default() -> Self {
        Self {
            places: Arc::new(Semaphore::new(RUNNING)),
        }
    }
}

impl Deferred {
    /// Waits until every job started so far has finished.
    pub async fn settle(&self) {
        let all = u32::try_from(RUNNING).unwrap_or(u32::MAX);
        // Never closed (see `run`): acquiring every place waits for them all.
        let _ = self.places.acquire_many(all).await;
    }

    /// Starts `job` in the background (in the caller's span), [`AFTER`]
    /// the answer, once a place is free.
    pub async fn run(&self, job: impl Future<Output = ()> + Send + 'static) {
        let span = tracing::Span::current();
        // Never closed; were it, the work would still be done, only unbounded.
        let place = Arc::clone(&self.places).acquire_owned().await.ok();
        tokio::spawn(
            async move {
                tokio::time::sleep(AFTER).await;
                job.await;
                drop(place);
            }
            .instrument(span),
        );
    }
}

/// What a job needs of the application: shared handles, cheap to clone.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub config: Arc<Config>,
    pub tokens: TokenService,
    pub backend: Arc<dyn IdentityBackend>,
    pub mailer: Arc<Mailer>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub audit_log: Arc<dyn AuditLog>,
}

impl JobContext {
    /// Records an audit event; a failure to record is logged, never answered.
    pub async fn audit(&self, event: AuditEvent) {
        tracing::info!(
            target: "audit",
            action = event.action,
            outcome = event.outcome.as_str(),
            actor = event.actor,
            subject = event.subject,
            ip = event.ip.as_deref(),
            "audit"
        );
        if let Err(err) = self.audit_log.append(&event, self.clock.naive_utc()).await {
            self.metrics.audit_failures.inc();
            tracing::error!(error = %err, action = event.action, "audit event not stored");
        }
    }

    /// When an e-mail token minted now expires.
    pub fn email_token_expiry(&self) -> chrono::DateTime<chrono::Utc> {
        let lifetime = chrono::Duration::from_std(self.tokens.lifetimes().email)
            .unwrap_or(chrono::Duration::days(1));
        self.clock.now() + lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_after_the_caller_and_bounds_them() {
        let deferred = Deferred::default();
        let done = Arc::new(AtomicUsize::new(0));
        let (release, hold) = tokio::sync::watch::channel(false);
        for _ in 0..RUNNING {
            let done = Arc::clone(&done);
            let mut hold = hold.clone();
            deferred
                .run(async move {
                    let _ = hold.wait_for(|go| *go).await;
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await;
        }
        // Every place is taken: one more waits until a job ends.
        let extra = {
            let done = Arc::clone(&done);
            deferred.run(async move {
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        tokio::pin!(extra);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut extra)
                .await
                .is_err(),
            "waits for a place"
        );
        assert_eq!(done.load(Ordering::SeqCst), 0, "jobs run after the caller");
        release.send(true).unwrap();
        extra.await;
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == RUNNING + 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{} of {} jobs done",
            done.load(Ordering::SeqCst),
            RUNNING + 1
        );
    }
}
