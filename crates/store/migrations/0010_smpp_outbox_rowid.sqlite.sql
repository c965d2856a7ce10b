-- The SMPP outbox on SQLite keyed by its rowid: every receipt to an SMPP client is a row written and deleted, and a
-- TEXT UUID key cost an index of its own on both (and the UUID's making). Rows keep their order and their leases;
-- their ids are new.
CREATE TABLE smpp_outbox_keyed (
    id               INTEGER PRIMARY KEY,
    account_id       TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    part             BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    error_code       TEXT,
    at               BIGINT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
INSERT INTO smpp_outbox_keyed (account_id, message_id, seq, part, kind, status, error_code, at, state, attempts,
    next_attempt_at, lease_owner, lease_until, expires_at, created_at)
SELECT account_id, message_id, seq, part, kind, status, error_code, at, state, attempts, next_attempt_at,
    lease_owner, lease_until, expires_at, created_at
FROM smpp_outbox ORDER BY created_at, id;
DROP TABLE smpp_outbox;
ALTER TABLE smpp_outbox_keyed RENAME TO smpp_outbox;
CREATE INDEX smpp_outbox_due ON smpp_outbox (account_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX smpp_outbox_message ON smpp_outbox (message_id, seq);
