//! `GET /auth/audit`: the audit trail, for admins, newest first, with
//! filters and a cursor (`before`).

use http::StatusCode;
use serde::Serialize;

use super::auth;
use super::{ApiError, App};
use crate::audit::{AuditFilter, AuditRecord, Outcome};
use crate::http::schema::{Documented, Schema};
use crate::http::validate::{QueryInt, QueryText, TextKind};
use crate::http::{Request, Response};

pub(super) const USER_ID: QueryInt = QueryInt {
    name: "user_id",
    default: 0,
    min: 0,
    max: i64::MAX,
};
pub(super) const BEFORE: QueryInt = QueryInt {
    name: "before",
    default: 0,
    min: 0,
    max: i64::MAX,
};
pub(super) const LIMIT: QueryInt = QueryInt {
    name: "limit",
    default: 50,
    min: 1,
    max: 500,
};
pub(super) const ACTION: QueryText = QueryText {
    name: "action",
    kind: TextKind::Word(64),
    description: "An action (`signin`), or a dotted prefix of actions (`mfa` for `mfa.totp.enrolled`, ...).",
};
pub(super) const OUTCOME: QueryText = QueryText {
    name: "outcome",
    kind: TextKind::OneOf(&["success", "failure"]),
    description: "Only successes or only failures.",
};
pub(super) const SINCE: QueryText = QueryText {
    name: "since",
    kind: TextKind::DateTime,
    description: "Events at or after this time.",
};
pub(super) const UNTIL: QueryText = QueryText {
    name: "until",
    kind: TextKind::DateTime,
    description: "Events before this time.",
};

/// One page of the trail.
#[derive(Debug, Serialize)]
pub(super) struct AuditPage {
    events: Vec<AuditRecord>,
    /// The `before` of the next (older) page; `null` on the last one.
    next_before: Option<i64>,
}

impl Documented for AuditPage {
    const NAME: &'static str = "AuditPage";

    fn schema() -> Schema {
        let event = Schema::object()
            .field("id", Schema::integer())
            .field("at", Schema::string().format("date-time"))
            .field(
                "action",
                Schema::string().describe("`signin`, `signout`, `password.reset`, `mfa.totp.enrolled`, `session.revoked`, `user.deleted`, ..."),
            )
            .field("outcome", Schema::string().with_enum(&["success", "failure"]))
            .field(
                "actor_id",
                Schema::integer().nullable().describe("The user who acted."),
            )
            .field(
                "subject_id",
                Schema::integer()
                    .nullable()
                    .describe("The user acted upon (admin actions)."),
            )
            .field("ip", Schema::string().nullable())
            .field("user_agent", Schema::string().nullable())
            .field("detail", Schema::object().open().nullable());
        Schema::object()
            .field("events", Schema::array(event))
            .field(
                "next_before",
                Schema::integer().nullable().describe(
                    "Pass as `before` for the next, older page; `null` on the last page.",
                ),
            )
    }

    fn example() -> Self {
        Self {
            events: vec![AuditRecord {
                id: 7,
                at: "2026-11-29T10:00:00.000Z".into(),
                action: "signin".into(),
                outcome: "failure".into(),
                actor_id: Some(42),
                subject_id: None,
                ip: Some("203.0.113.7".into()),
                user_agent: Some("curl/8.5.0".into()),
                detail: serde_json::json!({ "reason": "invalid credentials" }),
            }],
            next_before: None,
        }
    }
}

pub async fn list(app: &App, req: &Request) -> Result<Response, ApiError> {
    let principal = auth::require(app, req).await?;
    auth::require_admin(app, &principal).await?;
    let positive = |value: i64| (value > 0).then_some(value);
    let limit = LIMIT.read(req)?;
    let filter = AuditFilter {
        user_id: positive(USER_ID.read(req)?),
        action: ACTION.read(req)?,
        outcome: OUTCOME.read(req)?.map(|o| {
            if o == "success" {
                Outcome::Success
            } else {
                Outcome::Failure
            }
        }),
        since: SINCE.read_time(req)?,
        until: UNTIL.read_time(req)?,
        before: positive(BEFORE.read(req)?),
        // One more than asked tells whether an older page exists.
        limit: limit + 1,
    };
    let mut events = app
        .audit_log
        .list(&filter)
        .await
        .map_err(crate::identity::IdentityError::from)?;
    let more = events.len() as i64 > limit;
    events.truncate(usize::try_from(limit).unwrap_or(0));
    let next_before = if more {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Response::json(
        StatusCode::OK,
        &AuditPage {
            events,
            next_before,
        },
    ))
}
