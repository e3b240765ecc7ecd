"""
Tests for the real upgrade from schema version 1 (through 2, to the current
version): a node's two files as p2pstore 0.1 wrote them (made here with the
version 1 SQL files the package keeps, and rows of that version's ten columns)
open with every readings table given its sensor_name column, their rows,
names and indexes kept, and a backup of each file beside it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pstore.records import Record
from p2pstore.rows import OwnRows
from p2pstore.schema import PEER_DB, SENSOR_NAME, Schema, table_name

from .test_schema import MAIN_V6, PEER_TABLE_V6, PEER_V6, PEER_ID, names
from .test_storage import NODE_ID, TABLE, StoreTestCase, own_rows, reading

EPOCH = "e" * 32
PEER_EPOCH = "d" * 32

# The columns of a readings table at version 1, in their order.
V1_COLUMNS = (
    "entry_index", "sensor_index", "sensor_type", "sensor_data", "timestamp",
    "value", "unit", "reading_id", "data_checksum", "epoch",
)
V1_ROW = (
    "entry_index, sensor_index, sensor_type, sensor_data, timestamp, reading_id, "
    "data_checksum, value, unit, epoch"
)


def v1_rows(signer, origin: str, epoch: str, count: int) -> list[tuple]:
    """
    ``count`` signed rows of ``origin``'s log as version 1 stored them
    (without sensor_name).
    """
    rows = OwnRows(origin, signer, epoch).prepare(
        [reading(n, reading_id=f"r{n}") for n in range(1, count + 1)], 1, 1
    )
    return [row[:SENSOR_NAME] for row in rows]


def make_files(path: Path, version: int, columns: str, own_rows: list, peer_rows: list) -> None:
    """
    A node's two files at schema ``version`` (made with that version's SQL
    files, which the package keeps), stopped cleanly, holding ``own_rows``
    of its own log (epoch EPOCH) and ``peer_rows`` of PEER_ID's (epoch
    PEER_EPOCH), each row of ``columns``.
    """
    schema = Schema(version=version)
    conn = sqlite3.connect(path)
    try:
        conn.execute("ATTACH DATABASE ? AS peer", (str(path.with_name(PEER_DB)),))
        for statement in schema.create():
            conn.execute(statement)
        for statement in schema.readings_table(NODE_ID, "main", own=True):
            conn.execute(statement)
        for statement in schema.readings_table(PEER_ID, "peer", own=False):
            conn.execute(statement)
        marks = ", ".join("?" * len(columns.split(",")))
        conn.executemany(f"INSERT INTO main.{TABLE} ({columns}) VALUES ({marks})", own_rows)
        conn.executemany(
            f"INSERT INTO peer.{table_name(PEER_ID)} ({columns}) VALUES ({marks})", peer_rows
        )
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", str(version)), ("epoch", EPOCH), ("running", "0"),
             ("recovering", "0"), ("last_sensor_index", "1")],
        )
        positions = "log_positions (origin, epoch, last_index) VALUES (?, ?, ?)"
        conn.execute(f"INSERT INTO main.{positions}", (NODE_ID, EPOCH, len(own_rows)))
        conn.execute(f"INSERT INTO peer.{positions}", (PEER_ID, PEER_EPOCH, len(peer_rows)))
        conn.commit()
    finally:
        conn.close()


def make_v1(path: Path, signer, own: int, peer: int) -> None:
    """
    A node's two files at schema version 1, stopped cleanly, holding
    ``own`` readings of its own and ``peer`` of PEER_ID's.
    """
    make_files(
        path, 1, V1_ROW, v1_rows(signer, NODE_ID, EPOCH, own), v1_rows(signer, PEER_ID, PEER_EPOCH, peer)
    )


class UpgradeToV2Tests(StoreTestCase):
    """
    A version 1 node opens under version 2 with its readings, its table
    names, and a sensor_name column in every readings table.
    """

    def setUp(self) -> None:
        super().setUp()
        self.peer_path = self.path.with_name(PEER_DB)
        make_v1(self.path, self.signer, own=5, peer=4)

    def connect(self, path: Path = None) -> sqlite3.Connection:
        conn = sqlite3.connect(path or self.path)
        self.addCleanup(conn.close)
        return conn

    async def test_upgraded(self) -> None:
        """
        After the upgrade both files are at version 5 (through 2): every readings table
        has sensor_name, NULL in every old row; the rows, the positions and
        the names users know are as they were, and quarantine is there.
        """
        self.assertEqual(self.query("SELECT value FROM meta WHERE key = 'schema_version'"), [("1",)])
        store = self.make_store()
        opened = await store.open()
        self.assertEqual((opened.epoch, opened.count, opened.last_index), (EPOCH, 5, 5))
        self.assertEqual(opened.positions, {(NODE_ID, EPOCH): 5, (PEER_ID, PEER_EPOCH): 4})
        self.assertEqual(self.query("SELECT value FROM meta WHERE key = 'schema_version'"), [("6",)])
        conn = self.connect()
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.peer_path),))
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6 | PEER_TABLE_V6)
        for db, table, count in (("main", TABLE, 5), ("peer", table_name(PEER_ID), 4)):
            columns = [row[1] for row in conn.execute(f"PRAGMA {db}.table_info({table})")]
            self.assertEqual(columns, [*V1_COLUMNS, "sensor_name"])
            self.assertEqual(
                conn.execute(f"SELECT count(*), count(sensor_name) FROM {db}.{table}").fetchone(),
                (count, 0),
            )

    async def test_backups(self) -> None:
        """
        Each file is copied first, as <name>.v1.backup: version 1, with its
        rows, and no sensor_name column.
        """
        await self.make_store().open()
        for path, table, count in (
            (self.path, TABLE, 5), (self.peer_path, table_name(PEER_ID), 4)
        ):
            backup = path.with_name(path.name + ".v1.backup")
            self.assertTrue(backup.exists(), backup)
            conn = self.connect(backup)
            self.assertEqual(conn.execute(f"SELECT count(*) FROM {table}").fetchone(), (count,))
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            self.assertEqual(columns, list(V1_COLUMNS))
        conn = self.connect(self.path.with_name(self.path.name + ".v1.backup"))
        self.assertEqual(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone(), ("1",)
        )

    async def test_old_records_served(self) -> None:
        """
        The old rows are still the records they were: they are read for
        peers and verify under the cluster key, own and peer's alike.
        """
        store = self.make_store()
        await store.open()
        for origin, epoch, count in ((NODE_ID, EPOCH, 5), (PEER_ID, PEER_EPOCH, 4)):
            entries = await store.read_entries(origin, epoch, 0, 100)
            self.assertEqual([entry[0] for entry in entries], list(range(1, count + 1)))
            for entry in entries:
                self.signer.verify(Record(origin, epoch, *entry))

    async def test_new_readings_named(self) -> None:
        """
        Readings stored after the upgrade carry their sensor's name, going
        on from the old log's end.
        """
        store = self.make_store()
        await store.open()
        rows = own_rows(store).prepare([reading(6, reading_id="r6")], 1, 6, "boiler")
        appended = await store.append(rows, [], 1, own_rows(store).renumber)
        self.assertEqual(appended.indexes, [6])
        self.assertEqual(
            self.query(f"SELECT entry_index, sensor_name FROM {TABLE} ORDER BY entry_index"),
            [(1, None), (2, None), (3, None), (4, None), (5, None), (6, "boiler")],
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
        self.assertEqual(opened.count, 5)
