"""
Tests for p2pstore.statements: Statements sizing its INSERTs and reading_id
lookups to SQLite's limit on host parameters, on a real sqlite3 connection
whose limit is set to the one given.
"""

from __future__ import annotations

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.lines import Reading
from p2pstore.rows import OwnRows
from p2pstore.schema import ROW_COLUMNS, ROW_SQL, SENSOR_NAME, Schema, rows_table, table_name
from p2pstore.statements import Statements

from .fakes import EPOCH, NODE_ID, SIGNER

TABLE = table_name(NODE_ID)
# Where the rows are stored (schema version 5), under the view TABLE.
ROWS = rows_table(NODE_ID)


class Recording:
    """
    A real sqlite3 connection, recording how many rows or ids each statement
    it runs takes.
    """

    def __init__(self, conn):
        self._conn = conn
        self.inserts: list[int] = []
        self.lookups: list[int] = []

    def execute(self, sql, params=()):
        # Only the statements of the rows and the lookups: insert() also
        # reads and writes the epochs table for the log's ordinal.
        if sql.startswith(f"INSERT INTO main.{ROWS} "):
            # Rows without a sensor name bind one parameter fewer.
            width = sql.split("(", 1)[1].split(")", 1)[0].count(",") + 1
            self.inserts.append(len(params) // width)
        elif sql.startswith("SELECT") and " reading_id IN (" in sql:
            self.lookups.append(len(params))
        return self._conn.execute(sql, params)

    def executemany(self, sql, params):
        return self._conn.executemany(sql, params)


def own_rows(count: int) -> list:
    return OwnRows(NODE_ID, SIGNER, EPOCH).prepare(
        [Reading("Temperature", f"{n % 50}C", f"2020-04-20 23:20:{n % 60:02d}.000001", f"r{n}")
         for n in range(1, count + 1)],
        1, 1,
    )


class SizingTests(SynchronousTestCase):
    """
    Rows per INSERT and ids per lookup stay within the limit given.
    """

    def test_limit_999(self) -> None:
        """
        SQLite's old default of 999 parameters: 64 rows per INSERT (rows of
        11 columns, stored as 10), 512 ids per lookup.
        """
        self.assertEqual(len(ROW_COLUMNS), 11)
        statements = Statements(999)
        self.assertEqual(statements.rows_per_insert, 64)
        self.assertEqual(statements.lookup_chunk, 512)

    def test_default(self) -> None:
        """
        SQLite's default of 32766: 512 rows per INSERT, 8192 ids per lookup.
        """
        statements = Statements()
        self.assertEqual((statements.rows_per_insert, statements.lookup_chunk), (512, 8192))
        self.assertEqual((Statements(32766).rows_per_insert, Statements(32766).lookup_chunk), (512, 8192))

    def test_tiny_limit(self) -> None:
        """
        A limit below one row's columns still inserts a row a statement.
        """
        statements = Statements(5)
        self.assertEqual((statements.rows_per_insert, statements.lookup_chunk), (1, 4))


class SQLiteTestCase(SynchronousTestCase):
    limit = 999

    def setUp(self) -> None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        self.addCleanup(conn.close)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, self.limit)
        # The schema's tables name both databases, "main" and "peer".
        conn.execute("ATTACH DATABASE ':memory:' AS peer")
        for statement in Schema().create() + Schema().readings_table(NODE_ID, "main", own=True):
            conn.execute(statement)
        self.conn = conn
        self.txn = Recording(conn)
        self.statements = Statements(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))

    def stored(self) -> list:
        """
        Every stored row, as the rows given would be with their sensor
        name (None for a row without one).
        """
        rows = self.conn.execute(f"SELECT {ROW_SQL} FROM {TABLE} ORDER BY entry_index").fetchall()
        return [row[:SENSOR_NAME] if row[SENSOR_NAME] is None else row for row in rows]


