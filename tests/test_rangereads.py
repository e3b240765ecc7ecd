"""
Tests for p2pstore.rangereads: a time range of readings read from a real
SQLite readings table (in memory, made by the schema's own SQL) through
the block index of its times, paged by its rule, against the readings a
plain filter and sort of every row picks.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pstore import timeblocks
from p2pstore.rangereads import read_range
from p2pstore.schema import Schema, key_of as row_key, rows_table, table_name
from p2pstore.timerange import TimeRange, key_of

NODE_ID = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
TABLE = table_name(NODE_ID)
# Where the rows are stored (schema version 5 on), under the view TABLE.
ROWS = rows_table(NODE_ID)
# The log's number in the epochs table, in each row's key.
ORDINAL = 1
BASE = datetime(2026, 11, 28, 10, tzinfo=timezone.utc)
SUFFIXES = {"": 0, "Z": 0, "+02:00": 120, "-0530": -330, "+01": 60}


def table() -> sqlite3.Connection:
    """
    An empty readings table, as the schema makes one.
    """
    conn = sqlite3.connect(":memory:")
    # The schema's tables name both databases, "main" and "peer".
    conn.execute("ATTACH DATABASE ':memory:' AS peer")
    for statement in Schema().create() + Schema().readings_table(NODE_ID, "main", own=False):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO main.epochs (ordinal, origin, epoch) VALUES (?, ?, ?)", (ORDINAL, NODE_ID, EPOCH)
    )
    conn.commit()
    return conn


def store(conn, index: int, sensor_type: str, sensor_data: str, timestamp: str) -> None:
    """
    Store entry ``index`` of the log EPOCH in the rows table and cover it
    in the block index, as the store would (its checksum is not checked
    here).
    """
    key = row_key(ORDINAL, index)
    conn.execute(
        f"INSERT INTO {ROWS} (key, sensor_index, sensor_type, sensor_data, timestamp, "
        f"data_checksum) VALUES (?, 1, ?, ?, ?, ?)",
        (key, sensor_type, sensor_data, timestamp, bytes(32)),
    )
    timeblocks.note(conn, "main", NODE_ID, [(key, timestamp)])


def spell(instant: datetime, separator: str, digits: int, suffix: str) -> str:
    """
    ``instant`` written with a separator, ``digits`` fraction digits (0:
    none) and a suffix, as a sensor line may carry it.
    """
    local = (instant + timedelta(minutes=SUFFIXES[suffix])).replace(tzinfo=None)
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if digits:
        text += "." + f"{local.microsecond:06d}"[:digits]
    return text + suffix


def insert(conn, timestamps, sensor_types=None) -> None:
    for index, timestamp in enumerate(timestamps, start=1):
        sensor_type = sensor_types[index - 1] if sensor_types else "Temperature"
        store(conn, index, sensor_type, f"{index}C", timestamp)
    conn.commit()


def read(conn, time_range, limit, sensor_type=None):
    try:
        return read_range(conn, "main", NODE_ID, sensor_type, time_range, limit)
    finally:
        conn.commit()


def page_through(conn, time_range, limit, sensor_type=None) -> list[int]:
    """
    Every page of a range, each asked after the last reading of the one
    before, as a client follows ``next``: their entry indexes.
    """
    indexes: list[int] = []
    for _ in range(1000):
        page = read(conn, time_range, limit, sensor_type)
        assert len(page.records) <= limit
        indexes += [r.entry_index for r in page.records]
        if page.next is None:
            return indexes
        assert len(page.records) == limit
        time_range = TimeRange(time_range.since, time_range.until, page.next)
    raise AssertionError("no end to the pages")


def expected(conn, time_range, sensor_type=None) -> list[int]:
    """
    What a range holds, by a filter and sort of every row.
    """
    keys = []
    for index, timestamp, found_type in conn.execute(
        f"SELECT entry_index, timestamp, sensor_type FROM {TABLE}"
    ):
        key = key_of(timestamp, EPOCH, index)
        if key is not None and time_range.holds(key) and sensor_type in (None, found_type):
            keys.append(key)
    return [key.entry_index for key in sorted(keys)]


class RangeTests(SynchronousTestCase):
    """
    A range's readings, oldest first, from every spelling.
    """

    def test_half_open(self) -> None:
        """
        since is inclusive and until exclusive, to the microsecond, with
        trailing zeros or none.
        """
        conn = table()
        insert(conn, [
            "2026-11-28 09:59:59.999999",
            "2026-11-28 10:00:00",
            "2026-11-28 10:00:00.000000",
            "2026-11-28 10:30:00.5",
            "2026-11-28 10:59:59.999999",
            "2026-11-28 11:00:00",
            "2026-11-28 11:00:00.000001",
        ])
        hour = TimeRange(BASE, BASE + timedelta(hours=1))
        self.assertEqual([r.entry_index for r in read(conn, hour, 100).records], [2, 3, 4, 5])

    def test_offsets(self) -> None:
        """
        A timestamp with an offset is in a range by its instant; one
        without is UTC; a "T" separator changes nothing. One instant
        written two ways comes in the order of the text.
        """
        conn = table()
        insert(conn, [
            "2026-11-28T12:15:00+02:00",  # 10:15Z
            "2026-11-28 10:20:00+02:00",  # 08:20Z: out
            "2026-11-28T04:55:00.25-0530",  # 10:25:00.25Z
            "2026-11-28T10:10:00Z",
            "2026-11-28T10:05:00",
            "2026-11-29 00:30:00+14:00",  # 10:30Z
            "2026-11-27 23:00:00-11:45",  # 10:45Z
            "2026-11-28 11:30:00+01",  # 10:30Z
        ])
        hour = TimeRange(BASE, BASE + timedelta(hours=1))
        page = read(conn, hour, 100)
        self.assertEqual([r.entry_index for r in page.records], [5, 4, 1, 3, 8, 6, 7])
        self.assertIsNone(page.next)

    def test_outside_grammar(self) -> None:
        """
        A timestamp outside the grammar is in no range, even where its
        text sorts inside one.
        """
        conn = table()
        insert(conn, ["2026-11-28 10:30:00 or so", "2026-11-28 10:30", "2026-11-28 10:31:00"])
        page = read(conn, TimeRange(BASE, BASE + timedelta(hours=1)), 1)
        self.assertEqual([r.entry_index for r in page.records], [3])
        self.assertIsNone(page.next)

    def test_type(self) -> None:
        """
        A type filter keeps to that sensor type.
        """
        conn = table()
        insert(conn, [spell(BASE + timedelta(minutes=n), " ", 6, "") for n in range(6)],
               ["Humidity", "Temperature"] * 3)
        hour = TimeRange(BASE, BASE + timedelta(hours=1))
        self.assertEqual(page_through(conn, hour, 2, "Humidity"), [1, 3, 5])

    def test_shared_timestamp(self) -> None:
        """
        Paging by the next token returns every reading once, in order, when
        hundreds share one timestamp, spelled every way.
        """
        conn = table()
        stamps = []
        for n in range(600):
            instant = BASE + timedelta(seconds=n // 200)
            suffix = list(SUFFIXES)[n % len(SUFFIXES)]
            stamps.append(spell(instant, " T"[n % 2], n % 7, suffix))
        insert(conn, stamps)
        hour = TimeRange(BASE, BASE + timedelta(hours=1))
        for limit in (1, 7, 100, 599, 600, 601):
            got = page_through(conn, hour, limit)
            self.assertEqual(got, expected(conn, hour), limit)
            self.assertEqual(sorted(got), list(range(1, 601)))

    def test_many_blocks_and_minutes(self) -> None:
        """
        Thousands of readings over minutes, their instants out of order
        within seconds of each other and some far out (a clock at 1970, a
        day ahead), in blocks that cross minutes: every page of every range
        is the range's readings in order.
        """
        conn = table()
        rng = random.Random(6)
        stamps = []
        for n in range(3000):
            instant = BASE + timedelta(milliseconds=100 * n + rng.randrange(-3000, 3000))
            if n % 97 == 0:
                instant = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=n)
            elif n % 89 == 0:
                instant += timedelta(days=1)
            stamps.append(spell(instant, " T"[n % 2], 6 - n % 4, sorted(SUFFIXES)[n % 5]))
        insert(conn, stamps)
        ranges = [
            TimeRange(BASE + timedelta(seconds=30), BASE + timedelta(seconds=150)),
            TimeRange(BASE + timedelta(seconds=299)),
            TimeRange(None, BASE),
            TimeRange(),
        ]
        for time_range in ranges:
            for limit in (7, 250, 5000):
                got = page_through(conn, time_range, limit)
                self.assertEqual(got, expected(conn, time_range), (time_range, limit))
        self.assertEqual(len(page_through(conn, TimeRange(), 1000)), 3000)

    def test_reads_only_its_blocks(self) -> None:
        """
        A range of one minute reads the rows of the blocks that minute's
        readings are in, by key, and the entries by their key: not the
        table, though a sensor with a clock at 1970 wrote among them all
        along.
        """
        conn = table()
        stamps = []
        for n in range(6000):
            instant = BASE + timedelta(milliseconds=100 * n)
            if n % 10 == 0:
                instant = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=n // 10)
            stamps.append(spell(instant, " ", 6, ""))
        insert(conn, stamps)
        seen = []

        class Recording:
            def execute(self, sql, params=()):
                rows = conn.execute(sql, params).fetchall()
                seen.append((sql, params, len(rows)))
                return Rows(rows)

        class Rows(list):
            def fetchone(self):
                return self[0] if self else None

        minute = TimeRange(BASE + timedelta(minutes=3), BASE + timedelta(minutes=4))
        page = read_range(Recording(), "main", NODE_ID, None, minute, 1000)
        conn.commit()
        self.assertEqual([r.entry_index for r in page.records], expected(conn, minute))
        self.assertEqual(len(page.records), 540)
        rows_read = sum(count for sql, _, count in seen if f"FROM main.{ROWS}" in sql)
        # 600 readings in that minute, 540 of them on time: about five
        # blocks of 128, and the block each end shares with the next minute.
        self.assertLessEqual(rows_read, 7 * 128)
        for sql, params, _ in seen:
            if sql.startswith("SELECT"):
                plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
                self.assertNotIn("SCAN", plan, sql)
                self.assertNotIn("TEMP B-TREE", plan, sql)

    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 40),
                st.sampled_from(" T"),
                st.integers(0, 6),
                st.sampled_from(sorted(SUFFIXES)),
                st.sampled_from(["Humidity", "Temperature"]),
            ),
            max_size=60,
        ),
        st.one_of(st.none(), st.integers(0, 40)),
        st.one_of(st.none(), st.integers(0, 40)),
        st.integers(1, 8),
        st.sampled_from([None, "Humidity"]),
    )
    def test_pages_are_the_range(self, readings, since, until, limit, sensor_type) -> None:
        """
        For any readings, spellings and bounds, the pages together are the
        range's readings in order, each once.
        """
        if since is not None and until is not None and since > until:
            since, until = until, since
        conn = table()
        # Instants 250 ms apart, so that a fraction's digits matter.
        stamp = lambda n: BASE + timedelta(milliseconds=250 * n)
        insert(conn, [spell(stamp(n), sep, digits, suffix) for n, sep, digits, suffix, _ in readings],
               [t for *_, t in readings])
        time_range = TimeRange(
            None if since is None else stamp(since), None if until is None else stamp(until)
        )
        self.assertEqual(page_through(conn, time_range, limit, sensor_type), expected(conn, time_range, sensor_type))
