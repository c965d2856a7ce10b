-- Webhooks: each account's URLs and signing secret, and the outbox of callbacks to deliver. A callback is written in
-- the same transaction as the status change it reports, so none is lost; the deliverer claims due ones with a
-- lease, in order per message (by seq, the length of the message's journey when it was written).
CREATE TABLE webhooks (
    account_id   TEXT PRIMARY KEY REFERENCES accounts (id),
    status_url   TEXT,
    inbound_url  TEXT,
    secret       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE callbacks (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    url              TEXT NOT NULL,
    status           TEXT NOT NULL,
    error_code       TEXT,
    at               BIGINT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    -- Each attempt, a JSON object a line: when, the result, how long it took.
    attempt_log      TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL
);
CREATE INDEX callbacks_due ON callbacks (next_attempt_at) WHERE state = 'pending';
CREATE INDEX callbacks_message ON callbacks (message_id, seq);
