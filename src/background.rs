//! Work that runs beside the server for the life of the process: the
//! revocations of the other replicas followed through Redis, Keycloak's
//! admin events read. The application lists it when it is built (no I/O
//! then); the server starts it once, on a runtime of its own, as a pingora
//! background service.
//!
//! Imports: nothing of the crate (the jobs are futures made elsewhere).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::Instrument;

/// One piece of background work: runs until the process ends.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The background work of an application, started once.
#[derive(Default)]
pub struct Background {
    jobs: Mutex<Vec<(&'static str, Job)>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&'static str> = self
            .jobs
            .lock()
            .map(|jobs| jobs.iter().map(|(name, _)| *name).collect())
            .unwrap_or_default();
        f.debug_struct("Background").field("jobs", &names).finish()
    }
}

impl Background {
    pub fn add(&self, name: &'static str, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name, job));
    }

    /// Starts every job on the current runtime (once: later calls find none).
    pub fn start(&self) {
        let jobs = std::mem::take(
            &mut *self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (name, job) in jobs {
            tracing::debug!(job = name, "background job started");
            tokio::spawn(job.instrument(tracing::info_span!("background", job = name)));
        }
    }
}

/// An application's background work as a pingora service.
pub struct Service(pub Arc<Background>);

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.start();
        // The jobs run until the runtime stops with the server.
        let _ = shutdown.wait_for(|&down| down).await;
    }
}
