-- What authgate adds beside the legacy tables: roles (the legacy schema had
-- none) and the indexes its queries need. Nothing here rewrites legacy rows.

CREATE TABLE IF NOT EXISTS authgate_user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role VARCHAR(50) NOT NULL,
    granted_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    PRIMARY KEY (user_id, role)
);

-- Sign-in by e-mail and sign-up checks compare addresses regardless of case.
CREATE INDEX IF NOT EXISTS authgate_users_email_lower ON users (lower(email));
-- Revocation checks look sessions up by the tokens' device_id.
CREATE INDEX IF NOT EXISTS authgate_device_sessions_device_id ON device_sessions (device_id);
CREATE INDEX IF NOT EXISTS authgate_temporary_tokens_user_id ON temporary_tokens (user_id);

-- Case-insensitive uniqueness of e-mail addresses, where the existing rows
-- allow it. A legacy database may hold addresses that differ only in case
-- (the old service compared them exactly); it is then left as it is, and
-- authgate still refuses new case variants under a per-address lock.
DO $$
BEGIN
    CREATE UNIQUE INDEX IF NOT EXISTS authgate_users_email_lower_unique ON users (lower(email));
EXCEPTION WHEN unique_violation THEN
    RAISE NOTICE 'users holds e-mail addresses that differ only in case; no unique index on lower(email)';
END
$$;
