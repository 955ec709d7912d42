-- Where `authgate import-users` stopped, so that a run cut short (Ctrl-C, a
-- Keycloak outage, a crash) continues there: every live legacy user with an
-- id up to last_legacy_id has been handled, and the counts and failures so
-- far are kept for the report of the run that finishes. A run that reaches
-- the end removes both; the next run then looks at every user again.

CREATE TABLE IF NOT EXISTS authgate_import_progress (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    last_legacy_id INTEGER NOT NULL,
    imported BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    started_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS authgate_import_failures (
    legacy_id INTEGER PRIMARY KEY,
    username VARCHAR(255) NOT NULL,
    reason TEXT NOT NULL
);
