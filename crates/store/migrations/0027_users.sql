-- Dashboard users and their signed-in sessions (issue 22).
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    -- Lower case. One user an email across the server: signing in is by email alone.
    email           TEXT NOT NULL UNIQUE,
    -- Argon2id, as a PHC string.
    password_hash   TEXT NOT NULL,
    -- 'owner', 'admin', 'member' or 'viewer'.
    role            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    last_sign_in_at BIGINT,
    -- Wrong passwords in a row; at the limit, sign-in waits until locked_until.
    failed_sign_ins INTEGER NOT NULL DEFAULT 0,
    locked_until    BIGINT
);
CREATE INDEX users_account ON users (account_id, email);

CREATE TABLE user_sessions (
    -- The keyed hash of the session's token (the cookie's value); the token itself is not stored.
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    -- What a state-changing request carries in X-CSRF-Token along with the cookie.
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    seen_at     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);
