//! `authgate import-users`: moves the legacy `users` table into Keycloak,
//! each user with their integer id, verified flag and existing PBKDF2 hash
//! (imported as a `pbkdf2-sha256` credential), so everyone signs in with
//! the password they already have.
//!
//! The users are read in id order a page at a time ([`legacy`]) and sent in
//! batches through Keycloak's partial import (`ifResourceExists: SKIP`),
//! several batches in flight ([`batch`]). A checkpoint in PostgreSQL moves
//! past a batch once it and every batch before it are recorded
//! ([`checkpoint`]), so a run cut short continues where it stopped; Keycloak
//! skipping users that exist, and the registry of imported ids, make sure
//! nobody is created twice. Users created in Keycloak meanwhile are left
//! as they are.

mod batch;
pub mod checkpoint;
pub mod legacy;
pub mod report;

use std::cell::Cell;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin::{Admin, LEGACY_ID};
use super::client::{KcClient, KcError};
use crate::identity::IdentityError;
use crate::password::Pbkdf2Hash;
use batch::BatchOutcome;
use checkpoint::{Checkpoints, RunLock};
use legacy::LegacyUser;
pub use report::{Ending, Failure, Mode, Report, Tally};

/// How the import runs.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Users per partial import (`IMPORT_BATCH_SIZE`).
    pub batch_size: usize,
    /// Batches in flight (`IMPORT_CONCURRENCY`).
    pub concurrency: usize,
    /// Check every user, write nothing.
    pub dry_run: bool,
    /// Start at the first user, forgetting where an earlier run stopped.
    pub restart: bool,
}

/// How the run began.
#[derive(Debug, Clone)]
pub struct Started {
    /// Live legacy users, those handled by earlier runs included.
    pub total: u64,
    /// Handled by earlier runs.
    pub handled: u64,
    pub resumed_after: Option<i32>,
    pub mode: Mode,
    pub batch_size: usize,
    pub concurrency: usize,
}

/// The run so far.
#[derive(Debug, Clone)]
pub struct Progressed {
    /// Users handled (earlier runs included), in batches complete so far.
    pub handled: u64,
    pub total: u64,
    pub totals: Tally,
}

/// What a person watching the run hears.
pub trait ImportEvents {
    fn started(&self, started: &Started);
    /// After each batch is recorded.
    fn progressed(&self, progress: &Progressed);
    /// Something worth a line of its own (a fallback, a retry).
    fn notice(&self, message: &str);
    /// Keycloak has taken batch `number` (from 1) and the run has not
    /// recorded it yet.
    fn answered(&self, _number: u64) {}
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Keycloak(#[from] KcError),
    #[error(transparent)]
    Store(#[from] IdentityError),
    #[error("another import-users is running on this database")]
    Busy,
    /// Stopped while waiting for Keycloak.
    #[error("interrupted")]
    Interrupted,
}

/// What happened to one user, as the one-at-a-time path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    /// Already in Keycloak; nothing written.
    Skipped,
    Failed(String),
}

/// The Keycloak credential for a passlib hash: salt and checksum in standard
/// base64, the iteration count from the hash.
pub fn credential_of(stored: &str) -> Result<serde_json::Value, String> {
    let hash = Pbkdf2Hash::parse(stored).map_err(|err| err.to_string())?;
    let credential_data = json!({ "hashIterations": hash.rounds, "algorithm": "pbkdf2-sha256" });
    let secret_data = json!({ "value": hash.checksum_base64(), "salt": hash.salt_base64() });
    Ok(json!({
        "type": "password",
        "credentialData": credential_data.to_string(),
        "secretData": secret_data.to_string(),
        "temporary": false,
    }))
}

/// The namespace of [`keycloak_id_of`].
const KEYCLOAK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x66ad39b3_9fed_47f4_b982_ceb59e3a5785);

