-- Numbers and sender IDs owned by accounts, and whether an account may send from what it does not own.

ALTER TABLE accounts ADD COLUMN sender_policy TEXT NOT NULL DEFAULT 'owned';
-- Accounts made before senders were owned keep sending as they did; the operator moves them to 'owned' once their
-- numbers and sender IDs are registered (docs/security.md).
UPDATE accounts SET sender_policy = 'any';

CREATE TABLE senders (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    -- 'long_code', 'short_code' or 'alphanumeric'.
    kind         TEXT NOT NULL,
    -- As it is sent from: E.164, the short code's digits, the sender ID.
    address      TEXT NOT NULL,
    -- The address without '+', in lower case: one owner per address, whatever its status.
    address_key  TEXT NOT NULL UNIQUE,
    -- The connector its inbound messages arrive on; NULL: any.
    connector    TEXT,
    -- 'active', 'pending' (waiting for the operator) or 'rejected'.
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE INDEX senders_account ON senders (account_id, kind);
