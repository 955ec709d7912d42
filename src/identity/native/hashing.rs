//! PBKDF2 off the async executor, on a pool of its own: `HASHING_THREADS`
//! threads (one per core by default), each running at a lower scheduling
//! priority (nice [`HASHING_NICE`] on Linux) than the threads that serve
//! requests. A storm of sign-ins takes the cores only as far as token
//! checks, proxying and the rest leave them idle; on an otherwise idle
//! machine it still gets every core.
//!
//! The queue in front of the threads is bounded twice, so that a storm is
//! answered at once instead of piling up (every waiting job holds a request,
//! its connection and its password):
//!
//! - at most `HASHING_QUEUE_MAX` jobs wait for a thread; one more is refused
//!   on arrival;
//! - a job that has not reached a thread after `HASHING_QUEUE_WAIT_MS` is
//!   given up (a thread that reaches it later skips it).
//!
//! A refused job is [`IdentityError::Busy`]: the api layer answers 503 with
//! `Retry-After`. A job whose caller has gone away (client disconnected)
//! leaves the queue at once and is skipped. Refusals don't depend on the
//! account: a known and an unknown login meet the same queue, so a refusal
//! tells nothing about either.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::config::HashingLimits;
use crate::identity::{IdentityError, Internal};
use crate::metrics::HashingMetrics;
use crate::password::{PasswordError, PasswordHasher};

/// How much lower the hashing threads run: a Linux nice value (0 to 19).
/// At 10 the kernel gives a request thread about ten times their share of
/// a busy core.
pub const HASHING_NICE: i32 = 10;

type Job = Box<dyn FnOnce(&PasswordHasher) + Send>;

/// A job's place in the queue: still waiting, taken by a thread, or given up.
struct Ticket {
    state: AtomicU8,
    arrived: Instant,
}

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const GIVEN_UP: u8 = 2;

