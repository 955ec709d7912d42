-- Keycloak mode: Keycloak stays the authority.
--
-- The registry's copy of a user's verified flag: resend-verification
-- answers from it for known and unknown addresses alike (the same work for
-- both), and it is kept current at verification through authgate and from
-- Keycloak's admin events. NULL: not known yet (rows from before), asked
-- of Keycloak once.
ALTER TABLE authgate_identities ADD COLUMN IF NOT EXISTS email_verified BOOLEAN;
-- Access tokens issued before this instant are refused (the user's roles
-- were removed in Keycloak: a refresh brings the new ones); refresh tokens
-- are not.
ALTER TABLE authgate_identities ADD COLUMN IF NOT EXISTS roles_not_before TIMESTAMP;

-- The reader of Keycloak's admin events, one row per realm: how far it
-- has read (events up to `cursor_ms`, Keycloak's milliseconds; `seen`
-- holds `<time>:<id>` of the events handled near it, which are read again
-- in case one committed late), the replica holding the lease (one replica
-- of the cluster reads at a time), and the realm's "sign out all active
-- sessions" instant (every token issued before it is refused).
CREATE TABLE IF NOT EXISTS authgate_admin_events (
    realm VARCHAR(255) PRIMARY KEY,
    cursor_ms BIGINT NOT NULL,
    seen TEXT[] NOT NULL DEFAULT '{}',
    holder UUID,
    lease_until TIMESTAMPTZ,
    realm_not_before TIMESTAMP
);

-- Back-channel logout tokens already used (their `jti`, as a SHA-256),
-- kept until they expire, when Redis is not configured (with Redis, the
-- replicas share them there).
CREATE TABLE IF NOT EXISTS authgate_logout_tokens (
    jti_digest CHAR(64) PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS authgate_logout_tokens_expires_at ON authgate_logout_tokens (expires_at);
