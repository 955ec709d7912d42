-- The audit trail (migrations/postgres/0008 in SQLite's terms): append-only,
-- triggers refuse UPDATE and DELETE.
CREATE TABLE authgate_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TIMESTAMP NOT NULL,
    action VARCHAR(64) NOT NULL,
    outcome VARCHAR(16) NOT NULL CHECK (outcome IN ('success', 'failure')),
    actor_id INTEGER,
    subject_id INTEGER,
    ip VARCHAR(64),
    user_agent VARCHAR(512),
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX authgate_audit_at ON authgate_audit (at);
CREATE INDEX authgate_audit_actor ON authgate_audit (actor_id, id);
CREATE INDEX authgate_audit_subject ON authgate_audit (subject_id, id);
CREATE INDEX authgate_audit_action ON authgate_audit (action, id);

CREATE TRIGGER authgate_audit_no_update BEFORE UPDATE ON authgate_audit
BEGIN
    SELECT RAISE(ABORT, 'authgate_audit is append-only');
END;
CREATE TRIGGER authgate_audit_no_delete BEFORE DELETE ON authgate_audit
BEGIN
    SELECT RAISE(ABORT, 'authgate_audit is append-only');
END;
