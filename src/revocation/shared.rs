//! Revocations shared through Redis (`REDIS_URL`): a sorted set
//! ([`KEY`]) holds every entry still in force, scored by the Unix second
//! after which it no longer matters, and each new one is published on
//! [`CHANNEL`]. Every replica subscribes; on each (re)connection it first
//! subscribes, then reads the whole set, so nothing published while it was
//! away is missed.
//!
//! Redis is an accelerator, never the authority: whatever is revoked is in
//! the store too, which every replica re-reads behind a few seconds of
//! cache. While Redis is away, a publication fails (logged once, shown by
//! `authgate_redis_up`), the follower retries with back-off
//! (`authgate_revocation_push_up` is 0 meanwhile), and other replicas
//! learn of revocations through the store within that cache time.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use super::Revocations;
use crate::metrics::Metrics;
use crate::redis_conn::{LazyRedis, REDIS_TIMEOUT};

/// The sorted set of revocations in force.
pub const KEY: &str = "authgate:revocations";
/// Where new revocations are published (newline-separated entries).
pub const CHANNEL: &str = "authgate:revocations";

/// After a failed publication, Redis is left alone this long (seconds).
const QUIET_AFTER_FAILURE: i64 = 5;
/// The follower asks Redis whether it is still there this often.
const PING_EVERY: Duration = Duration::from_secs(10);
/// Waits between two connection attempts of the follower: doubled after
/// each failure, from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub struct Shared {
    client: redis::Client,
    store: LazyRedis,
    quiet_until: AtomicI64,
    up: AtomicBool,
    metrics: std::sync::Arc<Metrics>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Revocations shared through the Redis server at `url` (connected at
    /// first use).
    pub fn open(url: &str, metrics: std::sync::Arc<Metrics>) -> Result<Self, redis::RedisError> {
        metrics.redis_up.set(1);
        Ok(Self {
            client: redis::Client::open(url)?,
            store: LazyRedis::open(url)?,
            quiet_until: AtomicI64::new(0),
            up: AtomicBool::new(true),
            metrics,
        })
    }

    fn answered(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            tracing::warn!("Redis is back: revocations are shared through it again");
            self.metrics.redis_up.set(1);
        }
    }

    fn failed(&self, error: &str, now: i64) {
        self.quiet_until
            .store(now + QUIET_AFTER_FAILURE, Ordering::Relaxed);
        if self.up.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                error,
                "Redis unreachable: revocations reach the other replicas through the database (within a few seconds)"
            );
            self.metrics.redis_up.set(0);
        }
    }

    /// Adds entries to the shared set (in force until `expires`) and
    /// publishes them; old entries are dropped on the way.
    pub(super) async fn publish(&self, lines: &[String], expires: i64, now: i64) {
        if lines.is_empty() || now < self.quiet_until.load(Ordering::Relaxed) {
            return;
        }
        let work = async {
            let mut connection = self.store.connection().await?;
            let mut pipe = redis::pipe();
            for line in lines {
                pipe.zadd(KEY, line, expires).ignore();
            }
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(KEY)
                .arg("-inf")
                .arg(format!("({now}"))
                .ignore();
            pipe.publish(CHANNEL, lines.join("\n")).ignore();
            pipe.query_async::<()>(&mut connection).await
        };
        match tokio::time::timeout(REDIS_TIMEOUT * 2, work).await {
            Ok(Ok(())) => self.answered(),
            Ok(Err(err)) => self.failed(&err.to_string(), now),
            Err(_) => self.failed("timed out", now),
        }
    }

    /// Every entry still in force.
    async fn snapshot(&self, now: i64) -> Result<Vec<String>, redis::RedisError> {
        let mut connection = self.store.connection().await?;
        redis::cmd("ZRANGEBYSCORE")
            .arg(KEY)
            .arg(now)
            .arg("+inf")
            .query_async(&mut connection)
            .await
    }

    /// Follows [`CHANNEL`] into `revocations` until the process ends,
    /// reconnecting with back-off; reads the whole set after each
    /// subscription.
    pub(super) async fn follow(&self, revocations: &Revocations) {
        let mut wait = RETRY_FIRST;
        let mut reported = false;
        loop {
            let outcome = self.follow_once(revocations).await;
            let was_up = self.metrics.revocation_push_up.get() == 1;
            self.metrics.revocation_push_up.set(0);
            let why = match outcome {
                Ok(()) => "the channel was closed".to_string(),
                Err(err) => err,
            };
            if was_up {
                wait = RETRY_FIRST;
                reported = false;
            }
            if !reported {
                tracing::warn!(
                    error = %why,
                    "not following revocations in Redis: other replicas' revocations arrive through the database (within a few seconds); retrying"
                );
                reported = true;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// One subscription: until the connection drops or stops answering.
    async fn follow_once(&self, revocations: &Revocations) -> Result<(), String> {
        let bounded = |what: &'static str| move |_| format!("{what}: timed out");
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT * 4, self.client.get_async_pubsub())
            .await
            .map_err(bounded("connect"))?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(REDIS_TIMEOUT * 4, sink.subscribe(CHANNEL))
            .await
            .map_err(bounded("subscribe"))?
            .map_err(|e| e.to_string())?;
        // Subscribed first: whatever is published from now on arrives
        // below, whatever was before is in the set.
        let now = revocations.clock.unix();
        let lines = tokio::time::timeout(REDIS_TIMEOUT * 4, self.snapshot(now))
            .await
            .map_err(bounded("read the set"))?
            .map_err(|e| e.to_string())?;
        let learnt = revocations.learn_lines(lines.iter().map(String::as_str));
        self.metrics.revocation_push_up.set(1);
        tracing::info!(
            entries = learnt,
            "following revocations in Redis (the set read whole)"
        );
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ok(());
                    };
                    match message.get_payload::<String>() {
                        Ok(text) => {
                            revocations.learn_lines(text.split('\n'));
                        }
                        Err(err) => tracing::warn!(error = %err, "revocation message unreadable"),
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(REDIS_TIMEOUT * 4, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Err(err.to_string()),
                        Err(_) => return Err("ping: timed out".into()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::revocation::{Revocation, Source};
    use std::sync::Arc;

    #[tokio::test]
    async fn an_unreachable_redis_is_left_alone_for_a_while() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let clock = Arc::new(ManualClock::at(1_000));
        // Nothing listens on port 1: the connection is refused at once.
        let shared = Shared::open("redis://127.0.0.1:1", Arc::clone(&metrics)).unwrap();
        let revs = Revocations::local(Duration::from_secs(60), clock.clone(), Arc::clone(&metrics))
            .with_shared(shared);
        revs.revoke(&Revocation::sessions(["s1".into()]), Source::Signout)
            .await;
        // Refused here all the same.
        assert!(revs.refuses(1, Some("s1"), Some(1.0), true));
        assert_eq!(metrics.redis_up.get(), 0, "reported");
        let shared = revs.shared.as_ref().unwrap();
        assert_eq!(shared.quiet_until.load(Ordering::Relaxed), 1_005);
        assert!(shared.follow_once(&revs).await.is_err());
        assert_eq!(metrics.revocation_push_up.get(), 0);
    }
}
