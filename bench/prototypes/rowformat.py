"""
Bytes written to disk per reading by the row formats a node could store
(issue 17, "Less disk wear"): a deterministic prototype, no node, no timing.

Each run makes a fresh pair of databases under --tmpdir (a real disk, not
tmpfs), configured by p2pstore.opening.configure_writer itself, then writes
--readings readings in commits of --per-commit, each commit what
p2pstore.storage.Store._append does for a batch of the diskwear bench's
lines (``Temperature,39C,2026-11-28 10:00:00.123456,<tag>-<connection>-<k>``
from 100 connections, one reading of each in turn): BEGIN IMMEDIATE, the
read of the log's end, the reading-id lookup, the multi-row INSERT of the
signed rows (p2pstore.rows.OwnRows, the real HMAC), the log_positions
upsert, every 30,000 readings the bulk move of the reading ids
(p2pstore.readingids), a log_marks row every 60,000 readings (the node's
60 s at 1,000 readings/s), COMMIT with synchronous=FULL (a real fsync).

What is counted, per commit: the WAL frames it appended (from the WAL's
frame headers: their count and page numbers, named at the end by dbstat
and by the pointer-map layout), and this process's /proc/self/io
write_bytes delta (4 KiB page-cache pages dirtied: what the issue counts).
The WAL's share is modelled as the 4 KiB pages its new frames span (the
first shared with the commit before, dirtied again after that one's
fsync); a commit whose frames reach wal_autocheckpoint also checkpoints,
and its write_bytes beyond the WAL's share is the checkpoint's. The run
prints how far the model and write_bytes agree. Only whole checkpoint
cycles after --warmup readings are counted, so every frame counted was
also checkpointed.

Variants (--variant, repeatable; --all for the predefined list):
  key=pk|ipk|wr   pk: PRIMARY KEY (epoch, entry_index), v4's (an index
                  b-tree, sqlite_autoindex, beside the table); ipk: key
                  INTEGER PRIMARY KEY = epoch ordinal << 40 | entry_index,
                  entry_index a VIRTUAL generated column (no bytes); wr:
                  v4's columns and key, WITHOUT ROWID (the table is the key)
  epoch=text|ord|none   the epoch's 32 hex characters in every row, its
                  ordinal (a small integer, an epochs table names it), or
                  no column (ipk only: the ordinal is in the key)
  sum=hex|blob    data_checksum as 64 hex characters or 32 bytes
  ts=each|bulk|blocks|none   the timestamp index on the table (every
                  commit writes it), a WITHOUT ROWID table (timestamp, key)
                  filled with the reading ids' bulk move, sorted, a table of
                  the keys' and timestamps' ranges of each block of 128
                  rows filled by that move (ipk only), or none
  av=incr|none    auto_vacuum (INCREMENTAL has pointer-map pages)
  ps=512|1024|4096    page size
  n=41            readings per commit
  wal=4           MiB of WAL between checkpoints (the node's 4)
  clock=0|1       1: timestamps of the readings' own times (1 ms apart)
                  instead of the bench's one constant timestamp

Run from the checkout: ``python3 bench/prototypes/rowformat.py --all``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from itertools import chain
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from p2pstore import opening  # noqa: E402
from p2pstore.readingids import ReadingIds  # noqa: E402
from p2pstore.records import CHECKSUM, Signer  # noqa: E402
from p2pstore.rows import OwnRows  # noqa: E402
from p2pstore.schema import Schema, table_name  # noqa: E402
from p2pstore.statements import Statements  # noqa: E402
from p2pstore.lines import Reading  # noqa: E402

NODE_ID = "5f0c6a2e9b1d4e7fa3c8b6d2e1f09a7c"
EPOCH = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
TAG = "r1a5c3"
CONNECTIONS = 100
IDS_BATCH = 30_000
MARK_EVERY = 60_000
ORDINAL = 1
KEY_SHIFT = 40
CACHE_PAGE = 4096
BLOCK = 128

DEFAULTS = dict(key="pk", epoch="text", sum="hex", ts="each", av="incr", ps=1024, n=41, wal=4, clock=0)

PREDEFINED = [
    ("v4 (the node today)", ""),
    ("1a ipk key, epoch kept", "key=ipk"),
    ("1b ipk key, no epoch column", "key=ipk,epoch=none"),
    ("1c v4 WITHOUT ROWID", "key=wr"),
    ("1d v4, epoch an ordinal", "epoch=ord"),
    ("2a v4, timestamp index in bulk", "ts=bulk"),
    ("2b v4, no timestamp index", "ts=none"),
    ("3 v4, checksum a blob", "sum=blob"),
    ("4 v4, auto_vacuum none", "av=none"),
    ("5a v4, 512 B pages", "ps=512"),
    ("5b v4, 4 KiB pages", "ps=4096"),
    ("6a v4, 48 a commit", "n=48"),
    ("6b v4, 60 a commit", "n=60"),
    ("7a v4, 16 MiB WAL", "wal=16"),
    ("7b v4, clock timestamps", "clock=1"),
    ("X1 ipk, no epoch, blob, ts bulk", "key=ipk,epoch=none,sum=blob,ts=bulk"),
    ("X2 X1 + auto_vacuum none", "key=ipk,epoch=none,sum=blob,ts=bulk,av=none"),
    ("X3 ipk, no epoch, blob, no ts index", "key=ipk,epoch=none,sum=blob,ts=none"),
    ("X4 ipk, no epoch, hex, ts bulk", "key=ipk,epoch=none,ts=bulk"),
    ("X5 ipk, epoch kept, hex, ts bulk", "key=ipk,ts=bulk"),
    ("X6 ipk, epoch kept, hex, ts each", "key=ipk,ts=each"),
    ("X7 ipk, no epoch, blob, ts each", "key=ipk,epoch=none,sum=blob"),
    ("X8 X1, 512 B pages", "key=ipk,epoch=none,sum=blob,ts=bulk,ps=512"),
    ("X9 X1, 4 KiB pages", "key=ipk,epoch=none,sum=blob,ts=bulk,ps=4096"),
    ("X10 X1, 48 a commit", "key=ipk,epoch=none,sum=blob,ts=bulk,n=48"),
    ("X11 X1, clock timestamps", "key=ipk,epoch=none,sum=blob,ts=bulk,clock=1"),
    ("X12 v4 WITHOUT ROWID, ord epoch, blob, ts bulk", "key=wr,epoch=ord,sum=blob,ts=bulk"),
    ("X13 X1, 16 MiB WAL", "key=ipk,epoch=none,sum=blob,ts=bulk,wal=16"),
    ("X14 X2, 48 a commit", "key=ipk,epoch=none,sum=blob,ts=bulk,av=none,n=48"),
    ("X15 X2, 60 a commit", "key=ipk,epoch=none,sum=blob,ts=bulk,av=none,n=60"),
    ("X16 X2, 512 B pages", "key=ipk,epoch=none,sum=blob,ts=bulk,av=none,ps=512"),
    ("X17 X3 + auto_vacuum none", "key=ipk,epoch=none,sum=blob,ts=none,av=none"),
    ("X18 pk, ord epoch, blob, ts bulk, av none", "epoch=ord,sum=blob,ts=bulk,av=none"),
    ("X19 ipk, epoch kept, blob, ts bulk, av none", "key=ipk,sum=blob,ts=bulk,av=none"),
    ("X20 ipk, no epoch, blob, ts blocks", "key=ipk,epoch=none,sum=blob,ts=blocks"),
    ("X21 X20 + auto_vacuum none", "key=ipk,epoch=none,sum=blob,ts=blocks,av=none"),
    ("X22 ipk, epoch kept, hex, ts blocks", "key=ipk,ts=blocks"),
    ("X23 ipk, no epoch, hex, ts blocks, av none", "key=ipk,epoch=none,ts=blocks,av=none"),
]


def parse_spec(spec: str) -> dict:
    v = dict(DEFAULTS)
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        if name not in v:
            raise SystemExit(f"unknown variant option {name!r}")
        v[name] = int(value) if isinstance(DEFAULTS[name], int) else value
    if v["ts"] == "blocks" and v["key"] != "ipk":
        raise SystemExit("ts=blocks needs key=ipk")
    if v["epoch"] == "none" and v["key"] != "ipk":
        raise SystemExit("epoch=none needs key=ipk (the key holds the epoch's ordinal)")
    return v


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


class Wal:
    """
    Reads the frames a commit appended from the WAL's headers.
    """

    def __init__(self, path: Path, page_size: int):
        self.path = path
        self.frame = 24 + page_size
        self.salts = None
        self.end = 32  # offset after the last valid frame
        self.count = 0  # frames since the last restart

    def new_frames(self) -> tuple[list, int, bool]:
        """
        The page numbers of the frames appended since the last call, the
        offset they start at, and whether the WAL restarted from its start.
        """
        with open(self.path, "rb") as f:
            header = f.read(32)
            salts = header[16:24]
            restarted = salts != self.salts
            if restarted:
                self.salts, self.end, self.count = salts, 32, 0
            start = self.end
            f.seek(start)
            pages = []
            while True:
                head = f.read(24)
                if len(head) < 24 or head[8:16] != salts:
                    break
                pages.append(struct.unpack(">I", head[:4])[0])
                f.seek(self.frame - 24, 1)
                self.end += self.frame
        self.count += len(pages)
        return pages, start, restarted


def dirtied(start: int, end: int) -> int:
    """
    The 4 KiB page-cache pages a write of [start, end) dirties.
    """
    if end <= start:
        return 0
    return (end - 1) // CACHE_PAGE - start // CACHE_PAGE + 1


class Layout:
    """
    The tables of one variant and the statements a commit runs on them.
    """

    def __init__(self, v: dict, statements: Statements):
        self.v = v
        self.table = table_name(NODE_ID)
        self.st = statements
        self.v4_shaped = v["key"] == "pk" and v["epoch"] == "text"

    def create(self, txn) -> None:
        schema = Schema()
        for statement in schema.create():
            txn.execute(statement)
        v, t = self.v, self.table
        if self.v4_shaped:
            for statement in schema.readings_table(NODE_ID, "main", own=True):
                if v["ts"] != "each" and "_timestamp ON" in statement:
                    continue
                txn.execute(statement)
        else:
            cols = []
            if v["key"] == "ipk":
                cols += [
                    "key INTEGER PRIMARY KEY",
                    f"entry_index INTEGER GENERATED ALWAYS AS (key & {(1 << KEY_SHIFT) - 1}) VIRTUAL",
                ]
            else:
                cols.append("entry_index INTEGER NOT NULL")
            cols += [
                "sensor_index INTEGER NOT NULL", "sensor_type TEXT NOT NULL",
                "sensor_data TEXT NOT NULL", "timestamp TEXT NOT NULL", "value REAL", "unit TEXT",
                "reading_id TEXT",
                f"data_checksum {'BLOB' if v['sum'] == 'blob' else 'TEXT'} NOT NULL",
            ]
            if v["epoch"] == "text":
                cols.append("epoch TEXT NOT NULL")
            elif v["epoch"] == "ord":
                cols.append("epoch INTEGER NOT NULL")
            cols.append("sensor_name TEXT")
            if v["key"] != "ipk":
                cols.append("PRIMARY KEY (epoch, entry_index)")
            txn.execute(
                f"CREATE TABLE main.{t} ({', '.join(cols)})"
                + (" WITHOUT ROWID" if v["key"] == "wr" else "")
            )
            if v["ts"] == "each":
                txn.execute(f"CREATE INDEX main.{t}_timestamp ON {t} (timestamp)")
            txn.execute(
                f"CREATE TABLE main.{t}_ids (reading_id TEXT NOT NULL, entry_index INTEGER NOT NULL, "
                f"PRIMARY KEY (reading_id, entry_index)) WITHOUT ROWID"
            )
            if v["epoch"] != "text":
                txn.execute("CREATE TABLE main.epochs (ordinal INTEGER PRIMARY KEY, epoch TEXT NOT NULL UNIQUE)")
                txn.execute("INSERT INTO main.epochs VALUES (?, ?)", (ORDINAL, EPOCH))
        if v["ts"] == "blocks":
            # One row per BLOCK readings: their keys' range and their
            # timestamps' (a since/until query reads the blocks that
            # overlap it, then those rows, filtered by timestamp).
            txn.execute(
                f"CREATE TABLE main.{t}_tsblocks (first_key INTEGER PRIMARY KEY, "
                f"last_key INTEGER NOT NULL, min_ts TEXT NOT NULL, max_ts TEXT NOT NULL)"
            )
        if v["ts"] == "bulk":
            key = "key INTEGER NOT NULL, PRIMARY KEY (timestamp, key)" if v["key"] == "ipk" else (
                f"epoch {'TEXT' if v['epoch'] == 'text' else 'INTEGER'} NOT NULL, "
                f"entry_index INTEGER NOT NULL, PRIMARY KEY (timestamp, epoch, entry_index)"
            )
            txn.execute(f"CREATE TABLE main.{t}_ts (timestamp TEXT NOT NULL, {key}) WITHOUT ROWID")

    # What a commit runs, besides the position and the marks.

    def last(self, txn) -> int:
        t = self.table
        if self.v["key"] == "ipk":
            lo = ORDINAL << KEY_SHIFT
            where, args = "key BETWEEN ? AND ?", (lo, lo + (1 << KEY_SHIFT) - 1)
            expr = f"max(key) - {lo}"
        else:
            where = "epoch = ?"
            args = (EPOCH if self.v["epoch"] == "text" else ORDINAL,)
            expr = "max(entry_index)"
        (last,) = txn.execute(
            f"SELECT max(coalesce((SELECT {expr} FROM {t} WHERE {where}), 0), "
            f"coalesce((SELECT last_index FROM main.log_positions WHERE origin = ? AND epoch = ?), 0))",
            args + (NODE_ID, EPOCH),
        ).fetchone()
        return last

    def rows(self, signed: list) -> list:
        v = self.v
        out = []
        for row in signed:
            (index, sensor, stype, sdata, ts, rid, checksum, value, unit, epoch) = row
            if v["sum"] == "blob":
                checksum = bytes.fromhex(checksum)
            if self.v4_shaped:
                out.append(row[:CHECKSUM] + (checksum,) + row[CHECKSUM + 1 :])
                continue
            head = ((ORDINAL << KEY_SHIFT) | index,) if v["key"] == "ipk" else (index,)
            tail = () if v["epoch"] == "none" else ((EPOCH if v["epoch"] == "text" else ORDINAL),)
            out.append(head + (sensor, stype, sdata, ts, rid, checksum, value, unit) + tail)
        return out

    def insert(self, txn, rows: list) -> None:
        if self.v4_shaped:
            self.st.insert(txn, "main", self.table, rows)
            return
        v = self.v
        cols = ["key" if v["key"] == "ipk" else "entry_index", "sensor_index", "sensor_type",
                "sensor_data", "timestamp", "reading_id", "data_checksum", "value", "unit"]
        if v["epoch"] != "none":
            cols.append("epoch")
        marks = "(" + ", ".join("?" * len(cols)) + ")"
        # In powers of two, as Statements.insert does.
        size, start = self.st.rows_per_insert, 0
        while start < len(rows):
            while size > len(rows) - start:
                size //= 2
            txn.execute(
                f"INSERT INTO main.{self.table} ({', '.join(cols)}) VALUES " + ", ".join([marks] * size),
                list(chain.from_iterable(rows[start : start + size])),
            )
            start += size

    def move(self, txn, after: int, last: int) -> None:
        """
        The bulk moves (reading ids, and timestamps with ts=bulk) of the
        rows after entry_index ``after`` up to ``last``, in the order of
        their tables, and the pending mark; for the v4-shaped variants the
        reading ids are moved by p2pstore.readingids itself.
        """
        v, t = self.v, self.table
        if v["key"] == "ipk":
            lo = ORDINAL << KEY_SHIFT
            where, args, key = "key > ? AND key <= ?", (lo | after, lo | last), "key"
        else:
            ep = EPOCH if v["epoch"] == "text" else ORDINAL
            where, args, key = "epoch = ? AND entry_index > ? AND entry_index <= ?", (ep, after, last), "epoch, entry_index"
        if not self.v4_shaped:
            txn.execute(
                f"INSERT OR IGNORE INTO main.{t}_ids (reading_id, entry_index) "
                f"SELECT reading_id, entry_index FROM main.{t} WHERE {where} AND reading_id IS NOT NULL "
                f"ORDER BY reading_id, entry_index",
                args,
            )
            txn.execute(
                "INSERT OR REPLACE INTO main.meta (key, value) VALUES (?, ?)",
                ("reading_ids_pending", f"{EPOCH} {last}"),
            )
        if v["ts"] == "blocks":
            txn.execute(
                f"INSERT INTO main.{t}_tsblocks SELECT min(key), max(key), min(timestamp), "
                f"max(timestamp) FROM main.{t} WHERE {where} GROUP BY (key - 1) / {BLOCK} ORDER BY 1",
                args,
            )
        if v["ts"] == "bulk":
            txn.execute(
                f"INSERT INTO main.{t}_ts SELECT timestamp, {key} FROM main.{t} WHERE {where} "
                f"ORDER BY timestamp, {key}",
                args,
            )


def readings(first: int, count: int, clock: bool):
    """
    The bench's readings ``first``..: reading n from connection n % 100,
    its (n // 100)th; as (readings, sensor_index) parts of one reading each.
    """
    for n in range(first, first + count):
        conn, k = n % CONNECTIONS, n // CONNECTIONS
        if clock:
            us = n * 1000
            ts = "2026-11-28 %02d:%02d:%02d.%06d" % (
                10 + us // 3_600_000_000, us // 60_000_000 % 60, us // 1_000_000 % 60, us % 1_000_000,
            )
        else:
            ts = "2026-11-28 10:00:00.123456"
        yield [Reading("Temperature", "39C", ts, f"{TAG}-{conn}-{k}")], conn + 1, None, None


def prepare_file(path: Path, page_size: int, auto_vacuum: str) -> None:
    """
    A file made with another page size or auto_vacuum than
    configure_writer's (which then leaves both as they are): an empty
    table makes them stick.
    """
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size = {page_size}")
    conn.execute(f"PRAGMA auto_vacuum = {'INCREMENTAL' if auto_vacuum == 'incr' else 'NONE'}")
    conn.execute("CREATE TABLE main.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    conn.close()


def run(v: dict, total: int, warmup: int, tmpdir: Path, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="rowformat-", dir=tmpdir))
    path, peer = work / "self_sensor_data.db", work / "peer_sensor_data.db"
    if (v["ps"], v["av"]) != (opening.PAGE_SIZE, "incr"):
        prepare_file(path, v["ps"], v["av"])
        prepare_file(peer, v["ps"], v["av"])
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    limit = opening.configure_writer(conn, peer, "FULL", v["wal"] * 1024 * 1024 if v["wal"] != 4 else None)
    if v["wal"] != 4:
        # configure_writer with wal_limit also sets journal_size_limit;
        # only the checkpoint's cadence is wanted here.
        for db in ("main", "peer"):
            conn.execute(f"PRAGMA {db}.journal_size_limit = -1")
    pragmas = {
        name: conn.execute(f"PRAGMA main.{name}").fetchone()[0]
        for name in ("page_size", "auto_vacuum", "journal_mode", "synchronous", "wal_autocheckpoint",
                     "journal_size_limit")
    }
    pragmas["temp_store"] = conn.execute("PRAGMA temp_store").fetchone()[0]
    assert pragmas["page_size"] == v["ps"] and pragmas["auto_vacuum"] == (2 if v["av"] == "incr" else 0), pragmas
    assert pragmas["synchronous"] == 2 and pragmas["journal_mode"] == "wal", pragmas
    statements = Statements(limit)
    layout = Layout(v, statements)
    conn.execute("BEGIN IMMEDIATE")
    layout.create(conn)
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '4'), ('epoch', ?), "
        "('recovering', '0'), ('running', '1')",
        (EPOCH,),
    )
    opening.set_position(conn, "main", NODE_ID, EPOCH, 0)
    conn.execute("COMMIT")
    ids = ReadingIds(NODE_ID, IDS_BATCH)
    if layout.v4_shaped:
        ids.open(conn, EPOCH)
    else:
        conn.execute("BEGIN IMMEDIATE")
        layout.move(conn, 0, 0)
        conn.execute("COMMIT")
    own = OwnRows(NODE_ID, Signer.from_key(b"rowformat prototype cluster key"))
    own.opened(EPOCH, 0, 0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    wal = Wal(Path(str(path) + "-wal"), v["ps"])
    wal.new_frames()
    ckpt_at = pragmas["wal_autocheckpoint"]
    n, per, recent, moved_at, marked_at = 0, v["n"], 0, 0, None
    counting = False
    acc = Counter()  # figures of the counted window
    pages = Counter()
    pending = Counter()  # of the cycle in progress, added at its checkpoint
    pending_pages = Counter()
    distinct: set = set()
    started = time.monotonic()
    # Bounded: one commit per iteration, at most total / per + 1 of them.
    while n < total:
        count = min(per, total - n)
        signed = own.batch(readings(n, count, bool(v["clock"])))
        rows = layout.rows(signed)
        before = write_bytes()
        conn.execute("BEGIN IMMEDIATE")
        last = layout.last(conn)
        assert last == n, (last, n)
        wanted = {row[5] for row in signed}
        if layout.v4_shaped:
            known = ids.known(conn, statements.reading_ids, wanted)
        else:
            known = statements.reading_ids(conn, f"main.{layout.table}_ids", wanted)
        assert not known
        layout.insert(conn, rows)
        if n == 0:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sensor_index', ?)",
                (str(CONNECTIONS),),
            )
        last = n + count
        opening.set_position(conn, "main", NODE_ID, EPOCH, last)
        if marked_at is None or last - marked_at >= MARK_EVERY:
            conn.execute(
                "INSERT OR REPLACE INTO main.log_marks (origin, epoch, entry_index, stored_at) "
                "VALUES (?, ?, ?, ?)",
                (NODE_ID, EPOCH, last, 1.8e9 + last / 1000),
            )
            marked_at = last
        moved = False
        if layout.v4_shaped:
            moved = ids.due(conn, EPOCH, count)
            if moved and v["ts"] == "bulk":
                layout.move(conn, moved_at, last)
        elif recent + count >= IDS_BATCH:
            layout.move(conn, moved_at, last)
            moved = True
        conn.execute("COMMIT")
        measured = write_bytes() - before
        if layout.v4_shaped:
            ids.committed(signed, moved)
        recent = 0 if moved else recent + count
        if moved:
            moved_at = last
        own.committed(last, 0)
        n = last

        frames, start, restarted = wal.new_frames()
        wal_cache = dirtied(0 if restarted else start, start + len(frames) * wal.frame)
        if restarted:
            distinct = set()
        distinct.update(frames)
        checkpointed = wal.count >= ckpt_at
        c = pending
        c["commits"] += 1
        c["readings"] += count
        c["frames"] += len(frames)
        c["wal_frame_bytes"] += len(frames) * wal.frame
        c["wal_cache_bytes"] += wal_cache * CACHE_PAGE
        c["measured"] += measured
        if moved:
            c["move_commits"] += 1
            c["move_frames"] += len(frames)
            c["move_measured"] += measured
        else:
            c["plain_frames"] += len(frames)
            c["plain_commits"] += 1
        if len(frames) >= 2 and frames[-1] == frames[-2]:
            c["repeated_last_frame"] += 1
        pending_pages.update(frames)
        if checkpointed:
            ckpt_model = len({(p - 1) * v["ps"] // CACHE_PAGE for p in distinct}) * CACHE_PAGE
            c["ckpt_model"] += ckpt_model
            c["ckpt_measured"] += measured - wal_cache * CACHE_PAGE
            c["checkpoints"] += 1
            if counting:
                acc.update(pending)
                pages.update(pending_pages)
            elif n >= warmup:
                counting = True
            pending, pending_pages = Counter(), Counter()
    seconds = time.monotonic() - started

    # Name the pages the counted frames wrote.
    names = {}
    for name, path_, pageno, pagetype in conn.execute("SELECT name, path, pageno, pagetype FROM dbstat('main')"):
        # Interior pages by their depth: 0 the root.
        depth = f" d{path_.count('/') - 1}" if pagetype == "internal" else ""
        names[pageno] = f"{name.replace(layout.table, 'T')} {pagetype}{depth}"
    page_count = conn.execute("PRAGMA main.page_count").fetchone()[0]
    per_ptrmap = v["ps"] // 5
    ptrmaps = set()
    if v["av"] == "incr":
        p = 2
        while p <= page_count:
            ptrmaps.add(p)
            p += per_ptrmap + 1
    by_tree = Counter()
    for pageno, k in pages.items():
        if pageno == 1:
            label = "page 1"
        elif pageno in ptrmaps:
            label = "pointer map"
        else:
            label = names.get(pageno, "free or gone")
        by_tree[label] += k
    stats = Counter()
    for name, payload, pgsize, ncell in conn.execute(
        "SELECT name, sum(payload), sum(pgsize), sum(ncell) FROM dbstat('main', 1) GROUP BY name"
    ):
        stats[name.replace(layout.table, "T")] = (payload, pgsize, ncell)
    (rowcount,) = conn.execute(f"SELECT count(*) FROM main.{layout.table}").fetchone()
    assert rowcount == total
    sample = conn.execute(f"SELECT * FROM main.{layout.table} ORDER BY rowid LIMIT 1" if v["key"] != "wr"
                          else f"SELECT * FROM main.{layout.table} LIMIT 1").fetchone()
    conn.close()
    if not keep:
        shutil.rmtree(work)
    r = acc["readings"] or 1
    commits = acc["commits"] or 1
    own_tables = ("T", "sqlite_autoindex_T_1", "T_timestamp", "T_ts", "T_tsblocks")
    return {
        "variant": v,
        "pragmas": pragmas,
        "seconds": round(seconds, 1),
        "counted_readings": acc["readings"],
        "counted_commits": acc["commits"],
        "checkpoints": acc["checkpoints"],
        "frames_per_commit": acc["frames"] / commits,
        "plain_frames_per_commit": acc["plain_frames"] / max(acc["plain_commits"], 1),
        "wal_frame_B": acc["wal_frame_bytes"] / r,
        "wal_B": acc["wal_cache_bytes"] / r,
        "ckpt_B": acc["ckpt_measured"] / r,
        "ckpt_model_B": acc["ckpt_model"] / r,
        "total_B": acc["measured"] / r,
        "model_total_B": (acc["wal_cache_bytes"] + acc["ckpt_model"]) / r,
        "move_B": acc["move_measured"] / r,
        "move_commits": acc["move_commits"],
        "repeated_last_frame": acc["repeated_last_frame"],
        "row_payload_B": sum(stats[t][0] for t in own_tables if t in stats) / total,
        "row_file_B": sum(stats[t][1] for t in own_tables if t in stats) / total,
        "btrees": {k: {"payload_B": p / total, "file_B": s / total} for k, (p, s, _) in stats.items()
                   if p / total >= 0.5 or k in own_tables},
        "frames_by_tree": {k: n / commits for k, n in by_tree.most_common()},
        "sample_row": [x.hex() if isinstance(x, bytes) else x for x in sample],
    }


def show(name: str, res: dict) -> None:
    print(
        f"{name:48} frames/commit {res['frames_per_commit']:6.2f} (no move {res['plain_frames_per_commit']:6.2f})"
        f"  WAL {res['wal_B']:6.0f} (frames {res['wal_frame_B']:6.0f})  ckpt {res['ckpt_B']:5.0f}"
        f" (model {res['ckpt_model_B']:5.0f})  total {res['total_B']:6.0f} (model {res['model_total_B']:6.0f})"
        f"  rows {res['row_payload_B']:5.1f} payload, {res['row_file_B']:5.1f} in pages"
        f"  [{res['counted_readings']} readings, {res['move_commits']} id moves, {res['checkpoints']} ckpts, {res['seconds']} s]",
        flush=True,
    )
    print("    frames/commit by b-tree: " + ", ".join(
        f"{k} {n:.2f}" for k, n in res["frames_by_tree"].items() if n >= 0.05), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="a variant, e.g. key=ipk,sum=blob")
    parser.add_argument("--all", action="store_true", help="the predefined variants")
    parser.add_argument("--only", default="", help="with --all, only the names starting with these (comma-separated)")
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--warmup", type=int, default=10_000, help="readings before counting starts")
    parser.add_argument("--per-commit", type=int, default=None, help="readings per commit (n=, default 41)")
    parser.add_argument("--tmpdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with open("/proc/mounts") as f:
        mounts = [line.split() for line in f]
    target = str(args.tmpdir.resolve())
    mount = max((m for m in mounts if target == m[1] or target.startswith(m[1].rstrip("/") + "/")),
                key=lambda m: len(m[1]))
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {target} on {mount[0]} "
          f"({mount[2]}), {args.readings} readings, counted after {args.warmup}", flush=True)
    if mount[2] in ("tmpfs", "ramfs"):
        raise SystemExit("--tmpdir is on a tmpfs: write_bytes would stay 0")
    todo = [(spec or "v4", spec) for spec in args.variant]
    if args.all or not todo:
        only = tuple(filter(None, args.only.split(",")))
        todo += [(name, spec) for name, spec in PREDEFINED if not only or name.startswith(only)]
    results = []
    for name, spec in todo:
        v = parse_spec(spec)
        if args.per_commit is not None and "n=" not in spec:
            v["n"] = args.per_commit
        res = run(v, args.readings, args.warmup, args.tmpdir, args.keep)
        res["name"] = name
        show(name, res)
        results.append(res)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
