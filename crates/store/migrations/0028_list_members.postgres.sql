-- A list's member count, kept as members join and leave (counting a list of a million at each ask took 100 ms).
-- Statement triggers over the rows a statement really added or removed (ON CONFLICT DO NOTHING leaves out the
-- others): one update of each list a statement touched, not one a row (an import adds a million in batches, and a
-- row that one transaction updates a thousand times grows a chain of versions each update walks). Two nodes adding
-- members at once take turns on the list's row.
ALTER TABLE lists ADD COLUMN members BIGINT NOT NULL DEFAULT 0;
UPDATE lists SET members = (SELECT COUNT(*) FROM list_members m WHERE m.list_id = lists.id);
CREATE FUNCTION list_members_joined() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists l SET members = l.members + j.n
    FROM (SELECT list_id, COUNT(*) AS n FROM joined GROUP BY list_id) j WHERE l.id = j.list_id;
    RETURN NULL;
END
$$;
CREATE FUNCTION list_members_left() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lists l SET members = l.members - g.n
    FROM (SELECT list_id, COUNT(*) AS n FROM gone GROUP BY list_id) g WHERE l.id = g.list_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER list_members_joined AFTER INSERT ON list_members
    REFERENCING NEW TABLE AS joined FOR EACH STATEMENT EXECUTE FUNCTION list_members_joined();
CREATE TRIGGER list_members_left AFTER DELETE ON list_members
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION list_members_left();
