//! `authgate import-users`: moves the legacy `users` table into Keycloak,
//! each user with their integer id, verified flag and existing PBKDF2 hash
//! (imported as a `pbkdf2-sha256` credential), so everyone signs in with
//! the password they already have. Idempotent and resumable: a user already
//! in Keycloak (found by `legacy_id`) is skipped.

use serde_json::json;
use sqlx::FromRow;
use uuid::Uuid;

use super::KeycloakBackend;
use super::admin::{Created, LEGACY_ID};
use super::registry::Identity;
use crate::identity::IdentityError;
use crate::password::Pbkdf2Hash;

#[derive(Debug, FromRow)]
struct LegacyUser {
    id: i32,
    username: String,
    email: String,
    password: String,
    is_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    /// Already in Keycloak; nothing written.
    Skipped,
    Failed(String),
}

#[derive(Debug, Default)]
pub struct Report {
    pub imported: Vec<(i32, String)>,
    pub skipped: Vec<(i32, String)>,
    pub failed: Vec<(i32, String, String)>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "imported {}, skipped {}, failed {}",
            self.imported.len(),
            self.skipped.len(),
            self.failed.len()
        )
    }
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

impl KeycloakBackend {
    /// Imports every live legacy user; `progress` hears each one as it goes.
    pub async fn import_users(
        &self,
        dry_run: bool,
        mut progress: impl FnMut(usize, usize, &str, &Outcome),
    ) -> Result<Report, IdentityError> {
        let users: Vec<LegacyUser> = sqlx::query_as(
            "SELECT id, username, email, password, COALESCE(is_verified, false) AS is_verified \
             FROM users WHERE NOT COALESCE(is_deleted, false) AND COALESCE(is_active, true) ORDER BY id",
        )
        .fetch_all(self.registry.pool().await)
        .await
        .map_err(super::super::native::db::db_error)?;
        let total = users.len();
        let mut report = Report::default();
        for (index, user) in users.iter().enumerate() {
            let outcome = match self.import_one(user, dry_run).await {
                Ok(outcome) => outcome,
                Err(IdentityError::Unavailable(what)) => {
                    return Err(IdentityError::Unavailable(what));
                }
                Err(err) => Outcome::Failed(err.to_string()),
            };
            progress(index + 1, total, &user.username, &outcome);
            let name = user.username.clone();
            match outcome {
                Outcome::Imported => report.imported.push((user.id, name)),
                Outcome::Skipped => report.skipped.push((user.id, name)),
                Outcome::Failed(reason) => report.failed.push((user.id, name, reason)),
            }
        }
        Ok(report)
    }

    async fn import_one(&self, user: &LegacyUser, dry_run: bool) -> Result<Outcome, IdentityError> {
        if let Some(existing) = self.admin.find_by_legacy_id(user.id).await? {
            if !dry_run {
                self.identity_of(&existing).await?;
            }
            return Ok(Outcome::Skipped);
        }
        if let Some(other) = self.admin.find_by_username(&user.username).await? {
            return Ok(Outcome::Failed(format!(
                "username taken in Keycloak by a user with legacy_id {:?}",
                other.legacy_id()
            )));
        }
        if let Some(other) = self.admin.find_by_email(&user.email).await? {
            return Ok(Outcome::Failed(format!(
                "email taken in Keycloak by a user with legacy_id {:?}",
                other.legacy_id()
            )));
        }
        let credential = match credential_of(&user.password) {
            Ok(credential) => credential,
            Err(why) => {
                return Ok(Outcome::Failed(format!(
                    "password hash not importable: {why}"
                )));
            }
        };
        if dry_run {
            return Ok(Outcome::Imported);
        }
        let representation = json!({
            "username": user.username,
            "email": user.email,
            "enabled": true,
            "emailVerified": user.is_verified,
            "attributes": { LEGACY_ID: [user.id.to_string()] },
            "credentials": [credential],
        });
        let keycloak_id = match self.admin.create_user(&representation).await? {
            Created::Id(id) => id,
            Created::Conflict(message) | Created::Refused(message) => {
                return Ok(Outcome::Failed(format!("Keycloak refused: {message}")));
            }
        };
        let identity = Identity {
            legacy_id: user.id,
            keycloak_id: Uuid::parse_str(&keycloak_id)
                .map_err(|_| IdentityError::Internal("Keycloak id is not a UUID".into()))?,
            username: user.username.clone(),
            email: user.email.clone(),
        };
        self.registry.upsert(None, &identity).await?;
        Ok(Outcome::Imported)
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
}
