#!/usr/bin/env python3
"""
Why the node inserts with multi-row statements and shortens Python's GIL
switch interval: a SQLite writer thread beside one busy Python thread.

The busy thread stands for the node's reactor: Python work (parsing and
signing sensor lines) with a system call every few hundred microseconds.
The writer stands for the node's database thread: batches of ~1,100 rows
into a table with the node's schema (``p2pstore.schema.Schema.readings_table``),
one transaction each, ``synchronous=FULL``. Each case runs for --duration
seconds and reports the writer's rows/s and the busy thread's loops/s:

- executemany, one ``sqlite3_step`` (and GIL hand-off) per row;
- the node's multi-row INSERTs (``Store._insert``'s decomposition);
- each of those with Python's default switch interval (5 ms) and with the
  node's ``GIL_SWITCH_INTERVAL``;
- the writer alone, for scale.

    python bench/gil.py             # 5 s a case
    python bench/gil.py --quick     # 1 s a case
    python bench/gil.py --json /tmp/gil.json
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from itertools import chain
from operator import itemgetter
from pathlib import Path

import core  # noqa: F401  (first: this checkout's p2pstore)
from report import machine, machine_line

from p2pstore.lines import parse_line  # noqa: E402
from p2pstore.records import Signer  # noqa: E402
from p2pstore.schema import STORED_COLUMNS, Schema, key_of, rows_table  # noqa: E402
from p2pstore.service import GIL_SWITCH_INTERVAL  # noqa: E402

NODE = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
# The node writes its rows here (schema version 5), under the view users query.
TABLE = rows_table(NODE)
BATCH = 1100
# The values of a row, by name; the order of the table's columns (and so
# of each row tuple) is read from the table that Schema.readings_table made.
ROW_FIELDS = STORED_COLUMNS
LINE = b"Temperature,39C,2026-11-28 10:00:00.123456"


def busy(stop: threading.Event, loops: list) -> None:
    """
    Parse and sign 40 lines, then a system call (a socketpair round trip),
    until stopped.
    """
    signer = Signer.from_key(b"k" * 32)
    a, b = socket.socketpair()
    try:
        while not stop.is_set():
            for i in range(40):
                r = parse_line(LINE, None)
                signer.checksum_of(NODE, EPOCH, i + 1, 3, r.sensor_type, r.sensor_data, r.timestamp, None)
            a.send(b"x")
            b.recv(1)
            loops[0] += 1
    finally:
        a.close()
        b.close()


def writer(path: Path, how: str, duration: float) -> tuple[int, float]:
    """
    Insert batches for ``duration`` seconds; return (rows, seconds).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, cached_statements=64)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in Schema().readings_table(NODE, "main", own=True):
        conn.execute(statement)
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")]
    if sorted(columns) != sorted(ROW_FIELDS):
        raise SystemExit(f"gil.py: the readings table's columns are now {columns}; update ROW_FIELDS")
    in_table_order = itemgetter(*[ROW_FIELDS.index(c) for c in columns])
    column_list = ", ".join(columns)
    marks = "(" + ", ".join("?" * len(columns)) + ")"
    statements: dict = {}

    def multi_row(rows: list) -> None:
        size, start = 512, 0
        while start < len(rows):
            while size > len(rows) - start:
                size //= 2
            sql = statements.get(size)
            if sql is None:
                sql = statements[size] = (
                    f"INSERT INTO {TABLE} ({column_list}) VALUES " + ", ".join([marks] * size)
                )
            conn.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size

    def many(rows: list) -> None:
        # 100 rows a call, so that a slow case still stops near its time.
        for first in range(0, len(rows), 100):
            conn.executemany(
                f"INSERT INTO {TABLE} ({column_list}) VALUES {marks}", rows[first : first + 100]
            )
            if time.perf_counter() - start > duration:
                del rows[first + 100 :]
                return

    insert = many if how == "executemany" else multi_row
    stored = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        rows = [
            in_table_order((key_of(1, stored + i + 1), 3, "Temperature", "39C",
                            "2026-11-28 10:00:00.123456", None, (stored + i).to_bytes(32, "big"),
                            39.0, "C", None))
            for i in range(BATCH)
        ]
        conn.execute("BEGIN IMMEDIATE")
        insert(rows)
        conn.execute("COMMIT")
        stored += len(rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return stored, elapsed


def case(workdir: Path, how: str, interval: float | None, duration: float) -> dict:
    path = workdir / f"{how}-{interval}.db"
    before = sys.getswitchinterval()
    stop, loops = threading.Event(), [0]
    thread = None
    if interval is not None:
        sys.setswitchinterval(interval)
        thread = threading.Thread(target=busy, args=(stop, loops))
        thread.start()
    try:
        rows, elapsed = writer(path, how, duration)
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        sys.setswitchinterval(before)
    return {
        "insert": how,
        "busy_thread": interval is not None,
        "switch_interval_s": interval,
        "rows_per_s": round(rows / elapsed, 1),
        "busy_loops_per_s": round(loops[0] / elapsed, 1) if interval is not None else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A SQLite writer thread beside a busy Python thread.")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds a case (5)")
    parser.add_argument("--quick", action="store_true", help="1 s a case")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    duration = 1.0 if args.quick else args.duration
    info = machine()
    print(machine_line(info))
    cases = [
        ("multi-row", None),
        ("executemany", 0.005),
        ("multi-row", 0.005),
        ("executemany", GIL_SWITCH_INTERVAL),
        ("multi-row", GIL_SWITCH_INTERVAL),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-gil-") as workdir:
        for how, interval in cases:
            results.append(case(Path(workdir), how, interval, duration))
            beside = "alone" if interval is None else f"busy thread, switch {interval * 1e6:g} us"
            print(f"  {how}, {beside}: {results[-1]['rows_per_s']:,.0f} rows/s", flush=True)
    print(f"\n{'insert':12} {'beside':28} {'writer rows/s':>14} {'busy loops/s':>13}")
    for r in results:
        beside = (
            "nothing" if not r["busy_thread"]
            else f"busy thread, {r['switch_interval_s'] * 1e6:g} us switch"
        )
        loops = "" if r["busy_loops_per_s"] is None else f"{r['busy_loops_per_s']:,.0f}"
        print(f"{r['insert']:12} {beside:28} {r['rows_per_s']:>14,.0f} {loops:>13}")
    # Every case must have committed rows, and the busy thread run beside it.
    bad = [r for r in results if r["rows_per_s"] <= 0 or (r["busy_thread"] and not r["busy_loops_per_s"])]
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"benchmark": "gil", "machine": info, "runs": results, "ok": not bad}, indent=2))
    if bad:
        print(f"\nFAILED: no rows or no busy loops in {len(bad)} case(s)")
        return 1
    print("\nOK: every case committed rows beside its busy thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
