-- smsgate schema, version 1. Valid SQL for both SQLite and PostgreSQL: ids are TEXT (UUIDs), numbers BIGINT,
-- times BIGINT milliseconds since the Unix epoch (UTC).

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    is_admin    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    -- SHA-256 of the key, hex; the key itself is never stored.
    key_hash    TEXT NOT NULL UNIQUE,
    -- The first characters of the key, to recognise it in a list.
    prefix      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    direction        TEXT NOT NULL,
    to_addr          TEXT NOT NULL,
    from_addr        TEXT NOT NULL,
    body             TEXT NOT NULL,
    encoding         TEXT NOT NULL,
    segments         BIGINT NOT NULL,
    price_micros     BIGINT,
    connector        TEXT,
    carrier_id       TEXT,
    status           TEXT NOT NULL,
    error_code       TEXT,
    reference        TEXT,
    callback_url     TEXT,
    send_at          BIGINT,
    expires_at       BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    -- When the dispatcher may take it next: send_at, or the time of the next retry.
    next_attempt_at  BIGINT NOT NULL,
    -- A dispatcher's claim: who holds it and until when.
    lease_owner      TEXT,
    lease_until      BIGINT,
    -- The status a message had when it was last claimed or expired in bulk (UPDATE ... RETURNING gives new
    -- values only, and the journey needs the old one).
    claimed_from     TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- Listing an account's messages, newest first, by keyset.
CREATE INDEX messages_account_id ON messages (account_id, direction, id);
-- The queue: what is due.
CREATE INDEX messages_due ON messages (status, next_attempt_at);
-- Leases to take back.
CREATE INDEX messages_lease ON messages (lease_until) WHERE status = 'sending';
-- What expires.
CREATE INDEX messages_expiry ON messages (expires_at) WHERE status IN ('scheduled', 'queued', 'sending', 'sent');
-- Receipts find their message by the carrier's id.
CREATE INDEX messages_carrier ON messages (connector, carrier_id) WHERE carrier_id IS NOT NULL;
CREATE UNIQUE INDEX messages_idempotency ON messages (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE message_events (
    message_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    status      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
);
