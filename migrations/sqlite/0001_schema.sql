-- The embedded store: the legacy schema (migrations/postgres/0001) and
-- authgate's additions (0002) in SQLite's terms, for native mode without a
-- database server. Same tables, columns and constraints; the differences are
-- SQLite's types: timestamps are ISO-8601 UTC text, booleans 0/1, the
-- device ids 16-byte UUID blobs, and the token type a checked text.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username VARCHAR(50) NOT NULL,
    email VARCHAR(100) NOT NULL,
    password VARCHAR(256) NOT NULL,
    is_verified BOOLEAN NOT NULL DEFAULT false,
    verification_attempts INTEGER NOT NULL DEFAULT 0,
    verification_sent_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP,
    is_active BOOLEAN NOT NULL DEFAULT true,
    is_deleted BOOLEAN NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX ix_users_email ON users (email);
CREATE UNIQUE INDEX ix_users_username ON users (username);
-- Addresses are unique regardless of (ASCII) case.
CREATE UNIQUE INDEX authgate_users_email_lower_unique ON users (lower(email));

CREATE TABLE device_sessions (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    device_id BLOB NOT NULL,
    device_type VARCHAR(50),
    device_name VARCHAR(100),
    ip_address VARCHAR(45),
    user_agent VARCHAR(255),
    last_active TIMESTAMP,
    is_active BOOLEAN NOT NULL DEFAULT true,
    refresh_token VARCHAR(1000),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP,
    is_deleted BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX ix_device_sessions_user_id ON device_sessions (user_id);
CREATE INDEX authgate_device_sessions_device_id ON device_sessions (device_id);

CREATE TABLE temporary_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    token VARCHAR(255) NOT NULL UNIQUE,
    token_type TEXT NOT NULL CHECK (token_type IN ('EMAIL_VERIFICATION', 'PASSWORD_RESET')),
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    is_valid BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMP,
    is_active BOOLEAN NOT NULL DEFAULT true,
    is_deleted BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX authgate_temporary_tokens_user_id ON temporary_tokens (user_id);

CREATE TABLE authgate_user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role VARCHAR(50) NOT NULL,
    granted_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (user_id, role)
);
