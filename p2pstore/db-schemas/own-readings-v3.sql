-- What a node's own readings table has beyond readings-v2.sql: only those
-- are looked up by reading_id (to answer a resent reading). Not unique:
-- while a node recovers its old epochs, a sensor may resend a reading whose
-- first copy has not come back yet.
CREATE INDEX IF NOT EXISTS main.{table}_reading_id ON {table} (reading_id)
    WHERE reading_id IS NOT NULL;
