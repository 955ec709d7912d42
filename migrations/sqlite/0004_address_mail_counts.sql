-- Verification mails asked for unknown addresses, counted by a digest of
-- the address: migrations/postgres/0011 in SQLite's terms.
CREATE TABLE authgate_address_mail_counts (
    address_digest CHAR(64) PRIMARY KEY,
    attempts INTEGER NOT NULL,
    sent_at TIMESTAMP NOT NULL
);
CREATE INDEX authgate_address_mail_counts_sent_at ON authgate_address_mail_counts (sent_at);
