-- A list's member count, kept as members join and leave (counting a list of a million at each ask took 100 ms).
ALTER TABLE lists ADD COLUMN members BIGINT NOT NULL DEFAULT 0;
UPDATE lists SET members = (SELECT COUNT(*) FROM list_members m WHERE m.list_id = lists.id);
CREATE TRIGGER list_members_joined AFTER INSERT ON list_members BEGIN
    UPDATE lists SET members = members + 1 WHERE id = NEW.list_id;
END;
CREATE TRIGGER list_members_left AFTER DELETE ON list_members BEGIN
    UPDATE lists SET members = members - 1 WHERE id = OLD.list_id;
END;
