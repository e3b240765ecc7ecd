-- One origin's readings table, server_id_<node id>, in {db} ("main" for a
-- node's own, "peer" for the copies of another node's), as of schema
-- version 4. {table} is made only from a checked node id.
-- sensor_name is the name the sensor authenticated with (--sensor-tokens),
-- NULL for a sensor without a token. It is not part of the signed record:
-- for now only a node's own table has names, and peers' copies hold NULL.
CREATE TABLE IF NOT EXISTS {db}.{table} (
    entry_index INTEGER NOT NULL,
    sensor_index INTEGER NOT NULL,
    sensor_type TEXT NOT NULL,
    sensor_data TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    value REAL,
    unit TEXT,
    reading_id TEXT,
    data_checksum TEXT NOT NULL,
    epoch TEXT NOT NULL,
    sensor_name TEXT,
    PRIMARY KEY (epoch, entry_index)
);

CREATE INDEX IF NOT EXISTS {db}.{table}_timestamp ON {table} (timestamp);
