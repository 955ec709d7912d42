//! How a store's errors read to the identity layer: an unreachable database
//! is `Unavailable` (a 503 at the edge), a taken address or name is what it
//! says, the rest is internal and logged here, never shown to the client.

use super::{IdentityError, Internal};
use crate::audit::AuditError;

/// The audit trail is kept in the same stores: its failures read alike.
impl From<AuditError> for IdentityError {
    fn from(err: AuditError) -> Self {
        db_error(err.0)
    }
}

/// Maps a database error to the identity layer (see the module comment).
pub fn db_error(err: sqlx::Error) -> IdentityError {
    match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %err, "database unavailable");
            IdentityError::Unavailable("Database")
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL 08: connection exception; 57P0x: shutdown / cannot
            // connect now. SQLite 5/6: busy or locked beyond the busy timeout.
            if code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "6" {
                tracing::warn!(code = %code, "database unavailable");
                return IdentityError::Unavailable("Database");
            }
            if db.is_unique_violation() {
                // PostgreSQL names the index; SQLite names the columns.
                let constraint = db.constraint().unwrap_or_else(|| db.message());
                if constraint.contains("email") {
                    return IdentityError::EmailTaken;
                }
                if constraint.contains("username") {
                    return IdentityError::UsernameTaken;
                }
            }
            tracing::error!(code = %code, error = %db.message(), "database error");
            let code = code.to_string();
            IdentityError::Internal(Internal::Database { code, source: err })
        }
        _ => {
            tracing::error!(error = %err, "database error");
            IdentityError::Internal(Internal::Other(Box::new(err)))
        }
    }
}
