"""
The SQLite store: the adbapi pool, the schema, and every query.

One connection in one thread (SQLite allows one writer; more connections
would only wait on its lock), in WAL mode so the sqlite3 tool can read the
file while the node runs. Table names are built only from validated node
ids; every value goes in as a parameter.
"""

from __future__ import annotations

import sqlite3
import uuid
from itertools import chain
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.parse import quote

import attrs
from attrs import define, frozen
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .records import ENTRY_FIELDS, Reading, Record, Signer, is_node_id, parse_value_unit

SCHEMA_VERSION = 1

# Placeholders per "WHERE reading_id IN (...)" query, at most (fewer if
# SQLite allows fewer host parameters): a batch of 5,000 readings is looked
# up in one query.
_LOOKUP_CHUNK = 8192

_COLUMNS = (
    "entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
    "value, unit, reading_id, data_checksum, epoch"
)
# A record's fields in the order of a RECORDS entry.
_ENTRY_COLUMNS = ", ".join(ENTRY_FIELDS)
# What a Record requires of them, checked by SQLite as it reads: a row that
# fails (changed by another program) is left out, which leaves a gap.
_ENTRY_VALID = (
    "typeof(entry_index) = 'integer' AND entry_index >= 1 "
    "AND typeof(sensor_index) = 'integer' AND sensor_index >= 0 "
    "AND typeof(sensor_type) = 'text' AND typeof(sensor_data) = 'text' "
    "AND typeof(timestamp) = 'text' AND typeof(data_checksum) = 'text' "
    "AND (reading_id IS NULL OR typeof(reading_id) = 'text')"
)

# Rows per INSERT statement, at most (fewer if SQLite allows fewer host
# parameters). executemany() steps SQLite once per row and gives up the GIL
# at every step; while the reactor thread is busy each step then waits for
# the GIL again, and a batch of 1,000 rows could take seconds. One
# statement of many rows steps once, and SQLite does the work of all of
# them without the GIL.
_ROWS_PER_INSERT = 512
_ROW_MARKS = "(" + ", ".join("?" * len(_COLUMNS.split(", "))) + ")"


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


