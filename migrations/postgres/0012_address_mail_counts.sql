-- Verification mails asked for addresses no user has (resend-verification)
-- are counted like a user's (VERIFICATION_MAIL_LIMIT within
-- VERIFICATION_MAIL_WINDOW_SECONDS of the last one), so that an unknown
-- address gets the answers of a known one, limit included, after the same
-- work (deliberate difference 3). No mail is sent to them; only the
-- SHA-256 of the lower-cased address is kept, and rows past the window are
-- removed.
CREATE TABLE IF NOT EXISTS authgate_address_mail_counts (
    address_digest CHAR(64) PRIMARY KEY,
    attempts INTEGER NOT NULL,
    sent_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS authgate_address_mail_counts_sent_at ON authgate_address_mail_counts (sent_at);

-- Keycloak mode looks an address up in the registry too, known or not
-- (the same work for both), by lower-cased address.
CREATE INDEX IF NOT EXISTS authgate_identities_email_lower ON authgate_identities (lower(email));
