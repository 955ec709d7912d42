-- Keycloak mode keeps in PostgreSQL only what Keycloak cannot hold for the
-- contract: the integer user ids (allocated from the legacy users sequence,
-- so ids of migrated and new users never collide), the single-use e-mail
-- tokens, the verification-mail counters, and the sessions signed out
-- (checked on every request without asking Keycloak).

CREATE TABLE IF NOT EXISTS authgate_identities (
    legacy_id INTEGER PRIMARY KEY,
    keycloak_id UUID NOT NULL UNIQUE,
    username VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL,
    verification_attempts INTEGER NOT NULL DEFAULT 0,
    verification_sent_at TIMESTAMP,
    -- Tokens issued before this instant are refused (password reset, deletion).
    not_before TIMESTAMP,
    deleted_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

CREATE TABLE IF NOT EXISTS authgate_email_tokens (
    digest CHAR(64) PRIMARY KEY,
    legacy_id INTEGER NOT NULL,
    purpose VARCHAR(32) NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS authgate_email_tokens_legacy_id ON authgate_email_tokens (legacy_id);

CREATE TABLE IF NOT EXISTS authgate_ended_sessions (
    session_id VARCHAR(64) PRIMARY KEY,
    legacy_id INTEGER NOT NULL,
    ended_at TIMESTAMP NOT NULL
);
