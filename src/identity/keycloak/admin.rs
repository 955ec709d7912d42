//! The Admin REST API calls the gateway makes, typed.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin_events::AdminEvent;
use super::client::{KcClient, KcError};

/// The user attribute holding the contract's integer id.
pub const LEGACY_ID: &str = "legacy_id";

/// A user as the Admin API represents it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KcUser {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    #[serde(default)]
    pub attributes: Option<HashMap<String, Vec<String>>>,
    #[serde(default)]
    pub required_actions: Vec<String>,
    /// Whether the user has an OTP credential.
    #[serde(default)]
    pub totp: bool,
}

fn enabled_default() -> bool {
    true
}

impl KcUser {
    pub fn legacy_id(&self) -> Option<i32> {
        self.attributes
            .as_ref()?
            .get(LEGACY_ID)?
            .first()?
            .parse()
            .ok()
    }
}

/// A user session as the Admin API represents it (times in milliseconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KcSession {
    pub id: String,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub last_access: i64,
}

/// What creating a user came to.
#[derive(Debug)]
pub enum Created {
    /// The new user's Keycloak id.
    Id(String),
    /// 409: the username or address is taken (Keycloak's message).
    Conflict(String),
    /// 400: refused, e.g. by the password policy (Keycloak's message).
    Refused(String),
}

/// What Keycloak did with one user of a partial import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ImportAction {
    Added,
    /// A user with this username or e-mail address exists; left as it is.
    Skipped,
    Overwritten,
}

/// One line of a partial import's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportResult {
    pub action: ImportAction,
    #[serde(default)]
    pub resource_type: String,
    /// The username sent.
    pub resource_name: String,
    /// The Keycloak id of the user added, or of the existing user that
    /// made Keycloak skip it.
    #[serde(default)]
    pub id: Option<String>,
}

/// What a partial import of users came to.
#[derive(Debug)]
pub enum PartialImport {
    Done(Vec<ImportResult>),
    /// 403: the service account lacks realm-management `manage-realm`.
    Forbidden,
    /// Keycloak refused the request as a whole and wrote nothing (it runs
    /// in one transaction): 409 for two users of the request that collide,
    /// 500 for a user whose address alone is taken, 400 for a malformed one.
    Refused {
        status: u16,
        message: String,
    },
}

#[derive(Debug)]
pub struct Admin {
    http: Arc<KcClient>,
}

impl Admin {
    pub fn new(http: Arc<KcClient>) -> Self {
        Self { http }
    }

    pub async fn create_user(&self, representation: &Value) -> Result<Created, KcError> {
        let r = self
            .http
            .admin(
                "create_user",
                Method::POST,
                "/users",
                Some(representation),
                &[],
            )
            .await?;
        match r.status {
            StatusCode::CREATED => {
                let id = r
                    .location
                    .as_deref()
                    .and_then(|l| l.rsplit('/').next())
                    .map(str::to_string)
                    .ok_or_else(|| r.unexpected("create_user", "no Location"))?;
                Ok(Created::Id(id))
            }
            StatusCode::CONFLICT => Ok(Created::Conflict(r.admin_error())),
            StatusCode::BAD_REQUEST => Ok(Created::Refused(r.admin_error())),
            _ => Err(r.unexpected("create_user", "unexpected status")),
        }
    }

