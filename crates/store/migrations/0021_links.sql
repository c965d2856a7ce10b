-- Short links in texts, and their clicks (issue 21).

-- The base URL an account's short links are served at (such as https://go.example.com); none: the server's.
CREATE TABLE link_settings (
    account_id  TEXT PRIMARY KEY REFERENCES accounts (id),
    base_url    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One short link: a code made for one text to one contact, so a click tells who and for what.
CREATE TABLE links (
    -- Random, unguessable, and saying nothing of the contact.
    code         TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL,
    url          TEXT NOT NULL,
    message_id   TEXT,
    contact_id   TEXT,
    campaign_id  TEXT,
    created_at   BIGINT NOT NULL
);

CREATE INDEX links_campaign ON links (campaign_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX links_message ON links (message_id) WHERE message_id IS NOT NULL;

-- Each visit of a short link.
CREATE TABLE link_clicks (
    id          TEXT PRIMARY KEY,
    code        TEXT NOT NULL REFERENCES links (code) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    -- A link preview fetched by a messaging app or a crawler (by its user agent): kept, not counted as a click.
    robot       BIGINT NOT NULL,
    user_agent  TEXT
);

CREATE INDEX link_clicks_code ON link_clicks (code, at);
