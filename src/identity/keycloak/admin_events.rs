//! Keycloak's admin events (`GET /admin/realms/<realm>/admin-events`), and
//! what authgate makes of them. Keycloak sends no back-channel logout when
//! an administrator disables or deletes a user, resets a password, removes
//! a credential or roles, or signs out the whole realm: these events are
//! how authgate learns of it ([`super::event_reader`] reads them).

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// One admin event as the Admin API represents it (time in milliseconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminEvent {
    #[serde(default)]
    pub id: Option<String>,
    pub time: i64,
    #[serde(default)]
    pub operation_type: String,
    #[serde(default)]
    pub resource_type: String,
    #[serde(default)]
    pub resource_path: String,
    /// The changed resource as JSON text (the realm's "include
    /// representation"), when Keycloak kept it.
    #[serde(default)]
    pub representation: Option<String>,
    #[serde(default)]
    pub auth_details: Option<AuthDetails>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthDetails {
    /// The user (or service account) who made the change.
    #[serde(default)]
    pub user_id: Option<String>,
}

impl AdminEvent {
    /// Who made the change.
    pub fn author(&self) -> Option<&str> {
        self.auth_details.as_ref()?.user_id.as_deref()
    }

    /// An id for the cursor: Keycloak's, else the event's content.
    pub fn key(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => crate::tokens::digest(&format!(
                "{}|{}|{}|{}",
                self.time, self.operation_type, self.resource_type, self.resource_path
            )),
        }
    }
}

/// What a change in Keycloak means to authgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Disabled: every session ends, every token is refused.
    Disabled(Uuid),
    Deleted(Uuid),
    /// "Sign out" of the user (all their sessions).
    LoggedOut(Uuid),
    /// A password reset, a credential removed or disabled: every token
    /// issued before is refused.
    Credentials(Uuid),
    /// Roles removed (a role mapping, a group): access tokens issued before
    /// (which carry the old roles) are refused; a refresh brings new ones.
    Roles(Uuid),
    /// One session ended by an administrator.
    SessionEnded(String),
    Verified(Uuid, bool),
    Email(Uuid, String),
    /// An update whose representation Keycloak did not keep: the user is
    /// read again.
    Updated(Uuid),
    /// "Sign out all active sessions" of the realm.
    RealmLoggedOut,
}

impl Change {
    /// A label for metrics and the audit trail.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Disabled(_) => "disabled",
            Self::Deleted(_) => "deleted",
            Self::LoggedOut(_) => "logout",
            Self::Credentials(_) => "credentials",
            Self::Roles(_) => "roles",
            Self::SessionEnded(_) => "session",
            Self::Verified(..) => "verified",
            Self::Email(..) => "email",
            Self::Updated(_) => "updated",
            Self::RealmLoggedOut => "realm_logout",
        }
    }
}

/// The changes an event stands for (none for events that end nothing).
pub fn changes(event: &AdminEvent) -> Vec<Change> {
    let segments: Vec<&str> = event.resource_path.split('/').collect();
    let user = segments
        .first()
        .filter(|s| **s == "users")
        .and_then(|_| Uuid::parse_str(segments.get(1)?).ok());
    let operation = event.operation_type.as_str();
    match (event.resource_type.as_str(), segments.as_slice(), user) {
        ("USER", [_, _], Some(id)) => match operation {
            "DELETE" => vec![Change::Deleted(id)],
            "UPDATE" => user_update(id, event.representation.as_deref()),
            _ => Vec::new(),
        },
        ("USER", [_, _, action], Some(id)) => match *action {
            "logout" => vec![Change::LoggedOut(id)],
            "reset-password" | "disable-credential-types" => vec![Change::Credentials(id)],
            _ => Vec::new(),
        },
        ("USER", [_, _, "credentials", _], Some(id))
            if matches!(operation, "DELETE" | "ACTION") =>
        {
            vec![Change::Credentials(id)]
        }
        ("REALM_ROLE_MAPPING" | "CLIENT_ROLE_MAPPING", [_, _, "role-mappings", ..], Some(id))
            if operation == "DELETE" =>
        {
            vec![Change::Roles(id)]
        }
        ("GROUP_MEMBERSHIP", [_, _, "groups", _], Some(id)) if operation == "DELETE" => {
            vec![Change::Roles(id)]
        }
        ("USER_SESSION", ["sessions", sid], _) if operation == "DELETE" && !sid.is_empty() => {
            vec![Change::SessionEnded((*sid).to_string())]
        }
        ("REALM", ["logout-all"], _) if operation == "ACTION" => vec![Change::RealmLoggedOut],
        _ => Vec::new(),
    }
}

