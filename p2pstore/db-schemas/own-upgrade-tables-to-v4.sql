-- From schema version 3 to 4, for a node's own readings table: its
-- reading ids move from an index on the table to a table of their own
-- (own-readings-v4.sql), all of them at once; none is then pending.
CREATE TABLE IF NOT EXISTS main.{table}_ids (
    reading_id TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    PRIMARY KEY (reading_id, entry_index)
) WITHOUT ROWID;
INSERT OR IGNORE INTO main.{table}_ids (reading_id, entry_index)
    SELECT reading_id, entry_index FROM main.{table}
    WHERE reading_id IS NOT NULL ORDER BY reading_id, entry_index;
DROP INDEX IF EXISTS main.{table}_reading_id;
