"""
Tests for the real upgrade from schema version 2 (the release before logs
could start after 1) to 3: a node's two files as that release wrote them,
made here with the version 2 SQL files the package keeps, open with every
log held from index 1, the pruned ranges and marks tables there, their rows
and names kept, and a backup of each file beside it; the upgraded files
then prune like new ones.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pstore.records import Record
from p2pstore.rows import OwnRows
from p2pstore.schema import PEER_DB, ROW_SQL, table_name

from .test_schema import MAIN_V2, MAIN_V6, PEER_ID, PEER_TABLE_V1, PEER_TABLE_V6, PEER_V1, PEER_V6, names
from .test_storage import NODE_ID, TABLE, StoreTestCase, reading
from .test_upgrade_v2 import EPOCH, PEER_EPOCH, make_files



def v2_rows(signer, origin: str, epoch: str, count: int, name=None) -> list[tuple]:
    """
    ``count`` signed rows of ``origin``'s log as version 2 stored them.
    """
    return OwnRows(origin, signer, epoch).prepare(
        [reading(n, reading_id=f"r{n}") for n in range(1, count + 1)], 1, 1, name
    )


def make_v2(path: Path, signer, own: int, peer: int) -> None:
    """
    A node's two files at schema version 2, stopped cleanly, holding
    ``own`` readings of its own (from sensor "boiler") and ``peer`` of
    PEER_ID's.
    """
    make_files(
        path, 2, ROW_SQL,
        v2_rows(signer, NODE_ID, EPOCH, own, "boiler"),
        [(*row, None) for row in v2_rows(signer, PEER_ID, PEER_EPOCH, peer)],
    )


class UpgradeToV3Tests(StoreTestCase):
    """
    A node's version 2 files open at version 3, their logs held from 1.
    """

    def setUp(self) -> None:
        super().setUp()
        self.peer_path = self.path.with_name(PEER_DB)
        make_v2(self.path, self.signer, own=6, peer=4)

    def connect(self, path: Path = None) -> sqlite3.Connection:
        conn = sqlite3.connect(path or self.path)
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.peer_path),))
        return conn

    async def test_upgraded(self) -> None:
        """
        After the upgrade both files are at version 5 (through 3 and 4): every
        log's first_index is 1, pruned and log_marks are there and empty,
        the reading ids are in their table, and the rows, names and
        positions are as they were.
        """
        conn = self.connect()
        self.assertEqual(names(conn, "main"), MAIN_V2)
        self.assertEqual(names(conn, "peer"), PEER_V1 | PEER_TABLE_V1)
        conn.close()
        opened = await self.make_store().open()
        self.assertEqual((opened.epoch, opened.count, opened.last_index), (EPOCH, 6, 6))
        self.assertEqual(opened.positions, {(NODE_ID, EPOCH): 6, (PEER_ID, PEER_EPOCH): 4})
        self.assertEqual((opened.firsts, opened.pruned), ({}, []))
        conn = self.connect()
        self.assertEqual(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("6",)
        )
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6 | PEER_TABLE_V6)
        for db, origin, last in (("main", NODE_ID, 6), ("peer", PEER_ID, 4)):
            self.assertEqual(
                conn.execute(f"SELECT origin, first_index, last_index FROM {db}.log_positions").fetchall(),
                [(origin, 1, last)],
            )
            self.assertEqual(conn.execute(f"SELECT count(*) FROM {db}.pruned").fetchone(), (0,))
        self.assertEqual(
            conn.execute(f"SELECT count(*), count(sensor_name) FROM {TABLE}").fetchone(), (6, 6)
        )
        # Version 4: the reading ids are in a table of their own, all of them.
        self.assertEqual(
            conn.execute(f"SELECT reading_id, entry_index FROM {TABLE}_ids ORDER BY entry_index").fetchall(),
            [(f"r{n}", n) for n in range(1, 7)],
        )

    async def test_backups(self) -> None:
        """
        Each file is copied first, as <name>.v2.backup, still version 2.
        """
        await self.make_store().open()
        for path, table, count in ((self.path, TABLE, 6), (self.peer_path, table_name(PEER_ID), 4)):
            backup = path.with_name(path.name + ".v2.backup")
            conn = sqlite3.connect(backup)
            self.addCleanup(conn.close)
            self.assertEqual(conn.execute(f"SELECT count(*) FROM {table}").fetchone(), (count,))
            columns = [row[1] for row in conn.execute("PRAGMA table_info(log_positions)")]
            self.assertEqual(columns, ["origin", "epoch", "last_index"])
        conn = sqlite3.connect(self.path.with_name(self.path.name + ".v2.backup"))
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("2",)
        )

    async def test_prunes_and_serves(self) -> None:
        """
        An upgraded file prunes its logs' oldest records like a new one, and
        serves the rest under the cluster key; after a reopen each log
        starts where pruning left it.
        """
        store = self.make_store()
        await store.open()
        await store.prune(NODE_ID, EPOCH, 2, "retention", 100)
        await store.prune(PEER_ID, PEER_EPOCH, 3, "retention", 100)
        for origin, epoch, after, expected in ((NODE_ID, EPOCH, 2, [3, 4, 5, 6]), (PEER_ID, PEER_EPOCH, 3, [4])):
            entries = await store.read_entries(origin, epoch, after, 100)
            self.assertEqual([entry[0] for entry in entries], expected)
            for entry in entries:
                self.signer.verify(Record(origin, epoch, *entry))
        await store.mark_stopped()
        store.close()
        opened = await self.make_store().open()
        self.assertEqual(opened.firsts, {(NODE_ID, EPOCH): 3, (PEER_ID, PEER_EPOCH): 4})
        self.assertEqual(
            sorted((p.db, p.first, p.last) for p in opened.pruned), [("main", 1, 2), ("peer", 1, 3)]
        )

    async def test_once(self) -> None:
        """
        Opened again, the upgraded files are not upgraded again (the ALTER
        would fail on the column it added).
        """
        store = self.make_store()
        await store.open()
        await store.mark_stopped()
        store.close()
        opened = await self.make_store().open()
        self.assertEqual(opened.count, 6)
