-- Connectors and routes, managed over the API (and seeded from the config file): kept here, so a change made on
-- one node lasts and reaches the others. Settings and matches are JSON, read by the code that knows their kind.
CREATE TABLE connectors (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE routes (
    name        TEXT PRIMARY KEY,
    -- Routes are tried by position, then name; the route named 'default' always last.
    position    BIGINT NOT NULL,
    matches     TEXT NOT NULL,
    connectors  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Things done once per database, such as creating the default route: deleting that route then lasts.
CREATE TABLE done_once (
    name        TEXT PRIMARY KEY,
    at          BIGINT NOT NULL
);

-- The routes an account may use, as a JSON list of names; NULL: all.
ALTER TABLE accounts ADD COLUMN routes TEXT;
