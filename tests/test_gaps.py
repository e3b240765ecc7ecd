"""
Tests for logs that start after 1 (p2pstore.gaps through the store, on real
SQLite files): pruning a log's oldest records in batches, the ranges
recorded, a range a peer no longer holds, the marks retention prunes by,
and numbering that goes on after every record of the log was pruned.
"""

from __future__ import annotations

import io
import sqlite3

from p2pstore import timeblocks
from p2pstore.gaps import Gap
from p2pstore.lines import Reading
from p2pstore.inbound import plan_apply
from p2pstore.schema import INDEX_MASK, rows_table, table_name
from p2pstore.verify import Progress, verify

from . import test_storage
from .test_storage import KEY, NODE_ID, TABLE, StoreTestCase, own_rows, reading


class Clock:
    """
    The store's ``now``, moved by hand.
    """

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class PruneTests(StoreTestCase):
    """
    Store.prune deletes a log's oldest records in batches, moves its first
    index, and records one range per reason, all kept across a reopen.
    """

    async def filled(self, count: int):
        store, _ = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, count + 1)])
        return store

    async def test_batches(self) -> None:
        """
        Each call deletes at most ``limit`` records, none past ``upto``; the
        batches of one reason are one range; the rest is read as before.
        """
        store = await self.filled(10)
        first = await store.prune(NODE_ID, store.epoch, 7, "retention", 3)
        self.assertEqual((first.deleted, first.first), (3, 4))
        second = await store.prune(NODE_ID, store.epoch, 7, "retention", 3)
        self.assertEqual((second.deleted, second.first), (3, 7))
        third = await store.prune(NODE_ID, store.epoch, 7, "retention", 3)
        self.assertEqual((third.deleted, third.first), (1, 8))
        self.assertIsNone(await store.prune(NODE_ID, store.epoch, 7, "retention", 3))
        self.assertEqual(
            self.query("SELECT first_index, last_index, reason FROM pruned"), [(1, 7, "retention")]
        )
        self.assertEqual(
            self.query(f"SELECT min(entry_index), count(*) FROM {TABLE}"), [(8, 3)]
        )
        self.assertEqual(
            self.query("SELECT first_index, last_index FROM log_positions"), [(8, 10)]
        )
        entries = await store.read_entries(NODE_ID, store.epoch, 7, 10)
        self.assertEqual([e[0] for e in entries], [8, 9, 10])

    async def test_reasons_apart(self) -> None:
        """
        A range pruned for another reason is a row of its own.
        """
        store = await self.filled(6)
        await store.prune(NODE_ID, store.epoch, 2, "retention", 100)
        await store.prune(NODE_ID, store.epoch, 4, "evicted", 100)
        self.assertEqual(
            self.query("SELECT first_index, last_index, reason FROM pruned ORDER BY id"),
            [(1, 2, "retention"), (3, 4, "evicted")],
        )

    async def test_reopened(self) -> None:
        """
        After a reopen the store says where each log starts and what was
        pruned.
        """
        store = await self.filled(5)
        await store.prune(NODE_ID, store.epoch, 3, "retention", 100)
        await store.mark_stopped()
        store.close()
        opened = await self.make_store().open()
        self.assertEqual(opened.positions, {(NODE_ID, opened.epoch): 5})
        self.assertEqual(opened.firsts, {(NODE_ID, opened.epoch): 4})
        [pruned] = opened.pruned
        self.assertEqual(
            (pruned.db, pruned.origin, pruned.first, pruned.last, pruned.reason),
            ("main", NODE_ID, 1, 3, "retention"),
        )
        self.assertEqual(pruned.status()["count"], 3)

    async def test_numbering_after_all_pruned(self) -> None:
        """
        With every record of the current epoch pruned, new readings go on
        from the last index, before and after a reopen: an index is never
        given twice.
        """
        store = await self.filled(4)
        await store.prune(NODE_ID, store.epoch, 4, "retention", 100)
        rows = own_rows(store).prepare([reading(5)], 1, 1)
        appended = await store.append(rows, [], 1, own_rows(store).renumber)
        self.assertEqual(appended.indexes, [5])
        await store.prune(NODE_ID, store.epoch, 5, "retention", 100)
        await store.mark_stopped()
        store.close()
        again = self.make_store()
        opened = await again.open()
        self.assertEqual((opened.count, opened.last_index), (0, 5))
        rows = own_rows(again).prepare([reading(6)], 1, 1)
        appended = await again.append(rows, [], 1, own_rows(again).renumber)
        self.assertEqual(appended.indexes, [6])

    async def test_marks(self) -> None:
        """
        A log is marked at most once per mark interval; stored_by says how
        far each log was held by a time, from those marks only.
        """
        clock = Clock()
        store = self.make_store()
        store.now, store.mark_interval = clock, 10.0
        await store.open()
        await self.append(store, [(reading(1), 1), (reading(2), 1)])
        clock.now += 5
        await self.append(store, [(reading(3), 1)])
        clock.now += 6
        await self.append(store, [(reading(4), 1)])
        self.assertEqual(
            self.query("SELECT entry_index, stored_at FROM log_marks ORDER BY entry_index"),
            [(2, 1000.0), (4, 1011.0)],
        )
        log = (NODE_ID, store.epoch)
        self.assertEqual(await store.stored_by(999.0), {})
        self.assertEqual(await store.stored_by(1010.0), {log: 2})
        self.assertEqual(await store.stored_by(1011.0), {log: 4})
        await store.prune(NODE_ID, store.epoch, 2, "retention", 100)
        self.assertEqual(self.query("SELECT entry_index FROM log_marks"), [(4,)])


    async def test_block_index_follows(self) -> None:
        """
        A prune takes the entries of the blocks it empties out of the
        block index of the table's times and keeps those of the rows that
        stay exact, however its batches cut the blocks; once every row is
        pruned, no entry is left.
        """
        store, _ = await self.open_store()
        readings = [
            Reading("Temperature", f"{n}C", f"2026-11-28 10:{n // 70:02d}:{n % 60:02d}", None)
            for n in range(1, 500)
        ]
        await self.append(store, [(r, 1) for r in readings])

        def held() -> dict:
            return {
                (minute, block): [low, high]
                for minute, block, low, high in self.query(f"SELECT * FROM {TABLE}_times")
            }

        def rows() -> list:
            return self.query(f"SELECT key, timestamp FROM {TABLE}_rows")

        for upto in (50, 100, 200, 330, 431):
            await store.prune(NODE_ID, store.epoch, upto, "retention", 77)
            self.assertEqual(held(), timeblocks.entries(rows()), upto)
        self.assertTrue(held())
        while await store.prune(NODE_ID, store.epoch, 499, "retention", 77):
            pass
        self.assertEqual((rows(), held()), ([], {}))


