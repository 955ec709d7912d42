//! One batch of legacy users: hashes checked, ids authgate already recorded
//! skipped, the rest sent to Keycloak in one partial import and Keycloak's
//! answer recorded. A batch Keycloak refuses as a whole (it writes nothing
//! then) is split in halves until the user it refuses is alone; that user
//! goes the one-at-a-time way, which says why.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use super::legacy::LegacyUser;
use super::{
    ImportError, ImportEvents, ImportOutcome, Importer, Mode, Ready, credential_of, keycloak_id_of,
};
use crate::identity::keycloak::admin::{
    Created, ImportAction, ImportResult, KcUser, PartialImport,
};
use crate::identity::keycloak::client::KcError;
use crate::identity::keycloak::import::report::{Failure, Tally};
use crate::identity::keycloak::registry::IdentityRow;

/// How long a batch keeps trying while Keycloak is unavailable (a restart
/// takes 15 to 45 s), waiting 1, 2, 4, 8, 15, 15, ... s between tries.
const KEYCLOAK_PATIENCE: Duration = Duration::from_secs(90);
const LONGEST_WAIT: Duration = Duration::from_secs(15);
/// Users checked or created at once on the one-at-a-time path, per batch.
const PER_USER_CONCURRENCY: usize = 4;

/// What a batch came to.
#[derive(Debug)]
pub(super) struct BatchOutcome {
    /// The batch's highest id: the checkpoint once it is recorded.
    pub last_legacy_id: i32,
    pub tally: Tally,
    pub failures: Vec<Failure>,
}

impl BatchOutcome {
    fn fail(&mut self, user: &LegacyUser, reason: String) {
        self.tally.failed += 1;
        self.failures.push(Failure {
            legacy_id: user.id,
            username: user.username.clone(),
            reason,
        });
    }

    fn count(&mut self, user: &LegacyUser, outcome: ImportOutcome) {
        match outcome {
            ImportOutcome::Imported => self.tally.imported += 1,
            ImportOutcome::Skipped => self.tally.skipped += 1,
            ImportOutcome::Failed(reason) => self.fail(user, reason),
        }
    }
}

/// A user Keycloak skipped: who holds the username (or address) there.
enum Holder {
    /// This user: imported before, and recorded here.
    Recorded,
    /// This user, not recorded yet (a run stopped between Keycloak's answer
    /// and the record); now recorded.
    Adopted,
    /// Someone else.
    Other(String),
}