/// `PUT /users/{id}`: the representation holds the fields sent (all of
/// them from the console, some from an API client).
fn user_update(id: Uuid, representation: Option<&str>) -> Vec<Change> {
    let Some(fields) = representation
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object)
    else {
        return vec![Change::Updated(id)];
    };
    let mut found = Vec::new();
    if fields.get("enabled") == Some(&Value::Bool(false)) {
        found.push(Change::Disabled(id));
    }
    if let Some(verified) = fields.get("emailVerified").and_then(Value::as_bool) {
        found.push(Change::Verified(id, verified));
    }
    if let Some(email) = fields
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
    {
        found.push(Change::Email(id, email.to_string()));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "bc396b68-7e85-43df-90ae-9f89522f6ff3";

    fn event(
        operation: &str,
        resource: &str,
        path: &str,
        representation: Option<Value>,
    ) -> AdminEvent {
        serde_json::from_value(json!({
            "id": "aee526ac-a8d9-4e97-8436-500acf65d370",
            "time": 1796527324275_i64,
            "realmId": "45ed937f",
            "authDetails": {"realmId": "a1f2", "clientId": "bc53", "userId": "c64b0f42", "ipAddress": "127.0.0.1"},
            "operationType": operation,
            "resourceType": resource,
            "resourcePath": path,
            "representation": representation.map(|r| r.to_string()),
        }))
        .unwrap()
    }

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    #[test]
    fn what_keycloak_writes_is_understood() {
        let user = format!("users/{ID}");
        let cases = [
            (
                event("DELETE", "USER", &user, None),
                vec![Change::Deleted(id())],
            ),
            (
                event("UPDATE", "USER", &user, Some(json!({"enabled": false}))),
                vec![Change::Disabled(id())],
            ),
            (
                event(
                    "UPDATE",
                    "USER",
                    &user,
                    Some(
                        json!({"id": ID, "username": "ada", "email": "ada@example.com",
                                "emailVerified": true, "enabled": true}),
                    ),
                ),
                vec![
                    Change::Verified(id(), true),
                    Change::Email(id(), "ada@example.com".into()),
                ],
            ),
            (
                event("UPDATE", "USER", &user, None),
                vec![Change::Updated(id())],
            ),
            (
                event("ACTION", "USER", &format!("{user}/logout"), None),
                vec![Change::LoggedOut(id())],
            ),
            (
                event("ACTION", "USER", &format!("{user}/reset-password"), None),
                vec![Change::Credentials(id())],
            ),
            (
                event(
                    "ACTION",
                    "USER",
                    &format!("{user}/credentials/4fd68916"),
                    None,
                ),
                vec![Change::Credentials(id())],
            ),
            (
                event(
                    "DELETE",
                    "REALM_ROLE_MAPPING",
                    &format!("{user}/role-mappings/realm"),
                    Some(json!([{"name": "admin"}])),
                ),
                vec![Change::Roles(id())],
            ),
            (
                event(
                    "DELETE",
                    "CLIENT_ROLE_MAPPING",
                    &format!("{user}/role-mappings/clients/185190d8"),
                    None,
                ),
                vec![Change::Roles(id())],
            ),
            (
                event(
                    "DELETE",
                    "GROUP_MEMBERSHIP",
                    &format!("{user}/groups/g1"),
                    None,
                ),
                vec![Change::Roles(id())],
            ),
            (
                event(
                    "DELETE",
                    "USER_SESSION",
                    "sessions/6r5v-u0TKW2hQGrCJYgOinZ_",
                    None,
                ),
                vec![Change::SessionEnded("6r5v-u0TKW2hQGrCJYgOinZ_".into())],
            ),
            (
                event("ACTION", "REALM", "logout-all", Some(json!({}))),
                vec![Change::RealmLoggedOut],
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(changes(&event), expected, "{event:?}");
        }
    }

    #[test]
    fn what_ends_nothing_is_ignored() {
        let user = format!("users/{ID}");
        for event in [
            event("CREATE", "USER", &user, Some(json!({"enabled": true}))),
            event("UPDATE", "USER", &user, Some(json!({"enabled": true}))),
            event(
                "CREATE",
                "REALM_ROLE_MAPPING",
                &format!("{user}/role-mappings/realm"),
                None,
            ),
            event(
                "ACTION",
                "USER",
                &format!("{user}/execute-actions-email"),
                None,
            ),
            event("UPDATE", "CLIENT", "clients/185190d8", None),
            event("DELETE", "USER", "users/not-a-uuid", None),
            event("DELETE", "USER_SESSION", "sessions/", None),
            event(
                "CREATE",
                "GROUP_MEMBERSHIP",
                &format!("{user}/groups/g1"),
                None,
            ),
        ] {
            assert_eq!(changes(&event), Vec::new(), "{event:?}");
        }
        let anonymous = event("DELETE", "USER", &user, None);
        assert_eq!(anonymous.author(), Some("c64b0f42"));
        assert_eq!(anonymous.key(), "aee526ac-a8d9-4e97-8436-500acf65d370");
    }
}
