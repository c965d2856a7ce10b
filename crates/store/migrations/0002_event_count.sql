-- Each message counts its journey's events, so appending one is `event_count + 1` in the same UPDATE that moves
-- the message (returned by RETURNING), instead of a MAX(seq) read of the event table per change.
ALTER TABLE messages ADD COLUMN event_count BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET event_count = (SELECT COALESCE(MAX(seq), 0) FROM message_events WHERE message_id = messages.id);

-- The queue indexes only what waits: an index on every message's status grew with the history, was rewritten by
-- every status change, and drew the planners away from the partial indexes below. Each query that uses a partial
-- index repeats its WHERE term word for word, which is what SQLite needs to pick it. The terms are ORs, not IN
-- lists: SQLite builds a temporary table for an IN list at every evaluation, that is at every change of a row.
DROP INDEX messages_due;
CREATE INDEX messages_queue ON messages (next_attempt_at) WHERE (status = 'queued' OR status = 'scheduled');

-- A reply from a handset finds the account that last wrote to it; listing by `to` uses it too.
CREATE INDEX messages_to ON messages (to_addr, id);

-- What expires: not what is being sent (its dispatcher checks the validity), so that claiming and sending a
-- message rewrite this index once each rather than twice.
DROP INDEX messages_expiry;
CREATE INDEX messages_expiring ON messages (expires_at)
    WHERE (status = 'scheduled' OR status = 'queued' OR status = 'sent');
