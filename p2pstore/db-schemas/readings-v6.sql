-- One origin's readings, in {db} ("main" for a node's own, "peer" for the
-- copies of another node's), as of schema version 6. {table} is made only
-- from a checked node id.
--
-- The rows are stored in {table}_rows, as small as a row can be, for disk
-- wear (bench/README.md, diskwear.py): key is the rowid, the ordinal of the
-- row's log in {db}.epochs shifted left 40 bits, or'ed with its entry index
-- (p2pstore.schema.key_of), so no index is kept beside the table for the
-- log's order; the checksum is its 32 bytes. sensor_name is the name the
-- sensor authenticated with (--sensor-tokens), NULL for a sensor without a
-- token; it is not part of the signed record.
CREATE TABLE IF NOT EXISTS {db}.{table}_rows (
    key INTEGER PRIMARY KEY,
    sensor_index INTEGER NOT NULL,
    sensor_type TEXT NOT NULL,
    sensor_data TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    reading_id TEXT,
    data_checksum BLOB NOT NULL,
    value REAL,
    unit TEXT,
    sensor_name TEXT
);

-- The block index of the rows' times (p2pstore.timeblocks), in place of an
-- index of the timestamps: for each block of 128 keys (block = key >> 7)
-- and each minute (UTC, minutes since 1970) its rows' instants fall in,
-- the earliest and latest of them in microseconds since 1970 UTC.
CREATE TABLE IF NOT EXISTS {db}.{table}_times (
    minute INTEGER NOT NULL,
    block INTEGER NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER NOT NULL,
    PRIMARY KEY (minute, block)
) WITHOUT ROWID;

-- The table users query (README, "Database"), with the columns of earlier
-- versions: entry_index and epoch from the key, the checksum as hex.
CREATE VIEW IF NOT EXISTS {db}.{table} AS
    SELECT r.key & 1099511627775 AS entry_index,
        r.sensor_index AS sensor_index,
        r.sensor_type AS sensor_type,
        r.sensor_data AS sensor_data,
        r.timestamp AS timestamp,
        r.value AS value,
        r.unit AS unit,
        r.reading_id AS reading_id,
        lower(hex(r.data_checksum)) AS data_checksum,
        e.epoch AS epoch,
        r.sensor_name AS sensor_name
    FROM {table}_rows AS r JOIN epochs AS e ON e.ordinal = r.key >> 40;
