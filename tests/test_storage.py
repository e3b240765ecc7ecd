"""
Tests for the SQLite store: a real Store on a real file, through the real
reactor's thread pool, checked with the stdlib sqlite3 module as a user's
sqlite3 tool would see it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore import timeblocks
from p2pstore.lines import Reading, Rejected
from p2pstore.records import BadRecord, Record, Signer, entry_of, is_node_id
from p2pstore.inbound import plan_apply
from p2pstore.rows import OwnRows
from p2pstore.schema import INDEX_MASK, PEER_DB, VERSION as SCHEMA_VERSION, Schema, StoreError, table_name
from p2pstore.opening import Opened
from p2pstore.statements import _LOOKUP_CHUNK
from p2pstore.storage import BadEntry, Store
from p2pstore.timerange import TimeRange
from p2pstore.wire import Records, decode, encode

NODE_ID = "0123456789abcdef0123456789abcdef"
TABLE = f"server_id_{NODE_ID}"
KEY = b"cluster key for the storage tests"
UTC_10 = datetime(2026, 11, 28, 10, tzinfo=timezone.utc)


def reading(n: int, sensor_type: str = "Temperature", data: str | None = None, reading_id=None) -> Reading:
    return Reading(sensor_type, data or f"{n}C", f"2020-04-20 23:20:{n % 60:02d}.000001", reading_id)


def as_received(epoch: str, entries: list) -> list[Record]:
    """
    This node's records from RECORDS entries, as a peer decodes them.
    """
    received = decode(encode(Records(NODE_ID, epoch, entries)))
    return [Record(received.origin, received.epoch, *entry) for entry in received.entries]


def prepared(store: Store, readings: list[tuple[Reading, int]], first_index: int) -> list:
    """
    The rows of ``(reading, sensor_index)`` pairs as the ingestor has
    them numbered and signed, numbered from ``first_index`` on.
    """
    return [
        row
        for offset, (reading, sensor_index) in enumerate(readings)
        for row in own_rows(store).prepare([reading], sensor_index, first_index + offset)
    ]


def own_rows(store: Store) -> OwnRows:
    """
    The numbering and signing of the store's own readings, as the ingestor
    has it.
    """
    return OwnRows(store.node_id, Signer.from_key(KEY), store.epoch)


class StoreTestCase(TestCase):
    """
    A store on a file in a fresh temporary directory.
    """

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.path = directory / "self_sensor_data.db"
        self.signer = Signer.from_key(KEY)

    def make_store(self, node_id: str = NODE_ID) -> Store:
        store = Store(path=self.path, node_id=node_id)
        self.addCleanup(store.close)
        return store

    async def open_store(self) -> tuple[Store, Opened]:
        store = self.make_store()
        opened = await store.open()
        return store, opened

    def append(self, store: Store, readings, rejected=(), last_sensor_index: int = 1):
        """
        Store readings as the ingestor does: prepared from the index after
        the last one in the file.
        """
        ((last,),) = self.query(
            f"SELECT coalesce(max(entry_index), 0) FROM {TABLE} WHERE epoch = ?", (store.epoch,)
        )
        return store.append(
            prepared(store, readings, last + 1), list(rejected), last_sensor_index, own_rows(store).renumber
        )

    def query(self, sql: str, params=()) -> list[tuple]:
        """
        Read the file as the sqlite3 tool would, beside the running store.
        """
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


class OpenTests(StoreTestCase):
    """
    Opening creates the readings table as the issue and the seed describe.
    """

    async def test_fresh(self) -> None:
        """
        A new file opens empty, with a new epoch.
        """
        store, opened = await self.open_store()
        self.assertEqual(
            (opened.count, opened.last_index, opened.last_sensor_index, opened.rejected),
            (0, 0, 0, 0),
        )
        self.assertTrue(is_node_id(opened.epoch))
        self.assertEqual(store.epoch, opened.epoch)

    async def test_columns(self) -> None:
        """
        The readings table is C{server_id_<node_id>} with every column a user
        queries, each value of the right type.
        """
        store, _ = await self.open_store()
        await self.append(store, [(reading(1, reading_id="r1"), 1)])
        wanted = {
            "entry_index": "integer",
            "sensor_index": "integer",
            "sensor_type": "text",
            "sensor_data": "text",
            "timestamp": "text",
            "value": "real",
            "unit": "text",
            "reading_id": "text",
            "data_checksum": "text",
            "epoch": "text",
        }
        found = self.query(f"SELECT {', '.join(f'typeof({c})' for c in wanted)} FROM {TABLE}")
        self.assertEqual(found, [tuple(wanted.values())])
        ((checksum, epoch),) = self.query(f"SELECT data_checksum, epoch FROM {TABLE}")
        self.assertTrue(is_node_id(epoch))
        self.assertEqual(len(checksum), 64)
        self.assertEqual(checksum, checksum.lower())
        tables = {name for (name,) in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertIn("rejected_lines", tables)

    async def test_wal(self) -> None:
        """
        The file is in WAL mode, so it can be read while the node writes.
        """
        await self.open_store()
        self.assertEqual(self.query("PRAGMA journal_mode"), [("wal",)])

    async def test_new_file_pages(self) -> None:
        """
        New files (the node's and the peers') have 1 KiB pages, so a commit
        writes fewer bytes a reading, and incremental vacuum; a file made
        with 4 KiB pages keeps them.
        """
        store, _ = await self.open_store()
        peer = sqlite3.connect(f"file:{store.peer_path}?mode=ro", uri=True)
        self.addCleanup(peer.close)
        for pragma, value in [("page_size", 1024), ("auto_vacuum", 2)]:
            self.assertEqual(self.query(f"PRAGMA {pragma}"), [(value,)], pragma)
            self.assertEqual(peer.execute(f"PRAGMA {pragma}").fetchall(), [(value,)], pragma)

        directory = Path(self.mktemp())
        directory.mkdir()
        old = directory / "self_sensor_data.db"
        conn = sqlite3.connect(old)
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("CREATE TABLE t (x)")
        conn.close()
        store = Store(path=old, node_id=NODE_ID)
        self.addCleanup(store.close)
        await store.open()
        conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("PRAGMA page_size").fetchall(), [(4096,)])

    async def test_block_index(self) -> None:
        """
        Every row the store writes is covered in the block index of its
        table's times, in the same commit, and exactly: one entry per
        minute and block of 128 keys, from the earliest instant to the
        latest; a timestamp with no instant gets none.
        """
        store, _ = await self.open_store()
        readings = [
            Reading("Temperature", f"{n}C", f"2026-11-28T10:{n // 100:02d}:{n % 60:02d}.5+02:00", None)
            for n in range(1, 400)
        ] + [Reading("Temperature", "1C", "not a time", None)]
        await self.append(store, [(r, 1) for r in readings])
        store.close()
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        conn.execute("ATTACH DATABASE ? AS peer", (str(self.path.with_name(PEER_DB)),))
        rows = conn.execute(f"SELECT key, timestamp FROM {TABLE}_rows").fetchall()
        held = {
            (minute, block): [low, high]
            for minute, block, low, high in conn.execute(f"SELECT * FROM {TABLE}_times")
        }
        self.assertEqual(held, timeblocks.entries(rows))
        # Minutes 08:00 to 08:03 UTC, blocks 0 to 3 of the log's keys.
        self.assertEqual({minute for minute, _ in held}, {29930880 + m for m in range(4)})
        self.assertEqual(len(held), 7)
        self.assertEqual(list(timeblocks.uncovered(conn, "main", NODE_ID)), [])

    async def test_newer_schema(self) -> None:
        """
        A file written by a newer p2pstore is refused with L{StoreError}
        rather than misread, and is left as it was.
        """
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
        conn.commit()
        conn.close()
        store = self.make_store()
        error = await self.assertFailure(store.open(), StoreError)
        self.assertIn("upgrade p2pstore", str(error))
        self.assertEqual(
            self.query("SELECT name FROM sqlite_master WHERE name LIKE 'server_id_%'"), []
        )
        self.assertEqual(self.query("SELECT value FROM meta"), [(str(SCHEMA_VERSION + 1),)])


class AppendTests(StoreTestCase):
    """
    Group commits store readings with gapless entry indexes, each signed.
    """

    async def test_gapless_across_batches(self) -> None:
        """
        entry_index runs 1, 2, 3... without gaps over every batch, also
        batches holding only rejected lines; the answer of each reading is
        its index.
        """
        store, _ = await self.open_store()
        batches = [[reading(1), reading(2), reading(3)], [reading(4)], [], [reading(n) for n in range(5, 105)]]
        answered = []
        for batch in batches:
            rejected = [] if batch else [Rejected("2020-04-20 23:20:18", 1, "empty line", b"")]
            appended = await self.append(store, [(r, 1) for r in batch], rejected, 1)
            self.assertEqual(appended.indexes, [entry[0] for entry in appended.entries()])
            answered += appended.indexes
        self.assertEqual(answered, list(range(1, 105)))
        self.assertEqual(
            self.query(f"SELECT entry_index FROM {TABLE} ORDER BY entry_index"),
            [(n,) for n in range(1, 105)],
        )

    async def test_numbers_checked(self) -> None:
        """
        Rows prepared with numbers that do not continue the log (the batch
        before them failed, or was shorter than expected) are numbered and
        signed again, so the log stays gapless and every checksum verifies.
        """
        store, opened = await self.open_store()
        await self.append(store, [(reading(1), 1)])
        for guess in [10, 1]:
            appended = await store.append(
                prepared(store, [(reading(2), 1), (reading(3), 1)], guess), [], 1, own_rows(store).renumber
            )
            self.assertEqual(appended.indexes, [appended.last_index - 1, appended.last_index])
        self.assertEqual(appended.last_index, 5)
        entries = await store.read_entries(NODE_ID, opened.epoch, 0, 10)
        self.assertEqual([entry[0] for entry in entries], [1, 2, 3, 4, 5])
        for record in as_received(opened.epoch, entries):
            self.signer.verify(record)

    async def test_bad_rows_not_sent(self) -> None:
        """
        A row changed by another program so that it is no record (a
        negative sensor_index, bytes for text), or a row deleted, ends a
        read of entries for peers before it, and fails one that starts at
        it with an error naming it; the rows after it are read as usual.
        """
        store, opened = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, 7)])
        conn = sqlite3.connect(self.path)
        with conn:
            # The rows under the view (schema version 5), by entry index.
            at = f"WHERE key & {INDEX_MASK} = ?"
            conn.execute(f"UPDATE {TABLE}_rows SET sensor_index = -1 {at}", (3,))
            conn.execute(f"UPDATE {TABLE}_rows SET sensor_data = X'3539' {at}", (4,))
            conn.execute(f"DELETE FROM {TABLE}_rows {at}", (5,))
        conn.close()
        for limit in (2, 10):
            self.assertEqual(
                [entry[0] for entry in await store.read_entries(NODE_ID, opened.epoch, 0, limit)],
                [1, 2],
            )
        for after, bad in [(2, 3), (3, 4), (4, 5)]:
            with self.assertRaises(BadEntry) as caught:
                await store.read_entries(NODE_ID, opened.epoch, after, 10)
            self.assertIn(f"entry {bad} of log {NODE_ID}/{opened.epoch}", str(caught.exception))
            self.assertIn("changed by another program", str(caught.exception))
            self.assertEqual(caught.exception.index, bad)
        self.assertEqual(
            [entry[0] for entry in await store.read_entries(NODE_ID, opened.epoch, 5, 10)], [6]
        )

    async def test_fields_as_sent(self) -> None:
        """
        Each row holds the reading exactly as sent, with the sensor_index of
        its connection.
        """
        store, _ = await self.open_store()
        await self.append(
            store,
            [(Reading("Atm. Pressure", "1.798 atm", "2020-04-20T23:20:18+02:00", "sim-1"), 7)], [], 7
        )
        self.assertEqual(
            self.query(
                f"SELECT entry_index, sensor_index, sensor_type, sensor_data, timestamp, reading_id FROM {TABLE}"
            ),
            [(1, 7, "Atm. Pressure", "1.798 atm", "2020-04-20T23:20:18+02:00", "sim-1")],
        )

    async def test_value_and_unit(self) -> None:
        """
        value and unit are parsed from sensor_data when it starts with a
        number, NULL otherwise; sensor_data keeps the text as sent.
        """
        store, _ = await self.open_store()
        cases = [
            ("39C", 39.0, "C"),
            ("1.798 atm", 1.798, "atm"),
            ("15% RH", 15.0, "% RH"),
            ("-3.5", -3.5, None),
            ("high", None, None),
        ]
        await self.append(store, [(reading(1, data=data), 1) for data, _, _ in cases], [], 1)
        self.assertEqual(
            self.query(f"SELECT sensor_data, value, unit FROM {TABLE} ORDER BY entry_index"),
            cases,
        )

    async def test_checksums(self) -> None:
        """
        Every row's data_checksum is the record's HMAC under the cluster
        key: it verifies with the key, and fails under another key.
        """
        store, opened = await self.open_store()
        appended = await self.append(store, [(reading(n, reading_id=f"r{n}"), 2) for n in range(5)], [], 2)
        rows = self.query(
            f"SELECT entry_index, sensor_index, sensor_type, sensor_data, timestamp, reading_id, "
            f"data_checksum FROM {TABLE} ORDER BY entry_index"
        )
        records = as_received(opened.epoch, rows)
        self.assertEqual([entry_of(r) for r in records], appended.entries())
        other = Signer.from_key(b"another cluster's key, 32 bytes!")
        for record in records:
            self.assertEqual(len(record.data_checksum), 64)
            self.signer.verify(record)
            self.assertRaises(BadRecord, other.verify, record)

    async def test_rejected_lines(self) -> None:
        """
        Rejected lines are kept with their time, sensor_index, reason and
        raw bytes, whatever those bytes are.
        """
        store, _ = await self.open_store()
        rejected = [
            Rejected("2020-04-20 23:20:18.000001", 3, "not UTF-8", b"Temp\xff,39C"),
            Rejected("2020-04-20 23:20:19.000001", 4, "line too long", b"x" * 1024),
        ]
        await self.append(store, [(reading(1), 3)], rejected, 4)
        self.assertEqual(
            self.query("SELECT received_at, sensor_index, reason, raw FROM rejected_lines ORDER BY id"),
            [(r.received_at, r.sensor_index, r.reason, r.raw) for r in rejected],
        )

    async def test_readable_while_open(self) -> None:
        """
        Anyone can read the file with sqlite3 while the store has it open,
        and sees each commit as soon as it is answered.
        """
        store, _ = await self.open_store()
        for n in range(1, 4):
            await self.append(store, [(reading(n), 1)], [], 1)
            self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(n,)])


class ReadingIdTests(StoreTestCase):
    """
    A sensor that resends a reading (its answer was lost) never makes a
    duplicate.
    """

    async def test_stored_id(self) -> None:
        """
        A reading_id already stored is answered with the stored index and
        adds no row; the stored reading is left as it was.
        """
        store, _ = await self.open_store()
        first = await self.append(store, [(reading(1, reading_id="sim-1"), 1)], [], 1)
        again = await self.append(store, 
            [(reading(2), 2), (reading(9, data="99C", reading_id="sim-1"), 2), (reading(3), 2)], [], 2
        )
        self.assertEqual(first.indexes, [1])
        self.assertEqual(again.indexes, [2, 1, 3])
        self.assertEqual([entry[0] for entry in again.entries()], [2, 3])
        self.assertEqual(
            self.query(f"SELECT entry_index, sensor_data FROM {TABLE} WHERE reading_id = 'sim-1'"),
            [(1, "1C")],
        )
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(3,)])

    async def test_same_id_in_one_batch(self) -> None:
        """
        The same reading_id twice in one batch stores one row, and both
        lines are answered with its index.
        """
        store, _ = await self.open_store()
        appended = await self.append(store, 
            [(reading(1, reading_id="x"), 1), (reading(2), 1), (reading(1, reading_id="x"), 1)], [], 1
        )
        self.assertEqual(appended.indexes, [1, 2, 1])
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(2,)])

    async def test_many_ids(self) -> None:
        """
        Dedupe holds for batches with more reading_ids than one SQL query
        takes parameters.
        """
        store, _ = await self.open_store()
        ids = [f"r{n}" for n in range(_LOOKUP_CHUNK + 100)]
        first = await self.append(store, [(reading(n, reading_id=i), 1) for n, i in enumerate(ids)], [], 1)
        again = await self.append(store, [(reading(n, reading_id=i), 1) for n, i in enumerate(ids)], [], 1)
        self.assertEqual(again.indexes, first.indexes)
        self.assertEqual(again.entries(), [])
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(len(ids),)])

    async def test_ids_survive_reopen(self) -> None:
        """
        A reading resent after the node restarted is still recognised.
        """
        store, _ = await self.open_store()
        await self.append(store, [(reading(1, reading_id="sim-1"), 1)], [], 1)
        store.close()
        store, _ = await self.open_store()
        appended = await self.append(store, [(reading(1, reading_id="sim-1"), 2)], [], 2)
        self.assertEqual(appended.indexes, [1])
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(1,)])


class ReadingIdTableTests(StoreTestCase):
    """
    The own reading ids are added to server_id_<node id>_ids in bulk, not
    by each commit (p2pstore.readingids): a resent reading is recognised
    from memory before, from the table after, across a restart, and a
    pruned reading's id goes with it.
    """

    IDS = f"{TABLE}_ids"

    def make_store(self, node_id: str = NODE_ID) -> Store:
        store = Store(path=self.path, node_id=node_id, ids_batch=5)
        self.addCleanup(store.close)
        return store

    def ids(self) -> list:
        return self.query(f"SELECT reading_id, entry_index FROM {self.IDS} ORDER BY entry_index")

    async def send(self, store, names, sensor: int = 1):
        return await self.append(
            store, [(reading(n, reading_id=name), sensor) for n, name in enumerate(names, 1)], [], sensor
        )

    async def test_in_bulk(self) -> None:
        """
        Until a batch of ids is due, none is written to the table, and a
        resent reading is still answered with its index; once due, every
        id is in the table, in one transaction.
        """
        store, _ = await self.open_store()
        await self.send(store, ["a", "b", "c"])
        self.assertEqual(self.ids(), [])
        again = await self.send(store, ["b"])
        self.assertEqual(again.indexes, [2])
        await self.send(store, ["d", "e"])
        self.assertEqual(self.ids(), [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
        again = await self.send(store, ["a", "e", "f"])
        self.assertEqual(again.indexes, [1, 5, 6])
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(6,)])

    async def test_reopened(self) -> None:
        """
        Ids still pending when the node stops (or crashes) are added when
        it opens again, and recognised.
        """
        store, _ = await self.open_store()
        await self.send(store, ["a", "b"])
        store.close()
        # Memory lost, as in a crash: the file alone must answer.
        store, _ = await self.open_store()
        self.assertEqual(self.ids(), [("a", 1), ("b", 2)])
        again = await self.send(store, ["b", "c"], sensor=2)
        self.assertEqual(again.indexes, [2, 3])

    async def test_pruned(self) -> None:
        """
        Pruning own readings deletes their ids from the table too.
        """
        store, _ = await self.open_store()
        await self.send(store, ["a", "b", "c", "d", "e", "f"])
        await store.prune(NODE_ID, store.epoch, 3, "retention", 100)
        self.assertEqual(self.ids(), [("d", 4), ("e", 5), ("f", 6)])


class ApplyTests(StoreTestCase):
    """
    Replicated records, as RECORDS entries, are stored where they continue
    their log; records at positions already held are compared with the
    stored ones; the node's own current epoch is never written.
    """

    OTHER = "fedcba9876543210fedcba9876543210"
    EPOCH = "00112233445566778899aabbccddeeff"

    def entries(self, origin: str, epoch: str, first: int, last: int, data: str = "39C") -> list:
        return [
            entry_of(
                self.signer.sign(
                    Record(origin, epoch, n, 7, "Temperature", data, f"2020-04-20 23:20:{n % 60:02d}", None)
                )
            )
            for n in range(first, last + 1)
        ]

    def peer_rows(self) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.path.with_name('peer_sensor_data.db')}?mode=ro", uri=True)
        try:
            return conn.execute(
                f"SELECT entry_index, sensor_data, value, unit, data_checksum, epoch "
                f"FROM {table_name(self.OTHER)} ORDER BY entry_index"
            ).fetchall()
        finally:
            conn.close()

    async def apply(self, store: Store, *batches) -> list[tuple]:
        results = await store.apply(list(batches), plan_apply)
        return [(len(r.added) and (r.added[0][0], r.added[-1][0]), r.conflicts, r.last_index) for r in results]

    async def test_positions(self) -> None:
        """
        Each relation of a batch to the stored position: continuing it,
        overlapping it, all held (with and without a conflict), after a gap.
        """
        store, _ = await self.open_store()
        log = (self.OTHER, self.EPOCH)
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 1, 5))), [((1, 5), 0, 5)])
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 3, 8))), [((6, 8), 0, 8)])
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 2, 4))), [(0, 0, 8)])
        changed = self.entries(*log, 7, 7, data="-5C") + self.entries(*log, 8, 9)
        self.assertEqual(await self.apply(store, (*log, changed)), [((9, 9), 1, 9)])
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 12, 13))), [(0, 0, 9)])
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 10, 10))), [((10, 10), 0, 10)])
        self.assertEqual(
            self.peer_rows(),
            [(e[0], e[3], 39.0, "C", e[6], self.EPOCH) for e in self.entries(*log, 1, 10)],
        )

    async def test_table_made_again_after_rollback(self) -> None:
        """
        A batch whose transaction fails after it made a new peer's table
        (rolled back with it) does not leave the store believing the table
        is there: the next batch of that peer is stored.
        """
        store, _ = await self.open_store()
        log = (self.OTHER, self.EPOCH)

        def failing(*args):
            raise RuntimeError("the transaction fails")

        with self.assertRaises(RuntimeError):
            await store.apply([(*log, self.entries(*log, 1, 3))], failing)
        self.assertEqual(await self.apply(store, (*log, self.entries(*log, 1, 3))), [((1, 3), 0, 3)])
        self.assertEqual([row[0] for row in self.peer_rows()], [1, 2, 3])

    async def test_several_logs(self) -> None:
        """
        One transaction stores batches of several logs, each with its own
        outcome; the node's own earlier epoch goes to its own table.
        """
        store, _ = await self.open_store()
        old = (NODE_ID, self.EPOCH)
        other = (self.OTHER, self.EPOCH)
        results = await self.apply(
            store, (*other, self.entries(*other, 1, 3)), (*old, self.entries(*old, 1, 2)), (*other, self.entries(*other, 5, 6))
        )
        self.assertEqual(results, [((1, 3), 0, 3), ((1, 2), 0, 2), (0, 0, 3)])
        self.assertEqual([r[0] for r in self.peer_rows()], [1, 2, 3])
        self.assertEqual(
            self.query(f"SELECT entry_index, data_checksum FROM {TABLE} WHERE epoch = ?", (self.EPOCH,)),
            [(e[0], e[6]) for e in self.entries(*old, 1, 2)],
        )

    async def test_own_current_epoch(self) -> None:
        """
        Positions of this node's current epoch beyond what it holds are
        conflicts, as are held ones that differ; nothing is written.
        """
        store, opened = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, 4)])
        own = (NODE_ID, opened.epoch)
        stored = await store.read_entries(NODE_ID, opened.epoch, 0, 10)
        offered = [stored[1], stored[2][:6] + ("0" * 64,)] + self.entries(*own, 4, 6)
        self.assertEqual(await self.apply(store, (*own, offered)), [(0, 4, 3)])
        self.assertEqual(
            self.query(f"SELECT entry_index, data_checksum FROM {TABLE} ORDER BY entry_index"),
            [(e[0], e[6]) for e in stored],
        )


class ReadWhileWritingTests(StoreTestCase):
    """
    Reads for peers have a connection of their own.
    """

    async def test_read_while_commit_waits(self) -> None:
        """
        While a commit waits for the disk (here, for another program's
        write lock), records are still read for peers, and the commit goes
        through afterwards.
        """
        store, opened = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, 4)])
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        appending = store.append(prepared(store, [(reading(4), 1)], 4), [], 1, own_rows(store).renumber)
        entries = await store.read_entries(NODE_ID, opened.epoch, 0, 10).addTimeout(5, reactor)
        self.assertEqual([entry[0] for entry in entries], [1, 2, 3])
        self.assertNoResult(appending)
        other.execute("ROLLBACK")
        self.assertEqual((await appending).last_index, 4)


class ReopenTests(StoreTestCase):
    """
    Closing and reopening the file (a node restart) keeps everything.
    """

    async def test_reopen(self) -> None:
        """
        After a restart the store reports the same count, last index, epoch
        and highest sensor_index, keeps its indexes, and numbering goes on
        without a gap.
        """
        store, first = await self.open_store()
        await self.append(store, [(reading(n), 3) for n in range(1, 6)], [], 3)
        await self.append(store, 
            [(reading(6), 9)], [Rejected("2020-04-20 23:20:18", 11, "empty line", b"")], 12
        )
        indexes = self.query("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
        store.close()

        store, second = await self.open_store()
        self.assertEqual(
            second,
            Opened(
                epoch=first.epoch,
                count=6,
                last_index=6,
                last_sensor_index=12,
                rejected=1,
                positions={(NODE_ID, first.epoch): 6},
            ),
        )
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"), indexes)
        self.assertNotIn((f"{TABLE}_rows_timestamp",), indexes)
        appended = await self.append(store, [(reading(7), 13)], [], 13)
        self.assertEqual(appended.indexes, [7])

    async def test_sensor_index_from_rows(self) -> None:
        """
        Even without the recorded highest sensor_index, sensor indexes
        already in the file are never handed out again.
        """
        store, _ = await self.open_store()
        await self.append(store, 
            [(reading(1), 5)], [Rejected("2020-04-20 23:20:18", 8, "empty line", b"")], 0
        )
        store.close()
        _, opened = await self.open_store()
        self.assertEqual(opened.last_sensor_index, 8)


class ReadingsTests(StoreTestCase):
    """
    The newest readings of an origin, as /readings serves them.
    """

    async def store_thirty(self) -> Store:
        store, _ = await self.open_store()
        batch = [
            (reading(n, sensor_type="Humidity" if n % 3 == 0 else "Temperature"), 1)
            for n in range(1, 31)
        ]
        self.appended = await self.append(store, batch, [], 1)
        return store

    async def test_newest_first(self) -> None:
        """
        Readings come newest first, as full signed records.
        """
        store = await self.store_thirty()
        records = await store.readings(NODE_ID, None, 100)
        self.assertEqual([entry_of(r) for r in records], self.appended.entries()[::-1])
        for record in records:
            self.signer.verify(record)

    async def test_current_log_first(self) -> None:
        """
        Readings of an older epoch of the node's own, recovered from a peer
        after the current one began (and so numbered after it in the
        file), come after the current epoch's, which stay the newest.
        """
        store = await self.store_thirty()
        old = "c" * 32
        rows = OwnRows(NODE_ID, self.signer, old).prepare(
            [reading(n) for n in range(1, 6)], 1, 1
        )
        await store.apply([(NODE_ID, old, [row[:7] for row in rows])], lambda *a: (a[3], 0))
        await self.append(store, [(reading(31), 1)])
        records = await store.readings(NODE_ID, None, 33)
        self.assertEqual(
            [(r.epoch, r.entry_index) for r in records],
            [(store.epoch, n) for n in range(31, 0, -1)] + [(old, 5), (old, 4)],
        )
        self.assertEqual([r.entry_index for r in await store.readings(NODE_ID, None, 2)], [31, 30])

    async def test_type_and_limit(self) -> None:
        """
        A type filter returns only that sensor type; the limit caps the
        count, keeping the newest.
        """
        store = await self.store_thirty()
        humidity = await store.readings(NODE_ID, "Humidity", 100)
        self.assertEqual([r.entry_index for r in humidity], list(range(30, 0, -3)))
        newest = await store.readings(NODE_ID, "Temperature", 3)
        self.assertEqual([r.entry_index for r in newest], [29, 28, 26])
        self.assertEqual(await store.readings(NODE_ID, "Pressure", 10), [])


class ReadingsInRangeTests(StoreTestCase):
    """
    A time range of an origin's readings, from a real file through the
    store's read-only connection.
    """

    async def store_stamped(self, stamps: list[str]) -> Store:
        store, _ = await self.open_store()
        batch = [
            (Reading("Humidity" if n % 2 else "Temperature", f"{n}%", stamp, None), 1)
            for n, stamp in enumerate(stamps, start=1)
        ]
        self.appended = await self.append(store, batch, [], 1)
        return store

    async def test_range_oldest_first(self) -> None:
        """
        The readings whose instant is in [since, until), oldest first,
        whatever the order they were stored in; an offset counts, no
        offset is UTC. Signed records, as /readings serves them.
        """
        store = await self.store_stamped([
            "2026-11-28 10:30:00",
            "2026-11-28 10:00:00.000000",
            "2026-11-28T12:15:00+02:00",
            "2026-11-28 11:00:00",
            "2026-11-28 09:59:59.999999",
        ])
        hour = TimeRange(UTC_10, UTC_10 + timedelta(hours=1))
        page = await store.readings_in(NODE_ID, None, hour, 100)
        self.assertEqual([r.entry_index for r in page.records], [2, 3, 1])
        self.assertIsNone(page.next)
        for record in page.records:
            self.signer.verify(record)
        humidity = await store.readings_in(NODE_ID, "Humidity", hour, 100)
        self.assertEqual([r.entry_index for r in humidity.records], [3, 1])

    async def test_pages(self) -> None:
        """
        A full page says where the next starts; following it gives each
        reading once, when many share a timestamp.
        """
        store = await self.store_stamped(["2026-11-28 10:00:00.5"] * 25 + ["2026-11-28 10:00:00.50"] * 5)
        hour = TimeRange(UTC_10, UTC_10 + timedelta(hours=1))
        seen = []
        for _ in range(10):
            page = await store.readings_in(NODE_ID, None, hour, 7)
            seen += [r.entry_index for r in page.records]
            if page.next is None:
                break
            hour = attrs.evolve(hour, after=page.next)
        self.assertEqual(seen, list(range(1, 31)))


class TableNameTests(SynchronousTestCase):
    """
    A table name is only ever built from a validated node id, so no text
    from a sensor, a peer or a URL can reach SQL as a name.
    """

    bad = [
        "",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef0123456789abcdef\n",
        "x; DROP TABLE meta; --",
        "0123456789abcdef0123456789abcdeg",
        None,
    ]

    def test_valid(self) -> None:
        """
        A node id gives the seed's table name.
        """
        self.assertEqual(table_name(NODE_ID), TABLE)

    def test_refused(self) -> None:
        """
        Anything else is refused before any SQL is written.
        """
        for text in self.bad:
            self.assertRaises(ValueError, table_name, text)
            self.assertRaises(ValueError, Schema().readings_table, text, "main", True)


class BadNodeIdTests(StoreTestCase):
    """
    The store refuses to build SQL from a bad id.
    """

    async def test_open(self) -> None:
        """
        A store for a bad node id fails to open and creates no table.
        """
        store = self.make_store(node_id="x; DROP TABLE meta; --")
        await self.assertFailure(store.open(), ValueError)
        self.assertEqual(self.query("SELECT name FROM sqlite_master WHERE type = 'table'"), [])

    async def test_readings(self) -> None:
        """
        Asking for the readings of a bad origin raises before any query.
        """
        store, _ = await self.open_store()
        self.assertRaises(ValueError, store.readings, "server_id_x; --", None, 10)
        self.assertRaises(ValueError, store.readings, NODE_ID.upper(), None, 10)


class UncleanStopTests(StoreTestCase):
    """
    With --sync normal a crash may undo the last commits; the next start
    must not number readings into positions peers may already hold.
    """

    async def reopen_after(self, synchronous: str, clean: bool) -> tuple[str, str]:
        store = Store(path=self.path, node_id=NODE_ID, synchronous=synchronous)
        first = await store.open()
        await self.append(store, [(reading(1), 1)], [], 1)
        if clean:
            await store.mark_stopped()
        store.close()
        store = Store(path=self.path, node_id=NODE_ID, synchronous=synchronous)
        self.addCleanup(store.close)
        second = await store.open()
        return first.epoch, second.epoch

    async def test_normal_unclean_starts_new_epoch(self) -> None:
        """
        synchronous=NORMAL and no clean stop: a new epoch, and the old one
        stays a closed log at the position it reached.
        """
        before, after = await self.reopen_after("NORMAL", clean=False)
        self.assertNotEqual(before, after)
        self.assertEqual(
            sorted(self.query("SELECT epoch, last_index FROM log_positions")),
            sorted([(before, 1), (after, 0)]),
        )

    async def test_normal_clean_keeps_epoch(self) -> None:
        """
        After a clean stop the epoch goes on, whatever the sync setting.
        """
        before, after = await self.reopen_after("NORMAL", clean=True)
        self.assertEqual(before, after)

    async def test_full_unclean_keeps_epoch(self) -> None:
        """
        synchronous=FULL loses no commit in a crash: the epoch goes on.
        """
        before, after = await self.reopen_after("FULL", clean=False)
        self.assertEqual(before, after)


class KeyBoundsTests(StoreTestCase):
    """
    An entry index past what a key holds (40 bits) reaches no other log.
    """

    async def test_huge_indexes(self) -> None:
        """
        Reads of a log from or at an index past 2**40 - 1 find nothing,
        rather than rows of the log numbered after it.
        """
        store, opened = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, 4)])
        huge = INDEX_MASK + 2
        self.assertEqual(await store.entries_at(NODE_ID, opened.epoch, [huge, 1]), [
            tuple(e) for e in await store.read_entries(NODE_ID, opened.epoch, 0, 1)
        ])
        self.assertEqual(await store.read_entries(NODE_ID, opened.epoch, INDEX_MASK, 10), [])
        self.assertEqual(await store.read_entries(NODE_ID, opened.epoch, huge, 10), [])