class InsertTests(SQLiteTestCase):
    """
    insert() stores every row in power-of-two statements.
    """

    def test_1000_rows_limit_999(self) -> None:
        """
        1,000 rows with 999 parameters: fifteen INSERTs of 64 rows, then 32
        and 8; every row stored as given.
        """
        rows = own_rows(1000)
        self.statements.insert(self.txn, "main", NODE_ID, rows)
        self.assertEqual(self.txn.inserts, [64] * 15 + [32, 8])
        self.assertEqual(self.stored(), rows)

    def test_sensor_names(self) -> None:
        """
        Rows with a sensor name store it; a batch of rows with and without
        names stores each as given, the others' names NULL.
        """
        named = OwnRows(NODE_ID, SIGNER, EPOCH).prepare(
            [Reading("Temperature", "1C", "2020-04-20 23:20:00.000001", "n1")], 1, 1, "boiler"
        )
        plain = own_rows(3)[1:]
        self.statements.insert(self.txn, "main", NODE_ID, named)
        self.statements.insert(self.txn, "main", NODE_ID, plain)
        self.assertEqual(self.stored(), named + plain)
        self.conn.execute(f"DELETE FROM {ROWS}")
        mixed = [plain[0], *named, plain[1]]
        self.statements.insert(self.txn, "main", NODE_ID, mixed)
        self.assertEqual(self.stored(), named + plain)
        self.assertEqual(
            self.conn.execute(f"SELECT entry_index, sensor_name FROM {TABLE} ORDER BY entry_index").fetchall(),
            [(1, "boiler"), (2, None), (3, None)],
        )

    def test_empty(self) -> None:
        """
        No rows, no statement.
        """
        self.statements.insert(self.txn, "main", NODE_ID, [])
        self.assertEqual(self.txn.inserts, [])


class DefaultLimitTests(SQLiteTestCase):
    limit = 32766

    def test_1000_rows(self) -> None:
        """
        1,000 rows at the default limit: 512, 256, 128, 64, 32 and 8 rows, as
        documented.
        """
        rows = own_rows(1000)
        self.statements.insert(self.txn, "main", NODE_ID, rows)
        self.assertEqual(self.txn.inserts, [512, 256, 128, 64, 32, 8])
        self.assertEqual(self.stored(), rows)

    def test_lookup(self) -> None:
        """
        10,000 ids are looked up in chunks of at most 8192 (the last padded
        to a power of two), finding exactly those stored.
        """
        self.statements.insert(self.txn, "main", NODE_ID, own_rows(10000))
        wanted = {f"r{n}" for n in range(5001, 15001)}
        found = self.statements.reading_ids(self.txn, TABLE, wanted)
        self.assertEqual(found, {f"r{n}": n for n in range(5001, 10001)})
        self.assertEqual(self.txn.lookups, [8192, 2048])


class LookupTests(SQLiteTestCase):
    """
    reading_ids() finds the stored index of every stored id asked for.
    """

    def test_10000_ids(self) -> None:
        """
        10,000 ids, half of them stored, with 999 parameters: chunks of 512,
        the last padded to 512 too, each id found with its index.
        """
        self.statements.insert(self.txn, "main", NODE_ID, own_rows(10000))
        wanted = {f"r{n}" for n in range(5001, 15001)}
        found = self.statements.reading_ids(self.txn, TABLE, wanted)
        self.assertEqual(found, {f"r{n}": n for n in range(5001, 10001)})
        self.assertEqual(self.txn.lookups, [512] * 20)

    def test_few(self) -> None:
        """
        A handful of ids, or none, are looked up too.
        """
        self.statements.insert(self.txn, "main", NODE_ID, own_rows(10))
        self.assertEqual(self.statements.reading_ids(self.txn, TABLE, {"r3", "r7", "nope"}), {"r3": 3, "r7": 7})
        self.assertEqual(self.statements.reading_ids(self.txn, TABLE, {"r1"}), {"r1": 1})
        self.assertEqual(self.statements.reading_ids(self.txn, TABLE, set()), {})
