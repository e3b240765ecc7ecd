"""
Tests for the real upgrade from schema version 4 to 5 (each origin's rows
moved under a view, keyed by log and index, the checksum as bytes): a
node's two files as version 4 wrote them, made here with the version 4 SQL
files the package keeps, open with every row as users and peers saw it,
the logs they hold and their reading ids kept, a backup of each file
beside it; rows another program changed stay detectable, and a row with no
valid position is left out with a warning, kept in the backup.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from twisted.logger import capturedLogs, formatEvent

from p2pstore.records import Record
from p2pstore.rows import OwnRows
from p2pstore.schema import PEER_DB, ROW_SQL, table_name
from p2pstore.schema import StoreError
from p2pstore.storage import BadEntry, Store

from .test_schema import MAIN_V6, PEER_ID, PEER_TABLE_V6, PEER_V6, VIEW_COLUMNS, names
from .test_storage import NODE_ID, TABLE, StoreTestCase, reading
from .test_disk_full_nodes import fill, mount_tmpfs
from .test_upgrade_v2 import EPOCH, PEER_EPOCH, make_files

# An older epoch of the node's own log, stored before EPOCH.
OLD_EPOCH = "c" * 32


def v4_rows(signer, origin: str, epoch: str, count: int, name=None, first: int = 1) -> list[tuple]:
    """
    ``count`` signed rows of ``origin``'s log from index ``first``, as
    version 4 stored them (p2pstore.schema.ROW_COLUMNS).
    """
    readings = [reading(n, reading_id=f"{epoch[0]}{n}") for n in range(first, first + count)]
    return OwnRows(origin, signer, epoch).prepare(readings, first, 1, name)


class UpgradeToV5Tests(StoreTestCase):
    """
    A node's version 4 files open at version 5, everything in them kept.
    """

    def setUp(self) -> None:
        super().setUp()
        self.peer_path = self.path.with_name(PEER_DB)
        # Own: 3 readings of an older epoch, then 6 of the current one.
        self.own = v4_rows(self.signer, NODE_ID, OLD_EPOCH, 3, "boiler") + v4_rows(
            self.signer, NODE_ID, EPOCH, 6, "boiler"
        )
        self.peer = [(*row, None) for row in v4_rows(self.signer, PEER_ID, PEER_EPOCH, 4)]
        make_files(self.path, 4, ROW_SQL, self.own, self.peer)
        conn = self.connect()
        with conn:
            # What version 4 kept beside the rows: the reading ids, and
            # the older epoch's position.
            conn.execute(
                f"INSERT INTO {TABLE}_ids (reading_id, entry_index) SELECT reading_id, entry_index "
                f"FROM {TABLE}"
            )
            conn.execute("UPDATE main.log_positions SET last_index = 6")
            conn.execute("INSERT INTO main.log_positions VALUES (?, ?, 3, 1)", (NODE_ID, OLD_EPOCH))
        conn.close()

    def connect(self, path: Path = None) -> sqlite3.Connection:
        conn = sqlite3.connect(path or self.path)
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.peer_path),))
        return conn

    def view(self, conn, db: str, table: str) -> list:
        # Every row as users query it: SELECT * of the table (a view now).
        return conn.execute(f"SELECT * FROM {db}.{table} ORDER BY epoch, entry_index").fetchall()

    async def test_upgraded(self) -> None:
        """
        After the upgrade both files are at version 5 with its names; a
        SELECT * of each readings table gives the very rows version 4 held,
        column for column (the checksum the same hex text); the logs, the
        positions and the reading ids are as they were.
        """
        conn = self.connect()
        before = {
            "main": self.view(conn, "main", TABLE),
            "peer": self.view(conn, "peer", table_name(PEER_ID)),
        }
        ids = conn.execute(f"SELECT * FROM {TABLE}_ids ORDER BY 1, 2").fetchall()
        conn.close()
        self.assertEqual((len(before["main"]), len(before["peer"])), (9, 4))
        with capturedLogs() as events:
            opened = await self.make_store().open()
        self.assertEqual((opened.epoch, opened.count, opened.last_index), (EPOCH, 9, 6))
        self.assertEqual(
            opened.positions,
            {(NODE_ID, EPOCH): 6, (NODE_ID, OLD_EPOCH): 3, (PEER_ID, PEER_EPOCH): 4},
        )
        conn = self.connect()
        self.assertEqual(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("6",)
        )
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6 | PEER_TABLE_V6)
        for db, table in (("main", TABLE), ("peer", table_name(PEER_ID))):
            columns = [row[1] for row in conn.execute(f"PRAGMA {db}.table_info({table})")]
            self.assertEqual(columns, list(VIEW_COLUMNS))
            self.assertEqual(self.view(conn, db, table), before[db], db)
        self.assertEqual(conn.execute(f"SELECT * FROM {TABLE}_ids ORDER BY 1, 2").fetchall(), ids)
        # The older epoch was stored first: it is numbered first.
        self.assertEqual(
            conn.execute("SELECT origin, epoch FROM main.epochs ORDER BY ordinal").fetchall(),
            [(NODE_ID, OLD_EPOCH), (NODE_ID, EPOCH)],
        )
        self.assertEqual(
            conn.execute(f"SELECT DISTINCT typeof(data_checksum), length(data_checksum) "
                         f"FROM {TABLE}_rows").fetchall(),
            [("blob", 32)],
        )
        messages = [formatEvent(event) for event in events]
        self.assertTrue(
            any("upgrading table" in m and TABLE in m and "(9 rows)" in m for m in messages), messages
        )
        self.assertFalse(any("left out" in m for m in messages), messages)

    async def test_backups(self) -> None:
        """
        Each file is copied first, as <name>.v4.backup, still version 4,
        its readings a table.
        """
        await self.make_store().open()
        for path, table, count in ((self.path, TABLE, 9), (self.peer_path, table_name(PEER_ID), 4)):
            conn = sqlite3.connect(path.with_name(path.name + ".v4.backup"))
            self.addCleanup(conn.close)
            self.assertEqual(conn.execute(f"SELECT count(*) FROM {table}").fetchone(), (count,))
            self.assertEqual(
                conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (table,)).fetchone(),
                ("table",),
            )
        conn = sqlite3.connect(self.path.with_name(self.path.name + ".v4.backup"))
        self.addCleanup(conn.close)
        self.assertEqual(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("4",)
        )

    async def test_serves_continues_and_prunes(self) -> None:
        """
        The upgraded logs are served to peers under the cluster key, each
        from its own epoch; the node's log continues at 7 and a resent
        reading is answered with the index it was stored at; pruning
        deletes a log's oldest rows and no other log's.
        """
        store = self.make_store()
        await store.open()
        for origin, epoch, expected in (
            (NODE_ID, OLD_EPOCH, [1, 2, 3]), (NODE_ID, EPOCH, [1, 2, 3, 4, 5, 6]),
            (PEER_ID, PEER_EPOCH, [1, 2, 3, 4]),
        ):
            entries = await store.read_entries(origin, epoch, 0, 100)
            self.assertEqual([entry[0] for entry in entries], expected)
            for entry in entries:
                self.signer.verify(Record(origin, epoch, *entry))
        appended = await self.append(
            store, [(reading(7, reading_id="new7"), 1), (reading(2, reading_id="e2"), 1)]
        )
        self.assertEqual(appended.indexes, [7, 2])
        await store.prune(NODE_ID, OLD_EPOCH, 2, "retention", 100)
        self.assertEqual(
            [e[0] for e in await store.read_entries(NODE_ID, OLD_EPOCH, 2, 100)], [3]
        )
        self.assertEqual(
            [e[0] for e in await store.read_entries(NODE_ID, EPOCH, 0, 100)], [1, 2, 3, 4, 5, 6, 7]
        )

    async def test_changed_rows(self) -> None:
        """
        A version 4 row another program changed stays what it was: one
        whose checksum is not hex keeps it as text, is no valid record and
        is not sent to peers; one whose entry_index is no position (text)
        cannot be keyed: it is left out, the log says so and names the
        backup, which keeps it.
        """
        conn = self.connect()
        with conn:
            conn.execute(
                f"UPDATE {TABLE} SET data_checksum = ? WHERE epoch = ? AND entry_index = 2",
                ("zz" * 32, EPOCH),
            )
            conn.execute(
                f"UPDATE {TABLE} SET entry_index = 'five' WHERE epoch = ? AND entry_index = 5",
                (EPOCH,),
            )
        conn.close()
        with capturedLogs() as events:
            store = self.make_store()
            await store.open()
        messages = [formatEvent(event) for event in events]
        self.assertTrue(
            any("1 rows of table" in m and "left out" in m and "backup" in m for m in messages),
            messages,
        )
        conn = self.connect()
        self.assertEqual(
            conn.execute(
                f"SELECT entry_index FROM {TABLE} WHERE epoch = ? ORDER BY entry_index", (EPOCH,)
            ).fetchall(),
            [(1,), (2,), (3,), (4,), (6,)],
        )
        self.assertEqual(
            conn.execute(f"SELECT data_checksum FROM {TABLE} WHERE epoch = ? AND entry_index = 2",
                         (EPOCH,)).fetchone(),
            (("zz" * 32).encode().hex(),),
        )
        self.assertEqual([e[0] for e in await store.read_entries(NODE_ID, EPOCH, 0, 100)], [1])
        with self.assertRaises(BadEntry) as caught:
            await store.read_entries(NODE_ID, EPOCH, 1, 100)
        self.assertEqual(caught.exception.index, 2)
        backup = sqlite3.connect(self.path.with_name(self.path.name + ".v4.backup"))
        self.addCleanup(backup.close)
        self.assertEqual(
            backup.execute(f"SELECT count(*) FROM {TABLE} WHERE entry_index = 'five'").fetchone(),
            (1,),
        )

    async def test_users_views_kept(self) -> None:
        """
        Views a user made over the readings tables (README: query them
        with sqlite3) do not stop the upgrade, and read the upgraded
        readings afterwards.
        """
        conn = self.connect()
        with conn:
            conn.execute(f"CREATE VIEW main.recent AS SELECT entry_index, sensor_data FROM {TABLE} "
                         f"WHERE epoch = '{EPOCH}'")
            conn.execute(f"CREATE VIEW peer.peer_recent AS SELECT entry_index FROM {table_name(PEER_ID)}")
        conn.close()
        opened = await self.make_store().open()
        self.assertEqual(opened.count, 9)
        conn = self.connect()
        self.assertEqual(
            conn.execute("SELECT entry_index, sensor_data FROM recent ORDER BY 1").fetchall(),
            [(n, f"{n}C") for n in range(1, 7)],
        )
        self.assertEqual(conn.execute("SELECT count(*) FROM peer.peer_recent").fetchone(), (4,))

    async def test_once(self) -> None:
        """
        Opened again, the upgraded files are not upgraded again (the RENAME
        would fail on the view).
        """
        store = self.make_store()
        await store.open()
        await store.mark_stopped()
        store.close()
        opened = await self.make_store().open()
        self.assertEqual(opened.count, 9)


class RoomTests(StoreTestCase):
    """
    An upgrade that would not fit on its filesystem is refused before it
    writes anything.
    """

    async def test_no_room(self) -> None:
        """
        On a real small filesystem with less free than the backups and the
        copied rows need, opening fails with a StoreError that says how
        much is needed, how much is free and what to do; the files stay at
        version 4 with their rows, and no partial backup is left.
        """
        directory = mount_tmpfs(self, "4m")
        path = directory / "self_sensor_data.db"
        make_files(
            path, 4, ROW_SQL,
            [(*row, None) for row in v4_rows(self.signer, NODE_ID, EPOCH, 2000)],
            [(*row, None) for row in v4_rows(self.signer, PEER_ID, PEER_EPOCH, 10)],
        )
        # Room for SQLite to open the files (their -wal and -shm), not for
        # the backups.
        fill(directory / "filler", shutil.disk_usage(directory).free - 300_000)
        before = sorted(p.name for p in directory.iterdir())
        store = Store(path=path, node_id=NODE_ID)
        self.addCleanup(store.close)
        with self.assertRaises(StoreError) as caught:
            await store.open()
        message = str(caught.exception)
        for part in ("schema version 4", "version 6", "free some space", "Nothing was changed",
                     str(directory)):
            self.assertIn(part, message)
        self.assertRegex(message, r"needs about [\d.]+ [kM]B free .*, but [\d.]+ kB is free")
        store.close()
        self.assertEqual(sorted(p.name for p in directory.iterdir()), before)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("4",))
        self.assertEqual(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone(), (2000,))
        self.assertEqual(
            conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone(), ("table",)
        )
