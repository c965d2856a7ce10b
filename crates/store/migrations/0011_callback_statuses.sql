-- Which status changes of a message call its webhook back: a mask of status bits (smsgate_core::Status::bit);
-- NULL for every one, as before.
ALTER TABLE messages ADD COLUMN callback_statuses BIGINT;