/// The Keycloak id a partial import gives a legacy user: derived from the
/// realm and the legacy id (UUID v5), so that Keycloak refuses to create
/// one legacy user twice, even under another username or address (ids are
/// unique across realms, hence the realm).
pub fn keycloak_id_of(realm: &str, legacy_id: i32) -> Uuid {
    Uuid::new_v5(
        &KEYCLOAK_ID_NAMESPACE,
        format!("{realm}/{legacy_id}").as_bytes(),
    )
}

/// A legacy user with an importable hash.
#[derive(Debug)]
struct Ready<'u> {
    user: &'u LegacyUser,
    credential: serde_json::Value,
    /// The id a partial import gives it ([`keycloak_id_of`]).
    keycloak_id: Uuid,
}

impl Ready<'_> {
    /// The user as Keycloak takes it: the legacy id as `legacy_id`, the
    /// verified flag as `emailVerified`, the hash as the credential.
    fn representation(&self) -> serde_json::Value {
        let user = self.user;
        json!({
            "username": user.username,
            "email": user.email,
            "enabled": true,
            "emailVerified": user.is_verified,
            "attributes": { LEGACY_ID: [user.id.to_string()] },
            "credentials": [self.credential],
        })
    }

    /// For a partial import, which takes the id given (the Admin API's
    /// create ignores it).
    fn representation_with_id(&self) -> serde_json::Value {
        let mut representation = self.representation();
        if let Some(fields) = representation.as_object_mut() {
            fields.insert("id".into(), json!(self.keycloak_id));
        }
        representation
    }
}

/// What a run has done so far.
#[derive(Debug)]
struct Ledger {
    /// The whole import, as far as it is checkpointed.
    totals: Tally,
    /// Everything this run did, checkpointed or not.
    this_run: Tally,
    failures: Vec<Failure>,
    handled_up_to: Option<i32>,
    /// The first error: no batch starts after it, none is checkpointed past it.
    problem: Option<ImportError>,
}

impl Ledger {
    /// Settles the next batch in order: moves the checkpoint past it (when
    /// there is one to keep) unless the run met a problem before. Whether
    /// it counted.
    async fn settle(
        &mut self,
        result: Result<BatchOutcome, ImportError>,
        checkpoints: Option<&Checkpoints<'_>>,
        now: chrono::NaiveDateTime,
    ) -> bool {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(err) => {
                // The batches still in flight finish; the next run sees them again.
                self.problem.get_or_insert(err);
                return false;
            }
        };
        self.this_run.add(&outcome.tally);
        if self.problem.is_some() {
            return false;
        }
        if let Some(checkpoints) = checkpoints
            && let Err(err) = checkpoints
                .advance(
                    outcome.last_legacy_id,
                    &outcome.tally,
                    &outcome.failures,
                    now,
                )
                .await
        {
            self.problem = Some(err.into());
            return false;
        }
        self.totals.add(&outcome.tally);
        self.failures.extend(outcome.failures);
        self.handled_up_to = Some(outcome.last_legacy_id);
        true
    }
}

/// One run of the import.
#[derive(Debug)]
pub struct Importer<'a> {
    backend: &'a KeycloakBackend,
    /// The import client's Admin API, for partial imports; every other call
    /// goes through the gateway's own client.
    bulk: Admin,
    bulk_http: std::sync::Arc<KcClient>,
    settings: ImportSettings,
    mode: Cell<Mode>,
}

impl<'a> Importer<'a> {
    pub fn new(
        backend: &'a KeycloakBackend,
        mut settings: ImportSettings,
    ) -> Result<Self, ImportError> {
        let kc = backend.http.settings();
        let bulk_http = std::sync::Arc::new(
            backend
                .http
                .for_client(&kc.import_client_id, &kc.import_client_secret)
                .map_err(|err| KcError::Unavailable(err.to_string()))?,
        );
        settings.batch_size = settings.batch_size.max(1);
        settings.concurrency = settings.concurrency.max(1);
        let mode = if settings.dry_run {
            Mode::DryRun
        } else {
            Mode::PartialImport
        };
        Ok(Self {
            backend,
            bulk: Admin::new(std::sync::Arc::clone(&bulk_http)),
            bulk_http,
            settings,
            mode: Cell::new(mode),
        })
    }

