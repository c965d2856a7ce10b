-- Contacts, lists, segments, consent and the jobs that import them (issue 20).

-- What a message is for: 'transactional' or 'marketing' (held for quiet hours, never sent after an opt-out).
ALTER TABLE messages ADD COLUMN category TEXT NOT NULL DEFAULT 'transactional';

-- An account's compliance settings as JSON (keywords, replies, opt-out scope, quiet hours, retention); NULL: the
-- defaults.
ALTER TABLE accounts ADD COLUMN compliance TEXT;

CREATE TABLE contacts (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    -- E.164, one contact per number and account.
    phone             TEXT NOT NULL,
    -- The number's keyed hash, as the consent tables key it.
    phone_hash        TEXT NOT NULL,
    name              TEXT,
    email             TEXT,
    -- The zone the account gave; NULL: derived from the number when asked.
    time_zone         TEXT,
    -- Custom fields, a JSON object.
    fields            TEXT NOT NULL,
    -- Tags, a JSON array (contact_tags holds them again, for filtering).
    tags              TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    -- The last message to or from the number; NULL: none yet.
    last_activity_at  BIGINT,
    UNIQUE (account_id, phone)
);

CREATE INDEX contacts_account ON contacts (account_id, id);

CREATE TABLE contact_tags (
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL,
    tag         TEXT NOT NULL,
    PRIMARY KEY (contact_id, tag)
);

CREATE INDEX contact_tags_tag ON contact_tags (account_id, tag, contact_id);

CREATE TABLE lists (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE list_members (
    list_id     TEXT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (list_id, contact_id)
);

CREATE INDEX list_members_contact ON list_members (contact_id);

CREATE TABLE segments (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    -- The saved filter, JSON.
    filter      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX segments_account ON segments (account_id, id);

-- Every change of a number's consent, kept per number even when no contact exists. The number is kept as a keyed
-- hash (phone_hash) and in clear (phone) until the person is erased, when phone becomes NULL.
CREATE TABLE consent_events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    phone_hash  TEXT NOT NULL,
    phone       TEXT,
    -- '' for the whole account; a sender's address key for an opt-out that holds for that number only.
    scope       TEXT NOT NULL,
    -- 'opt_out' or 'opt_in'.
    change      TEXT NOT NULL,
    -- 'keyword', 'api', 'import' or 'dashboard'.
    source      TEXT NOT NULL,
    -- What shows it: the inbound message and its text, the import job and row, the key used (JSON).
    evidence    TEXT NOT NULL,
    at          BIGINT NOT NULL
);

CREATE INDEX consent_events_phone ON consent_events (account_id, phone_hash, id);
-- Each node reads the recent changes every second (the copy of opt-outs admission asks).
CREATE INDEX consent_events_at ON consent_events (at);

-- Who may not be texted now: one row per account, number (hashed) and scope while it is opted out.
CREATE TABLE opt_outs (
    account_id  TEXT NOT NULL,
    phone_hash  TEXT NOT NULL,
    scope       TEXT NOT NULL,
    phone       TEXT,
    source      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (account_id, phone_hash, scope)
);

-- An account's opt-outs, newest first.
CREATE INDEX opt_outs_account_at ON opt_outs (account_id, at, phone_hash);

-- Long work done in the background (CSV imports), resumable after a restart.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    -- 'running', 'completed' or 'failed'.
    state       TEXT NOT NULL,
    -- What the job works on (the import's file and mapping), JSON.
    spec        TEXT NOT NULL,
    -- Rows read, contacts created, updated, rows skipped; the byte offset of the next row to read.
    rows_read   BIGINT NOT NULL,
    created     BIGINT NOT NULL,
    updated     BIGINT NOT NULL,
    skipped     BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    -- The first errors, a JSON array of {row, column, code, message}.
    errors      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX jobs_account ON jobs (account_id, id);
