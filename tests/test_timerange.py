"""
Tests for p2pstore.timerange: the bounds users type, the instant a stored
timestamp stands for, the paging token, and the instants of the block
index (p2pstore.timeblocks).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from p2pstore import timeblocks
from p2pstore.timerange import (
    BadRange,
    Key,
    TimeRange,
    decode_after,
    encode_after,
    instant_of,
    parse_bound,
    time_range,
)

EPOCH = "0123456789abcdef0123456789abcdef"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


class ParseBoundTests(SynchronousTestCase):
    """
    C{since} and C{until} as users type them.
    """

    def test_forms(self) -> None:
        """
        A date, a time to the minute, a time with microseconds and a space,
        with or without an offset: each is one instant; none is UTC.
        """
        cases = {
            "2026-11-28": utc(2026, 11, 28),
            "2026-11-28T10:00": utc(2026, 11, 28, 10),
            "2026-11-28 10:00:00.123456": utc(2026, 11, 28, 10, 0, 0, 123456),
            "2026-11-28T10:00:00Z": utc(2026, 11, 28, 10),
            "2026-11-28T12:00:00+02:00": utc(2026, 11, 28, 10),
            "2026-11-28T05:30-04:30": utc(2026, 11, 28, 10),
            " 2026-11-28T10:00 ": utc(2026, 11, 28, 10),
        }
        for text, expected in cases.items():
            self.assertEqual(parse_bound("since", text), expected, text)

    def test_unescaped_plus(self) -> None:
        """
        A "+" left unescaped in a URL arrives as a space: an offset after a
        time is still read as one.
        """
        self.assertEqual(parse_bound("until", "2026-11-28T12:00:00 02:00"), utc(2026, 11, 28, 10))
        self.assertEqual(parse_bound("until", "2026-11-28 12:00:00.5 02"), utc(2026, 11, 28, 10, 0, 0, 500000))

    def test_bad(self) -> None:
        """
        Anything else names the parameter, gives an example and repeats
        the value.
        """
        for text in ["yesterday", "", "2026-13-01", "2026-11-28T25:00", "１２", "2026-11-28" + "0" * 40]:
            with self.assertRaises(BadRange) as caught:
                parse_bound("since", text)
            message = str(caught.exception)
            self.assertTrue(message.startswith("since must be ISO-8601, e.g. 2026-11-28T10:00:00Z"), message)
            self.assertIn(repr(text), message)

    def test_order(self) -> None:
        """
        since after until is refused, saying which is inclusive; since
        equal to until is an empty range, not an error.
        """
        with self.assertRaises(BadRange) as caught:
            time_range("2026-11-29", "2026-11-28", None)
        self.assertIn("since is inclusive, until exclusive", str(caught.exception))
        self.assertEqual(time_range("2026-11-28", "2026-11-28", None).since, utc(2026, 11, 28))

    def test_none(self) -> None:
        """
        Without since, until or after there is no range (newest first).
        """
        self.assertIsNone(time_range(None, None, None))


class InstantTests(SynchronousTestCase):
    """
    The instant of a stored timestamp.
    """

    def test_spellings(self) -> None:
        """
        Every spelling the sensor line grammar allows is its instant, UTC
        when without an offset.
        """
        for text in [
            "2026-11-28 10:00:00",
            "2026-11-28T10:00:00.000",
            "2026-11-28 10:00:00Z",
            "2026-11-28T11:00:00+01",
            "2026-11-28 11:00:00+0100",
            "2026-11-28T09:00:00.000000-01:00",
        ]:
            self.assertEqual(instant_of(text), utc(2026, 11, 28, 10), text)

    def test_outside_grammar(self) -> None:
        """
        A timestamp outside the grammar (a peer's record may hold any
        text) is in no range.
        """
        for text in ["yesterday", "2026-11-28", "2026-11-28 10:00", "2026-13-28 10:00:00", ""]:
            self.assertIsNone(instant_of(text), text)


class AfterTokenTests(SynchronousTestCase):
    """
    The ``after`` token that pages through a range.
    """

    def test_round_trip(self) -> None:
        """
        A token is URL-safe and gives back the key it was made from.
        """
        key = Key(utc(2026, 11, 28, 10), "2026-11-28T12:00:00+02:00", EPOCH, 7)
        token = encode_after(key)
        self.assertRegex(token, r"\A[A-Za-z0-9_-]+\Z")
        self.assertEqual(decode_after(token), key)

    def test_bad(self) -> None:
        """
        Anything that is not such a token is refused.
        """
        good = encode_after(Key(utc(2026, 11, 28), "2026-11-28 00:00:00", EPOCH, 1))
        for token in ["", "x", good[:-3], good + "!", encode_after(Key(utc(2026, 11, 28), "x", EPOCH, 1))]:
            with self.assertRaises(BadRange) as caught:
                decode_after(token)
            self.assertEqual(str(caught.exception), "after must be the 'next' token of an earlier answer")


class BlockTimeTests(SynchronousTestCase):
    """
    The instants of p2pstore.timeblocks: microseconds since 1970 UTC, the
    minute an instant falls in, and the entries rows make.
    """

    def test_micros(self) -> None:
        """
        An offset counts; before 1970 the minute is still the one the
        instant falls in; past the calendar's end there is no instant.
        """
        self.assertEqual(timeblocks.micros_of("1970-01-01T01:00:00.000001+01:00"), 1)
        self.assertEqual(timeblocks.micros_of("1969-12-31 23:59:59.5") // timeblocks.MINUTE, -1)
        self.assertIsNone(timeblocks.micros_of("2026-11-28 10:30"))
        self.assertIsNone(timeblocks.micros_of(None))
        last = timeblocks.micros(utc(9999, 12, 31, 23, 59))
        self.assertEqual(timeblocks.instant_at(last), utc(9999, 12, 31, 23, 59))
        self.assertIsNone(timeblocks.instant_at(last + 2 * timeblocks.MINUTE))

    def test_entries(self) -> None:
        """
        Rows make one entry per minute and block of 128 keys, from the
        earliest instant to the latest; a time outside the grammar none.
        """
        found = timeblocks.entries([
            (1, "1970-01-01 00:00:10"),
            (127, "1970-01-01 00:00:05"),
            (128, "1970-01-01 00:00:20"),
            (129, "1970-01-01 00:01:00Z"),
            (130, "soon"),
        ])
        self.assertEqual(
            found,
            {(0, 0): [5_000_000, 10_000_000], (0, 1): [20_000_000] * 2, (1, 1): [60_000_000] * 2},
        )


