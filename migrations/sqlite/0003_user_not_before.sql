-- Tokens of a user issued before `not_before` are refused (a password
-- reset): migrations/postgres/0009 in SQLite's terms.
CREATE TABLE authgate_user_not_before (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    not_before TIMESTAMP NOT NULL
);
