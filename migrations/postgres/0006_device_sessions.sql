-- Keycloak mode: what authgate saw of the device when it opened a session
-- (Keycloak's Admin API has no user agent, and its IP address is the
-- gateway's for password grants), by Keycloak session id (`sid`). Rows of
-- sessions Keycloak no longer has are removed when the user's sessions are
-- listed or ended.

CREATE TABLE IF NOT EXISTS authgate_device_sessions (
    session_id VARCHAR(64) PRIMARY KEY,
    legacy_id INTEGER NOT NULL,
    user_agent VARCHAR(512),
    ip_address VARCHAR(64),
    device_type VARCHAR(64),
    device_name VARCHAR(255),
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS authgate_device_sessions_legacy_id ON authgate_device_sessions (legacy_id);
