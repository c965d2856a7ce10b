-- The SMPP outbox keeps only what is still to go: a deliver_sm the client took, or one given up, is deleted, so
-- the sweep of expired ones walks the pending rows alone and needs no index of its own.
DROP INDEX smpp_outbox_expiring;
DELETE FROM smpp_outbox WHERE state <> 'pending';
