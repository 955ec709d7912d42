//! A user's OTP credentials through the Admin REST API: list, add, remove.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::Admin;
use super::client::{KcClient, KcError};
use crate::totp::{DIGITS, PERIOD, TotpKey};

/// Keycloak's credential type of TOTP and HOTP.
const OTP: &str = "otp";
/// The label the credential gets in Keycloak's console.
const LABEL: &str = "authgate";

/// One OTP credential of a user.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpCredential {
    pub id: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub created_date: Option<i64>,
}

#[derive(Debug)]
pub struct Credentials {
    http: Arc<KcClient>,
}

impl Credentials {
    pub fn new(http: Arc<KcClient>) -> Self {
        Self { http }
    }

    /// The user's OTP credentials (none for an unknown user).
    pub async fn otp(&self, user_id: &str) -> Result<Vec<OtpCredential>, KcError> {
        #[derive(Deserialize)]
        struct Any {
            #[serde(rename = "type")]
            kind: String,
            #[serde(flatten)]
            rest: Value,
        }
        let r = self
            .http
            .admin(
                "user_credentials",
                Method::GET,
                &format!("/users/{user_id}/credentials"),
                None,
                &[],
            )
            .await?;
        match r.status {
            StatusCode::OK => {
                let all: Vec<Any> = r.json("user_credentials")?;
                all.into_iter()
                    .filter(|c| c.kind == OTP)
                    .map(|c| {
                        serde_json::from_value(c.rest)
                            .map_err(|err| r.unexpected("user_credentials", err))
                    })
                    .collect()
            }
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            _ => Err(r.unexpected("user_credentials", "unexpected status")),
        }
    }

    /// Adds a TOTP credential with `key` (the realm's policy: HmacSHA1, 6
    /// digits, 30 s). Keycloak takes credentials on a user update.
    pub async fn add_totp(
        &self,
        admin: &Admin,
        user_id: &str,
        key: &TotpKey,
    ) -> Result<(), KcError> {
        let secret_data = json!({ "value": key.expose() }).to_string();
        let credential_data = json!({
            "subType": "totp",
            "digits": DIGITS,
            "period": PERIOD,
            "algorithm": "HmacSHA1",
            "counter": 0,
        })
        .to_string();
        let mut changes = serde_json::Map::new();
        changes.insert(
            "credentials".into(),
            json!([{
                "type": OTP,
                "userLabel": LABEL,
                "secretData": secret_data,
                "credentialData": credential_data,
            }]),
        );
        match admin.update(user_id, &changes).await? {
            Ok(()) => Ok(()),
            Err(message) => Err(KcError::Unexpected {
                operation: "update_user",
                status: 409,
                body: message,
            }),
        }
    }

    /// Removes one credential; `false` when it was already gone.
    pub async fn remove(&self, user_id: &str, credential_id: &str) -> Result<bool, KcError> {
        self.http
            .admin_delete(
                "delete_credential",
                &format!("/users/{user_id}/credentials/{credential_id}"),
            )
            .await
    }
}
