//! In-process rate limits (governor's GCRA), keyed by client IP or account.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

/// `count` requests per `period`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Quota {
    /// Parses `N/second`, `N/minute`, `N/hour` (also `s`, `min`, `m`, `h`).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const FORMAT: &str = "must look like 10/minute (per second, minute or hour)";
        let (count, unit) = text.split_once('/').ok_or(FORMAT)?;
        let count: u32 = count.trim().parse().map_err(|_| FORMAT)?;
        let count = NonZeroU32::new(count).ok_or(FORMAT)?;
        let period = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(FORMAT),
        };
        Ok(Self { count, period })
    }

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
