-- From schema version 5 to 6, for each readings table: the block index of
-- its times (readings-v6.sql, restated here as of version 6) takes the
-- place of the index of its timestamps. The store fills it from the rows
-- after these statements, in the same transaction
-- (p2pstore.timeblocks.build).
CREATE TABLE {db}.{table}_times (
    minute INTEGER NOT NULL,
    block INTEGER NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER NOT NULL,
    PRIMARY KEY (minute, block)
) WITHOUT ROWID;

DROP INDEX IF EXISTS {db}.{table}_rows_timestamp;
