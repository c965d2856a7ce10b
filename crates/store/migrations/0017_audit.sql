-- Who changed what: every change made over the API (accounts, keys, connectors, routes, numbers, sender IDs,
-- credentials, webhooks, settings), with the account and key that made it.
CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    at              BIGINT NOT NULL,
    actor_account   TEXT,
    actor_key       TEXT,
    -- The method and route pattern, such as 'POST /v1/routes'.
    action          TEXT NOT NULL,
    -- The path acted on, such as '/v1/routes/uk'.
    target          TEXT NOT NULL,
    status          BIGINT NOT NULL,
    -- The request's JSON body with every secret (password, secret, token, key) replaced; NULL without one.
    detail          TEXT
);

CREATE INDEX audit_log_actor ON audit_log (actor_account, id);