    /// Creates `users` (representations with credentials) in one request,
    /// skipping each whose username or address already exists
    /// (`POST /partialImport`, `ifResourceExists: SKIP`).
    pub async fn partial_import(
        &self,
        users: &[Value],
        timeout: std::time::Duration,
    ) -> Result<PartialImport, KcError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            results: Vec<ImportResult>,
        }
        let body = json!({ "ifResourceExists": "SKIP", "users": users });
        let r = self
            .http
            .admin_bulk("partial_import", "/partialImport", &body, timeout)
            .await?;
        match r.status {
            StatusCode::OK => Ok(PartialImport::Done(
                r.json::<Answer>("partial_import")?.results,
            )),
            StatusCode::FORBIDDEN => Ok(PartialImport::Forbidden),
            StatusCode::CONFLICT | StatusCode::BAD_REQUEST | StatusCode::INTERNAL_SERVER_ERROR => {
                Ok(PartialImport::Refused {
                    status: r.status.as_u16(),
                    message: r.admin_error(),
                })
            }
            _ => Err(r.unexpected("partial_import", "unexpected status")),
        }
    }

    async fn search(
        &self,
        operation: &'static str,
        query: &[(&str, &str)],
    ) -> Result<Vec<KcUser>, KcError> {
        let mut params = vec![("briefRepresentation", "false")];
        params.extend_from_slice(query);
        let r = self
            .http
            .admin(operation, Method::GET, "/users", None, &params)
            .await?;
        if !r.status.is_success() {
            return Err(r.unexpected(operation, "search refused"));
        }
        r.json(operation)
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<KcUser>, KcError> {
        let found = self
            .search("find_user_by_email", &[("email", email), ("exact", "true")])
            .await?;
        Ok(found.into_iter().find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }))
    }

    pub async fn find_by_username(&self, username: &str) -> Result<Option<KcUser>, KcError> {
        let found = self
            .search(
                "find_user_by_username",
                &[("username", username), ("exact", "true")],
            )
            .await?;
        Ok(found
            .into_iter()
            .find(|u| u.username.eq_ignore_ascii_case(username)))
    }

    pub async fn find_by_legacy_id(&self, legacy_id: i32) -> Result<Option<KcUser>, KcError> {
        let q = format!("{LEGACY_ID}:{legacy_id}");
        let found = self.search("find_user_by_legacy_id", &[("q", &q)]).await?;
        Ok(found.into_iter().find(|u| u.legacy_id() == Some(legacy_id)))
    }

    pub async fn get(&self, id: &str) -> Result<Option<KcUser>, KcError> {
        let r = self
            .http
            .admin("get_user", Method::GET, &format!("/users/{id}"), None, &[])
            .await?;
        match r.status {
            StatusCode::OK => Ok(Some(r.json("get_user")?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(r.unexpected("get_user", "unexpected status")),
        }
    }

    /// Applies `changes` to the user's full representation (a partial PUT
    /// would drop the attributes it leaves out). `Ok(Err(message))` on 409.
    pub async fn update(
        &self,
        id: &str,
        changes: &serde_json::Map<String, Value>,
    ) -> Result<Result<(), String>, KcError> {
        let r = self
            .http
            .admin("get_user", Method::GET, &format!("/users/{id}"), None, &[])
            .await?;
        if !r.status.is_success() {
            return Err(r.unexpected("get_user", "user to update not readable"));
        }
        let mut representation: Value = r.json("get_user")?;
        if let Some(object) = representation.as_object_mut() {
            for (key, value) in changes {
                object.insert(key.clone(), value.clone());
            }
        }
        let r = self
            .http
            .admin(
                "update_user",
                Method::PUT,
                &format!("/users/{id}"),
                Some(&representation),
                &[],
            )
            .await?;
        match r.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(Ok(())),
            StatusCode::CONFLICT => Ok(Err(r.admin_error())),
            _ => Err(r.unexpected("update_user", "unexpected status")),
        }
    }

    /// Marks the address verified and drops the pending verify-email action.
    pub async fn mark_verified(&self, user: &KcUser) -> Result<(), KcError> {
        let actions: Vec<&String> = user
            .required_actions
            .iter()
            .filter(|a| a.as_str() != "VERIFY_EMAIL")
            .collect();
        let mut changes = serde_json::Map::new();
        changes.insert("emailVerified".into(), json!(true));
        changes.insert("requiredActions".into(), json!(actions));
        match self.update(&user.id, &changes).await? {
            Ok(()) => Ok(()),
            Err(message) => Err(KcError::Unexpected {
                operation: "update_user",
                status: 409,
                body: message,
            }),
        }
    }

    /// Sets a (non-temporary) password. `Ok(Err(message))` when the realm's
    /// policy refuses it.
    pub async fn set_password(
        &self,
        id: &str,
        password: &str,
    ) -> Result<Result<(), String>, KcError> {
        let body = json!({"type": "password", "value": password, "temporary": false});
        let r = self
            .http
            .admin(
                "reset_password",
                Method::PUT,
                &format!("/users/{id}/reset-password"),
                Some(&body),
                &[],
            )
            .await?;
        match r.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(Ok(())),
            StatusCode::BAD_REQUEST => Ok(Err(r.admin_error())),
            _ => Err(r.unexpected("reset_password", "unexpected status")),
        }
    }

    /// `false` when there was no such user.
    pub async fn delete(&self, id: &str) -> Result<bool, KcError> {
        self.http
            .admin_delete("delete_user", &format!("/users/{id}"))
            .await
    }

    /// Ends every session of a user.
    pub async fn logout_user(&self, id: &str) -> Result<(), KcError> {
        self.ending_call("logout_user", Method::POST, &format!("/users/{id}/logout"))
            .await
    }

    /// A call that ends something: done when it succeeds or the thing is
    /// already gone (404).
    async fn ending_call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
    ) -> Result<(), KcError> {
        let r = self.http.admin(operation, method, path, None, &[]).await?;
        if r.status.is_success() || r.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(r.unexpected(operation, "unexpected status"))
        }
    }

    /// Ids of the user's open sessions.
    pub async fn user_sessions(&self, id: &str) -> Result<Vec<String>, KcError> {
        Ok(self
            .sessions_of(id)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// The user's open sessions (none for an unknown user).
    pub async fn sessions_of(&self, id: &str) -> Result<Vec<KcSession>, KcError> {
        let r = self
            .http
            .admin(
                "user_sessions",
                Method::GET,
                &format!("/users/{id}/sessions"),
                None,
                &[],
            )
            .await?;
        match r.status {
            StatusCode::OK => r.json("user_sessions"),
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            _ => Err(r.unexpected("user_sessions", "unexpected status")),
        }
    }

    /// Ends one session (a sign-out). An unknown session is no error.
    pub async fn delete_session(&self, session_id: &str) -> Result<(), KcError> {
        self.ending_call(
            "delete_session",
            Method::DELETE,
            &format!("/sessions/{session_id}"),
        )
        .await
    }

    /// The user's effective realm roles.
    pub async fn realm_roles(&self, id: &str) -> Result<Vec<String>, KcError> {
        #[derive(Deserialize)]
        struct Role {
            name: String,
        }
        let r = self
            .http
            .admin(
                "user_roles",
                Method::GET,
                &format!("/users/{id}/role-mappings/realm/composite"),
                None,
                &[],
            )
            .await?;
        if !r.status.is_success() {
            return Err(r.unexpected("user_roles", "unexpected status"));
        }
        let roles: Vec<Role> = r.json("user_roles")?;
        Ok(roles.into_iter().map(|r| r.name).collect())
    }

    /// Grants a realm role by name.
    pub async fn grant_realm_role(&self, id: &str, role: &str) -> Result<(), KcError> {
        let r = self
            .http
            .admin(
                "get_role",
                Method::GET,
                &format!("/roles/{role}"),
                None,
                &[],
            )
            .await?;
        if !r.status.is_success() {
            return Err(r.unexpected("get_role", "no such realm role"));
        }
        let representation: Value = r.json("get_role")?;
        let body = json!([representation]);
        let r = self
            .http
            .admin(
                "grant_role",
                Method::POST,
                &format!("/users/{id}/role-mappings/realm"),
                Some(&body),
                &[],
            )
            .await?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(r.unexpected("grant_role", "unexpected status"))
        }
    }

    /// Whether the realm has an enabled identity provider of this alias
    /// (`identity-provider/instances/{alias}`). The alias is checked to be
    /// a plain name first, so it cannot reach another Admin API path.
    pub async fn identity_provider_enabled(&self, alias: &str) -> Result<bool, KcError> {
        #[derive(Deserialize)]
        struct Provider {
            #[serde(default = "enabled_default")]
            enabled: bool,
        }
        let plain = !alias.is_empty()
            && alias.len() <= 255
            && alias
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !alias.chars().all(|c| c == '.');
        if !plain {
            return Ok(false);
        }
        let r = self
            .http
            .admin(
                "get_identity_provider",
                Method::GET,
                &format!("/identity-provider/instances/{alias}"),
                None,
                &[],
            )
            .await?;
        match r.status {
            StatusCode::OK => Ok(r.json::<Provider>("get_identity_provider")?.enabled),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(r.unexpected("get_identity_provider", "unexpected status")),
        }
    }

    /// Admin events from `from_ms` (Keycloak's milliseconds, inclusive),
    /// oldest first, a page of `max` from `first`; only the kinds that may
    /// end something (updates, deletions and actions on users, sessions,
    /// role mappings, group memberships and the realm).
    pub async fn admin_events(
        &self,
        from_ms: i64,
        first: usize,
        max: usize,
    ) -> Result<Result<Vec<AdminEvent>, u16>, KcError> {
        let from = from_ms.to_string();
        let first = first.to_string();
        let max = max.to_string();
        let query = [
            ("dateFrom", from.as_str()),
            ("direction", "asc"),
            ("first", first.as_str()),
            ("max", max.as_str()),
            ("operationTypes", "UPDATE"),
            ("operationTypes", "DELETE"),
            ("operationTypes", "ACTION"),
            ("resourceTypes", "USER"),
            ("resourceTypes", "USER_SESSION"),
            ("resourceTypes", "REALM_ROLE_MAPPING"),
            ("resourceTypes", "CLIENT_ROLE_MAPPING"),
            ("resourceTypes", "GROUP_MEMBERSHIP"),
            ("resourceTypes", "REALM"),
        ];
        let r = self
            .http
            .admin("admin_events", Method::GET, "/admin-events", None, &query)
            .await?;
        match r.status {
            StatusCode::OK => Ok(Ok(r.json("admin_events")?)),
            // The service account may not read them (realm-management `view-events`).
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Ok(Err(r.status.as_u16())),
            _ => Err(r.unexpected("admin_events", "unexpected status")),
        }
    }

    /// The realm's settings (`view-realm`), e.g. whether it keeps admin events.
    pub async fn realm(&self) -> Result<Value, KcError> {
        let r = self
            .http
            .admin("get_realm", Method::GET, "", None, &[])
            .await?;
        if !r.status.is_success() {
            return Err(r.unexpected("get_realm", "realm not readable"));
        }
        r.json("get_realm")
    }

    /// The representation of a client of the realm, by its `clientId`
    /// (`view-clients`); `Ok(Err(status))` when it may not be read.
    pub async fn client(&self, client_id: &str) -> Result<Result<Option<Value>, u16>, KcError> {
        let r = self
            .http
            .admin(
                "get_client",
                Method::GET,
                "/clients",
                None,
                &[("clientId", client_id)],
            )
            .await?;
        match r.status {
            StatusCode::OK => {
                let found: Vec<Value> = r.json("get_client")?;
                Ok(Ok(found.into_iter().next()))
            }
            StatusCode::FORBIDDEN => Ok(Err(403)),
            _ => Err(r.unexpected("get_client", "unexpected status")),
        }
    }

    /// Sets one single-valued attribute, keeping the others.
    pub async fn set_attribute(
        &self,
        user: &KcUser,
        name: &str,
        value: &str,
    ) -> Result<Result<(), String>, KcError> {
        let mut attributes = user.attributes.clone().unwrap_or_default();
        attributes.insert(name.to_string(), vec![value.to_string()]);
        let mut changes = serde_json::Map::new();
        changes.insert("attributes".into(), json!(attributes));
        self.update(&user.id, &changes).await
    }
}
