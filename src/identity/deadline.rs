//! One deadline per request for all its calls to the identity provider
//! (`KEYCLOAK_REQUEST_DEADLINE_MS`): `KEYCLOAK_TIMEOUT_MS` bounds each call,
//! this bounds a request that makes several in a row, so that a slow
//! Keycloak costs the client a 503 within the deadline, never a hung request.
//!
//! The deadline is task-local: the API sets it around the handling of a
//! request ([`scope`]); calls made outside such a scope (background work,
//! the import command) have none.

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with a deadline `within` from now for its identity calls.
pub async fn scope<F: Future>(within: Duration, work: F) -> F::Output {
    DEADLINE.scope(Instant::now() + within, work).await
}

/// What is left of the current request's deadline; `None` outside a scope.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// `work`, or `None` once the current request's deadline has passed.
pub async fn bounded<F: Future>(work: F) -> Option<F::Output> {
    match remaining() {
        None => Some(work.await),
        Some(left) if left.is_zero() => None,
        Some(left) => tokio::time::timeout(left, work).await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_the_deadline_is_cut_and_none_is_outside_a_scope() {
        assert_eq!(remaining(), None);
        assert_eq!(bounded(async { 1 }).await, Some(1));
        let cut = scope(Duration::from_millis(50), async {
            let quick = bounded(async { 1 }).await;
            let slow = bounded(tokio::time::sleep(Duration::from_secs(30))).await;
            let after = bounded(async { 2 }).await;
            (quick, slow, after)
        })
        .await;
        assert_eq!(cut, (Some(1), None, None));
    }
}
