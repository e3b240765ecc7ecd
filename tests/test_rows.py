"""
Tests for p2pstore.rows: OwnRows numbering and signing this node's own
readings (its guesses, and the corrections inside the commit), Appended,
reading_ids and continues.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.lines import Reading
from p2pstore.records import BadRecord, CHECKSUM, ENTRY_INDEX, READING_ID, Record
from p2pstore.rows import Appended, OwnRows, continues, reading_ids
from p2pstore.schema import EPOCH, ROW_COLUMNS, SENSOR_NAME, sensor_name_of

from .fakes import EPOCH as LOG_EPOCH, NODE_ID, SIGNER


def readings(count: int, first: int = 1, ids: bool = True) -> list[Reading]:
    return [
        Reading("Temperature", f"{n}C", f"2020-04-20 23:20:{n % 60:02d}.000001", f"r{n}" if ids else None)
        for n in range(first, first + count)
    ]


def record_of(row: tuple) -> Record:
    """
    The record a stored row is, as the store reads it back.
    """
    return Record(NODE_ID, row[EPOCH], *row[: CHECKSUM + 1])


class OwnRowsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.rows = OwnRows(NODE_ID, SIGNER)

    def assertSigned(self, rows: list) -> None:
        for row in rows:
            # A row without a sensor name ends before it.
            width = len(ROW_COLUMNS) if sensor_name_of(row) is not None else SENSOR_NAME
            self.assertEqual(len(row), width)
            self.assertEqual(row[EPOCH], LOG_EPOCH)
            SIGNER.verify(record_of(row))


class NumberTests(OwnRowsTestCase):
    """
    number() hands out the indexes the readings will have if every reading
    before them is stored.
    """

    def test_consecutive(self) -> None:
        """
        Indexes run on from the log's end across calls, each row signed.
        """
        self.rows.opened(LOG_EPOCH, 10, 0)
        first = self.rows.number(readings(3), 4)
        second = self.rows.number(readings(2, 4), 5)
        self.assertEqual([r[ENTRY_INDEX] for r in first + second], [11, 12, 13, 14, 15])
        self.assertEqual([r[1] for r in first + second], [4, 4, 4, 5, 5])
        self.assertSigned(first + second)

    def test_opened_with_waiting(self) -> None:
        """
        Readings waiting when the store opened are counted before those
        numbered after.
        """
        self.rows.opened(LOG_EPOCH, 5, 2)
        self.assertEqual(self.rows.number(readings(1), 1)[0][ENTRY_INDEX], 8)

    def test_failed(self) -> None:
        """
        After a failed commit the waiting readings take its numbers: the
        next reading comes after them, from the log's end.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        self.rows.number(readings(3), 1)  # the commit that fails
        self.rows.number(readings(2, 4), 1)  # waiting behind it
        self.rows.failed(2)
        self.assertEqual(self.rows.number(readings(1, 6), 1)[0][ENTRY_INDEX], 3)

    def test_committed(self) -> None:
        """
        After a commit ended the log at last_index, numbering goes on after
        it and the waiting readings.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        self.rows.number(readings(3), 1)
        self.rows.committed(7, 1)
        self.assertEqual(self.rows.number(readings(1), 1)[0][ENTRY_INDEX], 9)


class BatchTests(OwnRowsTestCase):
    """
    batch() numbers again only the parts numbered on a wrong guess.
    """

    def test_guesses_held(self) -> None:
        """
        Parts numbered where the log ends are kept as they are: the same
        row tuples, not signed again.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        a = self.rows.number(readings(2), 1)
        b = self.rows.number(readings(3, 3), 2)
        batch = self.rows.batch([(readings(2), 1, None, a), (readings(3, 3), 2, None, b)])
        self.assertEqual(len(batch), 5)
        for got, expected in zip(batch, a + b):
            self.assertIs(got, expected)

    def test_wrong_guess(self) -> None:
        """
        A part numbered on another guess, or not numbered at all, is
        numbered again from where the part before it ends; parts whose
        guess held keep their rows.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        a = self.rows.prepare(readings(2), 1, 1)  # 1-2, right
        c = self.rows.prepare(readings(1, 5), 3, 3)  # guessed 3, is 5
        d = self.rows.prepare(readings(1, 6), 4, 6)  # 6, right again
        parts = [
            (readings(2), 1, None, a), (readings(2, 3), 2, None, None),
            (readings(1, 5), 3, None, c), (readings(1, 6), 4, None, d),
        ]
        batch = self.rows.batch(parts)
        self.assertEqual([r[ENTRY_INDEX] for r in batch], [1, 2, 3, 4, 5, 6])
        self.assertIs(batch[0], a[0])
        self.assertIs(batch[1], a[1])
        self.assertIsNot(batch[4], c[0])
        self.assertIs(batch[5], d[0])
        self.assertEqual([r[1] for r in batch], [1, 1, 2, 2, 3, 4])
        self.assertEqual([r[READING_ID] for r in batch], ["r1", "r2", "r3", "r4", "r5", "r6"])
        self.assertSigned(batch)

    def test_after_a_short_commit(self) -> None:
        """
        When a commit stored fewer rows than numbered (a resent reading was
        answered with its stored index), the rows numbered after it are
        numbered again to continue the log.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        self.rows.number(readings(2), 1)
        waiting = self.rows.number(readings(3, 3), 1)
        self.rows.committed(1, 3)
        batch = self.rows.batch([(readings(3, 3), 1, None, waiting)])
        self.assertEqual([r[ENTRY_INDEX] for r in batch], [2, 3, 4])
        self.assertSigned(batch)
        # The old signature does not hold at the new position.
        self.assertRaises(
            BadRecord, SIGNER.verify, Record(NODE_ID, LOG_EPOCH, 2, *waiting[0][1 : CHECKSUM + 1])
        )


