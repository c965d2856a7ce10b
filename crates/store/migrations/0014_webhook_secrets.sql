-- A rotated webhook secret stays valid for a grace period: callbacks carry signatures with both meanwhile.
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_until BIGINT;
