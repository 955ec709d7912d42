//! The small value types settings are made of, with the parsing of their
//! text: the store a database URL names, a rate, a route policy, the
//! password hashing bounds. The modules that act on them (`store`,
//! `ratelimit`, `routes`, the native backend's hashing) use these types.
//!
//! Imports: nothing of the crate.

use std::num::NonZeroU32;
use std::time::Duration;

/// The store a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }
}

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
}

/// Who may pass a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Policy {
    Public,
    #[default]
    Authenticated,
    /// Authenticated and holding this role.
    Role(String),
}

impl Policy {
    /// `public`, `authenticated` or `role:<name>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "public" => Some(Self::Public),
            "authenticated" => Some(Self::Authenticated),
            _ => text
                .strip_prefix("role:")
                .filter(|role| !role.is_empty())
                .map(|role| Self::Role(role.to_string())),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::Authenticated => f.write_str("authenticated"),
            Self::Role(role) => write!(f, "role:{role}"),
        }
    }
}

/// The password hashing threads and their queue (`HASHING_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Threads hashing at once (at least one).
    pub threads: usize,
    /// Jobs waiting for a thread, at most (at least one).
    pub queue_max: usize,
    /// How long a job may wait for a thread before it is given up.
    pub max_wait: Duration,
}

impl HashingLimits {
    /// The `Retry-After` of a refusal, in seconds: the wait bound, at least
    /// one second (within it, the queue has turned over).
    pub fn retry_after(&self) -> u64 {
        self.max_wait.as_secs_f64().ceil().max(1.0) as u64
    }
}
