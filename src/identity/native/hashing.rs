//! PBKDF2 off the async executor, on a pool of its own: one thread per core,
//! each running at a lower scheduling priority (nice [`HASHING_NICE`] on
//! Linux) than the threads that serve requests. A storm of sign-ins queues
//! here and takes the cores only as far as token checks, proxying and the
//! rest leave them idle; on an otherwise idle machine it still gets every
//! core. A job whose caller has gone away (client disconnected) is skipped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::identity::IdentityError;
use crate::password::{PasswordError, PasswordHasher};

/// How much lower the hashing threads run: a Linux nice value (0 to 19).
/// At 10 the kernel gives a request thread about ten times their share of
/// a busy core.
pub const HASHING_NICE: i32 = 10;

type Job = Box<dyn FnOnce(&PasswordHasher) + Send>;

#[derive(Debug, Clone)]
pub struct Hashing {
    hasher: Arc<PasswordHasher>,
    jobs: mpsc::Sender<Job>,
}

impl Hashing {
    /// Starts `threads` hashing threads (at least one); they end when the
    /// last clone of this handle is dropped.
    pub fn new(hasher: PasswordHasher, threads: usize) -> std::io::Result<Self> {
        let hasher = Arc::new(hasher);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let (hasher, queue) = (Arc::clone(&hasher), Arc::clone(&queue));
            std::thread::Builder::new()
                .name(format!("authgate-hash-{i}"))
                .spawn(move || worker(&hasher, &queue))?;
        }
        Ok(Self { hasher, jobs })
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, IdentityError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |hasher: &PasswordHasher| {
                if !reply.is_closed() {
                    let _ = reply.send(job(hasher));
                }
            }))
            .map_err(|_| IdentityError::Internal("hashing pool closed".into()))?;
        answer
            .await
            .map_err(|_| IdentityError::Internal("hashing job failed".into()))
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

fn worker(hasher: &PasswordHasher, queue: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // One thread waits on the queue at a time; the lock is released
        // before the job runs.
        let job = {
            let Ok(queue) = queue.lock() else { return };
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return, // every handle dropped
            }
        };
        // A panicking job drops its reply (its caller gets an error); the
        // thread stays in the pool.
        let _ = catch_unwind(AssertUnwindSafe(|| job(hasher)));
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches none of our
    // memory. On Linux, PRIO_PROCESS with who = 0 names the calling thread
    // only, and raising one's own nice value needs no privilege.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICE) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not lower the hashing threads' priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> Hashing {
        Hashing::new(PasswordHasher::new(1000, b"secret"), threads).unwrap()
    }

    #[tokio::test]
    async fn hashes_and_verifies_on_the_pool() {
        let hashing = pool(2);
        let stored = hashing.hash("pw".into()).await.unwrap();
        assert_eq!(
            hashing.verify(stored.clone(), "pw".into()).await.unwrap(),
            Ok(true)
        );
        assert_eq!(
            hashing.verify(stored, "nope".into()).await.unwrap(),
            Ok(false)
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn jobs_run_on_lowered_priority_threads() {
        let hashing = pool(1);
        let (name, nice) = hashing
            .run(|_| {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
                // Field 19 (nice) counts from after the ")" closing the name.
                let fields: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .collect();
                (
                    std::thread::current().name().map(str::to_owned),
                    fields[16].parse::<i32>().unwrap(),
                )
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("authgate-hash-0"));
        assert_eq!(nice, HASHING_NICE);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_only() {
        let hashing = pool(1);
        let failed = hashing.run(|_| -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(IdentityError::Internal(_))));
        assert_eq!(hashing.run(|_| 7u8).await.unwrap(), 7);
    }
}
