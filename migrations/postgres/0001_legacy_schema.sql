-- The schema of the legacy FastAPI service, created only where it is missing.
-- On a database the old service left behind every table already exists: this
-- migration then changes nothing (rows, indexes and alembic_version stay as
-- they are). Columns mirror the old SQLAlchemy models; defaults are set here
-- because authgate, unlike SQLAlchemy, relies on the database for them.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'tokentype') THEN
        CREATE TYPE tokentype AS ENUM ('EMAIL_VERIFICATION', 'PASSWORD_RESET');
    END IF;

    IF to_regclass('users') IS NULL THEN
        CREATE TABLE users (
            id SERIAL PRIMARY KEY,
            username VARCHAR(50) NOT NULL,
            email VARCHAR(100) NOT NULL,
            password VARCHAR(256) NOT NULL,
            is_verified BOOLEAN NOT NULL DEFAULT false,
            verification_attempts INTEGER NOT NULL DEFAULT 0,
            verification_sent_at TIMESTAMP,
            created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            deleted_at TIMESTAMP,
            is_active BOOLEAN NOT NULL DEFAULT true,
            is_deleted BOOLEAN NOT NULL DEFAULT false
        );
        CREATE UNIQUE INDEX ix_users_email ON users (email);
        CREATE UNIQUE INDEX ix_users_username ON users (username);
    END IF;

    IF to_regclass('device_sessions') IS NULL THEN
        CREATE TABLE device_sessions (
            id SERIAL PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            device_id UUID NOT NULL,
            device_type VARCHAR(50),
            device_name VARCHAR(100),
            ip_address VARCHAR(45),
            user_agent VARCHAR(255),
            last_active TIMESTAMP,
            is_active BOOLEAN NOT NULL DEFAULT true,
            refresh_token VARCHAR(1000),
            created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            deleted_at TIMESTAMP,
            is_deleted BOOLEAN NOT NULL DEFAULT false
        );
        CREATE INDEX ix_device_sessions_user_id ON device_sessions (user_id);
    END IF;

    IF to_regclass('temporary_tokens') IS NULL THEN
        CREATE TABLE temporary_tokens (
            id SERIAL PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users (id),
            token VARCHAR(255) NOT NULL UNIQUE,
            token_type tokentype NOT NULL,
            expires_at TIMESTAMP NOT NULL,
            used_at TIMESTAMP,
            is_valid BOOLEAN NOT NULL DEFAULT true,
            created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            updated_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
            deleted_at TIMESTAMP,
            is_active BOOLEAN NOT NULL DEFAULT true,
            is_deleted BOOLEAN NOT NULL DEFAULT false
        );
    END IF;
END
$$;