    /// Imports every live legacy user after the checkpoint of an earlier,
    /// unfinished run (all of them without one). When `stop` turns true no
    /// new batch starts; those in flight finish and are recorded.
    pub async fn run(
        &self,
        events: &dyn ImportEvents,
        stop: watch::Receiver<bool>,
    ) -> Result<Report, ImportError> {
        let pool = self.backend.registry.pool().await;
        let lock = RunLock::try_take(pool).await?.ok_or(ImportError::Busy)?;
        let result = self.run_locked(events, &stop).await;
        lock.release().await;
        result
    }

    async fn run_locked(
        &self,
        events: &dyn ImportEvents,
        stop: &watch::Receiver<bool>,
    ) -> Result<Report, ImportError> {
        let pool = self.backend.registry.pool().await;
        let checkpoints = Checkpoints::new(pool);
        let dry_run = self.settings.dry_run;
        if self.settings.restart && !dry_run {
            checkpoints.clear().await?;
        }
        let earlier = match self.settings.restart {
            true => None,
            false => checkpoints.load().await?,
        };
        let resumed_after = earlier.as_ref().map(|c| c.last_legacy_id);
        let earlier = earlier.unwrap_or_default();
        let after = resumed_after.map_or(legacy::BEFORE_ALL, i64::from);
        let total = earlier.tally.handled() + legacy::count_after(pool, after).await?;
        if !dry_run {
            self.choose_mode(events).await?;
        }
        events.started(&Started {
            total,
            handled: earlier.tally.handled(),
            resumed_after,
            mode: self.mode.get(),
            batch_size: self.settings.batch_size,
            concurrency: self.settings.concurrency,
        });

        let started = Instant::now();
        let mut ledger = Ledger {
            totals: earlier.tally,
            this_run: Tally::default(),
            failures: earlier.failures,
            handled_up_to: resumed_after,
            problem: None,
        };
        let checkpoint = (!dry_run).then_some(&checkpoints);
        let mut pages = legacy::Pages::new(pool, after, self.settings.batch_size);
        let mut in_flight = FuturesOrdered::new();
        let mut number = 0u64;
        loop {
            while ledger.problem.is_none()
                && !*stop.borrow()
                && !pages.exhausted()
                && in_flight.len() < self.settings.concurrency
            {
                match pages.next().await {
                    Ok(Some(users)) => {
                        number += 1;
                        let span = tracing::info_span!(
                            "import_batch",
                            batch = number,
                            users = users.len()
                        );
                        in_flight.push_back(
                            self.import_batch(number, users, events, stop.clone())
                                .instrument(span),
                        );
                    }
                    Ok(None) => {}
                    Err(err) => ledger.problem = Some(err.into()),
                }
            }
            // In order: a batch is settled after every batch before it.
            let Some(result) = in_flight.next().await else {
                break;
            };
            if ledger
                .settle(result, checkpoint, self.backend.registry.now())
                .await
            {
                events.progressed(&Progressed {
                    handled: ledger.totals.handled(),
                    total,
                    totals: ledger.totals,
                });
            }
        }

        let ending = match ledger.problem {
            Some(ImportError::Interrupted) => Ending::Interrupted,
            Some(err) => Ending::Stopped(err.to_string()),
            None if pages.exhausted() => Ending::Complete,
            None => Ending::Interrupted,
        };
        if ending == Ending::Complete && !dry_run {
            checkpoints.clear().await?;
        }
        ledger.failures.sort_by_key(|f| f.legacy_id);
        let seconds = started.elapsed().as_secs_f64();
        Ok(Report {
            ending,
            mode: self.mode.get(),
            batch_size: self.settings.batch_size,
            concurrency: self.settings.concurrency,
            total,
            resumed_after,
            handled_up_to: ledger.handled_up_to,
            totals: ledger.totals,
            this_run: ledger.this_run,
            seconds,
            users_per_second: ledger.this_run.handled() as f64 / seconds.max(1e-3),
            failures: ledger.failures,
        })
    }

