-- Native mode: tokens of a user issued before `not_before` are refused
-- (a password reset ends every token, sign-up tokens included, which name
-- no device session). A table of authgate's own beside the legacy `users`:
-- the old service never reads it, so its schema stays as it was and a
-- rollback keeps working. (Keycloak mode keeps the same instant in
-- `authgate_identities.not_before`.)
CREATE TABLE IF NOT EXISTS authgate_user_not_before (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    not_before TIMESTAMP NOT NULL
);
