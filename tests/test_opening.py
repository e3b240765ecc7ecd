"""
Tests for p2pstore.opening: upgrading a database of an older schema
version as a store opens (with a Schema of version 7 read from SQL files
the tests write on top of the package's version 6), refusing a newer one,
and choosing the epoch. The real upgrades are tests/test_upgrade_v2.py,
tests/test_upgrade_v3.py and tests/test_upgrade_v5.py.
"""

from __future__ import annotations

import shutil
import sqlite3
from importlib import resources
from pathlib import Path

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.opening import choose_epoch
from p2pstore.records import is_node_id
from p2pstore.schema import Schema, StoreError
from p2pstore.storage import Store

from .test_storage import NODE_ID, TABLE, StoreTestCase, reading

EPOCH = "e" * 32

UPGRADE = """\
-- Version 7 adds a table of notes, and notes each time it is upgraded to.
CREATE TABLE main.notes (text TEXT NOT NULL);
INSERT INTO main.notes (text) VALUES ('upgraded to v7');
"""

# Each readings table gets an index on sensor_type.
TABLE_UPGRADE = """\
CREATE INDEX {db}.{table}_type ON {table}_rows (sensor_type);
"""

FAILING_UPGRADE = """\
CREATE TABLE main.notes (text TEXT NOT NULL);
INSERT INTO main.no_such_table (text) VALUES ('never');
"""


def schema_v7(directory: Path, upgrade: str = UPGRADE, table_upgrade: str = TABLE_UPGRADE) -> Schema:
    """
    A Schema of version 7 in ``directory``: the package's v6 files, the
    readings tables unchanged at v7, v7.sql with a notes table besides v6's,
    ``upgrade`` as upgrade-to-v7.sql and ``table_upgrade`` as
    upgrade-tables-to-v7.sql.
    """
    directory.mkdir()
    package = resources.files("p2pstore") / "db-schemas"
    for name in ("v6.sql", "readings-v6.sql", "own-readings-v6.sql"):
        (directory / name).write_text((package / name).read_text())
    for name in ("readings", "own-readings"):
        shutil.copy(directory / f"{name}-v6.sql", directory / f"{name}-v7.sql")
    (directory / "v7.sql").write_text(
        (package / "v6.sql").read_text()
        + "\nCREATE TABLE IF NOT EXISTS main.notes (text TEXT NOT NULL);\n"
    )
    (directory / "upgrade-to-v7.sql").write_text(upgrade)
    (directory / "upgrade-tables-to-v7.sql").write_text(table_upgrade)
    return Schema(version=7, directory=directory)