    /// Partial import when the import client gets a token; one user at a
    /// time through the gateway's client otherwise.
    async fn choose_mode(&self, events: &dyn ImportEvents) -> Result<(), ImportError> {
        match self.bulk_http.check_service_account().await {
            Ok(()) => Ok(()),
            Err(err @ KcError::Unavailable(_)) => Err(err.into()),
            Err(err) => {
                let kc = self.backend.http.settings();
                self.one_at_a_time(
                    events,
                    &format!(
                        "the import client {} is not usable ({err}); importing one user at a time through {} \
                         (see KEYCLOAK_IMPORT_CLIENT_ID in the README)",
                        kc.import_client_id, kc.client_id
                    ),
                );
                Ok(())
            }
        }
    }

    /// From now on, users go one at a time.
    fn one_at_a_time(&self, events: &dyn ImportEvents, why: &str) {
        if self.mode.replace(Mode::OneAtATime) == Mode::PartialImport {
            events.notice(why);
        }
    }

    /// How long a partial import of `users` may take: the usual bound plus
    /// 100 ms per user (Keycloak took about 7 ms per user on two cores).
    fn bulk_timeout(&self, users: usize) -> Duration {
        let per_user = Duration::from_millis(100) * u32::try_from(users).unwrap_or(u32::MAX);
        self.backend.http.settings().timeout + per_user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_from_passlib_hash() {
        let credential = credential_of(
            "$pbkdf2-sha256$1000$l1JKqdW6t9aas7a2VkrJ2Q$jCXOqvZuAjWEpIqNffCS4jV2VKZ4oaMfrRxcJZyk1EU",
        )
        .unwrap();
        let data: serde_json::Value =
            serde_json::from_str(credential["credentialData"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"hashIterations": 1000, "algorithm": "pbkdf2-sha256"})
        );
        let secret: serde_json::Value =
            serde_json::from_str(credential["secretData"].as_str().unwrap()).unwrap();
        assert_eq!(secret["salt"], "l1JKqdW6t9aas7a2VkrJ2Q==");
        assert_eq!(
            secret["value"],
            "jCXOqvZuAjWEpIqNffCS4jV2VKZ4oaMfrRxcJZyk1EU="
        );
        assert!(credential_of("plain-text").is_err());
    }

    #[test]
    fn keycloak_ids_are_fixed_by_realm_and_legacy_id() {
        let id = keycloak_id_of("authgate", 42);
        assert_eq!(id, keycloak_id_of("authgate", 42));
        assert_eq!(id.get_version_num(), 5);
        assert_ne!(id, keycloak_id_of("authgate", 43));
        assert_ne!(id, keycloak_id_of("other", 42));
    }

    #[test]
    fn representation_carries_id_flag_and_hash() {
        let user = LegacyUser {
            id: 42,
            username: "Ada".into(),
            email: "ada@example.com".into(),
            password: "$pbkdf2-sha256$29000$OWUyNWEyNTg4ZmNlZTdkMjFlYTE1ZmIxYTYzZDUxMzU$DU9PeUO1hzoh0mj4UhuANqU1DMBjIqApaw88WnW1nBI".into(),
            is_verified: false,
        };
        let ready = Ready {
            user: &user,
            credential: credential_of(&user.password).unwrap(),
            keycloak_id: keycloak_id_of("authgate", user.id),
        };
        let representation = ready.representation_with_id();
        assert_eq!(representation["id"], json!(ready.keycloak_id));
        assert_eq!(representation["username"], "Ada");
        assert_eq!(representation["emailVerified"], false);
        assert_eq!(representation["attributes"]["legacy_id"], json!(["42"]));
        let secret: serde_json::Value = serde_json::from_str(
            representation["credentials"][0]["secretData"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        // The old service's shared salt (SECRET_KEY's bytes) goes across as it is.
        assert_eq!(
            secret["salt"],
            "OWUyNWEyNTg4ZmNlZTdkMjFlYTE1ZmIxYTYzZDUxMzU="
        );
    }
}