def readings_schema(node_id: str, schema: str = "main") -> list[str]:
    """
    The statements that create one origin's readings table and its indexes
    in ``schema`` (``main`` for self_sensor_data.db, ``peer`` for
    peer_sensor_data.db).
    """
    table = table_name(node_id)
    return [
        f"""CREATE TABLE IF NOT EXISTS {schema}.{table} (
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
        f"CREATE INDEX IF NOT EXISTS {schema}.{table}_timestamp ON {table} (timestamp)",
    ] + (
        # Only a node's own readings are looked up by reading_id (to answer
        # a resent one). Not unique: while a node recovers its old epochs, a
        # sensor may resend a reading whose first copy has not come back yet.
        [
            f"CREATE INDEX IF NOT EXISTS {schema}.{table}_reading_id "
            f"ON {table} (reading_id) WHERE reading_id IS NOT NULL"
        ]
        if schema == "main"
        else []
    )


def _positions_schema(schema: str) -> str:
    # How far this database holds each log, moved in the same transaction
    # as the rows.
    return f"""CREATE TABLE IF NOT EXISTS {schema}.log_positions (
        origin TEXT NOT NULL,
        epoch TEXT NOT NULL,
        last_index INTEGER NOT NULL,
        PRIMARY KEY (origin, epoch)
    )"""


_REQUIRED_COLUMNS = {
    "entry_index", "sensor_index", "sensor_type", "sensor_data", "timestamp",
    "value", "unit", "reading_id", "data_checksum", "epoch",
}


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

    @ivar positions: how far this node holds each log, ``{(origin, epoch):
        last_index}``, its own current epoch included.
    @ivar recovering: this node's own database was found missing or empty
        while its node.id was kept: its earlier readings are to be fetched
        from peers.
    """

    epoch: str
    count: int
    last_index: int
    last_sensor_index: int
    rejected: int
    positions: dict = attrs.Factory(dict)
    recovering: bool = False


@frozen
class Appended:
    """
    The outcome of one group commit.

    @ivar origin: the node whose log was appended to (this node).
    @ivar indexes: the entry_index answered for each reading, in order;
        a reading whose reading_id was already stored gets the stored index.
    @ivar rows: the rows this commit added, in the order of L{_COLUMNS}.
    @ivar last_index: how far the log runs after this commit.
    """

    origin: str
    indexes: Sequence[int]
    rows: list
    last_index: int

    def entries(self) -> list[tuple]:
        """
        The records this commit added as RECORDS entries (see
        L{p2pstore.wire.Records}), built on demand: only replication needs
        them, and only when there are peers.
        """
        return [
            (index, sensor, kind, data, stamp, reading_id, checksum)
            for index, sensor, kind, data, stamp, _, _, reading_id, checksum, _ in self.rows
        ]


@frozen
class Applied:
    """
    The outcome of applying one batch of replicated records to a log.

    @ivar added: the records stored, continuing the log, as RECORDS entries
        (see L{p2pstore.wire.Records}).
    @ivar conflicts: records for positions already held whose content
        differs from the stored one (the stored one is kept).
    @ivar last_index: how far the log is held now.
    """

    added: list[tuple]
    conflicts: int
    last_index: int


@define
class Store:
    """
    Every log this node holds: its own in ``self_sensor_data.db``, the other
    origins' in ``peer_sensor_data.db`` (attached to the same connection as
    schema ``peer``).
    """

    path: Path
    node_id: str
    signer: Signer = attrs.field(repr=False)
    synchronous: str = "FULL"
    reactor: object = None
    peer_path: Optional[Path] = None
    # node.id was kept and peers are there to recover from: a missing or
    # empty own database means a lost one, to be fetched back.
    recover_if_empty: bool = False
    epoch: Optional[str] = None
    _pool: Optional[adbapi.ConnectionPool] = attrs.field(default=None, init=False)
    # A read-only connection in a thread of its own, for what peers are
    # sent: those reads neither wait for the sensors' commits nor hold them
    # up (SQLite's WAL lets one writer and readers work at once).
    _reader: Optional[adbapi.ConnectionPool] = attrs.field(default=None, init=False)
    _peer_tables: set = attrs.field(factory=set, init=False)
    _rows_per_insert: int = attrs.field(default=_ROWS_PER_INSERT, init=False)
    # The last_sensor_index committed to meta, not written again unchanged.
    _saved_sensor_index: Optional[int] = attrs.field(default=None, init=False)
    _lookup_chunk: int = attrs.field(default=_LOOKUP_CHUNK, init=False)
    _insert_sql: dict = attrs.field(factory=dict, init=False, repr=False)

    log = Logger()

    def __attrs_post_init__(self) -> None:
        if self.peer_path is None:
            self.peer_path = self.path.with_name("peer_sensor_data.db")

    def open(self) -> Deferred:
        """
        Open the databases, creating or checking their schema.

        @return: a Deferred firing with L{Opened}.
        """
        self._pool = self._connect(
            str(self.path),
            self._configure,
            # Room for the INSERTs of every size for every origin's table.
            cached_statements=512,
        )
        d = self._pool.runInteraction(self._open)

        def opened(result: Opened) -> Opened:
            self.epoch = result.epoch
            # Once both files exist with their schema.
            self._reader = self._connect(_read_only(self.path), self._configure_reader, uri=True)
            return result

        return d.addCallback(opened)

    def _connect(self, database: str, configure, **kwargs) -> adbapi.ConnectionPool:
        if self.reactor is not None:
            kwargs["cp_reactor"] = self.reactor
        return adbapi.ConnectionPool(
            "sqlite3",
            database,
            check_same_thread=False,
            # Transactions are begun explicitly, so autocommit otherwise.
            isolation_level=None,
            cp_min=1,
            cp_max=1,
            cp_openfun=configure,
            **kwargs,
        )

    def _configure_reader(self, conn) -> None:
        conn.execute("ATTACH DATABASE ? AS peer", (_read_only(self.peer_path),))
        conn.execute("PRAGMA busy_timeout = 10000")

    def _configure(self, conn) -> None:
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.peer_path),))
        for schema in ("main", "peer"):
            conn.execute(f"PRAGMA {schema}.journal_mode = WAL")
            conn.execute(f"PRAGMA {schema}.synchronous = {self.synchronous}")
        conn.execute("PRAGMA busy_timeout = 10000")
        limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        rows = _ROWS_PER_INSERT
        while rows > 1 and rows * len(_COLUMNS.split(", ")) > limit:
            rows //= 2
        self._rows_per_insert = rows
        chunk = _LOOKUP_CHUNK
        while chunk > limit:
            chunk //= 2
        self._lookup_chunk = chunk

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
        table = table_name(self.node_id)
        self._check_columns(txn, "main", table)
        for statement in readings_schema(self.node_id):
            txn.execute(statement)
        for schema in ("main", "peer"):
            txn.execute(_positions_schema(schema))
        epoch = meta.get("epoch")
        recovering = meta.get("recovering") == "1"
        if epoch is None:
            epoch = uuid.uuid4().hex
            (held,) = txn.execute(f"SELECT count(*) FROM {table}").fetchone()
            recovering = self.recover_if_empty and held == 0
        elif meta.get("running") == "1" and self.synchronous != "FULL":
            # With synchronous=NORMAL a crash or power cut may have undone the
            # last commits, whose readings peers may hold already: numbering
            # on in this epoch could give those positions second contents.
            # A new epoch cannot; the old one's tail comes back from peers.
            self.log.warn(
                "the node did not stop cleanly and runs with --sync normal: its "
                "last readings may be lost here (peers may hold them), so it "
                "starts a new epoch"
            )
            epoch = uuid.uuid4().hex
        txn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema_version", str(SCHEMA_VERSION)),
                ("epoch", epoch),
                ("recovering", "1" if recovering else "0"),
                ("running", "1"),
            ],
        )
        count, last_index, last_sensor = txn.execute(
            f"SELECT count(*), coalesce(max(entry_index), 0), "
            f"coalesce(max(sensor_index), 0) FROM {table} WHERE epoch = ?",
            (epoch,),
        ).fetchone()
        # The rows are the truth for the node's own current epoch (and a
        # database from before log_positions existed has only them).
        txn.execute(
            "INSERT OR REPLACE INTO main.log_positions (origin, epoch, last_index) VALUES (?, ?, ?)",
            (self.node_id, epoch, last_index),
        )
        total = txn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        rejected, rejected_sensor = txn.execute(
            "SELECT count(*), coalesce(max(sensor_index), 0) FROM rejected_lines"
        ).fetchone()
        last_sensor_index = max(
            int(meta.get("last_sensor_index", 0)), last_sensor, rejected_sensor
        )
        positions = {}
        for schema in ("main", "peer"):
            for origin, log_epoch, n in txn.execute(
                f"SELECT origin, epoch, last_index FROM {schema}.log_positions"
            ).fetchall():
                if is_node_id(origin) and is_node_id(log_epoch):
                    positions[(origin, log_epoch)] = n
        self._peer_tables = {
            name[len("server_id_") :]
            for (name,) in txn.execute(
                "SELECT name FROM peer.sqlite_master WHERE type = 'table' AND name LIKE 'server_id_%'"
            ).fetchall()
        }
        return Opened(
            epoch=epoch,
            count=total,
            last_index=last_index,
            last_sensor_index=last_sensor_index,
            rejected=rejected,
            positions=positions,
            recovering=recovering,
        )

    def _check_columns(self, txn, schema: str, table: str) -> None:
        columns = {row[1] for row in txn.execute(f"PRAGMA {schema}.table_info({table})").fetchall()}
        if columns and not _REQUIRED_COLUMNS <= columns:
            db = self._path_of(schema)
            raise StoreError(
                f"table {table} in {db} lacks the columns "
                f"{', '.join(sorted(_REQUIRED_COLUMNS - columns))}: it was written by "
                f"another program or an older p2pstore; move the file aside to start afresh"
            )

    def prepare(self, readings: Iterable[Reading], sensor_index: int, first_index: int) -> list:
        """
        The signed rows for readings of one sensor connection, numbered from
        ``first_index`` on, for L{append}.

        CPU work only, and done in the reactor thread: it numbers and signs
        the readings that arrive while the database thread commits the
        batch before them, so the two overlap. The numbers are a guess that
        L{append} checks.
        """
        row = self._signed_row
        return [
            row(index, sensor_index, reading[0], reading[1], reading[2], reading[3])
            for index, reading in enumerate(readings, first_index)
        ]

    def _signed_row(
        self,
        entry_index: int,
        sensor_index: int,
        sensor_type: str,
        sensor_data: str,
        timestamp: str,
        reading_id: Optional[str],
    ) -> tuple:
        value, unit = parse_value_unit(sensor_data)
        checksum = self.signer.checksum_of(
            self.node_id, self.epoch, entry_index, sensor_index, sensor_type,
            sensor_data, timestamp, reading_id,
        )
        return (
            entry_index, sensor_index, sensor_type, sensor_data, timestamp,
            value, unit, reading_id, checksum, self.epoch,
        )

    def append(self, rows: list, rejected: Sequence[Rejected], last_sensor_index: int) -> Deferred:
        """
        Store rows from L{prepare} and rejected lines in one transaction.

        The rows are stored as prepared when they continue the log and
        repeat no reading_id, stored or in the batch; otherwise (a resent
        reading, a batch before them that failed) they are numbered and
        signed again here.

        @return: a Deferred firing with L{Appended} once it has committed.
        """
        d = self._pool.runInteraction(self._append, rows, rejected, last_sensor_index)

        def committed(appended: Appended) -> Appended:
            self._saved_sensor_index = last_sensor_index
            return appended

        return d.addCallback(committed)

    def _append(self, txn, rows, rejected, last_sensor_index) -> Appended:
        table = table_name(self.node_id)
        txn.execute("BEGIN IMMEDIATE")
        (last,) = txn.execute(
            f"SELECT coalesce(max(entry_index), 0) FROM {table} WHERE epoch = ?",
            (self.epoch,),
        ).fetchone()
        reading_ids = [row[7] for row in rows if row[7] is not None]
        distinct = set(reading_ids)
        known = self._stored_reading_ids(txn, table, distinct)
        if known or len(distinct) != len(reading_ids) or (rows and rows[0][0] != last + 1):
            indexes, rows = self._renumber(rows, last, known)
        else:
            indexes = [row[0] for row in rows]
        self._insert(txn, "main", table, rows)
        # Each statement is one more wait for the GIL in this thread: those
        # with nothing to do are left out.
        if rejected:
            txn.executemany(
                "INSERT INTO rejected_lines (received_at, sensor_index, reason, raw) "
                "VALUES (?, ?, ?, ?)",
                [(r.received_at, r.sensor_index, r.reason, r.raw) for r in rejected],
            )
        if last_sensor_index != self._saved_sensor_index:
            txn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sensor_index', ?)",
                (str(last_sensor_index),),
            )
        if rows:
            last = rows[-1][0]
            self._set_position(txn, "main", self.node_id, self.epoch, last)
        return Appended(origin=self.node_id, indexes=indexes, rows=rows, last_index=last)

    def _renumber(self, rows: list, last: int, known: dict) -> tuple[list, list]:
        """
        Number rows on from ``last``, answering a reading_id already stored
        (or earlier in the batch) with its index instead of storing it.
        """
        indexes, fresh = [], []
        for row in rows:
            reading_id = row[7]
            stored = known.get(reading_id) if reading_id is not None else None
            if stored is not None:
                indexes.append(stored)
                continue
            last += 1
            if row[0] != last:
                row = self._signed_row(last, row[1], row[2], row[3], row[4], reading_id)
            fresh.append(row)
            indexes.append(last)
            if reading_id is not None:
                known[reading_id] = last
        return indexes, fresh

    def _insert(self, txn, schema: str, table: str, rows: list) -> None:
        """
        Insert rows in as few statements as the parameter limit allows: a
        batch of n rows takes one statement per power of two in n up to the
        largest (1000 rows: 512, 256, 128, 64, 32, 8), so a handful of
        statement texts serve every batch size and stay prepared.
        """
        size = self._rows_per_insert
        start, count = 0, len(rows)
        while start < count:
            while size > count - start:
                size //= 2
            sql = self._insert_sql.get((schema, table, size))
            if sql is None:
                sql = self._insert_sql[schema, table, size] = (
                    f"INSERT INTO {schema}.{table} ({_COLUMNS}) VALUES "
                    + ", ".join([_ROW_MARKS] * size)
                )
            txn.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size

    @staticmethod
    def _set_position(txn, schema: str, origin: str, epoch: str, last_index: int) -> None:
        txn.execute(
            f"INSERT OR REPLACE INTO {schema}.log_positions (origin, epoch, last_index) "
            f"VALUES (?, ?, ?)",
            (origin, epoch, last_index),
        )

    def _stored_reading_ids(self, txn, table: str, reading_ids: set) -> dict:
        wanted = list(reading_ids)
        found = {}
        for start in range(0, len(wanted), self._lookup_chunk):
            chunk = wanted[start : start + self._lookup_chunk]
            # Padded with its last id to a power of two, so that a few
            # statement texts serve every batch and stay prepared.
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += chunk[-1:] * (size - len(chunk))
            found.update(
                txn.execute(
                    f"SELECT reading_id, entry_index FROM {table} "
                    f"WHERE reading_id IN ({', '.join('?' * size)})",
                    chunk,
                ).fetchall()
            )
        return found

    def _schema_of(self, origin: str) -> str:
        return "main" if origin == self.node_id else "peer"

    def _path_of(self, schema: str) -> Path:
        return self.path if schema == "main" else self.peer_path

    def apply(self, batches: Sequence[tuple[str, str, list]]) -> Deferred:
        """
        Store replicated records, already checked against their HMACs, in one
        transaction: each batch ``(origin, epoch, entries)`` holds consecutive
        records of one log as RECORDS entries (see L{p2pstore.wire.Records}).

        Only records that continue a log are stored; records at positions
        already held are compared with the stored ones; the node's own
        current epoch is never written here.

        @return: a Deferred firing with a list of L{Applied}, one per batch.
        """
        return self._pool.runInteraction(self._apply, batches)

    def _apply(self, txn, batches) -> list:
        txn.execute("BEGIN IMMEDIATE")
        results = []
        for origin, epoch, entries in batches:
            schema = self._schema_of(origin)
            table = table_name(origin)
            row = txn.execute(
                f"SELECT last_index FROM {schema}.log_positions WHERE origin = ? AND epoch = ?",
                (origin, epoch),
            ).fetchone()
            position = row[0] if row else 0
            if not entries:
                # Nothing passed its check: answer the position, and make no
                # table for an origin that may be a corrupted name.
                results.append(Applied(added=[], conflicts=0, last_index=position))
                continue
            if schema == "peer" and origin not in self._peer_tables:
                self._check_columns(txn, "peer", table)
                for statement in readings_schema(origin, "peer"):
                    txn.execute(statement)
                self._peer_tables.add(origin)
            # Consecutive: the first ones may be held already, the rest not.
            split = min(max(position - entries[0][0] + 1, 0), len(entries))
            held, beyond = entries[:split], entries[split:]
            conflicts = 0
            if held:
                stored = dict(
                    txn.execute(
                        f"SELECT entry_index, data_checksum FROM {schema}.{table} "
                        f"WHERE epoch = ? AND entry_index BETWEEN ? AND ?",
                        (epoch, held[0][0], held[-1][0]),
                    ).fetchall()
                )
                conflicts = sum(1 for entry in held if stored.get(entry[0]) != entry[6])
            added = []
            if origin == self.node_id and epoch == self.epoch:
                # Positions of this node's own current epoch are assigned by
                # this node alone: a peer offering more is a conflict.
                conflicts += len(beyond)
            elif beyond and beyond[0][0] == position + 1:
                # Not after a gap, whose missing records are sent again first.
                added = beyond
            if added:
                self._insert(txn, schema, table, [_row(epoch, entry) for entry in added])
                position = added[-1][0]
                self._set_position(txn, schema, origin, epoch, position)
            results.append(Applied(added=added, conflicts=conflicts, last_index=position))
        return results

    def read_entries(self, origin: str, epoch: str, after: int, limit: int) -> Deferred:
        """
        Up to ``limit`` records of a log from index ``after + 1`` on, in
        order, as RECORDS entries (see L{p2pstore.wire.Records}): to send
        as stored, each peer checking what it receives.

        Rows are not built into records, but SQLite checks each has what a
        record needs: a bad or missing one fails the read with a
        L{StoreError} naming it, rather than reach a peer.

        @return: a Deferred firing with a list of tuples.
        """
        return self._reader.runInteraction(self._read_entries, origin, epoch, after, limit)

    def _read_entries(self, txn, origin: str, epoch: str, after: int, limit: int) -> list:
        schema = self._schema_of(origin)
        table = table_name(origin)
        txn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM {schema}.{table} "
            f"WHERE epoch = ? AND entry_index > ? AND {_ENTRY_VALID} "
            f"ORDER BY entry_index LIMIT ?",
            (epoch, after, limit),
        )
        entries = txn.fetchall()
        # Consecutive from after + 1, or a row was missing or left out.
        if entries and entries[-1][0] != after + len(entries):
            missing = next(
                index for index, entry in enumerate(entries, after + 1) if entry[0] != index
            )
            db = self._path_of(schema)
            raise StoreError(
                f"entry {missing} of log {origin}/{epoch} in {db} (table {table}) is missing "
                f"or not a valid record: the file was changed by another program. It cannot "
                f"be sent to peers; restore the file from a backup, or move it aside so this "
                f"node fetches its records back from its peers"
            )
        return entries

    def finish_recovery(self) -> Deferred:
        """
        Remember that this node's earlier readings have come back.
        """
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('recovering', '0')"
        )

    def readings(
        self, origin: str, sensor_type: Optional[str], limit: int
    ) -> Deferred:
        """
        The newest readings of one origin, newest first.

        @return: a Deferred firing with a list of L{Record}.
        """
        sql = f"SELECT {_COLUMNS} FROM {self._schema_of(origin)}.{table_name(origin)}"
        params: list = []
        if sensor_type is not None:
            sql += " WHERE sensor_type = ?"
            params.append(sensor_type)
        sql += " ORDER BY rowid DESC LIMIT ?"
        params.append(limit)
        d = self._pool.runQuery(sql, params)
        return d.addCallback(lambda rows: [_record(origin, row) for row in rows])

    def mark_stopped(self) -> Deferred:
        """
        Record a clean stop: everything committed is on disk.
        """
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('running', '0')"
        )

    def close(self) -> None:
        """
        Close the connections, waiting for any transaction in progress.
        """
        for pool in (self._reader, self._pool):
            if pool is not None:
                pool.close()
        self._pool = self._reader = None


def _read_only(path: Path) -> str:
    # An SQLite URI filename: the path's "?" and "#" must not end it.
    return f"file:{quote(str(path.absolute()))}?mode=ro"


def _row(epoch: str, entry: tuple) -> tuple:
    # A RECORDS entry as a row of _COLUMNS.
    index, sensor, kind, data, stamp, reading_id, checksum = entry
    value, unit = parse_value_unit(data)
    return (index, sensor, kind, data, stamp, value, unit, reading_id, checksum, epoch)


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
