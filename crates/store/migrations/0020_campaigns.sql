-- Campaigns: one text to many contacts, sent exactly once each (issue 21).

-- The campaign a message was sent for; NULL for any other.
ALTER TABLE messages ADD COLUMN campaign_id TEXT;

-- Covers a campaign's numbers (count and cost by status) without reading the messages.
CREATE INDEX messages_campaign ON messages (campaign_id, status, price_micros) WHERE campaign_id IS NOT NULL;

-- The campaign an opt-out by keyword answered (the campaign of the text the STOP replied to).
ALTER TABLE consent_events ADD COLUMN campaign_id TEXT;

CREATE INDEX consent_events_campaign ON consent_events (campaign_id) WHERE campaign_id IS NOT NULL;

CREATE TABLE campaigns (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    name         TEXT NOT NULL,
    -- What it sends to whom, JSON: audience, template_id or body, from or sender_pool, category, schedule,
    -- throughput, on_missing_field, data.
    spec         TEXT NOT NULL,
    -- draft, scheduled, running, paused, completed, canceled.
    state        TEXT NOT NULL,
    -- When a scheduled campaign starts its next run.
    next_run_at  BIGINT,
    -- Why it stopped on its own (JSON {code, message}), if it did.
    error        TEXT,
    -- Its run under way or last (campaign_runs.id); starting a run sets it first, so two nodes never both start one.
    current_run  TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE INDEX campaigns_account ON campaigns (account_id, id);
CREATE INDEX campaigns_due ON campaigns (next_run_at) WHERE next_run_at IS NOT NULL;

-- One sending of a campaign to its audience as it was then (a recurring campaign has one a time).
CREATE TABLE campaign_runs (
    id            TEXT PRIMARY KEY,
    campaign_id   TEXT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    account_id    TEXT NOT NULL,
    -- running, pausing, paused, canceling, canceled, completed.
    state         TEXT NOT NULL,
    -- Materializing the audience: which source (list, segment, contacts) and the last contact id done; done once
    -- materialized is 1.
    source        BIGINT NOT NULL,
    source_cursor TEXT,
    materialized  BIGINT NOT NULL,
    -- The next recipient's order number, and how many contacts the sources named twice.
    next_seq      BIGINT NOT NULL,
    duplicates    BIGINT NOT NULL,
    -- The node working on it, until when.
    lease_owner   TEXT,
    lease_until   BIGINT,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX campaign_runs_campaign ON campaign_runs (campaign_id, id);
CREATE INDEX campaign_runs_active ON campaign_runs (state) WHERE state IN ('running', 'pausing', 'canceling');

-- A run's recipients, materialized before any is sent: one row per contact, so that no contact is sent a run
-- twice and none is skipped, whatever crashes and however many nodes work on it.
CREATE TABLE campaign_recipients (
    run_id      TEXT NOT NULL REFERENCES campaign_runs (id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    -- pending, queued, skipped, held (being taken back from the queue by a pause), canceled.
    state       TEXT NOT NULL,
    -- Why skipped (opted_out, missing_field, invalid_number, ...) or canceled.
    reason      TEXT,
    -- Taken back by pauses this many times (each try has its own idempotency key).
    attempt     BIGINT NOT NULL,
    message_id  TEXT,
    sender      TEXT,
    PRIMARY KEY (run_id, contact_id)
);

-- The next recipients to send (by state, in order), and the numbers by state and reason without reading the rows.
CREATE INDEX campaign_recipients_next ON campaign_recipients (run_id, state, seq, reason);
