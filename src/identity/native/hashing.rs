//! PBKDF2 off the async executor: every hash runs on the blocking pool, at
//! most one per core at a time, so a storm of sign-ins queues here instead
//! of stalling token checks on the event loop.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::identity::IdentityError;
use crate::password::{PasswordError, PasswordHasher};

#[derive(Debug, Clone)]
pub struct Hashing {
    hasher: Arc<PasswordHasher>,
    permits: Arc<Semaphore>,
}

impl Hashing {
    pub fn new(hasher: PasswordHasher, parallelism: usize) -> Self {
        Self {
            hasher: Arc::new(hasher),
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
        }
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, IdentityError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| IdentityError::Internal("hashing pool closed".into()))?;
        let hasher = Arc::clone(&self.hasher);
        tokio::task::spawn_blocking(move || job(&hasher))
            .await
            .map_err(|err| IdentityError::Internal(format!("hashing task failed: {err}")))
    }

    pub async fn hash(&self, password: String) -> Result<String, IdentityError> {
        self.run(move |h| h.hash(&password)).await
    }

    pub async fn verify(
        &self,
        stored: String,
        password: String,
    ) -> Result<Result<bool, PasswordError>, IdentityError> {
        self.run(move |h| h.verify(&stored, &password)).await
    }

    /// Spends the time of a verification (unknown accounts answer as slowly as known ones).
    pub async fn waste_time(&self) -> Result<(), IdentityError> {
        self.run(PasswordHasher::waste_time).await
    }
}
