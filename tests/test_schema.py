"""
Tests for p2pstore.schema: splitting SQL scripts into statements, the
tables, views and indexes of each schema version, readings table names, and the SQL
check that leaves out rows that are not valid records.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.schema import (
    ENTRY_VALID_SQL,
    INDEX_MASK,
    STORED_COLUMNS,
    TABLES_SQL,
    VERSION,
    Schema,
    key_of,
    origin_of,
    rows_table,
    statements,
    table_name,
)

from .test_storage import NODE_ID, StoreTestCase

PEER_ID = "fedcba9876543210fedcba9876543210"

# The columns of a readings table as users query it (README, "Database"),
# in the order of every version: since version 5, of the view.
VIEW_COLUMNS = (
    "entry_index", "sensor_index", "sensor_type", "sensor_data", "timestamp", "value", "unit",
    "reading_id", "data_checksum", "epoch", "sensor_name",
)

# The names users know in each database of a node at schema version 1.
MAIN_V1 = {
    ("table", "meta"),
    ("table", "rejected_lines"),
    ("table", "log_positions"),
    ("table", f"server_id_{NODE_ID}"),
    ("index", f"server_id_{NODE_ID}_timestamp"),
    ("index", f"server_id_{NODE_ID}_reading_id"),
}
PEER_V1 = {("table", "log_positions")}
# Version 2 adds the quarantine table (and a column to readings tables).
MAIN_V2 = MAIN_V1 | {("table", "quarantine")}
# Version 3 adds the pruned ranges and the marks retention prunes by.
GAP_TABLES = {("table", "pruned"), ("table", "log_marks")}
MAIN_V3 = MAIN_V2 | GAP_TABLES
PEER_V3 = PEER_V1 | GAP_TABLES
# Version 4 moves the own reading ids from an index to a table
# (p2pstore.readingids).
MAIN_V4 = MAIN_V3 - {("index", f"server_id_{NODE_ID}_reading_id")} | {
    ("table", f"server_id_{NODE_ID}_ids"),
    # Made by any open since export (p2pstore.export), at version 4 too.
    ("table", "export_cursors"),
    ("table", "export_dead_letters"),
}
PEER_V4 = PEER_V3
PEER_TABLE_V1 = {
    ("table", f"server_id_{PEER_ID}"),
    ("index", f"server_id_{PEER_ID}_timestamp"),
}


def readings_v5(origin: str) -> set:
    # Version 5: an origin's rows are in server_id_<id>_rows, keyed by log
    # and index, and server_id_<id> is a view of them with the old columns.
    return {
        ("view", f"server_id_{origin}"),
        ("table", f"server_id_{origin}_rows"),
        ("index", f"server_id_{origin}_rows_timestamp"),
    }


# Version 5 numbers each database's logs in an epochs table.
MAIN_V5 = (
    MAIN_V4 - {("table", f"server_id_{NODE_ID}"), ("index", f"server_id_{NODE_ID}_timestamp")}
) | readings_v5(NODE_ID) | {("table", "epochs")}
PEER_V5 = PEER_V4 | {("table", "epochs")}
PEER_TABLE_V5 = readings_v5(PEER_ID)


def readings_v6(origin: str) -> set:
    # Version 6: the block index of the rows' times in place of the index
    # of their timestamps.
    return readings_v5(origin) - {("index", f"server_id_{origin}_rows_timestamp")} | {
        ("table", f"server_id_{origin}_times")
    }


MAIN_V6 = MAIN_V5 - readings_v5(NODE_ID) | readings_v6(NODE_ID)
PEER_V6 = PEER_V5
PEER_TABLE_V6 = readings_v6(PEER_ID)


def names(conn, db: str) -> set:
    """
    The tables, views and indexes of ``db``, without SQLite's own automatic
    ones.
    """
    return {
        (kind, name)
        for kind, name in conn.execute(f"SELECT type, name FROM {db}.sqlite_master")
        if not name.startswith("sqlite_")
    }


class StatementsTests(SynchronousTestCase):
    """
    statements() splits a script into statements that can run one by one
    inside the caller's transaction.
    """

    def test_comments_and_multiline(self) -> None:
        """
        Comment lines between statements are dropped, and a statement over
        several lines comes back whole, stripped.
        """
        script = (
            "-- a comment\n"
            "CREATE TABLE t (\n"
            "    a INTEGER,\n"
            "    b TEXT\n"
            ");\n"
            "\n"
            "   -- another comment; with a semicolon\n"
            "CREATE INDEX t_a ON t (a);\n"
        )
        self.assertEqual(
            statements(script),
            ["CREATE TABLE t (\n    a INTEGER,\n    b TEXT\n);", "CREATE INDEX t_a ON t (a);"],
        )

    def test_semicolon_in_string(self) -> None:
        """
        A semicolon inside a string literal does not end the statement.
        """
        script = "INSERT INTO t VALUES ('a;\nb');\nSELECT 1;\n"
        found = statements(script)
        self.assertEqual(found, ["INSERT INTO t VALUES ('a;\nb');", "SELECT 1;"])
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE t (x TEXT)")
        for statement in found:
            conn.execute(statement)
        self.assertEqual(conn.execute("SELECT x FROM t").fetchall(), [("a;\nb",)])

    def test_incomplete(self) -> None:
        """
        A script ending in an incomplete statement is a ValueError naming
        that statement.
        """
        error = self.assertRaises(
            ValueError, statements, "SELECT 1;\nCREATE TABLE unfinished (a INTEGER\n"
        )
        self.assertIn("CREATE TABLE unfinished", str(error))
        self.assertNotIn("SELECT 1", str(error))

    def test_empty(self) -> None:
        """
        A script of only comments and blank lines has no statements.
        """
        self.assertEqual(statements("-- nothing\n\n  \n-- here\n"), [])


class SchemaSQLTests(SynchronousTestCase):
    """
    The package's SQL files create exactly the tables and indexes of
    this schema version.
    """

    def connect(self):
        directory = Path(self.mktemp())
        directory.mkdir()
        conn = sqlite3.connect(directory / "self_sensor_data.db")
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(directory / "peer_sensor_data.db"),))
        return conn

    def test_version(self) -> None:
        """
        This p2pstore writes schema version 6, and Schema() is that version.
        """
        self.assertEqual(VERSION, 6)
        self.assertEqual(Schema().version, 6)

    def test_create(self) -> None:
        """
        create() makes meta, rejected_lines, log_positions, quarantine,
        pruned, log_marks, the export tables and epochs in main, and
        log_positions, pruned, log_marks and epochs in peer, and nothing
        else.
        """
        conn = self.connect()
        for statement in Schema().create():
            conn.execute(statement)
        self.assertEqual(names(conn, "main"), MAIN_V6 - {n for n in MAIN_V6 if "server_id_" in n[1]})
        self.assertEqual(names(conn, "peer"), PEER_V6)

    def test_create_twice(self) -> None:
        """
        create() can run on a database that has its tables already.
        """
        conn = self.connect()
        for _ in range(2):
            for statement in Schema().create():
                conn.execute(statement)
        self.assertEqual(names(conn, "peer"), PEER_V6)

    def test_readings_tables(self) -> None:
        """
        A node's own readings get the rows table, the block index of its times, the
        view and a table of its reading ids; a peer's all but the ids; the
        view has every row column, and the rows are keyed by one integer.
        """
        conn = self.connect()
        schema = Schema()
        for statement in schema.create():
            conn.execute(statement)
        for statement in schema.readings_table(NODE_ID, "main", own=True):
            conn.execute(statement)
        for statement in schema.readings_table(PEER_ID, "peer", own=False):
            conn.execute(statement)
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6 | PEER_TABLE_V6)
        for db, origin in (("main", NODE_ID), ("peer", PEER_ID)):
            info = conn.execute(f"PRAGMA {db}.table_info(server_id_{origin})").fetchall()
            self.assertEqual([row[1] for row in info], list(VIEW_COLUMNS))
            info = conn.execute(f"PRAGMA {db}.table_info(server_id_{origin}_rows)").fetchall()
            self.assertEqual(tuple(row[1] for row in info), STORED_COLUMNS)
            key = sorted((row[5], row[1], row[2]) for row in info if row[5])
            self.assertEqual(key, [(1, "key", "INTEGER")])
        # TABLES_SQL lists the readings tables of a database, not their
        # indexes; origin_of leaves out the table of reading ids.
        for db, origin in (("main", NODE_ID), ("peer", PEER_ID)):
            found = [name for (name,) in conn.execute(TABLES_SQL.format(db=db)).fetchall()]
            self.assertEqual(
                [origin_of(name) for name in found if origin_of(name)], [origin], db
            )

    def test_statements_name_the_table(self) -> None:
        """
        readings_table() fills in the database and table names, leaving no
        placeholder behind.
        """
        for statement in Schema().readings_table(PEER_ID, "peer", own=True):
            self.assertNotIn("{", statement)
            self.assertIn(f"server_id_{PEER_ID}", statement)


class FreshStoreTests(StoreTestCase):
    """
    A store opened on a new file has the tables and indexes of version 6.
    """

    async def test_fresh_store(self) -> None:
        """
        sqlite_master of a fresh node's two files holds exactly the names of
        version 6: meta, rejected_lines, log_positions, quarantine, pruned,
        log_marks, the export tables, epochs, and the node's own view, rows
        table, block index of its times, and table of reading ids; the peer
        file only log_positions, pruned, log_marks and epochs until a peer's
        records arrive.
        """
        store, _ = await self.open_store()
        store.close()
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.path.with_name("peer_sensor_data.db")),))
        self.assertEqual(names(conn, "main"), MAIN_V6)
        self.assertEqual(names(conn, "peer"), PEER_V6)


class TableNameTests(SynchronousTestCase):
    """
    Readings tables are named server_id_<node id>, and only node ids make
    table names.
    """

    def test_round_trip(self) -> None:
        """
        origin_of() gives back the node id table_name() was made from.
        """
        self.assertEqual(table_name(NODE_ID), f"server_id_{NODE_ID}")
        self.assertEqual(origin_of(table_name(NODE_ID)), NODE_ID)

    def test_refuses_non_ids(self) -> None:
        """
        table_name() refuses anything but 32 lowercase hex characters, so no
        text of a peer's can reach SQL as a name.
        """
        for bad in ("", NODE_ID.upper(), NODE_ID[:-1], NODE_ID + "0", "x; DROP TABLE meta", None):
            self.assertRaises(ValueError, table_name, bad)

    def test_other_tables(self) -> None:
        """
        origin_of() is None for tables that are not readings tables.
        """
        for name in ("meta", "log_positions", "server_id_", f"server_id_{NODE_ID}_timestamp",
                     f"server_id_{NODE_ID.upper()}", f"other_{NODE_ID}"):
            self.assertIsNone(origin_of(name), name)


class EntryValidTests(SynchronousTestCase):
    """
    ENTRY_VALID_SQL has SQLite leave out rows that are not valid records
    (changed by another program).
    """

    def valid_indexes(self, rows: list, declared: bool) -> list:
        conn = sqlite3.connect(":memory:")
        self.addCleanup(conn.close)
        columns = ", ".join(STORED_COLUMNS)
        if declared:
            for statement in Schema().readings_table(NODE_ID, "main", own=False):
                conn.execute(statement)
            table = rows_table(NODE_ID)
        else:
            # A table without types or constraints, as another program
            # might make one.
            table = "loose"
            conn.execute(f"CREATE TABLE loose ({columns})")
        conn.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(STORED_COLUMNS))})", rows
        )
        return [
            row[0]
            for row in conn.execute(
                f"SELECT key & {INDEX_MASK} FROM {table} WHERE {ENTRY_VALID_SQL} ORDER BY rowid"
            )
        ]

    @staticmethod
    def row(entry_index, checksum=bytes(32), reading_id="r1", sensor_index=0):
        key = key_of(1, entry_index) if type(entry_index) is int else entry_index
        return (key, sensor_index, "Temperature", "39C", "2020-04-20 23:20:18.231325",
                reading_id, checksum, 39.0, "C", None)

    def test_valid_rows_kept(self) -> None:
        """
        Valid rows, with or without a reading_id, are selected.
        """
        rows = [self.row(1), self.row(2, reading_id=None)]
        self.assertEqual(self.valid_indexes(rows, declared=True), [1, 2])
        self.assertEqual(self.valid_indexes(rows, declared=False), [1, 2])

    def test_float_entry_index(self) -> None:
        """
        A row whose key is a float is left out, even one equal to an integer
        (where no column type turns it into one). A rows table's key cannot
        be one at all.
        """
        rows = [self.row(1), self.row(float(key_of(1, 2))), self.row(3)]
        self.assertEqual(self.valid_indexes(rows, declared=False), [1, 3])
        rows = [self.row(1), self.row(key_of(1, 2) + 0.5), self.row(3)]
        self.assertRaises(sqlite3.IntegrityError, self.valid_indexes, rows, declared=True)

    def test_null_checksum(self) -> None:
        """
        A row without a checksum is left out.
        """
        rows = [self.row(1), self.row(2, checksum=None), self.row(3)]
        self.assertEqual(self.valid_indexes(rows, declared=False), [1, 3])

    def test_checksum_not_32_bytes(self) -> None:
        """
        A checksum that is text (the hex of version 4) or not 32 bytes
        leaves the row out.
        """
        rows = [self.row(1), self.row(2, checksum="ab" * 32), self.row(3, checksum=bytes(31)),
                self.row(4)]
        self.assertEqual(self.valid_indexes(rows, declared=True), [1, 4])

    def test_other_bad_fields(self) -> None:
        """
        An entry_index below 1, a negative sensor_index, a text key or a
        number as reading_id leave the row out.
        """
        rows = [
            self.row(0), self.row(2, sensor_index=-1), self.row(str(key_of(1, 3))),
            self.row(4, reading_id=7), self.row(5),
        ]
        self.assertEqual(self.valid_indexes(rows, declared=False), [5])
