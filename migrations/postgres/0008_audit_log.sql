-- The audit trail: one row per authentication event (who, what, when, from
-- where, outcome), append-only: rows cannot be changed or removed through
-- authgate's connection (triggers refuse UPDATE, DELETE and TRUNCATE; an
-- owner who must prune old rows disables the trigger for that statement).
CREATE TABLE IF NOT EXISTS authgate_audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    action VARCHAR(64) NOT NULL,
    outcome VARCHAR(16) NOT NULL CHECK (outcome IN ('success', 'failure')),
    actor_id BIGINT,
    subject_id BIGINT,
    ip VARCHAR(64),
    user_agent VARCHAR(512),
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS authgate_audit_at ON authgate_audit (at);
CREATE INDEX IF NOT EXISTS authgate_audit_actor ON authgate_audit (actor_id, id);
CREATE INDEX IF NOT EXISTS authgate_audit_subject ON authgate_audit (subject_id, id);
CREATE INDEX IF NOT EXISTS authgate_audit_action ON authgate_audit (action, id);

CREATE OR REPLACE FUNCTION authgate_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'authgate_audit is append-only';
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS authgate_audit_no_change ON authgate_audit;
CREATE TRIGGER authgate_audit_no_change BEFORE UPDATE OR DELETE ON authgate_audit
    FOR EACH ROW EXECUTE FUNCTION authgate_audit_append_only();
DROP TRIGGER IF EXISTS authgate_audit_no_truncate ON authgate_audit;
CREATE TRIGGER authgate_audit_no_truncate BEFORE TRUNCATE ON authgate_audit
    FOR EACH STATEMENT EXECUTE FUNCTION authgate_audit_append_only();
