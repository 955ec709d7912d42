//! The audit trail: one append-only record per authentication event (who,
//! what, when, from where, outcome). Handlers describe an event with
//! [`AuditEvent`] and hand it to [`App::audit`](crate::api::App::audit),
//! which never fails the request it belongs to.
//!
//! Imports: `store` (the SQL stores), `http` (the request an event is
//! about).

use serde_json::Value;

use crate::http::Request;

/// How an audited attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One event, e.g. `AuditEvent::success("mfa.totp.enrolled").actor(id).from(req)`.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// What happened, dotted: `signin`, `signout`, `mfa.totp.enrolled`, ...
    pub action: &'static str,
    pub outcome: Outcome,
    /// The user who acted (legacy id), when known.
    pub actor: Option<i64>,
    /// The user acted upon, when another one (an admin's action).
    pub subject: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Anything else worth keeping; never a password, token or hash.
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(action: &'static str, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            actor: None,
            subject: None,
            ip: None,
            user_agent: None,
            detail: Value::Null,
        }
    }

    pub fn success(action: &'static str) -> Self {
        Self::new(action, Outcome::Success)
    }

    pub fn failure(action: &'static str) -> Self {
        Self::new(action, Outcome::Failure)
    }

    pub fn actor(mut self, user_id: i64) -> Self {
        self.actor = Some(user_id);
        self
    }

    pub fn subject(mut self, user_id: i64) -> Self {
        self.subject = Some(user_id);
        self
    }

    /// Where the request came from (client address and user agent).
    pub fn from(mut self, req: &Request) -> Self {
        self.ip = req.client_ip.map(|ip| ip.to_string());
        self.user_agent = req.header("user-agent").map(str::to_string);
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored event, as `GET /auth/audit` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// UTC, RFC 3339.
    pub at: String,
    pub action: String,
    pub outcome: String,
    pub actor_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Value,
}

/// Which events to list: every filter is optional; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events the user did or that were done to them.
    pub user_id: Option<i64>,
    /// An action, or a dotted prefix of actions (`mfa` matches `mfa.totp.enrolled`).
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    pub since: Option<chrono::NaiveDateTime>,
    pub until: Option<chrono::NaiveDateTime>,
    /// Only events older than this id (the paging cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

/// The audit store failed (how that reads to the api, an unreachable
/// database as a 503, is `identity::db_error`'s to say).
#[derive(Debug, thiserror::Error)]
#[error("audit store: {0}")]
pub struct AuditError(#[from] pub sqlx::Error);

/// Where events are kept: appended, never changed.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    async fn append(&self, event: &AuditEvent, at: chrono::NaiveDateTime)
    -> Result<(), AuditError>;

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError>;
}

mod store;
pub use store::SqlAuditLog;
