-- Keycloak mode: sign-ups whose `create_user` call failed without a clear
-- answer (timed out, cut by the request's deadline, a 5xx). Keycloak may
-- have created the user all the same, under the legacy id authgate gave
-- it, which no registry row will ever name. The row outlives a restart
-- and is seen by every replica: the user is removed by a retried sign-up
-- that finds it, or by the background sweep once Keycloak answers; the row
-- goes with it (or after a day when Keycloak never created the user).
CREATE TABLE IF NOT EXISTS authgate_abandoned_signups (
    legacy_id INTEGER PRIMARY KEY,
    abandoned_at TIMESTAMP NOT NULL
);
