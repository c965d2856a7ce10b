-- What a campaign's texts came to once the history sweep deleted them (`history_days`): its stats add these to the
-- texts still kept, so they stay whole.
CREATE TABLE campaign_archive (
    campaign_id   TEXT NOT NULL,
    status        TEXT NOT NULL,
    n             BIGINT NOT NULL,
    price_micros  BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, status)
);
