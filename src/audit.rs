//! The audit trail: one append-only record per authentication event (who,
//! what, when, from where, outcome). Handlers describe an event with
//! [`AuditEvent`] and hand it to [`App::audit`](crate::api::App::audit),
//! which never fails the request it belongs to.

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
