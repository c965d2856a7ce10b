-- SMPP credentials: the system_id and password an account's client applications bind with (the password as an
-- Argon2 PHC string), and what limits their binds.
CREATE TABLE smpp_credentials (
    system_id      TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    password_hash  TEXT NOT NULL,
    -- A JSON array of address ranges binds may come from; NULL: from anywhere.
    allowed_ips    TEXT,
    max_binds      BIGINT,
    -- Submits per second over all of its binds; NULL: no limit.
    throughput     DOUBLE PRECISION,
    created_at     BIGINT NOT NULL
);
CREATE INDEX smpp_credentials_account ON smpp_credentials (account_id);
