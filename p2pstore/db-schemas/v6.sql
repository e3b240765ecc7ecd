-- The tables of a node's two databases besides the readings tables, as of
-- schema version 6 (the same as version 5: version 6 changed only the
-- readings tables). self_sensor_data.db is schema "main", and
-- peer_sensor_data.db is attached to the same connection as "peer".
-- IF NOT EXISTS: a database written before log_positions existed is
-- version 1 too, and gets the table when it opens; one upgraded from an
-- older version gets the newer tables (quarantine, pruned, log_marks) the
-- same way.

-- schema_version, epoch, running, recovering, last_sensor_index, and
-- reading_ids_pending (p2pstore.readingids).
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
-- the rows: from first_index (past 1 once the log's start is pruned) to
-- last_index. A log whose records were all pruned has first_index =
-- last_index + 1.
CREATE TABLE IF NOT EXISTS main.log_positions (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    last_index INTEGER NOT NULL,
    first_index INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (origin, epoch)
);

CREATE TABLE IF NOT EXISTS peer.log_positions (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    last_index INTEGER NOT NULL,
    first_index INTEGER NOT NULL DEFAULT 1,
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

-- The ranges of each log that a database no longer holds, and why
-- ("retention", "evicted", or a peer's reason for a range it no longer
-- held when this node asked for it): written in the same transaction as
-- the rows are deleted, so that a gap is never silent. Adjacent ranges of
-- one reason are one row.
CREATE TABLE IF NOT EXISTS main.pruned (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_index INTEGER NOT NULL,
    last_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    pruned_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS peer.pruned (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    first_index INTEGER NOT NULL,
    last_index INTEGER NOT NULL,
    reason TEXT NOT NULL,
    pruned_at REAL NOT NULL
);

-- When each log reached an index in this database (Unix time), written at
-- most once per mark interval: retention prunes the records up to the last
-- mark older than --retain, so a record is never pruned early.
CREATE TABLE IF NOT EXISTS main.log_marks (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (origin, epoch, entry_index)
);

CREATE TABLE IF NOT EXISTS peer.log_marks (
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (origin, epoch, entry_index)
);

-- How far each export destination (--export) has taken each log: the last
-- entry index it answered 2xx for, moved only then. Keyed by the
-- destination's URL without its secrets (p2pstore.export.Destination.name),
-- so a new password or token keeps the cursors. Made by any open, like the
-- tables above, in a file of an earlier release too.
CREATE TABLE IF NOT EXISTS main.export_cursors (
    destination TEXT NOT NULL,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    exported INTEGER NOT NULL,
    PRIMARY KEY (destination, origin, epoch)
);

-- Readings a destination refused for their content (HTTP 400 for the one
-- point alone, after the batch was split down to it) or that cannot be a
-- point at all: kept here with the destination's answer, while export goes
-- on past them.
CREATE TABLE IF NOT EXISTS main.export_dead_letters (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    entry_index INTEGER NOT NULL,
    line TEXT,
    status INTEGER,
    answer TEXT NOT NULL,
    failed_at REAL NOT NULL
);

-- The logs whose rows each database holds (schema version 5), numbered:
-- a row's key in its origin's rows table is the ordinal of its log shifted
-- past its entry index (p2pstore.schema.key_of), so a log is one range of
-- the table, and no row repeats the epoch's 32 characters.
CREATE TABLE IF NOT EXISTS main.epochs (
    ordinal INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    UNIQUE (origin, epoch)
);

CREATE TABLE IF NOT EXISTS peer.epochs (
    ordinal INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    epoch TEXT NOT NULL,
    UNIQUE (origin, epoch)
);
