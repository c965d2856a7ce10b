-- Rollups: what analytics read instead of the messages (issue 21). Each status change that counts adds, in the
-- change's own transaction, to five rows of its account and hour: one for the account (dimension 'all') and one
-- for each of its campaign, connector, country and sender (store::rollups decides what counts): sent (with the price), delivered
-- (with the latency, in buckets lat_0 to lat_11: up to 1 s, 2 s, 5 s, 10 s, 30 s, 1 min, 2 min, 5 min, 10 min,
-- 30 min, 1 h, more), undelivered, failed, expired, replies; clicks and opt-outs as they are recorded.

CREATE TABLE rollups (
    account_id   TEXT NOT NULL,
    -- all, campaign, connector, country or sender.
    dimension    TEXT NOT NULL,
    -- The hour's start, UTC milliseconds.
    hour         BIGINT NOT NULL,
    -- The campaign's id, the connector's name, the country (ISO 3166), the account's address (what a text was sent
    -- from, what a reply was sent to); '' for none or unknown, and for all.
    value        TEXT NOT NULL,
    sent         BIGINT NOT NULL DEFAULT 0,
    delivered    BIGINT NOT NULL DEFAULT 0,
    undelivered  BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    expired      BIGINT NOT NULL DEFAULT 0,
    cost_micros  BIGINT NOT NULL DEFAULT 0,
    replies      BIGINT NOT NULL DEFAULT 0,
    clicks       BIGINT NOT NULL DEFAULT 0,
    opt_outs     BIGINT NOT NULL DEFAULT 0,
    lat_0        BIGINT NOT NULL DEFAULT 0,
    lat_1        BIGINT NOT NULL DEFAULT 0,
    lat_2        BIGINT NOT NULL DEFAULT 0,
    lat_3        BIGINT NOT NULL DEFAULT 0,
    lat_4        BIGINT NOT NULL DEFAULT 0,
    lat_5        BIGINT NOT NULL DEFAULT 0,
    lat_6        BIGINT NOT NULL DEFAULT 0,
    lat_7        BIGINT NOT NULL DEFAULT 0,
    lat_8        BIGINT NOT NULL DEFAULT 0,
    lat_9        BIGINT NOT NULL DEFAULT 0,
    lat_10       BIGINT NOT NULL DEFAULT 0,
    lat_11       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, dimension, hour, value)
);

-- Counts appended where several writers would wait on each other's locks on one rollup row (PostgreSQL's nodes,
-- and counts from outside the message paths): folded into rollups a batch at a time, read with them meanwhile.
CREATE TABLE rollup_deltas (
    id           BIGSERIAL PRIMARY KEY,
    account_id   TEXT NOT NULL,
    dimension    TEXT NOT NULL,
    hour         BIGINT NOT NULL,
    value        TEXT NOT NULL,
    sent         BIGINT NOT NULL DEFAULT 0,
    delivered    BIGINT NOT NULL DEFAULT 0,
    undelivered  BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    expired      BIGINT NOT NULL DEFAULT 0,
    cost_micros  BIGINT NOT NULL DEFAULT 0,
    replies      BIGINT NOT NULL DEFAULT 0,
    clicks       BIGINT NOT NULL DEFAULT 0,
    opt_outs     BIGINT NOT NULL DEFAULT 0,
    lat_0        BIGINT NOT NULL DEFAULT 0,
    lat_1        BIGINT NOT NULL DEFAULT 0,
    lat_2        BIGINT NOT NULL DEFAULT 0,
    lat_3        BIGINT NOT NULL DEFAULT 0,
    lat_4        BIGINT NOT NULL DEFAULT 0,
    lat_5        BIGINT NOT NULL DEFAULT 0,
    lat_6        BIGINT NOT NULL DEFAULT 0,
    lat_7        BIGINT NOT NULL DEFAULT 0,
    lat_8        BIGINT NOT NULL DEFAULT 0,
    lat_9        BIGINT NOT NULL DEFAULT 0,
    lat_10       BIGINT NOT NULL DEFAULT 0,
    lat_11       BIGINT NOT NULL DEFAULT 0,
    -- The fold that took it, until its transaction deletes it.
    claimed_by   TEXT
);

CREATE INDEX rollup_deltas_account ON rollup_deltas (account_id, dimension, hour);
