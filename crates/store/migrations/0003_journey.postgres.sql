-- The journey lives in the message's own row: one JSON object a line, appended by the UPDATE that moves the
-- message. An event table cost an insert into a table and its index at every status change, and nothing reads
-- events but a message's own journey. (SQLite's version of this step builds the same lines with its functions.)
ALTER TABLE messages ADD COLUMN journey TEXT NOT NULL DEFAULT '';
UPDATE messages SET journey = e.lines
FROM (SELECT message_id,
             string_agg(json_build_object('status', status, 'at', at, 'detail', detail)::text || chr(10), ''
                        ORDER BY seq) AS lines
      FROM message_events GROUP BY message_id) AS e
WHERE e.message_id = messages.id;
DROP TABLE message_events;
ALTER TABLE messages DROP COLUMN event_count;
