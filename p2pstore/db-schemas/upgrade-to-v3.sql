-- From schema version 2 to 3: each log's first index held, 1 for every log
-- until now (nothing was ever pruned). The new tables, pruned and
-- log_marks, come from v3.sql when the database opens (IF NOT EXISTS).
ALTER TABLE main.log_positions ADD COLUMN first_index INTEGER NOT NULL DEFAULT 1;
ALTER TABLE peer.log_positions ADD COLUMN first_index INTEGER NOT NULL DEFAULT 1;
