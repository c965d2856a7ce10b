-- Message templates with merge fields (issue 21).
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- 'transactional' or 'marketing': the category of the texts made from it.
    category    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
