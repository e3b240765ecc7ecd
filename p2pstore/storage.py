"""
The SQLite store: the adbapi pool, the schema, and every query.

One connection in one thread (SQLite allows one writer; more connections
would only wait on its lock), in WAL mode so the sqlite3 tool can read the
file while the node runs. Table names are built only from validated node
ids; every value goes in as a parameter.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterable, Optional, Sequence

import attrs
from attrs import define, frozen
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .records import Reading, Record, Signer, is_node_id, parse_value_unit

SCHEMA_VERSION = 1

# Placeholders per "WHERE reading_id IN (...)" query: well under SQLite's
# limit on host parameters.
_LOOKUP_CHUNK = 500

_COLUMNS = (
    "entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
    "value, unit, reading_id, data_checksum, epoch"
)


class StoreError(Exception):
    """
    The database cannot be used as it is; the message says what to do.
    """


def table_name(node_id: str) -> str:
    """
    The readings table of one origin: ``server_id_<node id>``, as the seed
    named it.
    """
    if not is_node_id(node_id):
        raise ValueError(f"not a node id: {node_id!r}")
    return f"server_id_{node_id}"


def readings_schema(node_id: str) -> list[str]:
    """
    The statements that create one origin's readings table and its indexes.
    """
    table = table_name(node_id)
    return [
        f"""CREATE TABLE IF NOT EXISTS {table} (
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
            PRIMARY KEY (epoch, entry_index)
        )""",
        f"CREATE INDEX IF NOT EXISTS {table}_timestamp ON {table} (timestamp)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_reading_id "
        f"ON {table} (reading_id) WHERE reading_id IS NOT NULL",
    ]


_SELF_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rejected_lines (
        id INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        sensor_index INTEGER NOT NULL,
        reason TEXT NOT NULL,
        raw BLOB NOT NULL
    )""",
]


@frozen
class Rejected:
    """
    A sensor line the node refused, kept for diagnosis.
    """

    received_at: str
    sensor_index: int
    reason: str
    raw: bytes


@frozen
class Opened:
    """
    What the store knows once it is open.
    """

    epoch: str
    count: int
    last_index: int
    last_sensor_index: int
    rejected: int


@frozen
class Appended:
    """
    The outcome of one group commit.

    @ivar indexes: the entry_index answered for each reading, in order;
        a reading whose reading_id was already stored gets the stored index.
    @ivar records: the records this commit added.
    """

    indexes: list[int]
    records: list[Record]


