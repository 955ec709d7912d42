//! Bearer tokens already verified, kept for reuse until they expire.
//!
//! A client sends the same access token with every request for as long as
//! it lives, and checking it again each time (decoding, the signature, the
//! claims) is most of what a bearer route costs: a few µs for an HS256
//! token and ten times that for a Keycloak RS256 one. Like Envoy's
//! `jwt_authn` cache, the verified claims are kept by the token's text:
//!
//! - only tokens that passed every check are kept; a refused token is
//!   checked again each time it is presented;
//! - a kept token is refused from the moment its `exp` is reached, exactly
//!   as without the cache: on a hit, `exp` is compared with the clock;
//! - revocation is not decided here: callers check it on every request;
//! - entries leave after [`KEEP_FOR`] at most (a Keycloak signing key taken
//!   out of the realm's JWKS stops counting within that time too), and the
//!   cache holds at most [`CAPACITY`] tokens.

use std::time::Duration;

use moka::sync::Cache;

/// Most tokens kept (a Keycloak access token is about 1 KB of text).
pub const CAPACITY: u64 = 4096;
/// Longest time a verified token is kept, whatever its `exp`.
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// Verified claims of type `T` by token text (a clone shares the cache).
pub struct VerifiedTokens<T> {
    cache: Cache<String, (T, f64)>,
}

impl<T: Clone + Send + Sync + 'static> Clone for VerifiedTokens<T> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
        }
    }
}

impl<T> std::fmt::Debug for VerifiedTokens<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for VerifiedTokens<T> {
    /// [`CAPACITY`] tokens, each for [`KEEP_FOR`] at most.
    fn default() -> Self {
        Self::new(CAPACITY, KEEP_FOR)
    }
}

impl<T: Clone + Send + Sync + 'static> VerifiedTokens<T> {
    pub fn new(capacity: u64, keep_for: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(keep_for)
                .build(),
        }
    }

    /// The claims `token` was verified with, unless it is unknown or its
    /// `exp` has been reached at `now` (Unix seconds).
    pub fn get(&self, token: &str, now: i64) -> Option<T> {
        let (claims, exp) = self.cache.get(token)?;
        if live(exp, now) {
            Some(claims)
        } else {
            self.cache.invalidate(token);
            None
        }
    }

    /// Keeps the claims of a token that passed every check; `exp` is its
    /// expiry (Unix seconds).
    pub fn insert(&self, token: &str, claims: T, exp: f64) {
        self.cache.insert(token.to_string(), (claims, exp));
    }
}

/// The token's own expiry check: refused from `exp` on.
fn live(exp: f64, now: i64) -> bool {
    exp.is_finite() && exp > now as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_verified_claims_until_their_expiry() {
        let kept = VerifiedTokens::new(CAPACITY, KEEP_FOR);
        assert_eq!(kept.get("a.b.c", 1_000), None);

        kept.insert("a.b.c", 42u32, 1_100.0);
        assert_eq!(kept.get("a.b.c", 1_000), Some(42));
        assert_eq!(kept.get("a.b.c", 1_099), Some(42));
        assert_eq!(kept.get("a.b.d", 1_000), None, "another token");

        // From `exp` on, as the token's own check: gone, not just refused.
        assert_eq!(kept.get("a.b.c", 1_100), None);
        assert_eq!(kept.get("a.b.c", 1_000), None);

        kept.insert("x.y.z", 7, f64::NAN);
        assert_eq!(
            kept.get("x.y.z", 1_000),
            None,
            "no usable exp: never served"
        );
    }

    #[test]
    fn holds_at_most_its_capacity() {
        let kept = VerifiedTokens::new(8, KEEP_FOR);
        for i in 0..100 {
            kept.insert(&format!("token-{i}"), i, 2_000.0);
        }
        kept.cache.run_pending_tasks();
        assert!(
            kept.cache.entry_count() <= 8,
            "{}",
            kept.cache.entry_count()
        );
    }
}
