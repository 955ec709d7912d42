//! Reads Keycloak's admin events incrementally and turns each into the
//! matching revocation ([`KeycloakBackend::apply`]), for what Keycloak
//! does not announce by back-channel logout: a user disabled or deleted, a
//! password reset or credential removed, roles removed, the realm signed
//! out. One replica of the cluster reads at a time (a lease in PostgreSQL,
//! renewed at each interval and taken over when it lapses), one Keycloak
//! call per interval whatever the number of replicas, never on a request's
//! path.
//!
//! The cursor (Keycloak's event time, and the events handled near it) is
//! saved in PostgreSQL and only moves past events handled: while Keycloak
//! (or the database) does not answer, the reader retries with back-off
//! and, once it answers again, reads on from where it stopped. Each poll
//! reads again the last few seconds before the cursor, in case an event of
//! that time committed late; those already handled are skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin_events::{AdminEvent, changes};
use super::event_rows::Cursor;
use crate::audit::{AuditEvent, AuditLog};
use crate::clock::Clock;
use crate::identity::IdentityError;
use crate::metrics::Metrics;
use crate::revocation::{Revocations, Source};

/// How far before the cursor each poll reads again (milliseconds).
pub const OVERLAP_MS: i64 = 5_000;
/// Events per request.
const PAGE: usize = 100;
/// Requests per poll at most (a backlog is read over several polls).
const PAGES_PER_POLL: usize = 20;
/// The longest wait between two attempts while Keycloak fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The least time a lease lasts.
const MIN_LEASE: Duration = Duration::from_secs(15);

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error(
        "Keycloak answered {0} to admin-events: the service account needs realm-management view-events"
    )]
    Forbidden(u16),
}

impl From<super::client::KcError> for PollError {
    fn from(err: super::client::KcError) -> Self {
        Self::Identity(err.into())
    }
}

pub struct EventReader {
    backend: Arc<KeycloakBackend>,
    revocations: Arc<Revocations>,
    audit: Arc<dyn AuditLog>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    /// This replica, as the lease names it.
    holder: Uuid,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("interval", &self.interval)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub fn new(
        backend: Arc<KeycloakBackend>,
        revocations: Arc<Revocations>,
        audit: Arc<dyn AuditLog>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        interval: Duration,
    ) -> Self {
        for outcome in ["ok", "failed"] {
            metrics.admin_event_polls.with_label_values(&[outcome]);
        }
        Self {
            backend,
            revocations,
            audit,
            metrics,
            clock,
            interval,
            holder: Uuid::new_v4(),
        }
    }

    fn realm(&self) -> &str {
        &self.backend.http.settings().realm
    }

    fn lease(&self) -> Duration {
        (self.interval * 3).max(MIN_LEASE)
    }

    /// Reads until the process ends.
    pub async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: u32 = 0;
        let mut next_poll = Instant::now();
        let mut holding = false;
        loop {
            ticker.tick().await;
            let lease_ms = i64::try_from(self.lease().as_millis()).unwrap_or(i64::MAX);
            let start_ms = self.clock.now().timestamp_millis();
            let cursor = match self
                .backend
                .registry
                .take_event_lease(self.realm(), self.holder, lease_ms, start_ms)
                .await
            {
                Ok(cursor) => cursor,
                Err(err) => {
                    tracing::warn!(error = %err, "admin-event reader: the lease could not be taken");
                    None
                }
            };
            let Some(cursor) = cursor else {
                if holding {
                    tracing::info!("admin-event reader: another replica reads now");
                }
                holding = false;
                self.metrics.admin_event_reader.set(0);
                continue;
            };
            if !holding {
                tracing::info!(
                    cursor_ms = cursor.time_ms,
                    interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
                    "admin-event reader: this replica reads Keycloak's admin events"
                );
            }
            holding = true;
            self.metrics.admin_event_reader.set(1);
            if Instant::now() < next_poll {
                continue;
            }
            match self.poll(cursor).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::warn!(
                            failures,
                            "admin-event reader: Keycloak answers again; read on from where it stopped"
                        );
                    }
                    failures = 0;
                    self.metrics
                        .admin_event_polls
                        .with_label_values(&["ok"])
                        .inc();
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let wait = self
                        .interval
                        .saturating_mul(1 << failures.min(6))
                        .min(MAX_BACKOFF);
                    next_poll = Instant::now() + wait;
                    self.metrics
                        .admin_event_polls
                        .with_label_values(&["failed"])
                        .inc();
                    tracing::warn!(
                        error = %err,
                        failures,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "admin-event reader: poll failed; requests are not affected, nothing is skipped"
                    );
                }
            }
        }
    }

    /// Reads the events after the cursor and handles them in order; the
    /// cursor is saved past those handled, even when one fails.
    async fn poll(&self, mut cursor: Cursor) -> Result<(), PollError> {
        let from = cursor.time_ms - OVERLAP_MS;
        let own = self.backend.http.service_account_id().await?;
        let mut outcome = Ok(());
        'pages: for page in 0..PAGES_PER_POLL {
            let events = match self
                .backend
                .admin
                .admin_events(from, page * PAGE, PAGE)
                .await?
            {
                Ok(events) => events,
                Err(status) => {
                    outcome = Err(PollError::Forbidden(status));
                    break;
                }
            };
            for event in &events {
                let key = event.key();
                if event.time < from || cursor.has_seen(event.time, &key) {
                    continue;
                }
                if let Err(err) = self.handle(event, own.as_deref()).await {
                    outcome = Err(err.into());
                    break 'pages;
                }
                cursor.handled(event.time, &key, OVERLAP_MS);
            }
            if events.len() < PAGE {
                break;
            }
        }
        self.backend
            .registry
            .save_event_cursor(self.realm(), self.holder, &cursor)
            .await?;
        outcome
    }

    /// One event: its changes recorded, then refused everywhere.
    async fn handle(&self, event: &AdminEvent, own: Option<&str>) -> Result<(), IdentityError> {
        let count = |change: &str| {
            self.metrics.admin_events.with_label_values(&[change]).inc();
        };
        // authgate's own calls already did what they had to (and a TOTP
        // enrolment must not sign the user out).
        if own.is_some() && event.author() == own {
            count("own");
            return Ok(());
        }
        let found = changes(event);
        if found.is_empty() {
            count("ignored");
            return Ok(());
        }
        for change in &found {
            let applied = self.backend.apply(change, event.time).await?;
            count(change.label());
            if applied.revocation.is_empty() {
                continue;
            }
            self.revocations
                .revoke(&applied.revocation, Source::AdminEvent)
                .await;
            tracing::info!(
                change = change.label(),
                user_id = applied.user_id,
                sessions = applied.revocation.sessions.len(),
                "revoked: a change in Keycloak"
            );
            let mut audit = AuditEvent::success("session.revoked").detail(json!({
                "source": Source::AdminEvent.label(),
                "change": change.label(),
                "keycloak_event": event.id,
                "sessions": applied.revocation.sessions,
                "not_before": applied.revocation.users.first().map(|cut| cut.not_before),
                "everyone_before": applied.revocation.everyone,
            }));
            if let Some(user_id) = applied.user_id {
                audit = audit.subject(user_id);
            }
            let at = self.clock.naive_utc();
            if let Err(err) = self.audit.append(&audit, at).await {
                self.metrics.audit_failures.inc();
                tracing::warn!(error = %err, "audit event not stored");
            }
        }
        Ok(())
    }
}
