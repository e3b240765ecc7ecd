"""
Tests for the sensor protocol and the group-commit queue behind it, with a
StringTransport, a task.Clock and an in-memory store whose commits the test
fires by hand.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.ingest import UNSAVED_RETRY_INTERVAL, Ingestor
from p2pstore.lines import Reading, Rejected, format_utc
from p2pstore.records import Record
from p2pstore.sensor import SensorFactory, SensorProtocol
from p2pstore.storage import Appended, Opened

NODE_ID = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
# A Clock starting here makes the node's own timestamps look like the seed's.
START = 1587424818.231325
MAX_LINE = 64

GOOD = b"Temperature,39C,2020-04-20 23:20:18.231325"


def opened(last_sensor_index: int = 0) -> Opened:
    return Opened(epoch=EPOCH, count=0, last_index=0, last_sensor_index=last_sensor_index, rejected=0)


@define
class Append:
    """
    One call of L{FakeStore.append}, waiting for the test to fire it.
    """

    rows: list[tuple]
    rejected: list[Rejected]
    last_sensor_index: int
    deferred: Deferred

    @property
    def readings(self) -> list[tuple[Reading, int]]:
        """
        The readings of the rows, each with its sensor_index.
        """
        return [(Reading(row[2], row[3], row[4], row[7]), row[1]) for row in self.rows]


@define
class FakeStore:
    """
    An in-memory store with L{p2pstore.storage.Store}'s contract for
    C{prepare} and C{append}: each append returns a Deferred that fires with
    L{Appended} once "committed", which here is whenever the test calls
    L{commit}; the rows' numbers are checked then, as the real store does.
    """

    path: str = "memory"
    calls: list[Append] = field(factory=list)
    rows: list[Record] = field(factory=list)
    rejected: list[Rejected] = field(factory=list)
    by_reading_id: dict = field(factory=dict)
    # Batches whose numbers did not continue the log when committed.
    renumbered: int = 0

    def prepare(self, readings, sensor_index: int, first_index: int) -> list:
        return [
            (index, sensor_index, r.sensor_type, r.sensor_data, r.timestamp, None, None, r.reading_id, "", EPOCH)
            for index, r in enumerate(readings, first_index)
        ]

    def append(self, rows, rejected, last_sensor_index) -> Deferred:
        d = Deferred()
        self.calls.append(Append(list(rows), list(rejected), last_sensor_index, d))
        return d

    @property
    def waiting(self) -> list[Append]:
        return [call for call in self.calls if not call.deferred.called]

    def commit(self) -> Appended:
        """
        Commit the oldest append still waiting.
        """
        call = self.waiting[0]
        if call.rows and call.rows[0][0] != len(self.rows) + 1:
            self.renumbered += 1
        indexes, added = [], []
        for reading, sensor_index in call.readings:
            if reading.reading_id in self.by_reading_id:
                indexes.append(self.by_reading_id[reading.reading_id])
                continue
            record = Record(
                origin=NODE_ID,
                epoch=EPOCH,
                entry_index=len(self.rows) + 1,
                sensor_index=sensor_index,
                sensor_type=reading.sensor_type,
                sensor_data=reading.sensor_data,
                timestamp=reading.timestamp,
                reading_id=reading.reading_id,
            )
            self.rows.append(record)
            added.append(
                (record.entry_index, sensor_index, *reading[:3], None, None, reading.reading_id, "", EPOCH)
            )
            indexes.append(record.entry_index)
            if reading.reading_id is not None:
                self.by_reading_id[reading.reading_id] = record.entry_index
        self.rejected.extend(call.rejected)
        appended = Appended(origin=NODE_ID, indexes=indexes, rows=added, last_index=len(self.rows))
        call.deferred.callback(appended)
        return appended

    def fail(self, exception: Exception) -> None:
        """
        Fail the oldest append still waiting, as a full disk would.
        """
        self.waiting[0].deferred.errback(exception)


class SensorTestCase(SynchronousTestCase):
    """
    An opened ingestor over a L{FakeStore}, and sensors connected to it.
    """

    max_line = MAX_LINE
    ingestor_options: dict = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FakeStore()
        self.ingestor = Ingestor(self.store, self.clock, **self.ingestor_options)
        self.factory = SensorFactory(self.ingestor, self.max_line, self.now)

    def now(self) -> str:
        return format_utc(self.clock.seconds())

    def open_store(self, last_sensor_index: int = 0) -> None:
        self.ingestor.opened(opened(last_sensor_index))

    def connect(self) -> tuple[SensorProtocol, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def turn(self) -> None:
        """
        End the reactor turn: the ingestor starts its commit.
        """
        self.clock.advance(0)

    def commit_all(self) -> None:
        """
        Commit every batch until nothing is left to store.
        """
        self.turn()
        while self.store.waiting:
            self.store.commit()
            self.turn()

    def answers(self, transport: StringTransport) -> list[bytes]:
        data = transport.value()
        self.assertTrue(data == b"" or data.endswith(b"\n"), data)
        return data.splitlines()

    def assertStillServing(self, transport: StringTransport) -> None:
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")


class OpenedTestCase(SensorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.open_store()
        self.protocol, self.transport = self.connect()


class AnswerTests(OpenedTestCase):
    """
    Accepted lines are answered C{OK <entry_index>} once committed, in the
    order of the lines.
    """

    def test_answered_only_after_commit(self) -> None:
        """
        A sensor is told C{OK} only once its reading is committed: nothing
        is written before the store's Deferred fires.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(len(self.store.calls), 1)
        self.assertEqual(self.transport.value(), b"")
        self.store.commit()
        self.assertEqual(self.answers(self.transport), [b"OK 1"])
        self.assertStillServing(self.transport)

    def test_reading_fields(self) -> None:
        """
        The store receives the fields exactly as sent (stripped of
        surrounding spaces), with the sensor_index of the connection; a
        line without a timestamp gets the node's UTC time; a fourth field
        is the reading_id; a C{T} separator and an offset are accepted.
        """
        self.protocol.dataReceived(
            b" Temperature , 39C , 2020-04-20 23:20:18.231325 \n"
            b"Humidity,15% RH\n"
            b"Atm. Pressure,1.798 atm,2020-04-20T23:20:18+02:00,sim-1\n"
        )
        self.turn()
        (call,) = self.store.calls
        self.assertEqual(
            call.readings,
            [
                (Reading("Temperature", "39C", "2020-04-20 23:20:18.231325"), 1),
                (Reading("Humidity", "15% RH", "2020-04-20 23:20:18.231325"), 1),
                (Reading("Atm. Pressure", "1.798 atm", "2020-04-20T23:20:18+02:00", "sim-1"), 1),
            ],
        )

    def test_pipelined_in_order(self) -> None:
        """
        Many lines may be in flight on one connection; the answers come back
        in the order of the lines, and a rejected line between accepted ones
        waits for the accepted line before it.
        """
        lines, expected = [], []
        index = 0
        for n in range(100):
            if n % 7 == 3:
                lines.append(b"Temperature,39C,not a time")
                expected.append(b"ERR bad timestamp")
            else:
                lines.append(b"Temperature,%dC,2020-04-20 23:20:18" % (n,))
                index += 1
                expected.append(b"OK %d" % (index,))
        self.protocol.dataReceived(b"".join(line + b"\n" for line in lines))
        self.turn()
        self.assertEqual(self.transport.value(), b"")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), expected)

    def test_rejected_line_waits_for_earlier_accepted(self) -> None:
        """
        A rejected line is not answered ahead of an accepted line sent
        before it, but one with nothing before it is answered at once.
        """
        self.protocol.dataReceived(b"garbage\n")
        self.assertEqual(self.answers(self.transport), [b"ERR missing value"])
        self.transport.clear()
        self.protocol.dataReceived(GOOD + b"\ngarbage\n")
        self.assertEqual(self.transport.value(), b"")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"ERR missing value"])

    def test_answers_across_batches_in_order(self) -> None:
        """
        Lines that arrive while a batch commits are answered after that
        batch, in the order they were sent.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(b"x\n" + GOOD + b"\n")
        self.turn()
        self.assertEqual(self.transport.value(), b"")
        self.store.commit()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"ERR missing value"])
        self.turn()
        self.store.commit()
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR missing value", b"OK 2"]
        )

    def test_group_commit(self) -> None:
        """
        The lines of one read, and those of other connections in the same
        reactor turn, share one transaction; lines arriving while it
        commits go into the next one.
        """
        other, other_transport = self.connect()
        self.protocol.dataReceived(b"".join(GOOD + b"\n" for _ in range(50)))
        other.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.turn()
        self.assertEqual(len(self.store.calls), 1)
        self.assertEqual(len(self.store.calls[0].readings), 52)

        self.protocol.dataReceived(GOOD + b"\n")
        other.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(len(self.store.calls), 1, "one transaction at a time")
        self.store.commit()
        self.turn()
        self.assertEqual(len(self.store.calls), 2)
        self.assertEqual(len(self.store.calls[1].readings), 2)
        self.store.commit()
        self.assertEqual(
            self.answers(self.transport), [b"OK %d" % n for n in [*range(1, 51), 53]]
        )
        self.assertEqual(self.answers(other_transport), [b"OK 51", b"OK 52", b"OK 54"])

    def test_sensor_indexes(self) -> None:
        """
        Each connection has its own sensor_index, stored with its readings.
        """
        other, _ = self.connect()
        self.protocol.dataReceived(GOOD + b"\n")
        other.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual([i for _, i in self.store.calls[0].readings], [1, 2])
        self.assertEqual(self.store.calls[0].last_sensor_index, 2)

    def test_line_endings(self) -> None:
        """
        Lines may end with C{\\n} or C{\\r\\n}, mixed on one connection; the
        C{\\r} is not part of the reading.
        """
        self.protocol.dataReceived(
            b"Humidity,15% RH,2020-04-20 23:20:18\r\nHumidity,16% RH,2020-04-20 23:20:19\n"
        )
        self.turn()
        self.assertEqual(
            [r.sensor_data for r, _ in self.store.calls[0].readings], ["15% RH", "16% RH"]
        )
        self.assertEqual(
            [r.timestamp for r, _ in self.store.calls[0].readings],
            ["2020-04-20 23:20:18", "2020-04-20 23:20:19"],
        )

    def test_resent_reading_id(self) -> None:
        """
        A reading resent with a reading_id the store already holds is
        answered with the stored entry_index.
        """
        line = b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n"
        self.protocol.dataReceived(line + GOOD + b"\n" + line)
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2", b"OK 1"])


class NumberingTests(OpenedTestCase):
    """
    Readings are numbered and signed as they arrive, while the batch before
    them commits; when that batch ends at another index than expected, the
    waiting readings are numbered again, so the store need not.
    """

    def test_resent_while_committing(self) -> None:
        """
        A resent reading answered with its stored index frees the number it
        was given: the reading behind it takes that number.
        """
        self.protocol.dataReceived(b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n")
        self.turn()
        self.protocol.dataReceived(b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n")
        self.store.commit()
        self.turn()
        self.protocol.dataReceived(b"Humidity,16% RH,2020-04-20 23:20:19,sim-8\n")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 1", b"OK 2"])
        self.assertEqual([row[0] for call in self.store.calls for row in call.rows], [1, 2, 2])
        self.assertEqual(self.store.renumbered, 0)

    def test_readings_before_open(self) -> None:
        """
        Readings read before the store opened are numbered once it has,
        from its last index on.
        """
        ingestor = Ingestor(self.store, self.clock)
        protocol = SensorFactory(ingestor, MAX_LINE, self.now).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(GOOD + b"\n")
        self.store.rows.extend([None] * 4)
        ingestor.opened(Opened(epoch=EPOCH, count=4, last_index=4, last_sensor_index=0, rejected=0))
        self.turn()
        self.store.commit()
        self.assertEqual(self.answers(transport), [b"OK 5"])
        self.assertEqual(self.store.renumbered, 0)


class FramingTests(SensorTestCase):
    """
    Lines may be cut anywhere by TCP.
    """

    data = (
        b"Temperature,39C,2020-04-20 23:20:18.231325\r\n"
        b"bad line\n"
        b"Humidity,15% RH\n"
        b"Atm. Pressure,1.798 atm,2020-04-20T23:20:18Z,sim-1\r\n"
    )
    expected_readings = [
        Reading("Temperature", "39C", "2020-04-20 23:20:18.231325"),
        Reading("Humidity", "15% RH", "2020-04-20 23:20:18.231325"),
        Reading("Atm. Pressure", "1.798 atm", "2020-04-20T23:20:18Z", "sim-1"),
    ]
    expected_answers = [b"OK 1", b"ERR missing value", b"OK 2", b"OK 3"]

    def feed(self, chunks: list[bytes]) -> None:
        self.setUp()
        self.open_store()
        protocol, transport = self.connect()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.turn()
        readings = [r for call in self.store.calls for r, _ in call.readings]
        self.assertEqual(readings, self.expected_readings, chunks)
        self.commit_all()
        self.assertEqual(self.answers(transport), self.expected_answers, chunks)
        self.assertEqual([r.reason for r in self.store.rejected], ["missing value"])

    def test_split_at_every_byte(self) -> None:
        """
        The same lines give the same readings and answers wherever one read
        ends and the next begins.
        """
        for cut in range(len(self.data) + 1):
            self.feed([self.data[:cut], self.data[cut:]])

    def test_byte_by_byte(self) -> None:
        """
        Lines that arrive one byte per read are still whole readings.
        """
        self.feed([self.data[i : i + 1] for i in range(len(self.data))])


class BadInputTests(OpenedTestCase):
    """
    Every rejected line is answered C{ERR <reason>}, kept for diagnosis, and
    harms neither the connection nor the lines around it.
    """

    max_line = 256

    cases = [
        (b"Temperature,39C,yesterday", "bad timestamp"),
        (b"Temperature,39C,2020-04-20 25:20:18", "bad timestamp"),
        (b"Temperature,39C,2020-02-30 23:20:18", "bad timestamp"),
        (b"Temperature,39C,2020-04-20 23:20:18,id-1,extra", "too many fields"),
        (b"Temperature,,2020-04-20 23:20:18", "empty value"),
        (b"Temperature,   ,2020-04-20 23:20:18", "empty value"),
        (b"Temp\xe9rature,39C", "not UTF-8"),
        (b"Temperature,39\xff", "not UTF-8"),
        (b"", "empty line"),
        (b"   ", "empty line"),
        (b"Temperature", "missing value"),
        (b",39C", "empty sensor type"),
        (b"T" * 41 + b",39C", "sensor type longer than 40 characters"),
        (b"Temperature," + b"9" * 81, "value longer than 80 characters"),
        (b"Temperature,3\x009C", "control character in value"),
        (b"Temp\x1berature,39C", "control character in sensor type"),
        (b"Temperature,39C,2020-04-20 23:20:18,", "empty reading id"),
        (b"Temperature,39C,2020-04-20 23:20:18," + b"r" * 65, "reading id longer than 64 characters"),
        (b"Temperature,39C," + b"x" * 257, "line too long"),
    ]

    def test_each_reason(self) -> None:
        """
        Each kind of bad line is answered with its own reason, between the
        answers of the good lines around it, on a connection that stays
        open and keeps being read.
        """
        for line, reason in self.cases:
            self.setUp()
            self.protocol.dataReceived(GOOD + b"\n" + line + b"\r\n" + GOOD + b"\n")
            self.commit_all()
            self.assertEqual(
                self.answers(self.transport),
                [b"OK 1", b"ERR " + reason.encode(), b"OK 2"],
                line,
            )
            self.assertStillServing(self.transport)
            self.assertEqual(len(self.store.rows), 2, line)
            self.assertEqual([r.reason for r in self.store.rejected], [reason], line)

    def test_all_in_one_stream(self) -> None:
        """
        A stream mixing every kind of bad line with good ones stores every
        good one and answers every line in order.
        """
        data, expected = b"", []
        for n, (line, reason) in enumerate(self.cases, 1):
            data += line + b"\n" + GOOD + b"\n"
            expected += [b"ERR " + reason.encode(), b"OK %d" % (n,)]
        self.protocol.dataReceived(data)
        self.commit_all()
        self.assertEqual(self.answers(self.transport), expected)
        self.assertStillServing(self.transport)

    def test_rejected_lines_stored(self) -> None:
        """
        Each rejected line reaches the store with the time, the sensor_index
        of its connection, the reason and its raw bytes cut to max_line.
        """
        long_line = b"Temperature,39C," + b"x" * 300
        self.protocol.dataReceived(b"Temp\xff,39C\n" + long_line + b"\n")
        self.turn()
        self.assertEqual(
            self.store.calls[0].rejected,
            [
                Rejected(self.now(), 1, "not UTF-8", b"Temp\xff,39C"),
                Rejected(self.now(), 1, "line too long", long_line[: self.max_line]),
            ],
        )
        self.assertEqual(self.ingestor.rejected, 2)
        self.assertEqual(self.ingestor.accepted, 0)


class LongLineTests(OpenedTestCase):
    """
    A line longer than max_line is skipped up to its newline and answered
    C{ERR line too long}; reading goes on, and memory stays bounded.
    """

    def test_exactly_max_line(self) -> None:
        """
        A line of exactly max_line bytes (not counting its line ending) is
        accepted; one byte more is too long.
        """
        fits = b"T," + b"9" * (MAX_LINE - 2)
        self.protocol.dataReceived(fits + b"\r\n" + fits + b"9\n" + fits + b"\n")
        self.commit_all()
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR line too long", b"OK 2"]
        )

    def test_lengths_byte_by_byte(self) -> None:
        """
        Whatever its length, a line fed one byte at a time is accepted when
        it fits and answered C{ERR line too long} when it does not.
        """
        for length, answer in [
            (MAX_LINE - 1, b"OK 1"),
            (MAX_LINE, b"OK 1"),
            (MAX_LINE + 1, b"ERR line too long"),
            (MAX_LINE + 2, b"ERR line too long"),
            (MAX_LINE * 5, b"ERR line too long"),
        ]:
            self.setUp()
            line = b"T," + b"9" * (length - 2) + b"\r\n"
            for i in range(len(line)):
                self.protocol.dataReceived(line[i : i + 1])
            self.commit_all()
            self.assertEqual(self.answers(self.transport), [answer], length)

    def test_long_line_in_chunks(self) -> None:
        """
        A long line arriving in many reads with no newline for a long time
        holds no more than about max_line bytes, then is answered C{ERR
        line too long} when its newline comes, and the next line is read.
        """
        self.protocol.dataReceived(GOOD + b"\nTemperature,")
        for _ in range(1000):
            self.protocol.dataReceived(b"x" * 50)
            # The protocol's own buffers: all that a line costs in memory.
            held = len(self.protocol._buffer) + len(self.protocol._skipping or b"")
            self.assertLessEqual(held, 2 * MAX_LINE + 50)
        self.assertStillServing(self.transport)
        self.protocol.dataReceived(b"xx\r\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR line too long", b"OK 2"]
        )
        (rejected,) = self.store.rejected
        self.assertEqual(rejected.raw, (b"Temperature," + b"x" * MAX_LINE)[:MAX_LINE])

    def test_long_line_one_read(self) -> None:
        """
        A huge line inside one read is skipped without stopping the lines
        after it in the same read.
        """
        self.protocol.dataReceived(b"y" * 100_000 + b"\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"ERR line too long", b"OK 1"])
        self.assertEqual(self.store.rejected[0].raw, b"y" * MAX_LINE)


class ShortLimitTests(OpenedTestCase):
    """
    Below the longest line that can be plain, each line's length is checked
    even in a chunk of plain lines.
    """

    max_line = 100

    def test_plain_line_too_long(self) -> None:
        long_plain = b"Temperature,39C,2026-11-28 10:00:00.123456," + b"r" * 64
        self.assertEqual(len(long_plain), 107)
        self.protocol.dataReceived(GOOD + b"\n" + long_plain + b"\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR line too long", b"OK 2"]
        )


class HalfCloseTests(OpenedTestCase):
    """
    A sensor that stops sending (e.g. C{printf ... | nc -N}) still gets every
    answer, then the connection closes.
    """

    def test_answers_then_close(self) -> None:
        """
        After the sensor's end of stream, the connection stays open until
        the readings are committed and answered, then closes.
        """
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.protocol.readConnectionLost()
        self.turn()
        self.assertFalse(self.transport.disconnecting)
        self.store.commit()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2"])
        self.assertTrue(self.transport.disconnecting)

    def test_unterminated_last_line(self) -> None:
        """
        A last line without its newline may have been cut short, so it is
        not stored: it is answered C{ERR unterminated line} after the
        answers before it, and kept as a rejected line.
        """
        self.protocol.dataReceived(GOOD + b"\nTemperature,3")
        self.protocol.readConnectionLost()
        self.commit_all()
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR unterminated line"]
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.store.rows), 1)
        self.assertEqual(
            self.store.rejected, [Rejected(self.now(), 1, "unterminated line", b"Temperature,3")]
        )

    def test_nothing_pending(self) -> None:
        """
        With every line answered, the end of stream closes the connection
        at once.
        """
        self.protocol.dataReceived(b"bad\n")
        self.protocol.readConnectionLost()
        self.assertEqual(self.answers(self.transport), [b"ERR missing value"])
        self.assertTrue(self.transport.disconnecting)


class HalfClosingTransport(StringTransport):
    """
    A StringTransport that can close its writing half, as TCP can.
    """

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True


class StopCloseTests(OpenedTestCase):
    """
    A stopping node closes each sensor connection so that the sensor can
    still read every answer: answers and a FIN first, then it reads (and
    drops) what the sensor still sends until the sensor closes too, rather
    than resetting the connection.
    """

    def setUp(self) -> None:
        super().setUp()
        self.protocol = self.factory.buildProtocol(None)
        self.transport = HalfClosingTransport()
        self.protocol.makeConnection(self.transport)

    def test_close_waits_for_the_sensor(self) -> None:
        """
        close() half-closes after the answers, reads again even if paused,
        ignores further lines, and fires once the sensor has closed.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.protocol.pause("stopping")
        closed = self.protocol.close(self.clock, 5.0)
        self.assertTrue(self.transport.write_closed)
        self.assertEqual(self.transport.producerState, "producing")
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(len(self.store.rows), 1)
        self.assertNoResult(closed)
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(None)
        self.successResultOf(closed)
        self.assertEqual(self.answers(self.transport), [b"OK 1"])
        self.assertFalse(self.transport.aborted)

    def test_close_aborts_after_timeout(self) -> None:
        """
        A sensor that never closes its side is cut off after the timeout.
        """
        closed = self.protocol.close(self.clock, 5.0)
        self.clock.advance(4.9)
        self.assertFalse(self.transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.aborted)
        self.protocol.connectionLost(None)
        self.successResultOf(closed)


