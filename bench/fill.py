"""
Filling a node's own database before a benchmark: N readings written while
the node is stopped, so 1,000,000 take seconds rather than the minute the
sensor port would.
"""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import datetime, timezone

from core import BenchFailure
from nodes import SELF_DB

_TYPES = (
    ("Temperature", lambda r: f"{r.randint(-20, 45)}C"),
    ("Atm. Pressure", lambda r: f"{r.uniform(0.9, 1.9):.3f} atm"),
    ("Humidity", lambda r: f"{r.randint(0, 100)}% RH"),
)


def fill_self_db(node, n: int, key: bytes, tag: str, sensors: int = 100) -> dict:
    """
    Write ``n`` readings into the node's own log directly, while it is
    stopped: rows as the node's ingestion makes them (same table, entry_index
    1..n in its current epoch, canonical encoding and HMAC from
    p2pstore.records, value and unit parsed as p2pstore.storage does), with
    synchronous=OFF and one transaction per 50,000 rows, so 1,000,000 take
    seconds rather than the minute the sensor port would.

    The node must have run once (so the table and its epoch exist) and have
    stored nothing yet.

    @return: the epoch and how long it took.
    """
    from p2pstore.records import Signer, parse_value_unit

    if node.alive():
        raise BenchFailure("fill a node's database only while it is stopped")
    node_id = node.node_id
    table = f"server_id_{node_id}"
    signer = Signer.from_key(key)
    checksum_of = signer.checksum_of
    rng = random.Random(tag)
    t0 = time.perf_counter()
    db = sqlite3.connect(str(node.data_dir / SELF_DB), isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        (epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        (held,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        if held:
            raise BenchFailure(f"node {node.name} already holds {held} readings")
        (last_sensor,) = db.execute(
            "SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'last_sensor_index'"
        ).fetchone()
        # A pool of values, so rows differ without a random call per row.
        values = []
        for sensor_type, make in _TYPES:
            for _ in range(50):
                data = make(rng)
                values.append((sensor_type, data, *parse_value_unit(data)))
        rng.shuffle(values)
        base = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()
        insert = (
            f"INSERT INTO {table} (entry_index, sensor_index, sensor_type, sensor_data, "
            f"timestamp, value, unit, reading_id, data_checksum, epoch) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        chunk = 50_000
        per_sensor = max(1, -(-n // sensors))
        for first in range(1, n + 1, chunk):
            rows = []
            append = rows.append
            for i in range(first, min(first + chunk, n + 1)):
                sensor_type, data, value, unit = values[i % len(values)]
                sensor_index = last_sensor + 1 + (i - 1) // per_sensor
                stamp = datetime.fromtimestamp(base + i * 0.001, timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S.%f"
                )
                reading_id = f"{tag}-{i:08d}"
                checksum = checksum_of(node_id, epoch, i, sensor_index, sensor_type, data, stamp, reading_id)
                append((i, sensor_index, sensor_type, data, stamp, value, unit, reading_id, checksum, epoch))
            db.execute("BEGIN")
            db.executemany(insert, rows)
            db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute(
            "INSERT OR REPLACE INTO main.log_positions (origin, epoch, last_index) VALUES (?, ?, ?)",
            (node_id, epoch, n),
        )
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sensor_index', ?)",
            (str(last_sensor + -(-n // per_sensor)),),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return {"epoch": epoch, "rows": n, "seconds": round(time.perf_counter() - t0, 2)}
