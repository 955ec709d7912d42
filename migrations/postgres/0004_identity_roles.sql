-- Keycloak mode: the realm roles of each user as last seen in their tokens
-- (sign-in, refresh), so the proxy can pass X-Auth-Roles without asking
-- Keycloak. Role changes take effect at the user's next refresh.
ALTER TABLE authgate_identities ADD COLUMN IF NOT EXISTS roles TEXT[] NOT NULL DEFAULT '{}';