impl Importer<'_> {
    /// Imports one batch, trying again while Keycloak is unavailable (the
    /// batch is idempotent: Keycloak skips users that exist).
    /// A stop request ends the waiting (the batch is then not recorded, and
    /// the next run sends it again).
    pub(super) async fn import_batch(
        &self,
        number: u64,
        users: Vec<LegacyUser>,
        events: &dyn ImportEvents,
        mut stop: watch::Receiver<bool>,
    ) -> Result<BatchOutcome, ImportError> {
        let started = Instant::now();
        let mut wait = Duration::from_secs(1);
        loop {
            match self.attempt(number, &users, events).await {
                Err(ImportError::Keycloak(err @ KcError::Unavailable(_)))
                    if started.elapsed() < KEYCLOAK_PATIENCE =>
                {
                    events.notice(&format!(
                        "batch {number}: {err}; trying again in {} s",
                        wait.as_secs()
                    ));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|stop| *stop) => return Err(ImportError::Interrupted),
                    }
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        number: u64,
        users: &[LegacyUser],
        events: &dyn ImportEvents,
    ) -> Result<BatchOutcome, ImportError> {
        let mut outcome = BatchOutcome {
            last_legacy_id: users.iter().map(|u| u.id).max().unwrap_or(i32::MIN),
            tally: Tally::default(),
            failures: Vec::new(),
        };
        let realm = &self.backend.http.settings().realm;
        let mut ready = Vec::with_capacity(users.len());
        for user in users {
            match credential_of(&user.password) {
                Ok(credential) => ready.push(Ready {
                    user,
                    credential,
                    keycloak_id: keycloak_id_of(realm, user.id),
                }),
                Err(why) => outcome.fail(user, format!("password hash not importable: {why}")),
            }
        }
        let ids: Vec<i32> = ready.iter().map(|r| r.user.id).collect();
        let recorded = self.backend.registry.known_legacy_ids(&ids).await?;
        ready.retain(|r| !recorded.contains(&r.user.id));
        outcome.tally.skipped += recorded.len() as u64;
        match self.mode.get() {
            Mode::PartialImport => self.send(number, &ready, &mut outcome, events).await?,
            Mode::OneAtATime | Mode::DryRun => {
                self.one_at_a_time_each(&ready, &mut outcome).await?
            }
        }
        outcome.failures.sort_by_key(|f| f.legacy_id);
        Ok(outcome)
    }

    /// Partial imports of `ready`, halving what Keycloak refuses.
    async fn send(
        &self,
        number: u64,
        ready: &[Ready<'_>],
        outcome: &mut BatchOutcome,
        events: &dyn ImportEvents,
    ) -> Result<(), ImportError> {
        let mut pending = vec![ready];
        let mut answered = false;
        let mut refused = false;
        while let Some(part) = pending.pop() {
            if part.is_empty() {
                continue;
            }
            if self.mode.get() != Mode::PartialImport {
                self.one_at_a_time_each(part, outcome).await?;
                continue;
            }
            let representations: Vec<serde_json::Value> =
                part.iter().map(Ready::representation_with_id).collect();
            let answer = self
                .bulk
                .partial_import(&representations, self.bulk_timeout(part.len()))
                .await?;
            match answer {
                PartialImport::Done(results) => {
                    if !answered {
                        answered = true;
                        events.answered(number);
                    }
                    self.record(part, &results, outcome).await?;
                }
                PartialImport::Forbidden => {
                    let kc = self.backend.http.settings();
                    self.one_at_a_time(
                        events,
                        &format!(
                            "Keycloak refused a partial import to {} (its service account needs \
                             realm-management manage-realm); importing one user at a time",
                            kc.import_client_id
                        ),
                    );
                    pending.push(part);
                }
                PartialImport::Refused { status, message } if part.len() > 1 => {
                    if !refused {
                        refused = true;
                        events.notice(&format!(
                            "batch {number}: Keycloak refused it as a whole ({status} {message}); \
                             splitting it to find the users it refuses"
                        ));
                    }
                    let (first, second) = part.split_at(part.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
                PartialImport::Refused { .. } => self.one_at_a_time_each(part, outcome).await?,
            }
        }
        Ok(())
    }

    /// Records Keycloak's answer to a partial import of `part`.
    async fn record(
        &self,
        part: &[Ready<'_>],
        results: &[ImportResult],
        outcome: &mut BatchOutcome,
    ) -> Result<(), ImportError> {
        // Keycloak names each user by the username sent (and compares
        // usernames regardless of case).
        let by_name: HashMap<String, &Ready<'_>> = part
            .iter()
            .map(|r| (r.user.username.to_lowercase(), r))
            .collect();
        let mut answered = HashSet::new();
        let mut recorded = Vec::new();
        let mut skipped = Vec::new();
        for result in results {
            let Some(&ready) = by_name.get(&result.resource_name.to_lowercase()) else {
                continue;
            };
            let user = ready.user;
            if !answered.insert(user.id) {
                continue;
            }
            let Some(keycloak_id) = result.id.as_deref().and_then(|id| Uuid::parse_str(id).ok())
            else {
                outcome.fail(user, "Keycloak's answer: no id for this user".into());
                continue;
            };
            match result.action {
                ImportAction::Added | ImportAction::Overwritten => {
                    outcome.tally.imported += 1;
                    recorded.push(identity(user, keycloak_id));
                }
                // The id this import gives the user: an earlier run created
                // it and stopped before recording it.
                ImportAction::Skipped if keycloak_id == ready.keycloak_id => {
                    outcome.tally.skipped += 1;
                    recorded.push(identity(user, keycloak_id));
                }
                ImportAction::Skipped => skipped.push((user, keycloak_id)),
            }
        }
        for ready in part {
            if !answered.contains(&ready.user.id) {
                outcome.fail(ready.user, "Keycloak's answer: this user is missing".into());
            }
        }
        self.backend.registry.upsert_many(&recorded).await?;
        let holders: Vec<Holder> = futures_util::stream::iter(skipped.iter())
            .map(|&(user, keycloak_id)| self.holder(user, keycloak_id))
            .buffered(PER_USER_CONCURRENCY)
            .try_collect()
            .await?;
        for ((user, _), holder) in skipped.iter().zip(holders) {
            match holder {
                Holder::Recorded | Holder::Adopted => outcome.tally.skipped += 1,
                Holder::Other(reason) => outcome.fail(user, reason),
            }
        }
        Ok(())
    }

    /// Who holds the Keycloak user that made Keycloak skip `user`.
    async fn holder(&self, user: &LegacyUser, keycloak_id: Uuid) -> Result<Holder, ImportError> {
        let registry = &self.backend.registry;
        if let Some(known) = registry.by_keycloak_id(keycloak_id).await? {
            if known.legacy_id == user.id {
                return Ok(Holder::Recorded);
            }
            let field = match known.username.eq_ignore_ascii_case(&user.username) {
                true => "username",
                false => "email",
            };
            return Ok(Holder::Other(format!(
                "{field} taken in Keycloak: by the user with legacy_id {}",
                known.legacy_id
            )));
        }
        let Some(existing) = self.backend.admin.get(&keycloak_id.to_string()).await? else {
            return Ok(Holder::Other(
                "username taken in Keycloak: by a user deleted since; run again".into(),
            ));
        };
        if existing.legacy_id() == Some(user.id) {
            self.backend.identity_of(&existing).await?;
            return Ok(Holder::Adopted);
        }
        let field = match existing.username.eq_ignore_ascii_case(&user.username) {
            true => "username",
            false => "email",
        };
        Ok(Holder::Other(taken(field, &existing)))
    }

    /// The one-at-a-time way for each of `ready`, a few at once.
    async fn one_at_a_time_each(
        &self,
        ready: &[Ready<'_>],
        outcome: &mut BatchOutcome,
    ) -> Result<(), ImportError> {
        let outcomes: Vec<ImportOutcome> = futures_util::stream::iter(ready)
            .map(|r| self.import_one(r))
            .buffered(PER_USER_CONCURRENCY)
            .try_collect()
            .await?;
        for (r, each) in ready.iter().zip(outcomes) {
            outcome.count(r.user, each);
        }
        Ok(())
    }

    /// One user through the gateway's client: found by `legacy_id` (skipped),
    /// username or address taken (failed), else created (a dry run only
    /// checks).
    async fn import_one(&self, ready: &Ready<'_>) -> Result<ImportOutcome, ImportError> {
        let admin = &self.backend.admin;
        let user = ready.user;
        let dry_run = self.mode.get() == Mode::DryRun;
        if let Some(existing) = admin.find_by_legacy_id(user.id).await? {
            if !dry_run {
                self.backend.identity_of(&existing).await?;
            }
            return Ok(ImportOutcome::Skipped);
        }
        if let Some(other) = admin.find_by_username(&user.username).await? {
            return Ok(ImportOutcome::Failed(taken("username", &other)));
        }
        if let Some(other) = admin.find_by_email(&user.email).await? {
            return Ok(ImportOutcome::Failed(taken("email", &other)));
        }
        if dry_run {
            return Ok(ImportOutcome::Imported);
        }
        let keycloak_id = match admin.create_user(&ready.representation()).await? {
            Created::Id(id) => id,
            Created::Conflict(message) | Created::Refused(message) => {
                return Ok(ImportOutcome::Failed(format!(
                    "Keycloak refused: {message}"
                )));
            }
        };
        let keycloak_id = Uuid::parse_str(&keycloak_id).map_err(|_| {
            crate::identity::IdentityError::Internal(crate::identity::Internal::Inconsistent(
                "Keycloak id is not a UUID",
            ))
        })?;
        self.backend
            .registry
            .upsert(None, &identity(user, keycloak_id))
            .await?;
        Ok(ImportOutcome::Imported)
    }
}

/// The registry entry of a user Keycloak holds under `keycloak_id`.
fn identity(user: &LegacyUser, keycloak_id: Uuid) -> IdentityRow {
    IdentityRow {
        legacy_id: user.id,
        keycloak_id,
        username: user.username.clone(),
        email: user.email.clone(),
        email_verified: Some(user.is_verified),
    }
}

/// Why a user cannot go in: `field` belongs to `holder` in Keycloak.
fn taken(field: &str, holder: &KcUser) -> String {
    match holder.legacy_id() {
        Some(id) => format!("{field} taken in Keycloak: by a user with legacy_id {id}"),
        None => format!("{field} taken in Keycloak: by a user without a legacy_id"),
    }
}
