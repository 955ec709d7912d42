-- Single sign-on: the logins begun at /auth/login and not finished yet,
-- shared by every replica and used once. Rows are keyed by a digest of the
-- OAuth `state`, bound to the browser by a digest of a cookie's value, and
-- hold what the callback needs (nonce, PKCE verifier, where to go after).
CREATE TABLE IF NOT EXISTS authgate_sso_logins (
    state_digest CHAR(64) PRIMARY KEY,
    browser_digest CHAR(64) NOT NULL,
    nonce VARCHAR(128) NOT NULL,
    pkce_verifier VARCHAR(128) NOT NULL,
    provider VARCHAR(255) NOT NULL,
    redirect_to VARCHAR(2083) NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE INDEX IF NOT EXISTS authgate_sso_logins_expires_at ON authgate_sso_logins (expires_at);
