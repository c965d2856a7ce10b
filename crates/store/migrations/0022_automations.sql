-- Automations: what an account's texting does on its own when something happens (issue 21).

CREATE TABLE automations (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    name         TEXT NOT NULL,
    -- Its trigger and steps, JSON (the service's to read).
    spec         TEXT NOT NULL,
    -- Its trigger's type: keyword, event, date_field, schedule.
    trigger_type TEXT NOT NULL,
    -- 1 while it reacts to its trigger; runs under way go on either way.
    enabled      BIGINT NOT NULL,
    -- A schedule trigger: its next firing.
    next_run_at  BIGINT,
    -- A trigger on a contact's date field: how far the changed contacts were read ("updated_at id").
    cursor       TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE INDEX automations_account ON automations (account_id, id);
CREATE INDEX automations_trigger ON automations (trigger_type, enabled);
CREATE INDEX automations_due ON automations (next_run_at) WHERE next_run_at IS NOT NULL;

-- One contact's way through an automation, step by step: one row per trigger (its key unique per automation, so a
-- trigger repeated starts nothing new).
CREATE TABLE automation_runs (
    id             TEXT PRIMARY KEY,
    automation_id  TEXT NOT NULL REFERENCES automations (id) ON DELETE CASCADE,
    account_id     TEXT NOT NULL,
    contact_id     TEXT NOT NULL,
    -- What started it: "event:{event id or idempotency key}", "message:{inbound id}",
    -- "date:{contact}:{subject}:{time}", "schedule:{time}:{contact}".
    trigger_key    TEXT NOT NULL,
    -- What a date trigger's later events name it by (an appointment's id); '' for the contact's only one.
    subject        TEXT NOT NULL,
    -- active (a step due at due_at), waiting (for a reply, or due_at), completed, canceled, failed.
    state          TEXT NOT NULL,
    -- The next step, as its path in the steps ("2", "3.1.0": step 3, its second case, that case's first step).
    position       TEXT NOT NULL,
    due_at         BIGINT,
    -- Waiting for a reply: from which number (the contact's), to which of ours.
    reply_from     TEXT,
    reply_to       TEXT,
    -- The trigger's data (the event's, the inbound message), JSON; the last reply's text.
    data           TEXT NOT NULL,
    reply          TEXT,
    -- Each step taken, a JSON array.
    log            TEXT NOT NULL,
    error          TEXT,
    lease_owner    TEXT,
    lease_until    BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    UNIQUE (automation_id, trigger_key)
);

CREATE INDEX automation_runs_due ON automation_runs (due_at) WHERE state IN ('active', 'waiting');
CREATE INDEX automation_runs_contact ON automation_runs (automation_id, contact_id, id);
CREATE INDEX automation_runs_state ON automation_runs (automation_id, state);
CREATE INDEX automation_runs_reply ON automation_runs (account_id, reply_from) WHERE state = 'waiting';

-- What an account's systems told us happened (POST /v1/events); the idempotency key is unique per account.
CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    name             TEXT NOT NULL,
    contact_id       TEXT NOT NULL,
    data             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    -- What it did: the runs it started, moved and canceled, JSON.
    outcome          TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (account_id, idempotency_key)
);

-- Inbound messages automations have not read yet (keywords, replies awaited): set once read. The history before
-- automations existed counts as read.
ALTER TABLE messages ADD COLUMN automated_at BIGINT;
UPDATE messages SET automated_at = created_at WHERE direction = 'inbound';
CREATE INDEX messages_unautomated ON messages (id) WHERE direction = 'inbound' AND automated_at IS NULL;

-- Contacts by when they changed, for triggers on a date field.
CREATE INDEX contacts_updated ON contacts (account_id, updated_at, id);

-- A callback that is not a message's (an automation's webhook step): its body, JSON. message_id is then the run's id.
ALTER TABLE callbacks ADD COLUMN payload TEXT;
