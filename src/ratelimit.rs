//! Rate limits behind one interface: shared by every replica through Redis
//! (a fixed window per key, counted by a Lua script), or in-process
//! (governor's GCRA) when no Redis is configured or Redis does not answer.
//! A Redis outage is logged and counted once, served by the local limiter
//! meanwhile, and shared limits resume by themselves when Redis is back.
//!
//! Imports: `config` (the rates), `redis_conn`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use crate::config::Quota;
use crate::redis_conn::{LazyRedis, REDIS_TIMEOUT};

impl Quota {
    fn governor(self) -> governor::Quota {
        let per_cell = self.period / self.count.get();
        governor::Quota::with_period(per_cell.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| governor::Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

/// A limiter per key (an IP address, an account name).
pub struct KeyedLimiter<C: Clock = DefaultClock> {
    limiter: governor::RateLimiter<
        String,
        DefaultKeyedStateStore<String>,
        C,
        NoOpMiddleware<<C as Clock>::Instant>,
    >,
    clock: C,
    checks: AtomicU64,
}

impl<C: Clock> std::fmt::Debug for KeyedLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedLimiter")
    }
}

impl KeyedLimiter<DefaultClock> {
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock + Clone> KeyedLimiter<C> {
    pub fn with_clock(quota: Quota, clock: C) -> Self {
        Self {
            limiter: governor::RateLimiter::new(
                quota.governor(),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when the key has used its quota; `wait` is how long until the next cell.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        // Forget idle keys now and then so the map does not grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// INCR the window's counter, start the window on the first hit, and
/// answer the milliseconds left when the count is over the limit (else -1).
const WINDOW_SCRIPT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if count > tonumber(ARGV[2]) then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); left = tonumber(ARGV[1]) end
  return left
end
return -1
";

/// Redis-backed counters shared by all replicas.
pub struct RedisLimiter {
    redis: LazyRedis,
    script: redis::Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisLimiter")
    }
}

impl RedisLimiter {
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: LazyRedis::open(url)?,
            script: redis::Script::new(WINDOW_SCRIPT),
        })
    }

    /// Asks the server for a PONG (for `check-config`).
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut connection = self.redis.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
    }

    /// `Ok(None)` within the limit, `Ok(Some(wait))` over it.
    async fn check(&self, name: &str, quota: Quota, key: &str) -> Result<Option<Duration>, String> {
        let work = async {
            let mut connection = self.redis.connection().await.map_err(|e| e.to_string())?;
            let window_ms = u64::try_from(quota.period.as_millis()).unwrap_or(u64::MAX);
            let left: i64 = self
                .script
                .key(format!("authgate:rl:{name}:{key}"))
                .arg(window_ms)
                .arg(quota.count.get())
                .invoke_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok(u64::try_from(left).ok().map(Duration::from_millis))
        };
        match tokio::time::timeout(REDIS_TIMEOUT * 2, work).await {
            Ok(result) => result,
            Err(_) => Err("timed out".into()),
        }
    }
}

/// Every named limit of the gateway, one interface for both backends.
pub struct RateLimiter {
    local: Mutex<HashMap<String, Arc<KeyedLimiter>>>,
    redis: Option<RedisLimiter>,
    redis_up: AtomicBool,
    /// Called with `true`/`false` when Redis is found up/down (metrics).
    on_redis_state: Box<dyn Fn(bool) + Send + Sync>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(
        redis: Option<RedisLimiter>,
        on_redis_state: Box<dyn Fn(bool) + Send + Sync>,
    ) -> Self {
        Self {
            local: Mutex::new(HashMap::new()),
            redis,
            redis_up: AtomicBool::new(true),
            on_redis_state,
        }
    }

    pub fn local_only() -> Self {
        Self::new(None, Box::new(|_| {}))
    }

    /// `Err(wait)` when `key` has used `name`'s quota.
    pub async fn check(&self, name: &str, quota: Quota, key: &str) -> Result<(), Duration> {
        if let Some(redis) = &self.redis {
            match redis.check(name, quota, key).await {
                Ok(verdict) => {
                    if !self.redis_up.swap(true, Ordering::SeqCst) {
                        tracing::warn!("Redis is back: rate limits are shared again");
                    }
                    (self.on_redis_state)(true);
                    return verdict.map_or(Ok(()), Err);
                }
                Err(err) => {
                    if self.redis_up.swap(false, Ordering::SeqCst) {
                        tracing::warn!(error = %err, "Redis unreachable: rate limits fall back to this replica's counters");
                    }
                    (self.on_redis_state)(false);
                }
            }
        }
        self.local_limiter(name, quota).check(key)
    }

    fn local_limiter(&self, name: &str, quota: Quota) -> Arc<KeyedLimiter> {
        let mut local = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            local
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(KeyedLimiter::new(quota))),
        )
    }
}

/// Seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn parses_quotas() {
        let q = Quota::parse("10/minute").unwrap();
        assert_eq!(q.count.get(), 10);
        assert_eq!(q.period, Duration::from_secs(60));
        assert_eq!(Quota::parse("5/s").unwrap().period, Duration::from_secs(1));
        assert!(Quota::parse("lots").is_err());
        assert!(Quota::parse("0/minute").is_err());
        assert!(Quota::parse("3/fortnight").is_err());
    }

    #[test]
    fn limits_per_key_and_refills_with_time() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::with_clock(Quota::parse("3/minute").unwrap(), clock.clone());
        for _ in 0..3 {
            assert!(limiter.check("1.2.3.4").is_ok());
        }
        let wait = limiter.check("1.2.3.4").unwrap_err();
        assert_eq!(retry_after_seconds(wait), 20);
        assert!(
            limiter.check("5.6.7.8").is_ok(),
            "other keys are not affected"
        );
        clock.advance(Duration::from_secs(20));
        assert!(limiter.check("1.2.3.4").is_ok());
        assert!(limiter.check("1.2.3.4").is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
