//! Revocations every replica refuses at its next request, from memory.
//!
//! A revocation ends sessions (by the UUID tokens carry as `device_id`),
//! sets a user's cut-off (tokens issued before an instant are refused: all
//! of them, or access tokens only when the user's roles changed), or sets a
//! cut-off for everyone (Keycloak's "sign out all active sessions" of the
//! realm). Whoever revokes records it in the store first (the registry, or
//! native mode's tables: the authority, which every replica re-reads behind
//! a few seconds of cache), then hands it to [`Revocations::revoke`]:
//!
//! - this replica refuses the tokens at once (an in-process set);
//! - with `REDIS_URL`, the revocation is added to a sorted set in Redis
//!   (scored by when it stops mattering, the access-token lifetime later)
//!   and published on a channel; every replica follows the channel into its
//!   own set ([`shared`]), and reads the whole sorted set again each time it
//!   (re)connects, so a replica that was away misses nothing still in force.
//!
//! A request therefore checks memory only. While Redis is away, other
//! replicas learn of a revocation through the store within its cache time
//! (5 s), as without Redis.
//!
//! Imports: `redis_conn`, `clock`, `metrics`.

pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Who or what ended the sessions (metrics and the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The user: sign-out, or one of their devices ended through `/auth/sessions`.
    Signout,
    /// Keycloak's back-channel logout (OpenID Connect Back-Channel Logout 1.0).
    Backchannel,
    /// A change in Keycloak read from its admin events.
    AdminEvent,
    /// An authgate admin: force-logout, deletion of a user.
    Admin,
    /// A password reset or a new password through authgate.
    PasswordReset,
}

impl Source {
    pub const ALL: [Self; 5] = [
        Self::Signout,
        Self::Backchannel,
        Self::AdminEvent,
        Self::Admin,
        Self::PasswordReset,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Signout => "signout",
            Self::Backchannel => "backchannel",
            Self::AdminEvent => "admin_event",
            Self::Admin => "admin",
            Self::PasswordReset => "password_reset",
        }
    }
}

/// Which of a user's tokens a cut-off refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Access and refresh tokens (the user's sessions end).
    All,
    /// Access tokens only: their roles changed, a refresh brings new ones.
    Access,
}

/// Tokens of a user issued before `not_before` (Unix seconds) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCutoff {
    pub user_id: i64,
    pub not_before: i64,
    pub reach: Reach,
}

/// What one revocation ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocation {
    /// Session UUIDs (the tokens' `device_id`).
    pub sessions: Vec<String>,
    pub users: Vec<UserCutoff>,
    /// Every token issued before this instant (Unix seconds).
    pub everyone: Option<i64>,
}

