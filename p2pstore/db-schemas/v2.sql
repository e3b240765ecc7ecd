-- The tables of a node's two databases besides the readings tables, as of
-- schema version 2. self_sensor_data.db is schema "main", and
-- peer_sensor_data.db is attached to the same connection as "peer".
-- IF NOT EXISTS: a database written before log_positions existed is
-- version 1 too, and gets the table when it opens; one upgraded from
-- version 1 gets quarantine the same way.

-- schema_version, epoch, running, recovering, last_sensor_index.
CREATE TABLE IF NOT EXISTS main.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- Lines the node refused, kept for diagnosis.
CREATE TABLE IF NOT EXISTS main.rejected_lines (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    sensor_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL
);

-- How far each database holds each log, moved in the same transaction as
-- the rows.
CREATE TABLE IF NOT EXISTS main.log_positions (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    last_index INTEGER NOT NULL,
    PRIMARY KEY (origin, epoch)
);

CREATE TABLE IF NOT EXISTS peer.log_positions (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    last_index INTEGER NOT NULL,
    PRIMARY KEY (origin, epoch)
);

-- Records that failed their HMAC when checked again: moved out of their
-- log so that they are never served, and fetched again from a peer.
CREATE TABLE IF NOT EXISTS main.quarantine (
    id INTEGER PRIMARY KEY,
    found_at TEXT NOT NULL,
    db TEXT NOT NULL,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    row TEXT NOT NULL,
    repaired_at TEXT
);
