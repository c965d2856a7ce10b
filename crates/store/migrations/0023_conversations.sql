-- Conversations, and what automations' texts and the replies to them are for (issue 21).

-- The automation a message was sent for, or (inbound) the automation whose text it answers; NULL for any other.
ALTER TABLE messages ADD COLUMN automation_id TEXT;

-- A handset's inbound messages in order: a conversation's, and the unread ones after what was read.
CREATE INDEX messages_inbound_from ON messages (from_addr, id) WHERE direction = 'inbound';

-- One per contact number and business number (or sender) of an account: begun by the contact's first message to
-- it, or by the account writing through the conversation.
CREATE TABLE conversations (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    -- The contact's number, and ours, as messages hold them.
    handset           TEXT NOT NULL,
    address           TEXT NOT NULL,
    -- The last message either way that the conversation knows of (inbound, or sent through it or by an automation).
    last_activity_at  BIGINT NOT NULL,
    -- The newest inbound message read (its id); '' for none.
    read_through      TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (account_id, handset, address)
);

-- An account's conversations, newest activity first.
CREATE INDEX conversations_activity ON conversations (account_id, last_activity_at, id);
