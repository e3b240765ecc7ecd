"""
Tests for the scrub and the quarantine (p2pstore.scrub), on a real Store
over SQLite files in a temporary directory, the rows changed as another
program (or a failing disk) would change them.
"""

from __future__ import annotations

import json
import sqlite3

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs, formatEvent

from p2pstore.inbound import plan_apply
from p2pstore.records import SENSOR_DATA, Record, entry_of
from p2pstore.schema import INDEX_MASK, rows_table
from p2pstore.scrub import Scrub
from p2pstore.storage import BadEntry

from .test_storage import NODE_ID, TABLE, StoreTestCase, reading

# Where the rows are stored (schema version 5), under the view TABLE, which
# cannot be changed; and a row's entry index there, from its key (every row
# here is of the one own log).
ROWS = rows_table(NODE_ID)
INDEX = f"key & {INDEX_MASK}"


class ScrubTests(StoreTestCase):
    """
    A store of 30 own readings, some rows then edited in the file.
    """

    async def filled(self, count: int = 30):
        store, opened = await self.open_store()
        await self.append(store, [(reading(n), 1) for n in range(1, count + 1)])
        self.wanted: list = []
        return store, opened

    def edit(self, sql: str, params=()) -> None:
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(sql, params)
        conn.close()

    def scrub(self, store, **kwargs) -> Scrub:
        self.clock = Clock()
        kwargs.setdefault("now", lambda: "2026-12-06T10:00:00+00:00")
        scrub = Scrub(store, self.signer, self.clock, lambda *want: self.wanted.append(want), **kwargs)
        return scrub

    async def test_start_checks_the_tail(self):
        """
        At start the newest rows of every table are checked at once: an
        edited one is moved to the quarantine table (row kept, with the
        reason), its log keeps its position, the peers are asked for it,
        the log says what happened and what to do, and status counts it.
        A read for peers then stops before it with L{BadEntry}.
        """
        store, opened = await self.filled()
        self.edit(f"UPDATE {ROWS} SET sensor_data = '99C', value = 99.0 WHERE {INDEX} = 25")
        scrub = self.scrub(store, start_tail=10, rate=0)
        with capturedLogs() as events:
            await scrub.start()
        self.assertEqual(self.wanted, [(NODE_ID, opened.epoch, [25])])
        self.assertEqual(scrub.status()["found"], 1)
        self.assertEqual(scrub.status()["quarantined"], 1)
        self.assertEqual(scrub.checked, 10)
        [(db, index, reason, row)] = self.query(
            "SELECT db, entry_index, reason, row FROM quarantine"
        )
        self.assertEqual((db, index, reason), ("main", 25, "checksum mismatch"))
        self.assertIn("99C", json.loads(row))
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(29,)])
        self.assertEqual(
            self.query("SELECT last_index FROM log_positions WHERE origin = ?", (NODE_ID,)), [(30,)]
        )
        [line] = [formatEvent(e) for e in events if "quarantine" in formatEvent(e)]
        self.assertIn("record 25 of log", line)
        self.assertIn("self_sensor_data.db", line)
        self.assertIn("p2pstore verify", line)
        self.assertEqual(len(await store.read_entries(NODE_ID, opened.epoch, 0, 100)), 24)
        with self.assertRaises(BadEntry) as caught:
            await store.read_entries(NODE_ID, opened.epoch, 24, 100)
        self.assertEqual(caught.exception.index, 25)

    async def test_start_checks_the_tail_of_every_log(self):
        """
        The tail checked at start is the end of each log of a table, not
        only of the log numbered last: a peer's older log whose newest
        record was changed is found at once.
        """
        store, _ = await self.open_store()
        other, older, newer = "fedcba98" * 4, "0" * 31 + "1", "0" * 31 + "2"
        for epoch in (older, newer):
            entries = [
                entry_of(self.signer.sign(Record(
                    other, epoch, n, 7, "Temperature", "39C", f"2020-04-20 23:20:{n:02d}", None
                )))
                for n in range(1, 21)
            ]
            await store.apply([(other, epoch, entries)], plan_apply)
        conn = sqlite3.connect(self.path.with_name("peer_sensor_data.db"))
        with conn:
            changed = conn.execute(
                f"UPDATE {rows_table(other)} SET sensor_data = '99C' WHERE key = "
                f"(SELECT ordinal FROM epochs WHERE epoch = ?) << 40 | 20",
                (older,),
            ).rowcount
        conn.close()
        self.assertEqual(changed, 1)
        self.wanted = []
        scrub = self.scrub(store, start_tail=5, rate=0)
        await scrub.start()
        self.assertEqual(self.wanted, [(other, older, [20])])
        self.assertEqual(scrub.checked, 10)

    async def test_passes_at_the_rate(self):
        """
        After the tail, passes run over every row at the rate: 30 rows at
        10 a step take three steps, and the edited row far from the tail is
        found in its step; the next step ends the pass, and the next pass
        begins pass_every after the last began.
        """
        store, opened = await self.filled()
        self.edit(f"UPDATE {ROWS} SET data_checksum = ? WHERE {INDEX} = 14", (bytes(32),))
        scrub = self.scrub(store, start_tail=5, rate=10, step=1.0, pass_every=100.0)
        await scrub.start()
        self.assertEqual((scrub.checked, scrub.found), (5, 0))
        for step, (checked, found) in enumerate([(15, 0), (25, 1), (35, 1)], 1):
            self.clock.advance(1.0)
            await self.settle(scrub)
            self.assertEqual((scrub.checked, scrub.found), (checked, found), f"step {step}")
        self.assertEqual(scrub.passes, 0)
        self.clock.advance(1.0)
        await self.settle(scrub)
        self.assertEqual(scrub.passes, 0)
        self.clock.advance(1.0)
        await self.settle(scrub)
        self.assertEqual(scrub.passes, 1)
        self.assertEqual(self.wanted, [(NODE_ID, opened.epoch, [14])])
        # The next pass waits until pass_every after this one began.
        for _ in range(3):
            self.clock.advance(1.0)
            await self.settle(scrub)
        self.assertEqual((scrub.checked, scrub.passes), (35, 1))
        self.clock.advance(100.0)
        await self.settle(scrub)
        self.clock.advance(1.0)
        await self.settle(scrub)
        self.assertEqual(scrub.checked, 45)
        await scrub.stop()

    async def settle(self, scrub: Scrub) -> None:
        # The step's reads run in the store's threads: wait for them.
        while scrub._work:
            await deferLater(reactor, 0.01, lambda: None)

    async def test_repair(self):
        """
        A good copy from a peer puts the row back as it was signed and
        marks the quarantine entry repaired; a copy of a position not in
        quarantine is ignored. After a restart the quarantine counts stay.
        """
        store, opened = await self.filled()
        good = await store.read_entries(NODE_ID, opened.epoch, 0, 30)
        self.edit(f"DELETE FROM {ROWS} WHERE {INDEX} = 7")
        scrub = self.scrub(store, rate=0)
        await scrub.start()
        await scrub.check_now(NODE_ID, opened.epoch, 7)
        self.assertEqual(scrub.status()["quarantined"], 1)
        self.assertEqual(
            self.query("SELECT reason, row FROM quarantine"), [("missing", "null")]
        )
        with capturedLogs() as events:
            repaired = await scrub.repair(NODE_ID, opened.epoch, [good[6], good[7]], "b" * 32)
        self.assertEqual(repaired, [7])
        self.assertEqual(scrub.status()["quarantined"], 0)
        self.assertEqual(scrub.status()["repaired"], 1)
        self.assertEqual(await store.read_entries(NODE_ID, opened.epoch, 0, 30), good)
        self.assertTrue(any("repaired 1 records" in formatEvent(e) for e in events))
        again = self.scrub(store, rate=0)
        await again.start()
        self.assertEqual((again.status()["quarantined"], again.status()["repaired"]), (0, 1))

    async def test_repair_keeps_the_sensor_name(self):
        """
        A repaired row keeps the sensor name of the row it replaces: peers'
        copies hold none, so it comes from the quarantined row.
        """
        store, opened = await self.filled()
        self.edit(f"UPDATE {ROWS} SET sensor_name = 'boiler'")
        good = await store.read_entries(NODE_ID, opened.epoch, 0, 30)
        self.edit(f"UPDATE {ROWS} SET sensor_data = '99C' WHERE {INDEX} = 9")
        scrub = self.scrub(store, rate=0)
        await scrub.start()
        await scrub.check_now(NODE_ID, opened.epoch, 9)
        self.assertEqual(await scrub.repair(NODE_ID, opened.epoch, [good[8]], "b" * 32), [9])
        self.assertEqual(
            self.query(f"SELECT sensor_data, sensor_name FROM {TABLE} WHERE entry_index = 9"),
            [(good[8][SENSOR_DATA], "boiler")],
        )

    async def test_good_record_left_alone(self):
        """
        A record a peer refused (the link damaged it) that checks on disk
        stays where it is.
        """
        store, opened = await self.filled()
        scrub = self.scrub(store, rate=0)
        await scrub.start()
        await scrub.check_now(NODE_ID, opened.epoch, 3)
        self.assertEqual(scrub.found, 0)
        self.assertEqual(self.query(f"SELECT count(*) FROM {TABLE}"), [(30,)])
        self.assertEqual(self.query("SELECT count(*) FROM quarantine"), [(0,)])

    async def test_ask_again(self):
        """
        What is still in quarantine is asked for again every ask_again
        seconds, in one WANT per log.
        """
        store, opened = await self.filled()
        for index in (4, 9):
            self.edit(f"UPDATE {ROWS} SET sensor_type = 'Forged' WHERE {INDEX} = ?", (index,))
        scrub = self.scrub(store, rate=1000, ask_again=30.0)
        await scrub.start()
        self.assertEqual(sorted(self.wanted), [(NODE_ID, opened.epoch, [4]), (NODE_ID, opened.epoch, [9])])
        del self.wanted[:]
        self.clock.advance(1.0)
        await self.settle(scrub)
        self.assertEqual(self.wanted, [])
        self.clock.advance(29.0)
        await self.settle(scrub)
        self.assertEqual(self.wanted, [(NODE_ID, opened.epoch, [4, 9])])
        self.clock.advance(1.0)
        await self.settle(scrub)
        self.assertEqual(len(self.wanted), 1)
        await scrub.stop()
