-- The parts of a message a connector submitted part by part, each with the carrier's id for it: receipts come
-- per part, and the message is delivered once every part is (undelivered, expired or rejected as soon as one is).
-- Messages of one part, and those a connector sent whole, have no rows here.
CREATE TABLE message_parts (
    message_id  TEXT NOT NULL,
    part        BIGINT NOT NULL,
    connector   TEXT NOT NULL,
    carrier_id  TEXT NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (message_id, part)
);
CREATE INDEX message_parts_carrier ON message_parts (connector, carrier_id);
