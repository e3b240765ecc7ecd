"""
The SQLite store: every query on a node's logs, through one writing
connection and one read-only connection (see L{p2pstore.opening}).

Table names are built only from validated node ids; every value goes in as
a parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import attrs
from attrs import define, frozen
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from .lines import Rejected
from .opening import (
    Opened,
    check_columns,
    configure_reader,
    configure_writer,
    connect,
    open_logs,
    read_only,
    upgrade,
)
from .records import CHECKSUM, ENTRY_INDEX, SENSOR_DATA, Record, parse_value_unit
from .rows import Appended, continues, reading_ids
from .statements import Statements
from .schema import ENTRY_SQL, ENTRY_VALID_SQL, EPOCH, PEER_DB, ROW_SQL, Schema, StoreError, table_name

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
    database ``peer``). SQL only: the rows it is given are numbered and
    signed by L{p2pstore.rows}, and what to keep of a replicated batch is
    decided by the policy replication passes to L{apply}.
    """

    path: Path
    node_id: str
    synchronous: str = "FULL"
    reactor: object = None
    peer_path: Optional[Path] = None
    # node.id was kept and peers are there to recover from: a missing or
    # empty own database means a lost one, to be fetched back.
    recover_if_empty: bool = False
    epoch: Optional[str] = None
    schema: Schema = attrs.Factory(Schema)
    _pool: Optional[adbapi.ConnectionPool] = attrs.field(default=None, init=False)
    # A read-only connection in a thread of its own, for what peers are
    # sent: those reads neither wait for the sensors' commits nor hold them
    # up (SQLite's WAL lets one writer and readers work at once).
    _reader: Optional[adbapi.ConnectionPool] = attrs.field(default=None, init=False)
    _peer_tables: set = attrs.field(factory=set, init=False)
    _statements: Statements = attrs.field(factory=Statements, init=False, repr=False)
    # The last_sensor_index committed to meta, not written again unchanged.
    _saved_sensor_index: Optional[int] = attrs.field(default=None, init=False)


    def __attrs_post_init__(self) -> None:
        if self.peer_path is None:
            self.peer_path = self.path.with_name(PEER_DB)

    def open(self) -> Deferred:
        """
        Open the databases, upgrading an older schema and creating what is
        missing (L{p2pstore.opening}).

        @return: a Deferred firing with L{Opened}.
        """
        self._pool = connect(
            str(self.path),
            self._configure,
            self.reactor,
            # Room for the INSERTs of every size for every origin's table.
            cached_statements=512,
        )
        d = self._pool.runInteraction(upgrade, self.schema, (self.path, self.peer_path))
        d.addCallback(
            lambda _: self._pool.runInteraction(
                open_logs, self.schema, self.node_id, self.synchronous, self.recover_if_empty,
                self.path,
            )
        )

        def opened(result: tuple[Opened, set]) -> Opened:
            opened, self._peer_tables = result
            self.epoch = opened.epoch
            # Once both files exist with their schema.
            self._reader = connect(
                read_only(self.path),
                lambda conn: configure_reader(conn, self.peer_path),
                self.reactor,
                uri=True,
            )
            return opened

        return d.addCallback(opened)

    def _configure(self, conn) -> None:
        self._statements = Statements(configure_writer(conn, self.peer_path, self.synchronous))

    def append(
        self,
        rows: list,
        rejected: Sequence[Rejected],
        last_sensor_index: int,
        renumber: Callable[[list, int, dict], tuple[list, list]],
    ) -> Deferred:
        """
        Store rows of this node's log and rejected lines in one transaction.

        The rows are stored as numbered when they continue the log and
        repeat no reading_id, stored or in the batch; otherwise (a resent
        reading, a batch before them that failed) they are numbered again,
        inside the transaction, by ``renumber(rows, last_index,
        stored_ids)`` (L{p2pstore.rows.OwnRows.renumber}).

        @return: a Deferred firing with L{Appended} once it has committed.
        """
        d = self._pool.runInteraction(self._append, rows, rejected, last_sensor_index, renumber)

        def committed(appended: Appended) -> Appended:
            self._saved_sensor_index = last_sensor_index
            return appended

        return d.addCallback(committed)

    def _append(self, txn, rows, rejected, last_sensor_index, renumber) -> Appended:
        table = table_name(self.node_id)
        txn.execute("BEGIN IMMEDIATE")
        (last,) = txn.execute(
            f"SELECT coalesce(max(entry_index), 0) FROM {table} WHERE epoch = ?",
            (self.epoch,),
        ).fetchone()
        ids = reading_ids(rows)
        distinct = set(ids)
        known = self._statements.reading_ids(txn, table, distinct)
        if known or len(distinct) != len(ids) or not continues(rows, last):
            indexes, rows = renumber(rows, last, known)
        else:
            indexes = [row[ENTRY_INDEX] for row in rows]
        self._statements.insert(txn, "main", table, rows)
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
            last = rows[-1][ENTRY_INDEX]
            self._set_position(txn, "main", self.node_id, self.epoch, last)
        return Appended(origin=self.node_id, indexes=indexes, rows=rows, last_index=last)

    @staticmethod
    def _set_position(txn, db: str, origin: str, epoch: str, last_index: int) -> None:
        txn.execute(
            f"INSERT OR REPLACE INTO {db}.log_positions (origin, epoch, last_index) "
            f"VALUES (?, ?, ?)",
            (origin, epoch, last_index),
        )

    def _db_of(self, origin: str) -> str:
        return "main" if origin == self.node_id else "peer"

    def _path_of(self, db: str) -> Path:
        return self.path if db == "main" else self.peer_path

    def apply(self, batches: Sequence[tuple[str, str, list]], policy: Callable) -> Deferred:
        """
        Store replicated records, already checked against their HMACs, in one
        transaction: each batch ``(origin, epoch, entries)`` holds consecutive
        records of one log as RECORDS entries (see L{p2pstore.wire.Records}).

        @param policy: decides what of a batch to store, given this node's
            own current log, the batch's log and how far it is held, and the
            stored checksums of the positions the batch repeats:
            C{policy(own, log, position, entries, stored)} returns the
            entries to store and the number of conflicts (see
            L{p2pstore.replication.plan_apply}).
        @return: a Deferred firing with a list of L{Applied}, one per batch.
        """
        return self._pool.runInteraction(self._apply, batches, policy)

    def _apply(self, txn, batches, policy) -> list:
        txn.execute("BEGIN IMMEDIATE")
        results = []
        for origin, epoch, entries in batches:
            db = self._db_of(origin)
            table = table_name(origin)
            row = txn.execute(
                f"SELECT last_index FROM {db}.log_positions WHERE origin = ? AND epoch = ?",
                (origin, epoch),
            ).fetchone()
            position = row[0] if row else 0
            if not entries:
                # Nothing passed its check: answer the position, and make no
                # table for an origin that may be a corrupted name.
                results.append(Applied(added=[], conflicts=0, last_index=position))
                continue
            if db == "peer" and origin not in self._peer_tables:
                check_columns(txn, "peer", table, self.peer_path)
                for statement in self.schema.readings_table(origin, "peer", own=False):
                    txn.execute(statement)
                self._peer_tables.add(origin)
            # The checksums stored at the positions the batch repeats.
            first = entries[0][ENTRY_INDEX]
            stored = {}
            if first <= position:
                stored = dict(
                    txn.execute(
                        f"SELECT entry_index, data_checksum FROM {db}.{table} "
                        f"WHERE epoch = ? AND entry_index BETWEEN ? AND ?",
                        (epoch, first, min(position, entries[-1][ENTRY_INDEX])),
                    ).fetchall()
                )
            added, conflicts = policy(
                (self.node_id, self.epoch), (origin, epoch), position, entries, stored
            )
            if added:
                self._statements.insert(txn, db, table, [_row(epoch, entry) for entry in added])
                position = added[-1][ENTRY_INDEX]
                self._set_position(txn, db, origin, epoch, position)
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
        db = self._db_of(origin)
        table = table_name(origin)
        txn.execute(
            f"SELECT {ENTRY_SQL} FROM {db}.{table} "
            f"WHERE epoch = ? AND entry_index > ? AND {ENTRY_VALID_SQL} "
            f"ORDER BY entry_index LIMIT ?",
            (epoch, after, limit),
        )
        entries = txn.fetchall()
        # Consecutive from after + 1, or a row was missing or left out.
        if entries and entries[-1][ENTRY_INDEX] != after + len(entries):
            missing = next(
                index
                for index, entry in enumerate(entries, after + 1)
                if entry[ENTRY_INDEX] != index
            )
            raise StoreError(
                f"entry {missing} of log {origin}/{epoch} in {self._path_of(db)} (table {table}) "
                f"is missing or not a valid record: the file was changed by another program. "
                f"It cannot be sent to peers; restore the file from a backup, or move it aside "
                f"so this node fetches its records back from its peers"
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
        sql = f"SELECT {ROW_SQL} FROM {self._db_of(origin)}.{table_name(origin)}"
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


def _row(epoch: str, entry: tuple) -> tuple:
    # A RECORDS entry as a row (p2pstore.schema.ROW_COLUMNS). Sensor names
    # are not replicated (yet): a peer's copy holds none.
    value, unit = parse_value_unit(entry[SENSOR_DATA])
    return (*entry, value, unit, epoch)


def _record(origin: str, row: tuple) -> Record:
    # A row (p2pstore.schema.ROW_COLUMNS) as a Record; its value and unit
    # are the record's properties.
    return Record(origin, row[EPOCH], *row[: CHECKSUM + 1])
