-- What a node's own readings table has beyond readings-v6.sql: the
-- reading ids of its rows, looked up to answer a resent reading with the
-- index it was stored at. Not an index on the table, which every commit
-- would write a page of for each reading (each sensor's ids are a run of
-- their own in it): the ids are added here in bulk, sorted, so each page is
-- written about once, and those of the newest rows are held in memory
-- (p2pstore.readingids). Not unique by reading_id: while a node recovers
-- its old epochs, a sensor may resend a reading whose first copy has not
-- come back yet.
CREATE TABLE IF NOT EXISTS main.{table}_ids (
    reading_id TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    PRIMARY KEY (reading_id, entry_index)
) WITHOUT ROWID;
