-- From schema version 4 to 5, for each readings table: its rows move to
-- {table}_rows, keyed by their log's ordinal and entry index, with the
-- checksum as bytes, and {table} becomes a view with the old columns
-- (readings-v5.sql, restated here as of version 5). The rows are copied
-- log by log in index order (the old primary key's order, so nothing is
-- sorted in memory), in the file, before the old table is dropped; it is
-- not renamed, so views a user made over it read the new view. A row with
-- no valid position (an entry_index that is not a positive integer, an
-- epoch that is not text: changed by another program) cannot be keyed and
-- is left out; the backup made before the upgrade keeps it, and the
-- upgrade logs how many.
INSERT OR IGNORE INTO {db}.epochs (ordinal, origin, epoch)
    SELECT (SELECT coalesce(max(ordinal), 0) FROM {db}.epochs)
            + row_number() OVER (ORDER BY min(rowid)),
        '{origin}', epoch
    FROM {db}.{table} WHERE typeof(epoch) = 'text' GROUP BY epoch;

CREATE TABLE {db}.{table}_rows (
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

INSERT INTO {db}.{table}_rows (key, sensor_index, sensor_type, sensor_data, timestamp,
        reading_id, data_checksum, value, unit, sensor_name)
    SELECT (e.ordinal << 40) | o.entry_index, o.sensor_index, o.sensor_type, o.sensor_data,
        o.timestamp, o.reading_id,
        CASE WHEN typeof(o.data_checksum) = 'text' AND length(o.data_checksum) = 64
            THEN coalesce(unhex(o.data_checksum), o.data_checksum) ELSE o.data_checksum END,
        o.value, o.unit, o.sensor_name
    FROM {db}.{table} AS o CROSS JOIN {db}.epochs AS e ON e.origin = '{origin}' AND e.epoch = o.epoch
    WHERE typeof(o.entry_index) = 'integer' AND o.entry_index BETWEEN 1 AND 1099511627775
    ORDER BY o.epoch, o.entry_index;

DROP TABLE {db}.{table};

CREATE INDEX {db}.{table}_rows_timestamp ON {table}_rows (timestamp);

CREATE VIEW {db}.{table} AS
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
