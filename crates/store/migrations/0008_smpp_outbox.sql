-- What an SMPP client asked to hear about a message it submitted: its registered_delivery (SMPP 3.4 5.2.17), and
-- how many ids it was given for the message (one per part when it asked for a receipt per part; NULL: one id).
ALTER TABLE messages ADD COLUMN smpp_receipts BIGINT;
ALTER TABLE messages ADD COLUMN smpp_parts BIGINT;

-- The outbox of deliver_sm for SMPP clients: receipts and inbound messages, written in the same transaction as the
-- status change (or the inbound message) they carry, so none is lost. The SMPP server claims those of accounts
-- bound to it as receivers, in order per message (by seq), and sends each until the client's deliver_sm_resp says
-- OK or it expires. part: 0 for the whole message, else the part whose own id the client was given.
CREATE TABLE smpp_outbox (
    id               TEXT PRIMARY KEY,
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
CREATE INDEX smpp_outbox_due ON smpp_outbox (account_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX smpp_outbox_expiring ON smpp_outbox (expires_at) WHERE state = 'pending';
CREATE INDEX smpp_outbox_message ON smpp_outbox (message_id, seq);
