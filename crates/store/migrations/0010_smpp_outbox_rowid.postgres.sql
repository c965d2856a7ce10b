-- On SQLite the SMPP outbox is keyed by its rowid from here on (see 0010_smpp_outbox_rowid.sqlite.sql);
-- PostgreSQL keeps its TEXT key, written and deleted in multi-row statements, where its cost was not seen.
SELECT 1;
