-- API keys get a name, scopes and when they were last used. Keys are now stored as a keyed hash (HMAC-SHA256 with
-- the server's secret; a key of an earlier version is re-hashed the first time it is used), and nothing of the
-- key itself: the prefix kept before was its first characters, which are cleared.
ALTER TABLE api_keys ADD COLUMN name TEXT;
-- Comma-separated: send, read, manage, admin. NULL: every scope its account's keys may have.
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET prefix = '';
