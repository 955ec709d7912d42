//! Time as a parameter: production reads the system clock, tests pin it.
//!
//! Imports: nothing of the crate.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDateTime, Utc};

/// Source of the current time for everything that expires (tokens, mail quotas).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Seconds since the Unix epoch.
    fn unix(&self) -> i64 {
        self.now().timestamp()
    }

    /// The legacy database stores naive UTC timestamps (`datetime.utcnow()`).
    fn naive_utc(&self) -> NaiveDateTime {
        self.now().naive_utc()
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    unix: AtomicI64,
}

impl ManualClock {
    pub fn at(unix: i64) -> Self {
        Self {
            unix: AtomicI64::new(unix),
        }
    }

    pub fn advance(&self, seconds: i64) {
        self.unix.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.unix.load(Ordering::SeqCst), 0).unwrap_or_default()
    }
}
