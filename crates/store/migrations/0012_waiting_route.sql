-- A message whose route has no connector up waits off the queue instead of being claimed and put back again and
-- again: `waiting_route` names the route, `next_attempt_at` is the largest BIGINT, and the dispatcher's node puts
-- it back on the queue when a connector of that route comes up (Store::unpark). Before, a backlog behind a carrier
-- outage kept the writer busy with claims and put-backs (a core's worth for 200,000 messages) and grew every
-- message's journey by two lines a look.
ALTER TABLE messages ADD COLUMN waiting_route TEXT;
CREATE INDEX messages_waiting ON messages (waiting_route, id) WHERE (status = 'queued' AND waiting_route IS NOT NULL);
