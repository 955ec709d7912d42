//! [`Mfa`] through Keycloak: the TOTP credential lives in Keycloak, whose
//! direct-grant flow checks the code at sign-in (its conditional OTP step).
//!
//! Keycloak refuses a wrong password, a missing code and a wrong code alike
//! (`invalid_grant`). So after a refusal, for a user who has an OTP
//! credential (Admin API), the password alone is checked through a second
//! client whose direct grant has no OTP step; only a proven password earns
//! "code required" or "code wrong", and the session that proof opened is
//! ended at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::oidc::{Grant, KcClaims};
use super::{KeycloakBackend, NOT_SET_UP};
use crate::identity::mfa::{Mfa, SignIn, TotpStatus};
use crate::identity::{CredentialCheck, IdentityError};
use crate::totp::TotpKey;

impl KeycloakBackend {
    /// Whether `password` is right for `login`, asked of the password-check
    /// client (no second factor). The caller holds the account's lock.
    async fn prove_password(&self, login: &str, password: &str) -> Result<bool, IdentityError> {
        match self.password_check.password(login, password, None).await? {
            Grant::Granted(tokens) => {
                // Only a proof: end the session it opened.
                let sid = KcClaims::of_fresh_token(&tokens.access_token).and_then(|c| c.sid);
                if let Some(sid) = sid
                    && let Err(err) = self.admin.delete_session(&sid).await
                {
                    tracing::warn!(error = %err, "password-check session not ended");
                }
                Ok(true)
            }
            // Right password, pending action (verify e-mail): proven too.
            Grant::Refused { error, description }
                if error == "invalid_grant" && description == NOT_SET_UP =>
            {
                Ok(true)
            }
            Grant::Refused { error, description } => {
                if error != "invalid_grant" {
                    tracing::warn!(%error, %description, "password check refused unexpectedly");
                }
                Ok(false)
            }
        }
    }
}

#[async_trait]
impl Mfa for KeycloakBackend {
    #[tracing::instrument(skip_all)]
    async fn check_credentials(
        &self,
        login: &str,
        password: &str,
        otp: Option<&str>,
    ) -> Result<SignIn, IdentityError> {
        let lock = self.account_locks.lock_for(login);
        let _one_at_a_time = lock.lock().await;
        let grant = self.oidc.password(login, password, otp).await?;
        let plainly_refused = matches!(
            &grant,
            Grant::Refused { error, description }
                if error == "invalid_grant" && description != NOT_SET_UP
        );
        if !plainly_refused {
            return Ok(SignIn::Checked(self.judge(login, grant).await?));
        }
        // Wrong password, or a missing or wrong code: only a user with an
        // OTP credential can be in the second case.
        let Some(kc) = self.find_login(login).await? else {
            return Ok(SignIn::Checked(CredentialCheck::Invalid));
        };
        if !kc.totp || !self.prove_password(login, password).await? {
            return Ok(SignIn::Checked(CredentialCheck::Invalid));
        }
        let Some(user) = self.user_of(&kc).await? else {
            return Ok(SignIn::Checked(CredentialCheck::Invalid));
        };
        Ok(match otp {
            None => SignIn::CodeRequired(user),
            Some(_) => SignIn::CodeInvalid(user),
        })
    }

    async fn account_id(&self, login: &str) -> Result<Option<i64>, IdentityError> {
        let Some(kc) = self.find_login(login).await? else {
            return Ok(None);
        };
        Ok(self.identity_of(&kc).await?.map(|i| i64::from(i.legacy_id)))
    }

    async fn totp_status(&self, user_id: i64) -> Result<TotpStatus, IdentityError> {
        let identity = self.identity(user_id).await?;
        let credentials = self
            .credentials
            .otp(&identity.keycloak_id.to_string())
            .await?;
        let created_at = credentials
            .iter()
            .filter_map(|c| c.created_date)
            .min()
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        Ok(TotpStatus {
            enabled: !credentials.is_empty(),
            created_at,
        })
    }

    async fn enable_totp(&self, user_id: i64, key: &TotpKey) -> Result<(), IdentityError> {
        let identity = self.identity(user_id).await?;
        self.credentials
            .add_totp(&self.admin, &identity.keycloak_id.to_string(), key)
            .await?;
        Ok(())
    }

    async fn disable_totp(&self, user_id: i64) -> Result<bool, IdentityError> {
        let identity = self.identity(user_id).await?;
        let keycloak_id = identity.keycloak_id.to_string();
        let mut removed = false;
        for credential in self.credentials.otp(&keycloak_id).await? {
            removed |= self
                .credentials
                .remove(&keycloak_id, &credential.id)
                .await?;
        }
        Ok(removed)
    }

    async fn check_password(&self, user_id: i64, password: &str) -> Result<bool, IdentityError> {
        let identity = self.identity(user_id).await?;
        let kc = self
            .admin
            .get(&identity.keycloak_id.to_string())
            .await?
            .ok_or(IdentityError::NotFound)?;
        let lock = self.account_locks.lock_for(&kc.username);
        let _one_at_a_time = lock.lock().await;
        self.prove_password(&kc.username, password).await
    }
}
