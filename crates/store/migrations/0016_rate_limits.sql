-- Per-account rate limits, set by the operator: requests a second per API key, messages a second per account (on
-- every way in). NULL: none.
ALTER TABLE accounts ADD COLUMN requests_per_second BIGINT;
ALTER TABLE accounts ADD COLUMN messages_per_second BIGINT;