class OpeningTests(SensorTestCase):
    """
    Sensors that connect while the store is opening wait for it.
    """

    def test_paused_until_open(self) -> None:
        """
        A sensor connecting before the store is open is not read until it
        opens; then it gets a sensor_index after every one the store has
        seen, never reusing one across restarts.
        """
        first, first_transport = self.connect()
        second, second_transport = self.connect()
        self.assertEqual(first_transport.producerState, "paused")
        self.assertEqual(second_transport.producerState, "paused")
        self.assertEqual(self.store.calls, [])

        self.open_store(last_sensor_index=41)
        self.assertEqual(first_transport.producerState, "producing")
        self.assertEqual(second_transport.producerState, "producing")
        self.assertEqual(sorted([first.sensor_index, second.sensor_index]), [42, 43])
        third, third_transport = self.connect()
        self.assertEqual(third_transport.producerState, "producing")
        self.assertEqual(third.sensor_index, 44)

        for protocol in (first, second, third):
            protocol.dataReceived(GOOD + b"\n")
        self.turn()
        (call,) = self.store.calls
        self.assertEqual(
            [i for _, i in call.readings],
            [first.sensor_index, second.sensor_index, 44],
        )
        self.assertEqual(call.last_sensor_index, 44)

    def test_lines_read_before_open_are_kept(self) -> None:
        """
        Lines already read when the sensor was paused for the opening store
        are stored and answered once it opens.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(self.store.calls, [])
        drained = self.ingestor.drain()
        self.open_store(last_sensor_index=3)
        self.commit_all()
        self.assertEqual(self.answers(transport), [b"OK 1"])
        self.assertEqual(self.store.calls[0].readings[0][1], 4)
        self.successResultOf(drained)


class BackpressureTests(SensorTestCase):
    """
    When the store falls behind, sensors stop being read until it catches
    up, so nothing queues without bound.
    """

    ingestor_options = dict(max_batch=3, high_water=10, low_water=4)

    def setUp(self) -> None:
        super().setUp()
        self.open_store()

    def test_pause_and_resume(self) -> None:
        """
        Past the high-water mark every sensor connection is paused, also one
        that sent nothing and one that connects meanwhile; all are resumed
        once the queue is back to the low-water mark.
        """
        busy, busy_transport = self.connect()
        quiet, quiet_transport = self.connect()
        # One line per read, so that each is a batch of its own: the lines
        # of one read are committed together.
        for _ in range(9):
            busy.dataReceived(GOOD + b"\n")
        self.assertEqual(busy_transport.producerState, "producing")
        busy.dataReceived(GOOD + b"\n")
        self.assertEqual(busy_transport.producerState, "paused")
        self.assertEqual(quiet_transport.producerState, "paused")
        late, late_transport = self.connect()
        self.assertEqual(late_transport.producerState, "paused")

        transports = [busy_transport, quiet_transport, late_transport]
        self.turn()
        # Batches of 3: after the first commit 7 wait (3 of them already in
        # the next batch), still above the low-water mark of 4...
        self.store.commit()
        self.assertEqual(self.ingestor.queued, 4)
        self.assertEqual({t.producerState for t in transports}, {"paused"})
        # ...after the second only 4 waited: back to the mark, so resumed.
        self.store.commit()
        self.assertEqual({t.producerState for t in transports}, {"producing"})
        self.commit_all()
        self.assertEqual(len(self.answers(busy_transport)), 10)

    def test_sensor_not_reading_answers(self) -> None:
        """
        A sensor whose answers back up (its transport pauses us as their
        producer) is not read until it takes them again, and stays paused
        while the store is also behind.
        """
        protocol, transport = self.connect()
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

        protocol.pauseProducing()
        protocol.dataReceived(b"".join(GOOD + b"\n" for _ in range(10)))
        self.commit_all()  # the store catches up...
        self.assertEqual(transport.producerState, "paused")  # ...the sensor does not
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(self.answers(transport)), 10)

    def test_store_catches_up_while_answers_back_up(self) -> None:
        """
        A sensor paused both for the store and for its answers is resumed
        only when both are over.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(GOOD + b"\n" for _ in range(10)))
        protocol.pauseProducing()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "paused", "the store is still behind")
        protocol.pauseProducing()
        self.commit_all()
        self.assertEqual(transport.producerState, "paused", "answers still back up")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")


