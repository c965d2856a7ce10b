-- The journey lives in the message's own row: one JSON object a line, appended by the UPDATE that moves the
-- message. An event table cost an insert into a table and its index at every status change (a third of the
-- writer's work), and nothing reads events but a message's own journey.
ALTER TABLE messages ADD COLUMN journey TEXT NOT NULL DEFAULT '';
UPDATE messages SET journey = COALESCE((
    SELECT group_concat(json_object('status', status, 'at', at, 'detail', detail) || char(10), '' ORDER BY seq)
    FROM message_events WHERE message_id = messages.id), '');
DROP TABLE message_events;
ALTER TABLE messages DROP COLUMN event_count;