@define
class Store:
    """
    This node's own readings in ``self_sensor_data.db``.
    """

    path: Path
    node_id: str
    signer: Signer = attrs.field(repr=False)
    synchronous: str = "FULL"
    reactor: object = None
    epoch: Optional[str] = None
    _pool: Optional[adbapi.ConnectionPool] = attrs.field(default=None, init=False)

    log = Logger()

    def open(self) -> Deferred:
        """
        Open the database, creating or checking its schema.

        @return: a Deferred firing with L{Opened}.
        """
        kwargs = {}
        if self.reactor is not None:
            kwargs["cp_reactor"] = self.reactor
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            str(self.path),
            check_same_thread=False,
            # Transactions are begun explicitly, so autocommit otherwise.
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_openfun=self._configure,
            **kwargs,
        )
        d = self._pool.runInteraction(self._open)

        def opened(result: Opened) -> Opened:
            self.epoch = result.epoch
            return result

        return d.addCallback(opened)

    def _configure(self, conn) -> None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA busy_timeout = 10000")

    def _open(self, txn) -> Opened:
        txn.execute("BEGIN IMMEDIATE")
        for statement in _SELF_SCHEMA:
            txn.execute(statement)
        meta = dict(txn.execute("SELECT key, value FROM meta").fetchall())
        version = int(meta.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this "
                f"p2pstore understands ({SCHEMA_VERSION}): upgrade p2pstore"
            )
        for statement in readings_schema(self.node_id):
            txn.execute(statement)
        epoch = meta.get("epoch")
        if epoch is None:
            epoch = uuid.uuid4().hex
        table = table_name(self.node_id)
        txn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("epoch", epoch)],
        )
        count, last_index, last_sensor = txn.execute(
            f"SELECT count(*), coalesce(max(entry_index), 0), "
            f"coalesce(max(sensor_index), 0) FROM {table} WHERE epoch = ?",
            (epoch,),
        ).fetchone()
        total = txn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        rejected, rejected_sensor = txn.execute(
            "SELECT count(*), coalesce(max(sensor_index), 0) FROM rejected_lines"
        ).fetchone()
        last_sensor_index = max(
            int(meta.get("last_sensor_index", 0)), last_sensor, rejected_sensor
        )
        return Opened(
            epoch=epoch,
            count=total,
            last_index=last_index,
            last_sensor_index=last_sensor_index,
            rejected=rejected,
        )

    def append(
        self,
        readings: Sequence[tuple[Reading, int]],
        rejected: Sequence[Rejected],
        last_sensor_index: int,
    ) -> Deferred:
        """
        Store readings (each with the sensor_index of its connection) and
        rejected lines in one transaction.

        @return: a Deferred firing with L{Appended} once it has committed.
        """
        return self._pool.runInteraction(
            self._append, readings, rejected, last_sensor_index
        )

    def _append(self, txn, readings, rejected, last_sensor_index) -> Appended:
        table = table_name(self.node_id)
        txn.execute("BEGIN IMMEDIATE")
        known = self._stored_reading_ids(
            txn, table, {r.reading_id for r, _ in readings if r.reading_id is not None}
        )
        (index,) = txn.execute(
            f"SELECT coalesce(max(entry_index), 0) FROM {table} WHERE epoch = ?",
            (self.epoch,),
        ).fetchone()
        indexes: list[int] = []
        records: list[Record] = []
        sign = self.signer.sign
        for reading, sensor_index in readings:
            stored = known.get(reading.reading_id)
            if stored is not None:
                indexes.append(stored)
                continue
            index += 1
            records.append(
                sign(
                    Record(
                        origin=self.node_id,
                        epoch=self.epoch,
                        entry_index=index,
                        sensor_index=sensor_index,
                        sensor_type=reading.sensor_type,
                        sensor_data=reading.sensor_data,
                        timestamp=reading.timestamp,
                        reading_id=reading.reading_id,
                    )
                )
            )
            indexes.append(index)
            if reading.reading_id is not None:
                known[reading.reading_id] = index
        txn.executemany(
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_row(record) for record in records],
        )
        txn.executemany(
            "INSERT INTO rejected_lines (received_at, sensor_index, reason, raw) "
            "VALUES (?, ?, ?, ?)",
            [(r.received_at, r.sensor_index, r.reason, r.raw) for r in rejected],
        )
        txn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sensor_index', ?)",
            (str(last_sensor_index),),
        )
        return Appended(indexes=indexes, records=records)

    @staticmethod
    def _stored_reading_ids(txn, table: str, reading_ids: set) -> dict:
        wanted = list(reading_ids)
        found = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" * len(chunk))
            found.update(
                txn.execute(
                    f"SELECT reading_id, entry_index FROM {table} "
                    f"WHERE reading_id IN ({marks})",
                    chunk,
                ).fetchall()
            )
        return found

    def readings(
        self, origin: str, sensor_type: Optional[str], limit: int
    ) -> Deferred:
        """
        The newest readings of one origin, newest first.

        @return: a Deferred firing with a list of L{Record}.
        """
        sql = f"SELECT {_COLUMNS} FROM {table_name(origin)}"
        params: list = []
        if sensor_type is not None:
            sql += " WHERE sensor_type = ?"
            params.append(sensor_type)
        sql += " ORDER BY rowid DESC LIMIT ?"
        params.append(limit)
        d = self._pool.runQuery(sql, params)
        return d.addCallback(lambda rows: [_record(origin, row) for row in rows])

    def close(self) -> None:
        """
        Close the pool, waiting for any transaction in progress.
        """
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _row(record: Record) -> tuple:
    value, unit = parse_value_unit(record.sensor_data)
    return (
        record.entry_index,
        record.sensor_index,
        record.sensor_type,
        record.sensor_data,
        record.timestamp,
        value,
        unit,
        record.reading_id,
        record.data_checksum,
        record.epoch,
    )


def _record(origin: str, row: Iterable) -> Record:
    (
        entry_index,
        sensor_index,
        sensor_type,
        sensor_data,
        timestamp,
        _value,
        _unit,
        reading_id,
        data_checksum,
        epoch,
    ) = row
    return Record(
        origin=origin,
        epoch=epoch,
        entry_index=entry_index,
        sensor_index=sensor_index,
        sensor_type=sensor_type,
        sensor_data=sensor_data,
        timestamp=timestamp,
        reading_id=reading_id,
        data_checksum=data_checksum,
    )