impl Revocation {
    pub fn sessions(ids: impl IntoIterator<Item = String>) -> Self {
        Self {
            sessions: ids.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Every token of the user issued before `not_before`.
    pub fn user(user_id: i64, not_before: i64) -> Self {
        Self::default().and_user(user_id, not_before, Reach::All)
    }

    pub fn and_user(mut self, user_id: i64, not_before: i64, reach: Reach) -> Self {
        self.users.push(UserCutoff {
            user_id,
            not_before,
            reach,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.users.is_empty() && self.everyone.is_none()
    }

    /// The entries written to Redis and published, one line each.
    fn entries(&self) -> Vec<Entry> {
        self.sessions
            .iter()
            .map(|id| Entry::Session(id.clone()))
            .chain(self.users.iter().map(|cut| Entry::User(*cut)))
            .chain(self.everyone.map(Entry::Everyone))
            .collect()
    }
}

/// One revocation entry, as Redis keeps and carries it: `s <uuid>`,
/// `u <user id> <not before>`, `a <user id> <not before>` (access tokens
/// only), `r <not before>` (everyone).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Session(String),
    User(UserCutoff),
    Everyone(i64),
}

impl Entry {
    fn encode(&self) -> String {
        match self {
            Self::Session(id) => format!("s {id}"),
            Self::User(cut) => {
                let tag = match cut.reach {
                    Reach::All => 'u',
                    Reach::Access => 'a',
                };
                format!("{tag} {} {}", cut.user_id, cut.not_before)
            }
            Self::Everyone(at) => format!("r {at}"),
        }
    }

    fn decode(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let tag = parts.next()?;
        let entry = match tag {
            "s" => {
                let id = parts.next().filter(|id| !id.is_empty() && id.len() <= 64)?;
                Self::Session(id.to_string())
            }
            "u" | "a" => Self::User(UserCutoff {
                user_id: parts.next()?.parse().ok()?,
                not_before: parts.next()?.parse().ok()?,
                reach: if tag == "u" {
                    Reach::All
                } else {
                    Reach::Access
                },
            }),
            "r" => Self::Everyone(parts.next()?.parse().ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(entry)
    }
}

/// A user's cut-offs (Unix seconds; 0: none).
#[derive(Debug, Clone, Copy, Default)]
struct Cutoffs {
    all: i64,
    access: i64,
}

/// The process's set of revocations, fed locally and (with Redis) by every
/// other replica.
pub struct Revocations {
    sessions: Cache<String, ()>,
    users: Cache<i64, Cutoffs>,
    everyone: AtomicI64,
    /// How long an entry matters: the access-token lifetime.
    ttl: Duration,
    shared: Option<shared::Shared>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("sessions", &self.sessions.entry_count())
            .field("users", &self.users.entry_count())
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Revocations {
    /// Revocations of this process only (no Redis): other replicas learn
    /// of them through the store.
    pub fn local(ttl: Duration, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        for source in Source::ALL {
            metrics.revocations.with_label_values(&[source.label()]);
        }
        Self {
            sessions: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            users: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            everyone: AtomicI64::new(0),
            ttl,
            shared: None,
            clock,
            metrics,
        }
    }

    /// Shares revocations with the other replicas through Redis.
    pub fn with_shared(mut self, shared: shared::Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether a token is refused: its session ended, or it was issued
    /// before a cut-off of its user (`access`: it is an access token) or of
    /// everyone. Memory only.
    pub fn refuses(
        &self,
        user_id: i64,
        device_id: Option<&str>,
        issued_at: Option<f64>,
        access: bool,
    ) -> bool {
        if device_id.is_some_and(|id| self.sessions.contains_key(id)) {
            return true;
        }
        // A token without `iat` predates every cut-off.
        let issued = issued_at.map_or(i64::MIN, |iat| iat.floor() as i64);
        if issued < self.everyone.load(Ordering::Relaxed) {
            return true;
        }
        match self.users.get(&user_id) {
            Some(cut) => issued < cut.all || (access && issued < cut.access),
            None => false,
        }
    }

    /// The instant before which the user's access tokens are refused
    /// because their roles changed, if any (the proxy's role cache uses it).
    pub fn access_cutoff(&self, user_id: i64) -> Option<i64> {
        self.users
            .get(&user_id)
            .map(|cut| cut.access.max(cut.all))
            .filter(|at| *at > 0)
    }

    /// Refuses what `revocation` names here at once, and on the other
    /// replicas through Redis (when set; a failure is logged and the
    /// store's cache time bounds it). Counted by source.
    pub async fn revoke(&self, revocation: &Revocation, source: Source) {
        if revocation.is_empty() {
            return;
        }
        self.metrics
            .revocations
            .with_label_values(&[source.label()])
            .inc();
        let entries = revocation.entries();
        for entry in &entries {
            self.learn(entry);
        }
        if let Some(shared) = &self.shared {
            let expires = self.clock.unix() + self.ttl.as_secs().max(1) as i64;
            let lines: Vec<String> = entries.iter().map(Entry::encode).collect();
            shared.publish(&lines, expires, self.clock.unix()).await;
        }
    }

    /// Takes in one entry (from here, or another replica).
    fn learn(&self, entry: &Entry) {
        match entry {
            Entry::Session(id) => self.sessions.insert(id.clone(), ()),
            Entry::User(cut) => {
                let cut = *cut;
                self.users.entry(cut.user_id).and_upsert_with(|known| {
                    let mut cutoffs = known.map(|e| *e.value()).unwrap_or_default();
                    match cut.reach {
                        Reach::All => cutoffs.all = cutoffs.all.max(cut.not_before),
                        Reach::Access => cutoffs.access = cutoffs.access.max(cut.not_before),
                    }
                    cutoffs
                });
            }
            Entry::Everyone(at) => {
                self.everyone.fetch_max(*at, Ordering::Relaxed);
            }
        }
    }

    /// Takes in the lines of a message or of the shared set; returns how
    /// many were understood.
    fn learn_lines<'a>(&self, lines: impl IntoIterator<Item = &'a str>) -> usize {
        let mut understood = 0;
        for line in lines {
            match Entry::decode(line) {
                Some(entry) => {
                    self.learn(&entry);
                    understood += 1;
                }
                None => tracing::warn!(line, "revocation entry not understood; ignored"),
            }
        }
        understood
    }

    /// Follows the other replicas' revocations (with Redis) until the
    /// process ends: see [`shared::Shared::follow`].
    pub async fn follow(self: Arc<Self>) {
        let Some(shared) = &self.shared else {
            return;
        };
        shared.follow(&self).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn revocations() -> Revocations {
        Revocations::local(
            Duration::from_secs(3600),
            Arc::new(ManualClock::at(1_000)),
            Arc::new(Metrics::new().unwrap()),
        )
    }

    #[test]
    fn entries_round_trip_and_odd_lines_are_refused() {
        let revocation = Revocation::sessions(["6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13".into()])
            .and_user(42, 1_700_000_000, Reach::All)
            .and_user(43, 1_700_000_001, Reach::Access);
        let revocation = Revocation {
            everyone: Some(1_700_000_002),
            ..revocation
        };
        let entries = revocation.entries();
        let lines: Vec<String> = entries.iter().map(Entry::encode).collect();
        assert_eq!(
            lines,
            [
                "s 6f1c2a8e-3b7d-4e59-9a41-2c8d7f0b5e13",
                "u 42 1700000000",
                "a 43 1700000001",
                "r 1700000002"
            ]
        );
        let decoded: Vec<Entry> = lines.iter().filter_map(|l| Entry::decode(l)).collect();
        assert_eq!(decoded, entries);
        for odd in [
            "",
            "s",
            "s ",
            "x 1",
            "u 42",
            "u x 1",
            "r 1 2",
            "a 1 2 3",
            &format!("s {}", "x".repeat(65)),
        ] {
            assert_eq!(Entry::decode(odd), None, "{odd:?}");
        }
    }

    #[tokio::test]
    async fn ended_sessions_and_cutoffs_are_refused_from_memory() {
        let revs = revocations();
        assert!(!revs.refuses(1, Some("d1"), Some(100.0), true));
        revs.revoke(&Revocation::sessions(["d1".into()]), Source::Signout)
            .await;
        assert!(revs.refuses(1, Some("d1"), Some(100.0), true));
        assert!(revs.refuses(1, Some("d1"), Some(100.0), false));
        assert!(!revs.refuses(1, Some("d2"), Some(100.0), true));

        // A user's cut-off: tokens issued before it, refresh tokens too.
        revs.revoke(&Revocation::user(2, 500), Source::PasswordReset)
            .await;
        assert!(revs.refuses(2, None, Some(499.9), true));
        assert!(revs.refuses(2, None, Some(499.0), false));
        assert!(revs.refuses(2, None, None, true), "no iat: before it");
        assert!(!revs.refuses(2, None, Some(500.0), true), "same second");
        assert!(!revs.refuses(3, None, Some(1.0), true), "another user");
        // An earlier cut-off learnt later does not lower it.
        revs.revoke(&Revocation::user(2, 100), Source::Admin).await;
        assert!(revs.refuses(2, None, Some(499.0), true));

        // Roles changed: access tokens only.
        revs.revoke(
            &Revocation::default().and_user(4, 700, Reach::Access),
            Source::AdminEvent,
        )
        .await;
        assert!(revs.refuses(4, None, Some(699.0), true));
        assert!(!revs.refuses(4, None, Some(699.0), false));
        assert_eq!(revs.access_cutoff(4), Some(700));
        assert_eq!(revs.access_cutoff(5), None);

        // Everyone.
        revs.revoke(
            &Revocation {
                everyone: Some(300),
                ..Revocation::default()
            },
            Source::AdminEvent,
        )
        .await;
        assert!(revs.refuses(9, None, Some(299.0), false));
        assert!(!revs.refuses(9, None, Some(300.0), false));

        let text = revs.metrics.render().unwrap();
        assert!(text.contains("authgate_revocations_total{source=\"signout\"} 1"));
        assert!(text.contains("authgate_revocations_total{source=\"admin_event\"} 2"));
        assert!(text.contains("authgate_revocations_total{source=\"backchannel\"} 0"));
    }

    #[tokio::test]
    async fn nothing_to_revoke_counts_nothing() {
        let revs = revocations();
        revs.revoke(&Revocation::default(), Source::Backchannel)
            .await;
        let text = revs.metrics.render().unwrap();
        assert!(text.contains("authgate_revocations_total{source=\"backchannel\"} 0"));
    }

    #[test]
    fn lines_learnt_from_other_replicas() {
        let revs = revocations();
        assert_eq!(revs.learn_lines(["s abc", "u 7 50", "bogus"]), 2);
        assert!(revs.refuses(1, Some("abc"), Some(1.0), true));
        assert!(revs.refuses(7, None, Some(49.0), false));
    }
}