class SensorNameTests(OwnRowsTestCase):
    """
    The name a sensor authenticated with goes into each of its rows, kept
    when they are numbered again, and is not signed.
    """

    def test_named_rows(self) -> None:
        """
        number() puts the name in every row of the readings; without one
        the rows end before it, as before names existed (no more to bind
        on the hot path); the checksum is the same either way.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        named = self.rows.number(readings(2), 1, "boiler")
        self.assertEqual([r[SENSOR_NAME] for r in named], ["boiler", "boiler"])
        self.assertSigned(named)
        plain = self.rows.prepare(readings(2), 1, 1)
        self.assertEqual([sensor_name_of(r) for r in plain], [None, None])
        self.assertEqual([len(r) for r in plain], [SENSOR_NAME, SENSOR_NAME])
        self.assertEqual(plain, [r[:SENSOR_NAME] for r in named])

    def test_renumbered_keep_names(self) -> None:
        """
        Parts numbered again by batch() and rows numbered again by
        renumber() keep their sensor's name.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        guessed = self.rows.prepare(readings(2), 1, 5, "boiler")
        batch = self.rows.batch([(readings(2), 1, "boiler", guessed), (readings(1, 3), 2, "attic", None)])
        self.assertEqual([r[ENTRY_INDEX] for r in batch], [1, 2, 3])
        self.assertEqual([r[SENSOR_NAME] for r in batch], ["boiler", "boiler", "attic"])
        indexes, fresh = self.rows.renumber(batch, 7, {})
        self.assertEqual(indexes, [8, 9, 10])
        self.assertEqual([r[SENSOR_NAME] for r in fresh], ["boiler", "boiler", "attic"])
        self.assertSigned(fresh)


class RenumberTests(OwnRowsTestCase):
    """
    renumber(), inside the commit, answers resent readings with their
    stored index and numbers the rest on from the log's end.
    """

    def test_renumber(self) -> None:
        """
        A stored reading_id is answered with its stored index and not
        stored; an id repeated in the batch is stored once and answered with
        that index; the rest are numbered on from ``last`` and signed again,
        each checksum verifying.
        """
        self.rows.opened(LOG_EPOCH, 0, 0)
        batch = self.rows.prepare(
            [Reading("T", "1C", "t1", "old"), Reading("T", "2C", "t2", "a"),
             Reading("T", "3C", "t3", "a"), Reading("T", "4C", "t4", None),
             Reading("T", "5C", "t5", "b")],
            2, 1,
        )
        known = {"old": 4}
        indexes, fresh = self.rows.renumber(batch, 10, known)
        self.assertEqual(indexes, [4, 11, 11, 12, 13])
        self.assertEqual([r[ENTRY_INDEX] for r in fresh], [11, 12, 13])
        self.assertEqual([r[READING_ID] for r in fresh], ["a", None, "b"])
        self.assertEqual([r[3] for r in fresh], ["2C", "4C", "5C"])
        self.assertSigned(fresh)
        self.assertEqual(known, {"old": 4, "a": 11, "b": 13})

    def test_numbers_held(self) -> None:
        """
        Rows already numbered where they belong are kept as they are.
        """
        self.rows.opened(LOG_EPOCH, 3, 0)
        batch = self.rows.number(readings(3), 1)
        indexes, fresh = self.rows.renumber(batch, 3, {})
        self.assertEqual(indexes, [4, 5, 6])
        for got, expected in zip(fresh, batch):
            self.assertIs(got, expected)


class HelperTests(SynchronousTestCase):
    """
    Appended, reading_ids and continues.
    """

    def setUp(self) -> None:
        self.rows = OwnRows(NODE_ID, SIGNER, LOG_EPOCH)

    def test_entries(self) -> None:
        """
        Appended.entries() are the rows' RECORDS entries: their first seven
        fields, ending with the checksum.
        """
        rows = self.rows.prepare(readings(2), 1, 1)
        appended = Appended(origin=NODE_ID, indexes=[1, 2], rows=rows, last_index=2)
        entries = appended.entries()
        self.assertEqual(entries, [row[:7] for row in rows])
        self.assertEqual([e[CHECKSUM] for e in entries], [r[CHECKSUM] for r in rows])
        for entry in entries:
            SIGNER.verify(Record(NODE_ID, LOG_EPOCH, *entry))

    def test_reading_ids(self) -> None:
        """
        reading_ids() lists the ids rows carry, in order, repeats included,
        without the rows that have none.
        """
        rows = self.rows.prepare(
            [Reading("T", "1C", "t", "x"), Reading("T", "1C", "t", None), Reading("T", "1C", "t", "x"),
             Reading("T", "1C", "t", "y")], 0, 1,
        )
        self.assertEqual(reading_ids(rows), ["x", "x", "y"])
        self.assertEqual(reading_ids([]), [])

    def test_continues(self) -> None:
        """
        Rows continue a log when the first is numbered right after its end;
        no rows continue any log.
        """
        rows = self.rows.prepare(readings(2), 1, 5)
        self.assertTrue(continues(rows, 4))
        self.assertFalse(continues(rows, 3))
        self.assertFalse(continues(rows, 5))
        self.assertTrue(continues([], 17))
