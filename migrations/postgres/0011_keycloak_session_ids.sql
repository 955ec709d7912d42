-- Keycloak mode: every session has a UUID of authgate's own, the tokens'
-- `device_id` (Keycloak 26's session ids are not UUIDs, and clients parse
-- `device_id` as one), mapped to Keycloak's session id (`sid`) for the
-- calls that need Keycloak's: ending a session, listing a user's sessions,
-- a back-channel logout naming a `sid`. Rows stay after their session
-- ended, so that a token of it keeps its UUID (and stays refused).
CREATE TABLE IF NOT EXISTS authgate_session_ids (
    device_id UUID PRIMARY KEY,
    session_id VARCHAR(64) NOT NULL UNIQUE,
    legacy_id INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS authgate_session_ids_legacy_id ON authgate_session_ids (legacy_id);
