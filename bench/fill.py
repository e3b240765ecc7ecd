"""
Filling a node's own database before a benchmark: N readings written while
the node is stopped, through p2pstore's own rows and storage (so the rows are what
the node's ingestion would store: same table, numbering, epoch, canonical
encoding and HMAC), in batches of BATCH rows, so 1,000,000 take seconds
rather than the minute the sensor port would.

Every call into p2pstore is in L{OwnLog}: when storage's API changes, only
that class does.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone
from pathlib import Path

from core import BenchFailure

# Rows per append (one transaction each).
BATCH = 5000

_TYPES = (
    ("Temperature", lambda r: f"{r.randint(-20, 45)}C"),
    ("Atm. Pressure", lambda r: f"{r.uniform(0.9, 1.9):.3f} atm"),
    ("Humidity", lambda r: f"{r.randint(0, 100)}% RH"),
)


class OwnLog:
    """
    A node's own log opened through p2pstore.storage while the node is
    stopped: the one adapter between the bench and the package's storage
    API (identity files, Store, Reading, timestamps).
    """

    def __init__(self, data_dir: Path, key_file: Path, reactor):
        from p2pstore.identity import load_key, resolve_node_id, write_node_id
        from p2pstore.lines import Reading, format_utc
        from p2pstore.records import Signer
        from p2pstore.rows import OwnRows
        from p2pstore.schema import PEER_DB, SELF_DB
        from p2pstore.storage import Store

        self._reading = Reading
        self.format_utc = format_utc
        data_dir = Path(data_dir)
        self.node_id, made = resolve_node_id(data_dir)
        key, _ = load_key(Path(key_file), create=False)
        self.store = Store(
            path=data_dir / SELF_DB,
            node_id=self.node_id,
            synchronous="FULL",
            reactor=reactor,
            peer_path=data_dir / PEER_DB,
        )
        self.own = OwnRows(self.node_id, Signer.from_key(key))
        self._write_id = (lambda: write_node_id(data_dir, self.node_id)) if made else None

    async def open(self) -> dict:
        """
        Open (or create) the log: its epoch, how many rows it holds, and
        the last sensor index given out.
        """
        opened = await self.store.open()
        self.own.opened(opened.epoch, opened.last_index, 0)
        if self._write_id is not None:
            self._write_id()
        return {
            "epoch": opened.epoch,
            "count": opened.count,
            "last_index": opened.last_index,
            "last_sensor_index": opened.last_sensor_index,
        }

    def rows(self, readings: list[tuple], sensor_index: int, first_index: int) -> list:
        """
        The signed rows of ``(sensor_type, sensor_data, timestamp,
        reading_id)`` readings of one sensor, numbered from ``first_index``.
        """
        Reading = self._reading
        return self.own.prepare([Reading(*r) for r in readings], sensor_index, first_index)

    def append(self, rows: list, last_sensor_index: int):
        """
        Commit rows (one transaction); a Deferred firing with the log's new
        last index.
        """
        d = self.store.append(rows, [], last_sensor_index, self.own.renumber)
        return d.addCallback(lambda appended: appended.last_index)

    async def close(self) -> None:
        """
        Record a clean stop and close the database.
        """
        await self.store.mark_stopped()
        self.store.close()


async def fill_self_db(
    reactor, node, n: int, tag: str, sensors: int = 100, spacing: float = 0.001
) -> dict:
    """
    Store ``n`` readings in the node's own log while it is stopped, from
    ``sensors`` sensors (consecutive readings of one sensor, as a sensor
    connection sends them), BATCH a transaction: each batch is numbered and
    signed here while the one before commits in storage's thread. Reading
    j is stamped ``spacing`` seconds after reading j - 1, from 2026-11-28
    00:00 UTC.

    The node must hold no readings yet.

    @return: the epoch, the rows, the seconds it took and rows/s.
    """
    if node.alive():
        raise BenchFailure("fill a node's database only while it is stopped")
    log = OwnLog(node.data_dir, node.key_file, reactor)
    rng = random.Random(tag)
    values = []
    for sensor_type, make in _TYPES:
        for _ in range(50):
            values.append((sensor_type, make(rng)))
    rng.shuffle(values)
    base = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()
    stamp = log.format_utc
    per_sensor = max(1, -(-n // sensors))
    t0 = time.perf_counter()
    opened = await log.open()
    try:
        if opened["count"]:
            raise BenchFailure(f"node {node.name} already holds {opened['count']} readings")
        first_sensor = opened["last_sensor_index"] + 1
        last = opened["last_index"]
        committing = None
        for first in range(last + 1, last + n + 1, BATCH):
            end = min(first + BATCH, last + n + 1)
            rows = []
            # One prepare per sensor within the batch.
            i = first
            while i < end:
                k = i - last - 1
                sensor = k // per_sensor
                stop = min(end, last + 1 + (sensor + 1) * per_sensor)
                readings = [
                    (*values[j % len(values)], stamp(base + j * spacing), f"{tag}-{j:08d}")
                    for j in range(i - last, stop - last)
                ]
                rows.extend(log.rows(readings, first_sensor + sensor, i))
                i = stop
            if committing is not None:
                await committing
            committing = log.append(rows, first_sensor + (end - last - 2) // per_sensor)
        if committing is not None:
            got = await committing
            if got != last + n:
                raise BenchFailure(f"the fill ended at entry_index {got}, not {last + n}")
    finally:
        await log.close()
    seconds = time.perf_counter() - t0
    return {
        "epoch": opened["epoch"],
        "rows": n,
        "seconds": round(seconds, 2),
        "per_s": round(n / max(seconds, 1e-9)),
        "batch": BATCH,
    }