impl Ticket {
    fn leave(&self, to: u8) -> bool {
        self.state
            .compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The count of waiting jobs, against the bound.
#[derive(Debug)]
struct Queue {
    waiting: AtomicUsize,
    max: usize,
    metrics: HashingMetrics,
}

impl Queue {
    /// Takes a place, unless all are taken.
    fn enter(&self) -> bool {
        let entered = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if entered {
            self.metrics.depth.inc();
        }
        entered
    }

    fn left(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.depth.dec();
    }

    fn refused(&self, reason: &str) {
        self.metrics.refusals.with_label_values(&[reason]).inc();
    }
}

/// The caller's hold on its ticket: dropped while still waiting (the
/// caller gave up or went away), it frees the place at once.
struct Place {
    ticket: Arc<Ticket>,
    queue: Arc<Queue>,
}

impl Place {
    fn give_up(&self) -> bool {
        let given_up = self.ticket.leave(GIVEN_UP);
        if given_up {
            self.queue.left();
        }
        given_up
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.give_up();
    }
}

#[derive(Debug, Clone)]
pub struct Hashing {
    hasher: Arc<PasswordHasher>,
    jobs: mpsc::Sender<(Arc<Ticket>, Job)>,
    queue: Arc<Queue>,
    limits: HashingLimits,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl Hashing {
    /// Starts `limits.threads` hashing threads (at least one); they end
    /// when the last clone of this handle is dropped.
    pub fn new(
        hasher: PasswordHasher,
        limits: HashingLimits,
        metrics: HashingMetrics,
    ) -> std::io::Result<Self> {
        let hasher = Arc::new(hasher);
        let (jobs, receiver) = mpsc::channel::<(Arc<Ticket>, Job)>();
        let receiver = Arc::new(Mutex::new(receiver));
        let queue = Arc::new(Queue {
            waiting: AtomicUsize::new(0),
            max: limits.queue_max.max(1),
            metrics,
        });
        for i in 0..limits.threads.max(1) {
            let (hasher, receiver, queue) = (
                Arc::clone(&hasher),
                Arc::clone(&receiver),
                Arc::clone(&queue),
            );
            std::thread::Builder::new()
                .name(format!("authgate-hash-{i}"))
                .spawn(move || worker(&hasher, &receiver, &queue))?;
        }
        Ok(Self {
            hasher,
            jobs,
            queue,
            limits,
        })
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub fn limits(&self) -> HashingLimits {
        self.limits
    }

    fn busy(&self) -> IdentityError {
        IdentityError::Busy {
            retry_after: self.limits.retry_after(),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T, IdentityError> {
        if !self.queue.enter() {
            self.queue.refused("full");
            return Err(self.busy());
        }
        let ticket = Arc::new(Ticket {
            state: AtomicU8::new(WAITING),
            arrived: Instant::now(),
        });
        let place = Place {
            ticket: Arc::clone(&ticket),
            queue: Arc::clone(&self.queue),
        };
        let (reply, mut answer) = oneshot::channel();
        self.jobs
            .send((
                ticket,
                Box::new(move |hasher: &PasswordHasher| {
                    let _ = reply.send(job(hasher));
                }),
            ))
            .map_err(|_| IdentityError::Internal(Internal::Inconsistent("hashing pool closed")))?;
        let answered = match tokio::time::timeout(self.limits.max_wait, &mut answer).await {
            Ok(answered) => answered,
            // Still waiting for a thread: given up. Already taken: its
            // answer comes soon, and is worth waiting for.
            Err(_) if place.give_up() => {
                self.queue.refused("wait");
                return Err(self.busy());
            }
            Err(_) => answer.await,
        };
        answered.map_err(|_| IdentityError::Internal(Internal::Inconsistent("hashing job failed")))
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

fn worker(
    hasher: &PasswordHasher,
    receiver: &Mutex<mpsc::Receiver<(Arc<Ticket>, Job)>>,
    queue: &Queue,
) {
    lower_priority();
    loop {
        // One thread waits on the channel at a time; the lock is released
        // before the job runs.
        let (ticket, job) = {
            let Ok(receiver) = receiver.lock() else {
                return;
            };
            match receiver.recv() {
                Ok(next) => next,
                Err(_) => return, // every handle dropped
            }
        };
        // A job given up (waited too long, or its caller went away) has
        // left the queue already: skipped.
        if !ticket.leave(TAKEN) {
            continue;
        }
        queue.left();
        queue
            .metrics
            .wait
            .observe(ticket.arrived.elapsed().as_secs_f64());
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
    use crate::metrics::Metrics;
    use std::time::Duration;
    use tokio::task::JoinHandle;

    fn pool_with(threads: usize, queue_max: usize, max_wait: Duration) -> (Hashing, Metrics) {
        let metrics = Metrics::new().unwrap();
        let limits = HashingLimits {
            threads,
            queue_max,
            max_wait,
        };
        let hashing = Hashing::new(
            PasswordHasher::new(1000, b"secret"),
            limits,
            metrics.hashing(),
        )
        .unwrap();
        (hashing, metrics)
    }

    fn pool(threads: usize) -> Hashing {
        pool_with(threads, 16, Duration::from_secs(60)).0
    }

    /// Takes the pool's only thread until the returned sender is dropped or
    /// sent to; returns once the thread holds it. (With a short wait bound,
    /// a slow machine may give the holding job up before the thread takes
    /// it: then it is offered again.)
    async fn hold_the_thread(
        hashing: &Hashing,
    ) -> (
        std::sync::mpsc::Sender<()>,
        JoinHandle<Result<(), IdentityError>>,
    ) {
        loop {
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let (started, running) = oneshot::channel();
            let held = hashing.clone();
            let job = tokio::spawn(async move {
                held.run(move |_| {
                    let _ = started.send(());
                    let _ = hold.recv();
                })
                .await
            });
            if running.await.is_ok() {
                return (release, job);
            }
            assert!(matches!(
                job.await.unwrap(),
                Err(IdentityError::Busy { .. })
            ));
        }
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    fn refusals(metrics: &Metrics, reason: &str) -> u64 {
        metrics.hashing_refusals.with_label_values(&[reason]).get()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_serves_again_once_drained() {
        let (hashing, metrics) = pool_with(1, 2, Duration::from_secs(60));
        let (release, held) = hold_the_thread(&hashing).await;
        let waiting: Vec<_> = (0..2u8)
            .map(|i| {
                let hashing = hashing.clone();
                tokio::spawn(async move { hashing.run(move |_| i).await })
            })
            .collect();
        until("two jobs waiting", || {
            metrics.hashing_queue_depth.get() == 2
        })
        .await;

        let refused = hashing.run(|_| 9u8).await;
        assert!(
            matches!(refused, Err(IdentityError::Busy { retry_after: 60 })),
            "{refused:?}"
        );
        assert_eq!(refusals(&metrics, "full"), 1);
        assert_eq!(
            metrics.hashing_queue_depth.get(),
            2,
            "the refused job never queued"
        );

        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for (i, job) in waiting.into_iter().enumerate() {
            assert_eq!(job.await.unwrap().unwrap() as usize, i);
        }
        assert_eq!(metrics.hashing_queue_depth.get(), 0);
        assert_eq!(hashing.run(|_| 7u8).await.unwrap(), 7);
        assert_eq!(metrics.hashing_wait.get_sample_count(), 4);
    }

    #[tokio::test]
    async fn a_job_waiting_too_long_is_given_up_and_never_runs() {
        // The only thread is held until after the wait bound has passed, so
        // the second job cannot reach it in time, however slow the machine.
        let (hashing, metrics) = pool_with(1, 4, Duration::from_millis(1));
        let (release, held) = hold_the_thread(&hashing).await;
        let before = refusals(&metrics, "wait");
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ran);
        let given_up = hashing
            .run(move |_| counted.fetch_add(1, Ordering::SeqCst))
            .await;
        assert!(
            matches!(given_up, Err(IdentityError::Busy { retry_after: 1 })),
            "{given_up:?}"
        );
        assert_eq!(refusals(&metrics, "wait"), before + 1);
        assert_eq!(metrics.hashing_queue_depth.get(), 0, "its place is free");

        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        // The queue is served in order: once this job ran, the given-up one
        // was reached (and skipped).
        let (release, held) = hold_the_thread(&hashing).await;
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_frees_its_place() {
        let (hashing, metrics) = pool_with(1, 1, Duration::from_secs(60));
        let (release, held) = hold_the_thread(&hashing).await;
        let gone = {
            let hashing = hashing.clone();
            tokio::spawn(async move { hashing.run(|_| 1u8).await })
        };
        until("one job waiting", || metrics.hashing_queue_depth.get() == 1).await;
        gone.abort();
        until("the place freed", || metrics.hashing_queue_depth.get() == 0).await;
        let next = {
            let hashing = hashing.clone();
            tokio::spawn(async move { hashing.run(|_| 2u8).await })
        };
        until("the next job waiting", || {
            metrics.hashing_queue_depth.get() == 1
        })
        .await;
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(next.await.unwrap().unwrap(), 2);
        assert_eq!(refusals(&metrics, "full") + refusals(&metrics, "wait"), 0);
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
