"""
Opening a node's databases: the adbapi connections, the schema brought up
to date (L{p2pstore.schema}), and what the store holds when it opens,
including the choice of the epoch this node numbers its readings in.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import attrs
from attrs import frozen
from twisted.enterprise import adbapi
from twisted.logger import Logger

from . import timeblocks
from .gaps import pruned_ranges
from .logkeys import span
from .records import is_node_id
from .schema import (
    INDEX_MASK,
    ROW_COLUMNS,
    TABLES_SQL,
    Schema,
    StoreError,
    backup,
    origin_of,
    rows_table,
    table_name,
)

log = Logger()

# The page size of a new database file, in bytes.
PAGE_SIZE = 1024
# Without a disk budget, a WAL is checkpointed once it holds this much.
WAL_BYTES = 4 * 1024 * 1024
# How often a long upgrade of one table says how far it is.
PROGRESS_SECONDS = 10.0


@frozen
class Opened:
    """
    What the store knows once it is open.

    @ivar positions: how far this node holds each log, ``{(origin, epoch):
        last_index}``, its own current epoch included.
    @ivar recovering: this node's own database was found missing or empty
        while its node.id was kept: its earlier readings are to be fetched
        from peers.
    @ivar firsts: the first index held of each log that starts past 1.
    @ivar pruned: the L{PrunedRange}s of both databases.
    """

    epoch: str
    count: int
    last_index: int
    last_sensor_index: int
    rejected: int
    positions: dict = attrs.Factory(dict)
    recovering: bool = False
    firsts: dict = attrs.Factory(dict)
    pruned: list = attrs.Factory(list)


def connect(database: str, configure, reactor=None, **kwargs) -> adbapi.ConnectionPool:
    """
    A pool of one SQLite connection (SQLite allows one writer; more
    connections would only wait on its lock), in a thread of its own.
    """
    if reactor is not None:
        kwargs["cp_reactor"] = reactor
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


def read_only(path: Path) -> str:
    """
    The SQLite URI that opens ``path`` read-only.
    """
    # The path's "?" and "#" must not end the URI.
    return f"file:{quote(str(path.absolute()))}?mode=ro"


def configure_writer(
    conn, peer_path: Path, synchronous: str, wal_limit: Optional[int] = None
) -> int:
    """
    Set up the writing connection: the peer database attached as ``peer``,
    both in WAL mode (so the sqlite3 tool can read them while the node
    runs) with ``synchronous``, and new files with incremental vacuum and
    L{PAGE_SIZE} pages; with ``wal_limit``, each WAL file is checkpointed
    once it holds about that many bytes and cut back to them.

    @return: how many host parameters one statement may have.
    """
    conn.execute("ATTACH DATABASE ? AS peer", (str(peer_path),))
    for db in ("main", "peer"):
        # A commit writes every page it changes whole, to the WAL and later
        # to the file, and changes only a few hundred bytes of most: smaller
        # pages write fewer bytes a reading (SD cards). A file keeps the
        # page size it was made with; set before auto_vacuum, which fixes it.
        # Pages freed by pruning go back to the filesystem (PRAGMA
        # incremental_vacuum). Both take only on a new file; on another
        # auto_vacuum would still write its header, which a full disk
        # refuses, so they are left out.
        (pages,) = conn.execute(f"PRAGMA {db}.page_count").fetchone()
        if not pages:
            conn.execute(f"PRAGMA {db}.page_size = {PAGE_SIZE}")
            conn.execute(f"PRAGMA {db}.auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA {db}.journal_mode = WAL")
        conn.execute(f"PRAGMA {db}.synchronous = {synchronous}")
        if wal_limit is not None:
            conn.execute(f"PRAGMA {db}.journal_size_limit = {int(wal_limit)}")
    # Checkpoint a WAL once it holds about wal_limit bytes (4 MiB, SQLite's
    # 1,000 pages of 4 KiB, without one), whatever the page size: the
    # larger it may grow, the fewer times a page changed by many commits
    # is written back to the file.
    (page_size,) = conn.execute("PRAGMA main.page_size").fetchone()
    wal_bytes = WAL_BYTES if wal_limit is None else int(wal_limit)
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(wal_bytes // page_size, 16)}")
    # The statement journal of a multi-row INSERT (to undo that statement
    # alone) spills to a temporary file past 64 KiB: in memory instead,
    # where it is not written to a disk only to be deleted unread.
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA busy_timeout = 10000")
    for db in ("main", "peer"):
        # What a WAL holds that a stop could not write back (a disk full to
        # the last byte, a crash) goes into the file now, and the WAL is
        # cut back: on a full disk the room it held comes back. Where there
        # is not room even for that, it stays for a later checkpoint.
        try:
            conn.execute(f"PRAGMA {db}.wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
    if sqlite3.sqlite_version_info < (3, 41):
        # The upgrade to schema version 5 turns hex checksums into bytes
        # with unhex(), built in from SQLite 3.41.
        conn.create_function("unhex", 1, _unhex, deterministic=True)
    return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _unhex(text):
    # SQLite's unhex() for one argument: NULL for what is not hex.
    try:
        return bytes.fromhex(text) if isinstance(text, str) and " " not in text else None
    except ValueError:
        return None


def configure_reader(conn, peer_path: Path) -> None:
    conn.execute("ATTACH DATABASE ? AS peer", (read_only(peer_path),))
    conn.execute("PRAGMA busy_timeout = 10000")


def version_of(txn) -> Optional[int]:
    """
    The schema version of the database: None for a new one (no meta); a
    meta without one is from before versions were written: 1.
    """
    if not txn.execute(
        "SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchall():
        return None
    row = txn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 1


def upgrade(txn, schema: Schema, paths: tuple[Path, Path]) -> None:
    """
    Bring a database of an older schema version up to ``schema``'s: back
    both files up, then apply each upgrader in a transaction of its own,
    with the upgrade of each readings table of both databases.
    """
    version = version_of(txn)
    if version is None or version >= schema.version:
        return
    _check_room(paths, version, schema.version)
    for path in paths:
        if path.exists():
            saved = _backup(path, version)
            log.info(
                "upgrading {path} from schema version {version}: a copy is in {saved}",
                path=str(path), version=version, saved=str(saved),
            )
    for target, statements in schema.upgrades(version):
        txn.execute("BEGIN IMMEDIATE")
        try:
            # The tables of the version being left, so that an upgrader may
            # alter them (a version 1 file may predate log_positions).
            for statement in attrs.evolve(schema, version=target - 1).create():
                txn.execute(statement)
            for statement in statements:
                txn.execute(statement)
            for db in ("main", "peer"):
                for origin in readings_tables(txn, db):
                    _upgrade_table(txn, schema, target, db, origin, paths)
            txn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(target),),
            )
        except BaseException:
            txn.execute("ROLLBACK")
            raise
        txn.execute("COMMIT")
        # The WALs that held the upgrade back to nothing, now it is in the files.
        for db in ("main", "peer"):
            txn.execute(f"PRAGMA {db}.wal_checkpoint(TRUNCATE)").fetchall()
        log.info(
            "upgraded {paths} to schema version {version}",
            paths=" and ".join(str(path) for path in paths if path.exists()), version=target,
        )


def _files_of(path: Path) -> list[Path]:
    return [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]


def _check_room(paths, version: int, target: int) -> None:
    # An upgrade writes a backup of each file, then changes it in one
    # transaction. Version 5 copies every readings table: the WAL holds the
    # new rows and the freed pages, and the file grows by the new rows at
    # the checkpoint, measured at 3.85 times the files' size at its peak
    # (1,000,000 rows). Version 6 adds a table of about a hundredth of the
    # rows and frees the pages of an index, so the backup is most of it.
    # Refuse it, with what to do, before anything is written rather than
    # fill the disk halfway.
    from .disk import size_text

    size = sum(p.stat().st_size for path in paths for p in _files_of(path))
    needed = 4 * size if version < 5 else 2 * size
    free = shutil.disk_usage(paths[0].parent).free
    if free < needed:
        raise StoreError(
            f"the databases in {paths[0].parent} are at schema version {version} and upgrading "
            f"them to version {target} needs about {size_text(needed)} free (a backup of each "
            f"file, and room for their rows to be copied within it), but {size_text(free)} is "
            f"free: free some space on that filesystem, or move the data directory to a larger "
            f"one, and start again. Nothing was changed"
        )


def _backup(path: Path, version: int) -> Path:
    # backup(), leaving no partial copy behind when it fails.
    try:
        return backup(path, version)
    except BaseException:
        for left in (f"{path.name}.v{version}.backup", f"{path.name}.v{version}.backup-journal"):
            path.with_name(left).unlink(missing_ok=True)
        raise


def _upgrade_table(txn, schema: Schema, target: int, db: str, origin: str, paths) -> None:
    # One readings table to version ``target``, saying how many rows it
    # holds before (a large table takes a while) and how many the upgrade
    # could not keep.
    table = table_name(origin)
    path = paths[0] if db == "main" else paths[1]
    (before,) = txn.execute(f"SELECT count(*) FROM {db}.{table}").fetchone()
    log.info(
        "upgrading table {table} of {path} ({rows} rows) to schema version {version}",
        table=table, path=str(path), rows=f"{before:,}", version=target,
    )
    started = time.monotonic()
    for statement in schema.table_upgrade(target, db, origin):
        txn.execute(statement)
    if target == 6:
        timeblocks.build(txn, db, origin, _Progress(table, before, started))
    (after,) = txn.execute(f"SELECT count(*) FROM {db}.{table}").fetchone()
    log.info(
        "upgraded table {table} ({rows} rows) in {seconds:.1f} s",
        table=table, rows=f"{after:,}", seconds=time.monotonic() - started,
    )
    if after != before:
        log.warn(
            "{lost} rows of table {table} in {path} have no valid position (they were changed "
            "by another program) and were left out by the upgrade to schema version {version}; "
            "the backup beside the file keeps them",
            lost=before - after, table=table, path=str(path), version=target,
        )


@attrs.define
class _Progress:
    # Logs how far the upgrade of a large table has gone, every
    # PROGRESS_SECONDS.
    table: str
    total: int
    last: float

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            log.info(
                "upgrading table {table}: {done} of {total} rows done",
                table=self.table, done=f"{done:,}", total=f"{self.total:,}",
            )


def readings_tables(txn, db: str) -> list[str]:
    """
    The origins whose readings tables ``db`` (``main`` or ``peer``) holds.
    """
    return [
        origin
        for (name,) in txn.execute(TABLES_SQL.format(db=db)).fetchall()
        if (origin := origin_of(name)) is not None
    ]


def check_columns(txn, db: str, origin: str, path: Path) -> None:
    """
    Refuse a readings table that lacks a column of a row.
    """
    table = table_name(origin)
    columns = {row[1] for row in txn.execute(f"PRAGMA {db}.table_info({table})").fetchall()}
    if columns and not set(ROW_COLUMNS) <= columns:
        raise StoreError(
            f"table {table} in {path} lacks the columns "
            f"{', '.join(sorted(set(ROW_COLUMNS) - columns))}: it was written by "
            f"another program or an older p2pstore; move the file aside to start afresh"
        )


def choose_epoch(meta: dict, synchronous: str) -> tuple[str, bool]:
    """
    The epoch this node numbers its readings in, from what ``meta`` holds,
    and whether it is a new one.
    """
    epoch = meta.get("epoch")
    if epoch is None:
        return uuid.uuid4().hex, True
    if meta.get("running") == "1" and synchronous != "FULL":
        # With synchronous=NORMAL a crash or power cut may have undone the
        # last commits, whose readings peers may hold already: numbering
        # on in this epoch could give those positions second contents.
        # A new epoch cannot; the old one's tail comes back from peers.
        log.warn(
            "the node did not stop cleanly and runs with --sync normal: its "
            "last readings may be lost here (peers may hold them), so it "
            "starts a new epoch"
        )
        return uuid.uuid4().hex, False
    return epoch, False


def open_logs(
    txn,
    schema: Schema,
    node_id: str,
    synchronous: str,
    recover_if_empty: bool,
    path: Path,
) -> tuple[Opened, set]:
    """
    Create what a database lacks, choose the epoch, mark the node running,
    and read what it holds.

    @return: L{Opened}, and the origins whose tables the peer database has.
    """
    txn.execute("BEGIN IMMEDIATE")
    version = version_of(txn)
    if version is not None and version > schema.version:
        raise StoreError(
            f"{path} has schema version {version}, newer than this "
            f"p2pstore understands ({schema.version}): upgrade p2pstore"
        )
    for statement in schema.create():
        txn.execute(statement)
    meta = dict(txn.execute("SELECT key, value FROM meta").fetchall())
    table = rows_table(node_id)
    check_columns(txn, "main", node_id, path)
    for statement in schema.readings_table(node_id, "main", own=True):
        txn.execute(statement)
    epoch, new = choose_epoch(meta, synchronous)
    recovering = meta.get("recovering") == "1"
    if new:
        (held,) = txn.execute(f"SELECT count(*) FROM {table}").fetchone()
        recovering = recover_if_empty and held == 0
    txn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [
            ("schema_version", str(schema.version)),
            ("epoch", epoch),
            ("recovering", "1" if recovering else "0"),
            ("running", "1"),
        ],
    )
    count, last_row, last_sensor = txn.execute(
        f"SELECT count(*), coalesce(max(key) & {INDEX_MASK}, 0), "
        f"coalesce(max(sensor_index), 0) FROM {table} WHERE key BETWEEN ? AND ?",
        span(txn, "main", node_id, epoch),
    ).fetchone()
    # The rows and the position agree, but a database from before
    # log_positions existed has only rows, and one whose rows were all
    # pruned only the position.
    last_index = max(last_row, own_last_index(txn, node_id, epoch))
    set_position(txn, "main", node_id, epoch, last_index)
    total = txn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    rejected, rejected_sensor = txn.execute(
        "SELECT count(*), coalesce(max(sensor_index), 0) FROM rejected_lines"
    ).fetchone()
    last_sensor_index = max(int(meta.get("last_sensor_index", 0)), last_sensor, rejected_sensor)
    positions, firsts, pruned = {}, {}, []
    for db in ("main", "peer"):
        for origin, log_epoch, n, first in txn.execute(
            f"SELECT origin, epoch, last_index, first_index FROM {db}.log_positions"
        ).fetchall():
            if is_node_id(origin) and is_node_id(log_epoch):
                positions[(origin, log_epoch)] = n
                if first > 1:
                    firsts[(origin, log_epoch)] = first
        pruned.extend(pruned_ranges(txn, db))
    peer_tables = set(readings_tables(txn, "peer"))
    opened = Opened(
        epoch=epoch,
        count=total,
        last_index=last_index,
        last_sensor_index=last_sensor_index,
        rejected=rejected,
        positions=positions,
        recovering=recovering,
        firsts=firsts,
        pruned=pruned,
    )
    return opened, peer_tables


def own_last_index(txn, origin: str, epoch: str) -> int:
    """
    The last index ``main.log_positions`` gives a log, 0 for none.
    """
    row = txn.execute(
        "SELECT last_index FROM main.log_positions WHERE origin = ? AND epoch = ?",
        (origin, epoch),
    ).fetchone()
    return row[0] if row else 0


def set_position(txn, db: str, origin: str, epoch: str, last_index: int) -> None:
    """
    Move a log's last index in ``db``'s log_positions, keeping its first.
    """
    txn.execute(
        f"INSERT INTO {db}.log_positions (origin, epoch, last_index) VALUES (?, ?, ?) "
        f"ON CONFLICT (origin, epoch) DO UPDATE SET last_index = excluded.last_index",
        (origin, epoch, last_index),
    )
