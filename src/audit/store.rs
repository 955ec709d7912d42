//! The audit trail in the gateway's database (PostgreSQL, or the embedded
//! SQLite store): table `authgate_audit`, which triggers keep append-only.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{NaiveDateTime, SecondsFormat};
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Executor, IntoArguments, Row};

use super::{AuditError, AuditEvent, AuditFilter, AuditLog, AuditRecord};
use crate::store::{Database, Dialect, Value};

/// Widths of the columns (longer values are cut, never refused).
const IP_WIDTH: usize = 64;
const USER_AGENT_WIDTH: usize = 512;

#[derive(Debug)]
pub struct SqlAuditLog<DB: Dialect> {
    db: Arc<Database<DB>>,
}

impl<DB: Dialect> SqlAuditLog<DB> {
    pub fn new(db: Arc<Database<DB>>) -> Self {
        Self { db }
    }
}

fn cut(value: Option<&str>, width: usize) -> Option<String> {
    value.map(|v| v.chars().take(width).collect())
}

const LIST: &str = "SELECT id, at, action, outcome, actor_id, subject_id, ip, user_agent, detail \
     FROM authgate_audit \
     WHERE ($1 IS NULL OR actor_id = $1 OR subject_id = $1) \
       AND ($2 IS NULL OR action = $2 OR substr(action, 1, length($2) + 1) = $2 || '.') \
       AND ($3 IS NULL OR outcome = $3) \
       AND ($4 IS NULL OR at >= $4) \
       AND ($5 IS NULL OR at < $5) \
       AND ($6 IS NULL OR id < $6) \
     ORDER BY id DESC LIMIT $7";

#[async_trait]
impl<DB> AuditLog for SqlAuditLog<DB>
where
    DB: Dialect,
    DB::Connection: Migrate,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    i64: Value<DB>,
    String: Value<DB>,
    NaiveDateTime: Value<DB>,
    Option<i64>: Value<DB>,
    Option<String>: Value<DB>,
    Option<NaiveDateTime>: Value<DB>,
{
    async fn append(&self, event: &AuditEvent, at: NaiveDateTime) -> Result<(), AuditError> {
        let detail = if event.detail.is_null() {
            "{}".to_string()
        } else {
            event.detail.to_string()
        };
        sqlx::query(
            "INSERT INTO authgate_audit (at, action, outcome, actor_id, subject_id, ip, user_agent, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(at)
        .bind(event.action.to_string())
        .bind(event.outcome.as_str().to_string())
        .bind(event.actor)
        .bind(event.subject)
        .bind(cut(event.ip.as_deref(), IP_WIDTH))
        .bind(cut(event.user_agent.as_deref(), USER_AGENT_WIDTH))
        .bind(detail)
        .execute(self.db.pool().await)
        .await
        .map_err(AuditError)?;
        Ok(())
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = sqlx::query(LIST)
            .bind(filter.user_id)
            .bind(filter.action.clone())
            .bind(filter.outcome.map(|o| o.as_str().to_string()))
            .bind(filter.since)
            .bind(filter.until)
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(self.db.pool().await)
            .await
            .map_err(AuditError)?;
        rows.iter()
            .map(|row| {
                let at: NaiveDateTime = row.try_get("at").map_err(AuditError)?;
                let detail: String = row.try_get("detail").map_err(AuditError)?;
                Ok(AuditRecord {
                    id: row.try_get("id").map_err(AuditError)?,
                    at: at.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true),
                    action: row.try_get("action").map_err(AuditError)?,
                    outcome: row.try_get("outcome").map_err(AuditError)?,
                    actor_id: row.try_get("actor_id").map_err(AuditError)?,
                    subject_id: row.try_get("subject_id").map_err(AuditError)?,
                    ip: row.try_get("ip").map_err(AuditError)?,
                    user_agent: row.try_get("user_agent").map_err(AuditError)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