class UpgradeTests(StoreTestCase):
    """
    A store opened with a newer Schema upgrades the database once, after
    backing both files up.
    """

    async def make_v6(self, count: int = 3) -> None:
        """
        A version 6 database holding ``count`` readings, stopped cleanly.
        """
        store, _ = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, count + 1)])
        await store.mark_stopped()
        store.close()

    def open_with(self, schema: Schema) -> Store:
        store = Store(path=self.path, node_id=NODE_ID, schema=schema)
        self.addCleanup(store.close)
        return store

    def version(self, path: Path) -> str:
        conn = sqlite3.connect(path)
        try:
            return conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        finally:
            conn.close()

    async def test_upgrade(self) -> None:
        """
        Opening a version 6 database with a version 7 schema applies the
        upgrader once, and the table upgrader to the readings table; it
        leaves schema_version 7 and the readings in place, and logs the
        backup and the upgrade.
        """
        await self.make_v6()
        with capturedLogs() as events:
            store = self.open_with(schema_v7(Path(self.mktemp())))
            opened = await store.open()
        self.assertEqual(opened.count, 3)
        self.assertEqual(self.version(self.path), "7")
        self.assertEqual(self.query("SELECT text FROM notes"), [("upgraded to v7",)])
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(3,)])
        self.assertEqual(
            self.query(f"SELECT name FROM sqlite_master WHERE name = '{TABLE}_type'"),
            [(f"{TABLE}_type",)],
        )
        messages = [formatEvent(event) for event in events]
        backup = self.path.with_name("self_sensor_data.db.v6.backup")
        self.assertTrue(
            any("upgrading" in m and "schema version 6" in m and str(backup) in m for m in messages),
            messages,
        )
        self.assertTrue(any("upgraded" in m and "schema version 7" in m for m in messages), messages)

    async def test_upgraded_once(self) -> None:
        """
        A database already at version 7 is not upgraded again when it opens
        once more (the upgraders would fail: their table and index exist).
        """
        await self.make_v6()
        schema = schema_v7(Path(self.mktemp()))
        store = self.open_with(schema)
        await store.open()
        await store.mark_stopped()
        store.close()
        again = self.open_with(schema)
        opened = await again.open()
        self.assertEqual(opened.count, 3)
        self.assertEqual(self.query("SELECT count(*) FROM notes"), [(1,)])

    async def test_backups(self) -> None:
        """
        Both files are copied before the upgrade, beside them, as
        <name>.v6.backup, and each copy opens as the version 6 database it
        was, with its rows.
        """
        await self.make_v6()
        await self.open_with(schema_v7(Path(self.mktemp()))).open()
        own = self.path.with_name("self_sensor_data.db.v6.backup")
        peer = self.path.with_name("peer_sensor_data.db.v6.backup")
        self.assertTrue(own.exists())
        self.assertTrue(peer.exists())
        self.assertEqual(self.version(own), "6")
        conn = sqlite3.connect(own)
        try:
            self.assertEqual(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone(), (3,))
            self.assertEqual(
                conn.execute("SELECT name FROM sqlite_master WHERE name = 'notes'").fetchall(), []
            )
        finally:
            conn.close()
        conn = sqlite3.connect(peer)
        try:
            self.assertEqual(
                conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall(),
                [("log_positions",), ("pruned",), ("log_marks",), ("epochs",)],
            )
        finally:
            conn.close()

    async def test_failing_upgrader(self) -> None:
        """
        An upgrader that fails leaves the database at version 6 with its
        rows and without the upgrader's changes, and its error reaches the
        caller of open().
        """
        await self.make_v6()
        store = self.open_with(schema_v7(Path(self.mktemp()), FAILING_UPGRADE))
        with self.assertRaises(sqlite3.OperationalError) as caught:
            await store.open()
        self.assertIn("no_such_table", str(caught.exception))
        store.close()
        self.assertEqual(self.version(self.path), "6")
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(3,)])
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE name = 'notes'"), [])

    async def test_failing_table_upgrader(self) -> None:
        """
        A table upgrader that fails undoes the whole step, the version's
        own upgrader included: the database stays at version 6.
        """
        await self.make_v6()
        store = self.open_with(
            schema_v7(Path(self.mktemp()), table_upgrade="ALTER TABLE {db}.{table}_rows ADD COLUMN key INTEGER;\n")
        )
        with self.assertRaises(sqlite3.OperationalError) as caught:
            await store.open()
        self.assertIn("duplicate column", str(caught.exception))
        store.close()
        self.assertEqual(self.version(self.path), "6")
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE name = 'notes'"), [])

    async def test_newer_version_refused(self) -> None:
        """
        A database of a newer schema version than this p2pstore's fails to
        open with a StoreError saying to upgrade p2pstore, and is left as
        it was.
        """
        await self.make_v6()
        conn = sqlite3.connect(self.path)
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
        store = self.make_store()
        with self.assertRaises(StoreError) as caught:
            await store.open()
        message = str(caught.exception)
        self.assertIn("schema version 7", message)
        self.assertIn(str(self.path), message)
        self.assertIn("upgrade p2pstore", message)
        self.assertEqual(self.version(self.path), "7")
        self.assertEqual(self.query("SELECT value FROM meta WHERE key = 'running'"), [("0",)])


class ChooseEpochTests(SynchronousTestCase):
    """
    choose_epoch() keeps the epoch unless numbering on in it could give a
    position second contents.
    """

    def test_no_epoch(self) -> None:
        """
        A database without an epoch gets a new one, and says it is new (the
        opening then decides whether the node recovers).
        """
        epoch, new = choose_epoch({}, "FULL")
        self.assertTrue(is_node_id(epoch))
        self.assertTrue(new)
        self.assertNotEqual(choose_epoch({}, "FULL")[0], epoch)

    def test_clean_stop(self) -> None:
        """
        After a clean stop the epoch goes on, whatever the synchronous mode.
        """
        for synchronous in ("FULL", "NORMAL"):
            self.assertEqual(choose_epoch({"epoch": EPOCH, "running": "0"}, synchronous), (EPOCH, False))

    def test_unclean_stop_normal(self) -> None:
        """
        After an unclean stop with synchronous NORMAL (the last commits may
        be undone) a new epoch starts, with a warning; the database is not
        new, so its recovery is not decided afresh.
        """
        with capturedLogs() as events:
            epoch, new = choose_epoch({"epoch": EPOCH, "running": "1"}, "NORMAL")
        self.assertTrue(is_node_id(epoch))
        self.assertNotEqual(epoch, EPOCH)
        self.assertFalse(new)
        self.assertTrue(any("new epoch" in formatEvent(e) for e in events))

    def test_unclean_stop_full(self) -> None:
        """
        After an unclean stop with synchronous FULL every commit is on disk,
        so the epoch goes on.
        """
        self.assertEqual(choose_epoch({"epoch": EPOCH, "running": "1"}, "FULL"), (EPOCH, False))
