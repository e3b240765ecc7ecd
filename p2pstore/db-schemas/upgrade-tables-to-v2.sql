-- From schema version 1 to 2, for each readings table server_id_<node id>
-- in {db} ("main" or "peer"): the name of the sensor that sent the reading,
-- NULL for the readings stored before (and for every peer's copy, for now).
ALTER TABLE {db}.{table} ADD COLUMN sensor_name TEXT;
