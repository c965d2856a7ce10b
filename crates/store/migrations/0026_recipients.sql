-- The messages an account sent to a number, without an index entry per message keyed by the number (issue 25).
-- `messages_to (to_addr, id)` put each message's entry on a leaf page of its own recipient, so that every write
-- group rewrote a page per message in the WAL and the checkpoint wrote them again at random across a growing file:
-- the submit p99 doubled within minutes of steady load. Now an account's outbound messages from one number to one
-- handset form a chain, newest first, each linking to the one before (`prev_to`), and `recipients` holds each
-- chain's head: one row per account, business number and handset, rewritten in place.

-- The previous outbound message of the same account, from the same number to the same handset; NULL for the first.
ALTER TABLE messages ADD COLUMN prev_to TEXT;

CREATE TABLE recipients (
    -- The handset (`to_addr`) and the business number or sender (`from_addr`), as the messages hold them.
    handset        TEXT NOT NULL,
    address        TEXT NOT NULL,
    account_id     TEXT NOT NULL,
    -- The newest outbound message of the chain, and what it was sent for (what a reply answers).
    last_id        TEXT NOT NULL,
    campaign_id    TEXT,
    automation_id  TEXT,
    last_at        BIGINT NOT NULL,
    PRIMARY KEY (handset, address, account_id)
);

-- The chains of the messages already sent, through the index about to go.
UPDATE messages SET prev_to = (
    SELECT m.id FROM messages m WHERE m.to_addr = messages.to_addr AND m.id < messages.id
        AND m.direction = 'outbound' AND m.from_addr = messages.from_addr AND m.account_id = messages.account_id
    ORDER BY m.id DESC LIMIT 1)
WHERE direction = 'outbound';

INSERT INTO recipients (handset, address, account_id, last_id, campaign_id, automation_id, last_at)
SELECT m.to_addr, m.from_addr, m.account_id, m.id, m.campaign_id, m.automation_id, m.created_at
FROM messages m
WHERE m.direction = 'outbound' AND NOT EXISTS (
    SELECT 1 FROM messages n WHERE n.to_addr = m.to_addr AND n.id > m.id AND n.direction = 'outbound'
        AND n.from_addr = m.from_addr AND n.account_id = m.account_id);

DROP INDEX messages_to;
