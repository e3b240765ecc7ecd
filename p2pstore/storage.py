"""
The SQLite store: every query on a node's logs, through one writing
connection and one read-only connection (see L{p2pstore.opening}).

Table names are built only from validated node ids; every value goes in as
a parameter.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import attrs
from attrs import define, frozen
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from . import cursors, gaps, quarantine
from .gaps import Gap
from .lines import Rejected
from .opening import (
    Opened,
    check_columns,
    configure_reader,
    configure_writer,
    connect,
    open_logs,
    read_only,
    set_position,
    upgrade,
)
from .records import CHECKSUM, ENTRY_INDEX, SENSOR_DATA, Record, parse_value_unit
from .rangereads import read_range
from .readingids import IDS_BATCH, ReadingIds
from .rows import Appended, continues, reading_ids
from .statements import Statements
from .timerange import TimeRange
from .schema import (
    ENTRY_SQL,
    ENTRY_VALID_SQL,
    EPOCH,
    INDEX_MASK,
    PEER_DB,
    TABLES_SQL,
    Schema,
    StoreError,
    key_of,
    key_range,
    origin_of,
    row_sql,
    rows_table,
)


class BadEntry(StoreError):
    """
    A read of a log for peers found one of its entries missing or not a
    valid record.
    """

    def __init__(self, message: str, origin: str, epoch: str, index: int):
        super().__init__(message)
        self.origin = origin
        self.epoch = epoch
        self.index = index


@frozen
class Applied:
    """
    The outcome of applying one batch of replicated records to a log.

    @ivar added: the records stored, continuing the log, as RECORDS entries
        (see L{p2pstore.wire.Records}).
    @ivar conflicts: records for positions already held whose content
        differs from the stored one (the stored one is kept).
    @ivar last_index: how far the log is held now.
    @ivar gap: the L{gaps.PrunedRange} recorded for a L{Gap} the batch
        brought (a range its sender no longer holds), or None.
    """

    added: list[tuple]
    conflicts: int
    last_index: int
    gap: Optional[gaps.PrunedRange] = None


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
    # The most each WAL file keeps after a checkpoint, in bytes (and the
    # checkpoint's cadence), for a node with a disk budget; None: 4 MiB
    # between checkpoints, no limit after (p2pstore.opening.WAL_BYTES).
    wal_limit: Optional[int] = None
    # The clock of the marks retention prunes by (p2pstore.gaps.mark), and
    # how often each log is marked, at most.
    now: Callable[[], float] = time.time
    mark_interval: float = 60.0
    # Own reading ids held in memory before they are added to the table of
    # ids at once (p2pstore.readingids).
    ids_batch: int = IDS_BATCH
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
    # When each (db, origin, epoch) was last marked.
    _marked: dict = attrs.field(factory=dict, init=False)
    # The reading ids of the own log, once open.
    _ids: Optional[ReadingIds] = attrs.field(default=None, init=False, repr=False)
    # The UTC offsets each readings table's timestamps hold, for ranges.


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

        def opened(result: tuple[Opened, set]) -> Deferred:
            opened, self._peer_tables = result
            self.epoch = opened.epoch
            ids = ReadingIds(self.node_id, self.ids_batch)
            d = self._pool.runInteraction(ids.open, self.epoch)

            def ready(_) -> Opened:
                self._ids = ids
                return reader(opened)

            return d.addCallback(ready)

        def reader(opened: Opened) -> Opened:
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
        self._statements = Statements(
            configure_writer(conn, self.peer_path, self.synchronous, self.wal_limit)
        )

    def _keys(self, txn, db: str, origin: str, epoch: str, first: int = 0, last: int = INDEX_MASK):
        # The keys of a log's entries first..last in its rows table, for
        # "key BETWEEN ? AND ?": none for a log the database has no row of.
        ordinal = self._statements.ordinals.find(txn, db, origin, epoch)
        return (1, 0) if ordinal is None else key_range(ordinal, first, last)

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

        def committed(result: tuple[Appended, bool]) -> Appended:
            appended, moved = result
            self._saved_sensor_index = last_sensor_index
            self._ids.committed(appended.rows, moved)
            return appended

        return d.addCallback(committed)

    def _append(self, txn, rows, rejected, last_sensor_index, renumber) -> Appended:
        table = rows_table(self.node_id)
        txn.execute("BEGIN IMMEDIATE")
        # The position, for a log whose records were all pruned; the rows,
        # for one written before positions were kept.
        (last,) = txn.execute(
            f"SELECT max(coalesce((SELECT max(key) FROM main.{table} WHERE key BETWEEN ? AND ?) "
            f"& {INDEX_MASK}, 0), coalesce((SELECT last_index FROM main.log_positions "
            f"WHERE origin = ? AND epoch = ?), 0))",
            (*self._keys(txn, "main", self.node_id, self.epoch), self.node_id, self.epoch),
        ).fetchone()
        ids = reading_ids(rows)
        distinct = set(ids)
        known = self._ids.known(txn, self._statements.reading_ids, distinct)
        if known or len(distinct) != len(ids) or not continues(rows, last):
            indexes, rows = renumber(rows, last, known)
        else:
            indexes = [row[ENTRY_INDEX] for row in rows]
        self._statements.insert(txn, "main", self.node_id, rows)
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
        moved = False
        if rows:
            last = rows[-1][ENTRY_INDEX]
            self._set_position(txn, "main", self.node_id, self.epoch, last)
            moved = self._ids.due(txn, self.epoch, len(rows))
        return Appended(origin=self.node_id, indexes=indexes, rows=rows, last_index=last), moved

    def _set_position(self, txn, db: str, origin: str, epoch: str, last_index: int) -> None:
        set_position(txn, db, origin, epoch, last_index)
        now = self.now()
        key = (db, origin, epoch)
        if now - self._marked.get(key, float("-inf")) >= self.mark_interval:
            gaps.mark(txn, db, origin, epoch, last_index, now)
            self._marked[key] = now

    def _db_of(self, origin: str) -> str:
        return "main" if origin == self.node_id else "peer"

    def _path_of(self, db: str) -> Path:
        return self.path if db == "main" else self.peer_path

    def apply(self, batches: Sequence[tuple[str, str, list]], policy: Callable) -> Deferred:
        """
        Store replicated records, already checked against their HMACs, in one
        transaction: each batch ``(origin, epoch, entries)`` holds consecutive
        records of one log as RECORDS entries (see L{p2pstore.wire.Records}),
        or a L{Gap}: a range its sender no longer holds.

        @param policy: decides what of a batch to store, given this node's
            own current log, the batch's log and how far it is held, and the
            stored checksums of the positions the batch repeats:
            C{policy(own, log, position, entries, stored)} returns the
            entries to store and the number of conflicts (see
            L{p2pstore.replication.plan_apply}).
        @return: a Deferred firing with a list of L{Applied}, one per batch.
        """
        d = self._pool.runInteraction(self._apply, batches, policy)

        def failed(failure):
            # A transaction rolled back made no table: make them again with
            # the next batch (CREATE ... IF NOT EXISTS, whichever it is).
            self._peer_tables.difference_update(origin for origin, _, _ in batches)
            return failure

        return d.addErrback(failed)

    def _apply(self, txn, batches, policy) -> list:
        txn.execute("BEGIN IMMEDIATE")
        results = []
        for origin, epoch, entries in batches:
            db = self._db_of(origin)
            row = txn.execute(
                f"SELECT last_index, first_index FROM {db}.log_positions "
                f"WHERE origin = ? AND epoch = ?",
                (origin, epoch),
            ).fetchone()
            position, first_held = row if row else (0, 1)
            if isinstance(entries, Gap):
                recorded = gaps.skip(txn, db, origin, epoch, position, entries, self.now())
                if recorded is not None:
                    position = recorded.last
                results.append(Applied([], 0, position, gap=recorded))
                continue
            if entries and entries[0][ENTRY_INDEX] < first_held:
                # Records this node pruned already: neither kept again nor
                # compared with what is no longer there.
                entries = entries[first_held - entries[0][ENTRY_INDEX] :]
            if not entries:
                # Nothing passed its check: answer the position, and make no
                # table for an origin that may be a corrupted name.
                results.append(Applied(added=[], conflicts=0, last_index=position))
                continue
            if db == "peer" and origin not in self._peer_tables:
                check_columns(txn, "peer", origin, self.peer_path)
                for statement in self.schema.readings_table(origin, "peer", own=False):
                    txn.execute(statement)
                self._peer_tables.add(origin)
            # The checksums stored at the positions the batch repeats.
            first = entries[0][ENTRY_INDEX]
            stored = {}
            if first <= position:
                keys = self._keys(txn, db, origin, epoch, first, min(position, entries[-1][ENTRY_INDEX]))
                stored = dict(
                    txn.execute(
                        f"SELECT key & {INDEX_MASK}, lower(hex(data_checksum)) "
                        f"FROM {db}.{rows_table(origin)} WHERE key BETWEEN ? AND ?",
                        keys,
                    ).fetchall()
                )
            added, conflicts = policy(
                (self.node_id, self.epoch), (origin, epoch), position, entries, stored
            )
            if added:
                rows = [_row(epoch, entry) for entry in added]
                self._statements.insert(txn, db, origin, rows)
                if db == "main":
                    self._ids.added(txn, rows)
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
        record needs: the read stops before a bad or missing one, and a
        read that starts at one fails with a L{BadEntry} naming it, rather
        than reach a peer.

        @return: a Deferred firing with a list of tuples.
        """
        return self._reader.runInteraction(self._read_entries, origin, epoch, after, limit)

    def _read_entries(self, txn, origin: str, epoch: str, after: int, limit: int) -> list:
        db = self._db_of(origin)
        table = rows_table(origin)
        txn.execute(
            f"SELECT {ENTRY_SQL} FROM {db}.{table} "
            f"WHERE key BETWEEN ? AND ? AND {ENTRY_VALID_SQL} ORDER BY key LIMIT ?",
            (*self._keys(txn, db, origin, epoch, after + 1), limit),
        )
        entries = txn.fetchall()
        # Consecutive from after + 1, or a row was missing or left out: the
        # records before it go, and a read from it fails.
        if entries and entries[-1][ENTRY_INDEX] != after + len(entries):
            missing = next(
                index
                for index, entry in enumerate(entries, after + 1)
                if entry[ENTRY_INDEX] != index
            )
            if missing > after + 1:
                return entries[: missing - after - 1]
            raise BadEntry(
                f"entry {missing} of log {origin}/{epoch} in {self._path_of(db)} (table {table}) "
                f"is missing or not a valid record: the file was changed by another program, "
                f"or the row is in quarantine. It cannot be sent to peers until a peer sends "
                f"this node a good copy",
                origin,
                epoch,
                missing,
            )
        return entries

    # -- the scrub and repairs (p2pstore.scrub) ------------------------------

    def readings_tables(self) -> Deferred:
        """
        Every readings table of both files, as C{[(db, origin)]}.
        """

        def run(txn):
            found = []
            for db in ("main", "peer"):
                for (name,) in txn.execute(TABLES_SQL.format(db=db)).fetchall():
                    origin = origin_of(name)
                    if origin is not None:
                        found.append((db, origin))
            return found

        return self._reader.runInteraction(run)

    def scrub_rows(self, db: str, origin: str, after_rowid: int, limit: int) -> Deferred:
        """
        Up to ``limit`` rows of a readings table after ``after_rowid``, in
        rowid order, as C{[(rowid, row)]} (L{p2pstore.schema.ROW_COLUMNS}),
        nothing left out: the scrub checks them all.
        """
        d = self._reader.runQuery(
            f"SELECT key, {row_sql(db)} FROM {db}.{rows_table(origin)} "
            f"WHERE key > ? ORDER BY key LIMIT ?",
            (after_rowid, limit),
        )
        return d.addCallback(lambda rows: [(row[0], tuple(row[1:])) for row in rows])

    def tail_rows(self, db: str, origin: str, limit: int) -> Deferred:
        """
        The last ``limit`` rows of each log of a readings table (those a
        crash most likely left wrong), in key order, as L{scrub_rows}.
        """

        def run(txn):
            table = f"{db}.{rows_table(origin)}"
            ordinals = txn.execute(
                f"SELECT ordinal FROM {db}.epochs WHERE origin = ? ORDER BY ordinal", (origin,)
            ).fetchall()
            found = []
            for (ordinal,) in ordinals:
                rows = txn.execute(
                    f"SELECT key, {row_sql(db)} FROM {table} WHERE key BETWEEN ? AND ? "
                    f"ORDER BY key DESC LIMIT ?",
                    (*key_range(ordinal), limit),
                ).fetchall()
                found += [(row[0], tuple(row[1:])) for row in reversed(rows)]
            return found

        return self._reader.runInteraction(run)

    def row_at(self, origin: str, epoch: str, index: int) -> Deferred:
        """
        The stored row at one position of a log, whatever it holds, or
        C{None}.
        """
        db = self._db_of(origin)

        def run(txn):
            row = txn.execute(
                f"SELECT {row_sql(db)} FROM {db}.{rows_table(origin)} WHERE key BETWEEN ? AND ?",
                self._keys(txn, db, origin, epoch, index, index),
            ).fetchone()
            return tuple(row) if row else None

        return self._reader.runInteraction(run)

    def quarantine(
        self, origin: str, epoch: str, index: int, row: Optional[tuple], reason: str, found_at: str
    ) -> Deferred:
        """
        Move the row at one position of a log (C{None}: there is none) to
        the quarantine table, unless it changed since it was read or the
        position is in quarantine already. The log's position stays: the
        node still owes that record, and fetches it again.

        @return: a Deferred firing with whether it was quarantined.
        """
        return self._pool.runInteraction(
            quarantine.quarantine, self._db_of(origin), origin, epoch, index, row, reason, found_at
        )

    def quarantined(self) -> Deferred:
        """
        The positions in quarantine, not repaired yet, as
        C{[(origin, epoch, index)]}, and how many were repaired.
        """

        return self._reader.runInteraction(quarantine.pending)

    def entries_at(self, origin: str, epoch: str, indexes: Sequence[int]) -> Deferred:
        """
        The valid entries held at these positions of a log, to send a peer
        that asked for them; the peer checks each HMAC.
        """
        db = self._db_of(origin)

        def run(txn):
            ordinal = self._statements.ordinals.find(txn, db, origin, epoch)
            # An index no key can hold is held by no log.
            wanted = [index for index in indexes if 1 <= index <= INDEX_MASK]
            if ordinal is None or not wanted:
                return []
            rows = txn.execute(
                f"SELECT {ENTRY_SQL} FROM {db}.{rows_table(origin)} "
                f"WHERE key IN ({', '.join('?' * len(wanted))}) AND {ENTRY_VALID_SQL} ORDER BY key",
                [key_of(ordinal, index) for index in wanted],
            ).fetchall()
            return [tuple(row) for row in rows]

        return self._reader.runInteraction(run)

    def repair(self, origin: str, epoch: str, entries: list, repaired_at: str) -> Deferred:
        """
        Put back, from entries already checked against their HMACs, the
        rows of a log that are in quarantine; entries for any other
        position are ignored.

        @return: a Deferred firing with the indexes repaired.
        """
        return self._pool.runInteraction(self._repair, origin, epoch, entries, repaired_at)

    def _repair(self, txn, origin, epoch, entries, repaired_at) -> list:
        db = self._db_of(origin)

        def put_back(row: tuple) -> None:
            self._statements.insert(txn, db, origin, [row])
            if db == "main":
                self._ids.added(txn, [row])

        return quarantine.repair(
            txn, db, origin, epoch, [(entry, _row(epoch, entry)) for entry in entries], repaired_at, put_back
        )

    # -- pruning (p2pstore.pruning) -------------------------------------------

    def prune(self, origin: str, epoch: str, upto: int, reason: str, limit: int) -> Deferred:
        """
        Delete up to ``limit`` of a log's oldest records, none past
        ``upto``, recording the range as pruned for ``reason``.

        @return: a Deferred firing with a L{gaps.Prune}, or None when
            nothing up to ``upto`` is held.
        """
        return self._pool.runInteraction(
            gaps.prune, self._db_of(origin), origin, epoch, upto, reason, limit, self.now()
        )

    def mark_tails(self) -> Deferred:
        """
        Mark the logs that grew since a mark older than the mark interval
        (L{gaps.mark_tails}).
        """
        return self._pool.runInteraction(gaps.mark_tails, self.now(), self.mark_interval)

    def stored_by(self, cutoff: float) -> Deferred:
        """
        How far each log was held by ``cutoff`` (L{gaps.stored_by}), as
        C{{(origin, epoch): index}}.
        """
        d = self._reader.runInteraction(gaps.stored_by, cutoff)
        return d.addCallback(lambda rows: {(o, e): i for _, o, e, i in rows})

    def reusable(self) -> Deferred:
        """
        The bytes of free pages in the own and the peer file, as a tuple.
        """
        return self._pool.runInteraction(gaps.reusable_bytes)

    def vacuum(self, pages: int) -> Deferred:
        """
        Give back to the filesystem up to ``pages`` free pages of each file
        made with incremental vacuum (new files are); older files reuse
        their free pages for new rows instead.
        """

        def run(txn):
            for db in ("main", "peer"):
                txn.execute(f"PRAGMA {db}.incremental_vacuum({int(pages)})").fetchall()

        return self._pool.runInteraction(run)

    def finish_recovery(self) -> Deferred:
        """
        Remember that this node's earlier readings have come back.
        """
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('recovering', '0')"
        )

    def readings_in(
        self, origin: str, sensor_type: Optional[str], time_range: TimeRange, limit: int
    ) -> Deferred:
        """
        Up to ``limit`` readings of one origin in a time range, oldest first
        (L{p2pstore.timerange}), on the read-only connection: a long range
        holds up no commit.

        @return: a Deferred firing with a L{p2pstore.rangereads.Page}.
        """
        return self._reader.runInteraction(
            read_range, self._db_of(origin), origin, sensor_type, time_range, limit,
        )

    def readings(
        self, origin: str, sensor_type: Optional[str], limit: int
    ) -> Deferred:
        """
        The newest readings of one origin, newest first.

        @return: a Deferred firing with a list of L{Record}.
        """
        db = self._db_of(origin)
        select = f"SELECT {row_sql(db)} FROM {db}.{rows_table(origin)} WHERE "
        kind = "" if sensor_type is None else " AND sensor_type = ?"
        typed = () if sensor_type is None else (sensor_type,)

        def run(txn) -> list:
            # The node's own current log first: a log recovered from peers
            # after it was started is numbered after it here, and older.
            # Then every log by key, each newest first, the log numbered
            # last here first (for a peer, the one heard of last).
            rows: list = []
            current = (1, 0)
            if origin == self.node_id:
                current = self._keys(txn, db, origin, self.epoch)
                rows = txn.execute(
                    f"{select}key BETWEEN ? AND ?{kind} ORDER BY key DESC LIMIT ?",
                    (*current, *typed, limit),
                ).fetchall()
            # Above the current log, then below it: two ranges of the key.
            for where, bound in (("key > ?", current[1]), ("key < ?", current[0])):
                if len(rows) < limit:
                    rows += txn.execute(
                        f"{select}{where}{kind} ORDER BY key DESC LIMIT ?",
                        (bound, *typed, limit - len(rows)),
                    ).fetchall()
            return [_record(origin, row) for row in rows]

        return self._pool.runInteraction(run)

    # -- export (p2pstore.export) ---------------------------------------------

    def export_cursors(self, destination: str) -> Deferred:
        """
        How far ``destination`` has taken each log, and its dead letters:
        C{({(origin, epoch): index}, count)} (L{cursors.load}).
        """
        return self._reader.runInteraction(cursors.load, destination)

    def exported(self, destination: str, log: tuple, index: int, dead=()) -> Deferred:
        """
        ``destination`` took ``log`` up to ``index``, past the dead letters
        ``dead`` (L{cursors.save}).
        """
        return self._pool.runInteraction(
            cursors.save, destination, log[0], log[1], index, tuple(dead), self.now()
        )

    def heard_exported(self, destination: str, positions: dict) -> Deferred:
        """
        Peers said ``destination`` holds these logs up to these indexes
        (L{cursors.save_heard}).
        """
        return self._pool.runInteraction(cursors.save_heard, destination, dict(positions))

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
