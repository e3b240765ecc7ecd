"""
A node's log read back from its database files, read-only (WAL: the node
is never blocked): its epoch, a row-for-row digest, a sample of HMACs
verified, and how far it holds a log, polled over time (L{Timeline}).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Optional

from core import sleep

from p2pstore.identity import NODE_ID_FILE  # noqa: E402
from p2pstore.schema import SELF_DB, table_name  # noqa: E402

# The columns of a readings table, in the order digests hash them.
ROW_COLUMNS = (
    "epoch, entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
    "value, unit, reading_id, data_checksum"
)


def read_epoch(node) -> str:
    db = sqlite3.connect(f"{(node.data_dir / SELF_DB).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
    finally:
        db.close()


def table_digest(db_path: Path, origin: str, epoch: Optional[str] = None) -> dict:
    """
    Every row of an origin's table (or of one epoch of it), in log order,
    hashed: two copies are identical when count and digest match. Read
    through a read-only connection of its own (the node may be running).
    """
    table = table_name(origin)
    db = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        sql = f"SELECT {ROW_COLUMNS} FROM {table}"
        params: tuple = ()
        if epoch is not None:
            sql += " WHERE epoch = ?"
            params = (epoch,)
        sql += " ORDER BY epoch, entry_index"
        digest = hashlib.sha256()
        count = 0
        cursor = db.execute(sql, params)
        while True:
            rows = cursor.fetchmany(20_000)
            if not rows:
                break
            count += len(rows)
            digest.update(repr(rows).encode("utf-8", "surrogatepass"))
        return {"rows": count, "sha256": digest.hexdigest()}
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {"rows": 0, "sha256": None}
        raise
    finally:
        db.close()


def check_hmac_sample(db_path: Path, origin: str, key: bytes, sample: int = 2000) -> tuple[int, int]:
    """
    Verify the HMAC of a random sample of an origin's rows.

    @return: (checked, bad).
    """
    from p2pstore.records import CHECKSUM, BadRecord, Record, Signer
    from p2pstore.schema import EPOCH, row_sql

    signer = Signer.from_key(key)
    table = table_name(origin)
    db = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        # The rows under the view (schema version 5), by key.
        keys = [k for (k,) in db.execute(f"SELECT key FROM {table}_rows")]
        if not keys:
            return 0, 0
        picks = sorted(random.sample(keys, min(sample, len(keys))))
        checked = bad = 0
        for start in range(0, len(picks), 500):
            chunk = picks[start : start + 500]
            for row in db.execute(
                f"SELECT {row_sql('main')} FROM {table}_rows WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                record = Record(origin, row[EPOCH], *row[: CHECKSUM + 1])
                try:
                    signer.verify(record)
                except BadRecord:
                    bad += 1
                checked += 1
        return checked, bad
    finally:
        db.close()


class PositionProbe:
    """
    How far a node holds one log, read from its database file (read-only,
    WAL: the node is never blocked): ``log_positions`` moves in the same
    transaction as the rows, so it is what ``/readings`` would answer.
    """

    def __init__(self, node, origin: str, epoch: str):
        self.node = node
        self.path: Optional[Path] = None
        self.schema_origin = origin
        self.epoch = epoch
        self._db = None

    def read(self) -> int:
        if self._db is None:
            if self.path is None:
                if not (self.node.data_dir / NODE_ID_FILE).exists():
                    return 0
                self.path = self.node.db_path(self.schema_origin)
            if not self.path.exists():
                return 0
            self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            row = self._db.execute(
                "SELECT last_index FROM log_positions WHERE origin = ? AND epoch = ?",
                (self.schema_origin, self.epoch),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Timeline:
    """
    When a node was first seen holding each position of a log: polled every
    ``interval`` seconds from its database (``kind="db"``), or from its
    ``/readings?origin=..&limit=1`` (``kind="http"``, one request at a time).
    """

    def __init__(self, reactor, node, origin: str, epoch: str, interval: float,
                 kind: str = "db", http=None):
        self.reactor = reactor
        self.node = node
        self.origin = origin
        self.epoch = epoch
        self.interval = interval
        self.kind = kind
        self.http = http
        self.times = array("d")
        self.positions = array("q")
        self.last = 0
        self.polls = 0
        self.errors = 0
        self._probe = PositionProbe(node, origin, epoch) if kind == "db" else None
        self._loop = None
        self._running = False
        self._done = None

    def start(self) -> None:
        self._running = True
        if self.kind == "db":
            from twisted.internet.task import LoopingCall

            self._loop = LoopingCall(self._poll_db)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)
        else:
            from twisted.internet.defer import Deferred

            self._done = Deferred.fromCoroutine(self._poll_http())

    def _seen(self, position: int) -> None:
        self.polls += 1
        if position > self.last:
            self.last = position
            self.times.append(time.perf_counter())
            self.positions.append(position)

    def _poll_db(self) -> None:
        self._seen(self._probe.read())

    async def _poll_http(self) -> None:
        path = f"/readings?origin={self.origin}&limit=1"
        while self._running:
            t = time.perf_counter()
            try:
                code, body = await self.http.get(self.node.status_port, path, timeout=5)
            except Exception:
                self.errors += 1
                code, body = None, None
            if code == 200 and body.get("readings"):
                newest = body["readings"][0]
                if newest.get("epoch") == self.epoch:
                    self._seen(newest["entry_index"])
                else:
                    self.polls += 1
            elapsed = time.perf_counter() - t
            await sleep(self.reactor, max(0.0, self.interval - elapsed))

    async def stop(self) -> None:
        self._running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._done is not None:
            await self._done
        if self._probe is not None:
            self._probe.close()

    def when(self, position: int) -> Optional[float]:
        """
        The first time the node was seen holding ``position``.
        """
        k = bisect_left(self.positions, position)
        return self.times[k] if k < len(self.positions) else None
