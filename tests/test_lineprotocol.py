"""
Tests for p2pstore.lineprotocol: readings as InfluxDB line protocol points.
What real InfluxDB and VictoriaMetrics make of them is in
tests/test_export_nodes.py.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pstore import lineprotocol
from p2pstore.lineprotocol import BadTimestamp, lines, nanoseconds, point

ORIGIN = "0123456789abcdef0123456789abcdef"


def entry(index=1, sensor_type="Temperature", data="39C", timestamp="2026-11-28 10:00:00.123456"):
    return (index, 1, sensor_type, data, timestamp, None, "0" * 64)


class PointTests(SynchronousTestCase):
    def test_seed_reading(self) -> None:
        """
        A numeric reading is a float field ``value`` with its unit as a tag,
        at its timestamp (UTC) in nanoseconds plus the entry index below
        the microsecond.
        """
        self.assertEqual(
            point(ORIGIN, entry(7)),
            f"Temperature,origin={ORIGIN},unit=C value=39.0 1795860000123456007",
        )

    def test_text_reading(self) -> None:
        """
        A reading that does not start with a number is a string field
        ``data``, without a unit tag; quotes and backslashes are escaped.
        """
        self.assertEqual(
            point(ORIGIN, entry(1, "Door", 'open "wide" \\o/')),
            f'Door,origin={ORIGIN} data="open \\"wide\\" \\\\o/" 1795860000123456001',
        )

    def test_escaped_names(self) -> None:
        """
        Spaces and commas in a measurement, and equals signs in a tag, are
        escaped; a measurement starting with "#" is not read as a comment.
        """
        self.assertTrue(point(ORIGIN, entry(1, "Atm. Pressure", "1.5 atm")).startswith(
            f"Atm.\\ Pressure,origin={ORIGIN},unit=atm value=1.5 "
        ))
        self.assertTrue(point(ORIGIN, entry(1, "a,b", "2 x=y,z")).startswith(
            f"a\\,b,origin={ORIGIN},unit=x\\=y\\,z value=2.0 "
        ))
        self.assertTrue(point(ORIGIN, entry(1, "#1", "3")).startswith("\\#1,origin="))

    def test_backslashes(self) -> None:
        """
        A backslash in a name is doubled only where it would escape what
        follows it (InfluxDB 1.x keeps any other doubled backslash as two);
        in a string field always.
        """
        self.assertEqual(lineprotocol.measurement("Back\\slash"), "Back\\slash")
        self.assertEqual(lineprotocol.measurement("a\\ b"), "a\\\\\\ b")
        self.assertEqual(lineprotocol.measurement("end\\"), "end\\\\")
        self.assertEqual(lineprotocol.tag("m\\=s"), "m\\\\\\=s")
        self.assertEqual(lineprotocol.string_field("a\\b"), '"a\\\\b"')

    def test_utf8(self) -> None:
        """
        Any UTF-8 goes through as it is.
        """
        line = point(ORIGIN, entry(1, "Températur€", "21 °C"))
        self.assertIn("Températur€,", line)
        self.assertIn("unit=°C", line)


class TimeTests(SynchronousTestCase):
    def test_offset(self) -> None:
        """
        A timestamp with an offset is that instant; without one it is UTC.
        """
        utc = nanoseconds("2026-11-28 10:00:00", 0)
        self.assertEqual(nanoseconds("2026-11-28T12:00:00+02:00", 0), utc)
        self.assertEqual(nanoseconds("2026-11-28T10:00:00Z", 0), utc)
        self.assertEqual(utc, 1795860000 * 10**9)

    def test_room_below_the_precision(self) -> None:
        """
        The entry index fills the digits below the timestamp's own
        precision: a reading stamped to the second stays in that second,
        one stamped to the microsecond in that microsecond.
        """
        base = 1795860000 * 10**9
        self.assertEqual(nanoseconds("2026-11-28 10:00:00", 1234567), base + 1234567)
        self.assertEqual(nanoseconds("2026-11-28 10:00:00.5", 1234567), base + 500_000_000 + 1234567)
        self.assertEqual(nanoseconds("2026-11-28 10:00:00.000001", 1234567), base + 1000 + 567)

    @given(st.integers(1, 10**12), st.integers(1, 999))
    def test_same_timestamp_distinct(self, index: int, step: int) -> None:
        """
        Two readings of one type with the same timestamp, less than 1,000
        entries apart, are two points; the same reading is the same point.
        """
        stamp = "2026-11-28 10:00:00.123456"
        self.assertNotEqual(nanoseconds(stamp, index), nanoseconds(stamp, index + step))
        self.assertEqual(point(ORIGIN, entry(index)), point(ORIGIN, entry(index)))

    @given(
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
        st.sampled_from([" ", "T"]),
        st.integers(0, 6),
        st.sampled_from(["", "Z", "+02:00", "-0530", "+01", "-00:00"]),
        st.integers(1, 10**9),
    )
    def test_fast_path_agrees(self, when, separator, digits, offset, index) -> None:
        """
        The cached path for sensor line timestamps gives what datetime
        alone gives, for every precision and offset the grammar allows.
        """
        stamp = when.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
        if digits:
            stamp += "." + f"{when.microsecond:06d}"[:digits]
        stamp += offset
        self.assertEqual(nanoseconds(stamp, index), lineprotocol._slow(stamp, index))

    def test_bad_timestamp(self) -> None:
        """
        A timestamp that is not ISO-8601 is refused with its text.
        """
        for bad in ("yesterday", "2026-13-45 10:00:00"):
            with self.assertRaises(BadTimestamp) as caught:
                nanoseconds(bad, 1)
            self.assertIn(bad, str(caught.exception))


class LinesTests(SynchronousTestCase):
    def test_limit(self) -> None:
        """
        A body holds whole lines up to the limit, at least one.
        """
        entries = [entry(n) for n in range(1, 11)]
        one = len(point(ORIGIN, entries[0])) + 1
        body, count, bad = lines(ORIGIN, entries, one * 3 + 1)
        self.assertEqual((count, bad), (3, None))
        self.assertEqual(body.count(b"\n"), 3)
        body, count, _ = lines(ORIGIN, entries, 1)
        self.assertEqual(count, 1)

    def test_stops_at_bad_timestamp(self) -> None:
        """
        The body ends before a record that cannot be a point, and says which.
        """
        entries = [entry(1), entry(2), entry(3, timestamp="not a time"), entry(4)]
        body, count, bad = lines(ORIGIN, entries, 10**6)
        self.assertEqual(count, 2)
        self.assertEqual(bad, entries[2])
        self.assertEqual(lineprotocol.lines(ORIGIN, entries[2:], 10**6)[1:], (0, entries[2]))