class FailureTests(OpenedTestCase):
    """
    A failed commit is answered, and the node keeps storing.
    """

    def test_failed_commit(self) -> None:
        """
        When a commit fails, each line of that batch is answered C{ERR} (so
        the sensor may resend it), lines waiting behind it keep their order,
        and the next batch is stored as usual.
        """
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(b"Humidity,15% RH\n")
        self.store.fail(OSError(28, "No space left on device"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(
            self.answers(self.transport), [b"ERR retry: storage failure"] * 2
        )
        self.assertStillServing(self.transport)
        self.turn()
        self.store.commit()
        self.assertEqual(self.answers(self.transport)[2:], [b"OK 1"])
        self.assertEqual(self.store.rows[0].sensor_type, "Humidity")
        # The line behind the failed batch was numbered again, from the
        # numbers that batch did not use.
        self.assertEqual(self.store.renumbered, 0)
        self.assertEqual(self.ingestor.not_stored, 2)


class UnsavedRejectedTests(OpenedTestCase):
    """
    Refused lines whose commit failed are held and stored later in a
    transaction of their own, within a bound, without a loop of failing
    transactions and without holding up readings.
    """

    ingestor_options = {"max_unsaved_rejected": 3, "max_unsaved_bytes": 100}

    def fail_commit(self) -> None:
        self.turn()
        self.store.fail(OSError(5, "Input/output error"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_stored_after_next_good_commit(self) -> None:
        """
        A refused line of a failed commit is stored once a commit of new
        readings succeeds, in a transaction of its own after it; with
        nothing new arriving, nothing is retried.
        """
        self.protocol.dataReceived(b"bad\n" + GOOD + b"\n")
        self.fail_commit()
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        [readings] = self.store.waiting
        self.assertEqual((len(readings.rows), readings.rejected), (1, []))
        self.store.commit()
        [held] = self.store.waiting
        self.assertEqual((held.rows, [r.raw for r in held.rejected]), ([], [b"bad"]))
        self.store.commit()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(self.ingestor.unsaved_rejected, 0)

    def test_held_lines_do_not_block_readings(self) -> None:
        """
        When the held lines still cannot be stored, readings are stored all
        the same, and the held lines are tried again only after
        UNSAVED_RETRY_INTERVAL.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.fail_commit()  # the held line's own transaction
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.assertEqual(len(self.store.rows), 2)
        self.clock.advance(UNSAVED_RETRY_INTERVAL)
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(self.answers(self.transport)[-3:], [b"OK 1", b"OK 2", b"OK 3"])

    def test_bounded_in_lines(self) -> None:
        """
        While commits keep failing, only the newest refused lines are held,
        and the log says how many were lost.
        """
        for n in range(2):
            self.protocol.dataReceived(b"".join(b"bad%d-%d\n" % (n, i) for i in range(2)))
            with capturedLogs() as events:
                self.fail_commit()
        self.assertEqual(self.ingestor.unsaved_rejected, 3)
        self.assertEqual(self.ingestor.dropped_rejected, 1)
        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("1 refused lines are lost", formatEvent(warning))
        self.assertIn("Check the disk", formatEvent(warning))
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad0-1", b"bad1-0", b"bad1-1"])

    def test_bounded_in_bytes(self) -> None:
        """
        Long refused lines are bounded by their bytes too.
        """
        self.protocol.dataReceived(b"x" * 60 + b"\n" + b"y" * 60 + b"\n")
        self.fail_commit()
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.assertEqual(self.ingestor.dropped_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"y" * 60])

    def test_drain_tries_once_more(self) -> None:
        """
        drain() tries the held lines once more; if that commit fails too,
        it still fires, and they are counted.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        drained = self.ingestor.drain()
        self.turn()
        self.assertNoResult(drained)
        [held] = self.store.waiting
        self.assertEqual([r.raw for r in held.rejected], [b"bad"])
        self.fail_commit()
        self.successResultOf(drained)
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.turn()
        self.assertEqual(self.store.waiting, [])

    def test_order_kept(self) -> None:
        """
        Held lines are stored before lines refused after them.
        """
        self.protocol.dataReceived(b"bad1\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(b"bad2\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad1", b"bad2"])

    def test_drain_during_commit(self) -> None:
        """
        drain() called while a commit is under way tries the held lines
        once that commit is done (though they were tried a moment ago), and
        fires after that try.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.fail_commit()  # their own try, after that commit
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        [readings] = self.store.waiting
        drained = self.ingestor.drain()
        self.store.commit()
        self.assertNoResult(drained)
        [held] = self.store.waiting
        self.assertEqual([r.raw for r in held.rejected], [b"bad"])
        self.fail_commit()
        self.successResultOf(drained)

    def test_drain_with_commit_scheduled(self) -> None:
        """
        drain() called with a commit of readings scheduled for the end of
        the reactor turn stores both, and fires only then.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(len(self.store.rows), 1)

    def test_drain_stores_them(self) -> None:
        """
        When the disk is back, drain() stores them before firing.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])


class DrainTests(OpenedTestCase):
    """
    Stopping the node waits on drain(): every reading received is committed
    and answered first.
    """

    def test_idle(self) -> None:
        """
        With nothing queued, drain() fires at once.
        """
        self.successResultOf(self.ingestor.drain())

    def test_waits_for_every_batch(self) -> None:
        """
        drain() fires only once every batch, including lines received
        while waiting, is committed and every answer written.
        """
        self.protocol.dataReceived(GOOD + b"\n" + b"bad\n")
        drained = self.ingestor.drain()
        self.turn()
        self.assertNoResult(drained)
        self.protocol.dataReceived(GOOD + b"\n")
        self.store.commit()
        self.assertNoResult(drained)
        self.turn()
        self.store.commit()
        self.successResultOf(drained)
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR missing value", b"OK 2"]
        )

    def test_rejected_only(self) -> None:
        """
        drain() also waits for rejected lines to be kept.
        """
        self.protocol.dataReceived(b"bad\n")
        drained = self.ingestor.drain()
        self.assertNoResult(drained)
        self.turn()
        self.store.commit()
        self.successResultOf(drained)
        self.assertEqual(len(self.store.rejected), 1)

    def test_disconnected_sensor(self) -> None:
        """
        Readings of a sensor that went away before its answers are still
        stored, and drain() still fires.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.protocol.connectionLost(None)
        self.assertEqual(self.ingestor.connected, 0)
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual(len(self.store.rows), 1)
        self.assertEqual(self.transport.value(), b"")
