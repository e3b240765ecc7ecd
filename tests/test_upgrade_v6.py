"""
Tests for the real upgrade from schema version 5 to 6 (the block index of
each table's times in place of the index of its timestamps): a node's two
files as version 5 wrote them, made here from version 4 files by the
package's own version 5 upgrade, open at version 6 with every row kept,
each table's block index built from its rows, the timestamp index gone,
ranges read as before, and progress logged while a large table is done.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from twisted.logger import capturedLogs, formatEvent

from p2pstore import opening, timeblocks
from p2pstore.lines import Reading
from p2pstore.rows import OwnRows
from p2pstore.schema import PEER_DB, ROW_SQL, Schema, table_name
from p2pstore.timerange import TimeRange

from .test_schema import MAIN_V6, PEER_ID, PEER_TABLE_V6, PEER_V6, names
from .test_storage import NODE_ID, TABLE, StoreTestCase
from .test_upgrade_v2 import EPOCH, PEER_EPOCH, make_files

BASE = datetime(2026, 11, 28, 10, tzinfo=timezone.utc)


def rows_of(signer, origin: str, epoch: str, count: int) -> list[tuple]:
    """
    ``count`` signed rows of ``origin``'s log, 1.5 s apart from BASE and
    some written at another offset, as version 4 stored them.
    """
    readings = []
    for n in range(1, count + 1):
        when = BASE + timedelta(seconds=1.5 * n)
        stamp = when.strftime("%Y-%m-%d %H:%M:%S.%f")
        if n % 3 == 0:
            stamp = (when + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
        readings.append(Reading("Temperature", f"{n % 40}C", stamp, f"{epoch[0]}{n}"))
    return OwnRows(origin, signer, epoch).prepare(readings, 1, 1)


def make_v5(path: Path, signer, own: int, peer: int) -> None:
    """
    A node's two files at schema version 5: made at version 4, then
    upgraded by the package's version 5 SQL, as the version 5 release did.
    """
    make_files(
        path, 4, ROW_SQL, [(*row, "boiler") for row in rows_of(signer, NODE_ID, EPOCH, own)],
        [(*row, None) for row in rows_of(signer, PEER_ID, PEER_EPOCH, peer)],
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        opening.configure_writer(conn, path.with_name(PEER_DB), "FULL")
        opening.upgrade(conn, Schema(version=5), (path, path.with_name(PEER_DB)))
    finally:
        conn.close()
    for name in (path.name, PEER_DB):
        path.with_name(f"{name}.v4.backup").unlink()


class UpgradeToV6Tests(StoreTestCase):
    """
    A node's version 5 files open at version 6 with a block index of every
    table's times.
    """

    def setUp(self) -> None:
        super().setUp()
        self.peer_path = self.path.with_name(PEER_DB)
        make_v5(self.path, self.signer, 700, 300)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.peer_path),))
        return conn

    async def test_upgraded(self) -> None:
        """
        After the upgrade both files are at version 6 with its names, the
        rows as they were, and each table's entries exactly those of its
        rows; a backup of each version 5 file is beside it.
        """
        conn = self.connect()
        self.assertEqual(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("5",))
        before = {
            db: conn.execute(f"SELECT * FROM {db}.{table} ORDER BY entry_index").fetchall()
            for db, table in (("main", TABLE), ("peer", table_name(PEER_ID)))
        }
        conn.close()
        with capturedLogs() as events:
            opened = await self.make_store().open()
        self.assertEqual(opened.count, 700)
        conn = self.connect()
        self.assertEqual(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("6",))
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6 | PEER_TABLE_V6)
        for db, origin in (("main", NODE_ID), ("peer", PEER_ID)):
            table = table_name(origin)
            self.assertEqual(
                conn.execute(f"SELECT * FROM {db}.{table} ORDER BY entry_index").fetchall(), before[db]
            )
            rows = conn.execute(f"SELECT key, timestamp FROM {db}.{table}_rows").fetchall()
            held = {
                (minute, block): [low, high]
                for minute, block, low, high in conn.execute(f"SELECT * FROM {db}.{table}_times")
            }
            self.assertEqual(held, timeblocks.entries(rows), db)
            self.assertTrue(held)
        for name in (self.path.name, PEER_DB):
            self.assertTrue(self.path.with_name(f"{name}.v5.backup").exists(), name)
        messages = [formatEvent(event) for event in events]
        self.assertTrue(
            any("upgraded" in m and "schema version 6" in m for m in messages), messages
        )

    async def test_ranges(self) -> None:
        """
        After the upgrade a range of each origin is read through the block
        index: the readings in it, oldest first, by their instants.
        """
        store = self.make_store()
        await store.open()
        minute = TimeRange(BASE + timedelta(minutes=3), BASE + timedelta(minutes=4))
        for origin, count in ((NODE_ID, 700), (PEER_ID, 300)):
            page = await store.readings_in(origin, None, minute, 1000)
            # 1.5 s apart: entries 120 to 159 are in the fourth minute.
            self.assertEqual([r.entry_index for r in page.records], list(range(120, 160)), origin)
            self.assertIsNone(page.next)

    async def test_progress(self) -> None:
        """
        A table that takes a while says how far it is, rows done of rows,
        while it is upgraded.
        """
        self.patch(opening, "PROGRESS_SECONDS", 0.0)
        self.patch(timeblocks, "_CHUNK", 200)
        with capturedLogs() as events:
            await self.make_store().open()
        messages = [formatEvent(event) for event in events]
        self.assertTrue(
            any(f"upgrading table {TABLE}: 400 of 700 rows done" in m for m in messages), messages
        )
