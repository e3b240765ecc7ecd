-- From schema version 4 to 5: the epochs tables (v5.sql), which number the
-- logs for the readings tables' new keys (upgrade-tables-to-v5.sql).
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