class GapTests(StoreTestCase):
    """
    A L{Gap} among replicated batches: the range its sender no longer
    holds is recorded, and the log is held from after it.
    """

    OTHER = test_storage.ApplyTests.OTHER
    EPOCH = test_storage.ApplyTests.EPOCH
    entries = test_storage.ApplyTests.entries
    apply = test_storage.ApplyTests.apply

    async def gap(self, store, first: int, last: int):
        [result] = await store.apply([(self.OTHER, self.EPOCH, Gap(first, last, "retention"))], plan_apply)
        return result

    def positions(self) -> list:
        return self.query_peer("SELECT first_index, last_index FROM log_positions")

    def query_peer(self, sql: str) -> list:
        conn = sqlite3.connect(f"file:{self.path.with_name('peer_sensor_data.db')}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def test_log_never_held(self) -> None:
        """
        A log held not at all starts after the gap, and the records after
        it are stored.
        """
        store, _ = await self.open_store()
        result = await self.gap(store, 1, 5)
        self.assertEqual(result.last_index, 5)
        self.assertEqual((result.gap.first, result.gap.last), (1, 5))
        self.assertEqual(self.positions(), [(6, 5)])
        stored = await self.apply(store, (self.OTHER, self.EPOCH, self.entries(self.OTHER, self.EPOCH, 6, 8)))
        self.assertEqual(stored, [((6, 8), 0, 8)])
        self.assertEqual(self.positions(), [(6, 8)])
        self.assertEqual(
            self.query_peer("SELECT first_index, last_index, reason FROM pruned"), [(1, 5, "retention")]
        )

    async def test_after_records_held(self) -> None:
        """
        A log held up to 3, told 1 to 6 are gone: it records 4 to 6 as the
        gap, keeps its first index, and holds the log to 6.
        """
        store, _ = await self.open_store()
        await self.apply(store, (self.OTHER, self.EPOCH, self.entries(self.OTHER, self.EPOCH, 1, 3)))
        result = await self.gap(store, 1, 6)
        self.assertEqual((result.gap.first, result.gap.last, result.last_index), (4, 6, 6))
        self.assertEqual(self.positions(), [(1, 6)])

    async def test_held_already_or_ahead(self) -> None:
        """
        A gap this node holds past, or one that starts after what it holds
        (the records between come first), changes nothing.
        """
        store, _ = await self.open_store()
        await self.apply(store, (self.OTHER, self.EPOCH, self.entries(self.OTHER, self.EPOCH, 1, 5)))
        for first, last in ((1, 4), (8, 10)):
            result = await self.gap(store, first, last)
            self.assertEqual((result.gap, result.last_index), (None, 5))
        self.assertEqual(self.positions(), [(1, 5)])
        self.assertEqual(self.query_peer("SELECT count(*) FROM pruned"), [(0,)])

    async def test_pruned_records_not_conflicts(self) -> None:
        """
        Records this node pruned, sent again, are neither stored again nor
        counted as conflicts.
        """
        store, _ = await self.open_store()
        await self.apply(store, (self.OTHER, self.EPOCH, self.entries(self.OTHER, self.EPOCH, 1, 5)))
        await store.prune(self.OTHER, self.EPOCH, 3, "retention", 100)
        stored = await self.apply(store, (self.OTHER, self.EPOCH, self.entries(self.OTHER, self.EPOCH, 1, 7)))
        self.assertEqual(stored, [((6, 7), 0, 7)])
        self.assertEqual(
            self.query_peer(f"SELECT min(entry_index), count(*) FROM {table_name(self.OTHER)}"),
            [(4, 4)],
        )


class VerifyPrunedTests(StoreTestCase):
    """
    C{p2pstore verify} (p2pstore.verify) on a stopped store whose logs
    were pruned and skipped: what the pruned tables say is gone is no
    problem; a row missing besides is one.
    """

    async def stopped_store(self):
        store, _ = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, 11)])
        await store.prune(NODE_ID, store.epoch, 4, "retention", 100)
        other, epoch = GapTests.OTHER, GapTests.EPOCH
        entries = GapTests.entries(self, other, epoch, 1, 3)
        await store.apply([(other, epoch, entries)], plan_apply)
        # Gone at the peer before this node had it, then pruned here too.
        await store.apply([(other, epoch, Gap(1, 8, "retention"))], plan_apply)
        await store.prune(other, epoch, 8, "retention", 100)
        await store.mark_stopped()
        store.close()
        (self.path.parent / "node.id").write_text(NODE_ID + "\n")

    def verify(self) -> tuple[int, str]:
        out = io.StringIO()
        problems = verify(self.path.parent, KEY, "the key", out, Progress(None))
        return problems, out.getvalue()

    async def test_pruned_is_no_problem(self) -> None:
        """
        A log held from 5, and a peer's log all of whose records are gone,
        pass: the 6 records left are counted, no problem.
        """
        await self.stopped_store()
        problems, out = self.verify()
        self.assertEqual(problems, 0, out)
        self.assertIn("checked 6 records in 1 logs of 2 databases: no problems", out)

    async def test_missing_row_still_found(self) -> None:
        """
        A row deleted past the pruned range is still a gap, named with the
        range the log is held in now.
        """
        await self.stopped_store()
        conn = sqlite3.connect(self.path)
        # The rows are stored under the view TABLE (schema version 5), the
        # entry index in the low bits of the key; the own log is the one here.
        conn.execute(f"DELETE FROM {rows_table(NODE_ID)} WHERE key & {INDEX_MASK} = 7")
        conn.commit()
        conn.close()
        problems, out = self.verify()
        self.assertEqual(problems, 1, out)
        self.assertIn("entry 7 missing (the log is held from 5 to 10)", out)
