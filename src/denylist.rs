//! The deny-list of ended sessions, shared by every replica through Redis
//! (`REDIS_URL`): a revoked session's id (the UUID tokens carry as
//! `device_id`, in keycloak mode too) is written as
//! `authgate:deny:sid:<id>` for as long as an access token lives, and every
//! replica refuses a token of that session at its next request.
//!
//! It is an accelerator, never the authority: the registry in the database
//! (which every replica reads, behind a few seconds of cache) records every
//! ended session too. Without Redis, or while Redis does not answer, the
//! gateway relies on the registry alone, so a revocation reaches the other
//! replicas within that cache time instead of at once. An outage is logged
//! once, shown by `authgate_redis_up`, and Redis is asked again a few
//! seconds later, so an outage does not slow every request down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::redis_conn::{LazyRedis, REDIS_TIMEOUT};

/// After a failure, Redis is left alone this long (seconds).
const QUIET_AFTER_FAILURE: i64 = 5;

/// The key of an ended session.
pub fn key(session_id: &str) -> String {
    format!("authgate:deny:sid:{session_id}")
}

pub struct DenyList {
    store: Option<LazyRedis>,
    /// How long an entry is kept: the access token lifetime.
    ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Unix second before which Redis is not asked (after a failure).
    quiet_until: AtomicI64,
    up: AtomicBool,
    /// Called with `true`/`false` when Redis is found up/down (metrics).
    on_redis_state: Box<dyn Fn(bool) + Send + Sync>,
}

impl std::fmt::Debug for DenyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyList")
            .field("redis", &self.store.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl DenyList {
    /// No shared list: the registry alone decides.
    pub fn off(clock: Arc<dyn Clock>) -> Self {
        Self {
            store: None,
            ttl: Duration::ZERO,
            clock,
            quiet_until: AtomicI64::new(0),
            up: AtomicBool::new(true),
            on_redis_state: Box::new(|_| {}),
        }
    }

    /// A list in the Redis server at `url` (connected at first use).
    pub fn redis(
        url: &str,
        ttl: Duration,
        clock: Arc<dyn Clock>,
        on_redis_state: Box<dyn Fn(bool) + Send + Sync>,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            store: Some(LazyRedis::open(url)?),
            ttl,
            clock,
            quiet_until: AtomicI64::new(0),
            up: AtomicBool::new(true),
            on_redis_state,
        })
    }

    /// The store, unless there is none or it failed a moment ago.
    fn store(&self) -> Option<&LazyRedis> {
        let store = self.store.as_ref()?;
        (self.clock.unix() >= self.quiet_until.load(Ordering::Relaxed)).then_some(store)
    }

    fn answered(&self) {
        if !self.up.swap(true, Ordering::SeqCst) {
            tracing::warn!("Redis is back: ended sessions are shared through it again");
            (self.on_redis_state)(true);
        }
    }

    fn failed(&self, error: &str) {
        self.quiet_until
            .store(self.clock.unix() + QUIET_AFTER_FAILURE, Ordering::Relaxed);
        if self.up.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                error,
                "Redis unreachable: ended sessions are checked in the database only (other replicas may accept their tokens for a few seconds)"
            );
            (self.on_redis_state)(false);
        }
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Option<T> {
        let result = match tokio::time::timeout(REDIS_TIMEOUT * 2, work).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        match result {
            Ok(value) => {
                self.answered();
                Some(value)
            }
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    /// Lists ended sessions. `false` when Redis did not take them (the
    /// registry refuses them all the same, within its cache time).
    pub async fn deny(&self, session_ids: &[String]) -> bool {
        let Some(store) = self.store.as_ref() else {
            return false;
        };
        if session_ids.is_empty() {
            return true;
        }
        let seconds = self.ttl.as_secs().max(1);
        let work = async {
            let mut connection = store.connection().await?;
            let mut pipe = redis::pipe();
            for id in session_ids {
                pipe.set_ex(key(id), 1, seconds).ignore();
            }
            pipe.query_async::<()>(&mut connection).await
        };
        self.bounded(work).await.is_some()
    }

    /// `Some(true)` when the session is listed, `Some(false)` when not,
    /// `None` when there is no list to ask (no Redis, or it does not answer).
    pub async fn listed(&self, session_id: &str) -> Option<bool> {
        let store = self.store()?;
        let work = async {
            let mut connection = store.connection().await?;
            redis::cmd("EXISTS")
                .arg(key(session_id))
                .query_async::<bool>(&mut connection)
                .await
        };
        self.bounded(work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn keys_are_namespaced() {
        assert_eq!(key("AxkkMuB3"), "authgate:deny:sid:AxkkMuB3");
    }

    #[tokio::test]
    async fn without_redis_nothing_is_listed_and_nothing_fails() {
        let list = DenyList::off(Arc::new(ManualClock::at(1_000)));
        assert_eq!(list.listed("s1").await, None);
        assert!(!list.deny(&["s1".into()]).await);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_left_alone_for_a_while() {
        let clock = Arc::new(ManualClock::at(1_000));
        let states = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&states);
        // Nothing listens on port 1: the connection is refused at once.
        let list = DenyList::redis(
            "redis://127.0.0.1:1",
            Duration::from_secs(60),
            clock.clone(),
            Box::new(move |up| seen.lock().unwrap().push(up)),
        )
        .unwrap();
        assert_eq!(list.listed("s1").await, None);
        assert_eq!(*states.lock().unwrap(), vec![false], "reported once");
        assert!(list.store().is_none(), "quiet after the failure");
        clock.advance(QUIET_AFTER_FAILURE);
        assert!(list.store().is_some(), "asked again later");
        assert_eq!(list.listed("s1").await, None);
        assert_eq!(states.lock().unwrap().len(), 1, "still down: no new report");
    }
}
