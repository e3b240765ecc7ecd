"""
Tests for the sensor protocol (p2pstore.sensor): answers, framing (with
and without line ends), bad and long lines, half-close and closing, with a StringTransport, a task.Clock and
an in-memory store whose commits the test fires by hand (tests.fakes).
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.internet.testing import StringTransport

from p2pstore.lines import Reading, Rejected
from p2pstore.sensor import UNTERMINATED_PAUSE

from .fakes import GOOD, MAX_LINE, OpenedTestCase, SensorTestCase


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


# Readings as the proof of concept's sensor_simulator.py sends them: one
# send() each, no line end, str(datetime.now()) timestamps (no fraction
# when the microseconds are 0).
SEED_READINGS = [
    b"Temperature,39C,2026-12-04 18:16:36.622268",
    b"Atm. Pressure,1.798 atm,2026-12-04 18:16:38",
    b"Humidity,15% RH,2026-12-04 18:16:40.000001",
    b"Temperature,-4C,2026-12-04 18:16:42.999999",
]


class UnterminatedTests(OpenedTestCase):
    """
    Sensors that send no line ends (the proof of concept's) have every
    reading stored as its own row and are answered nothing; a connection
    that sends a line end is a line sensor for good.
    """

    max_line = 1024

    def stored(self) -> list[tuple]:
        return [(r.sensor_type, r.sensor_data, r.timestamp) for r in self.store.rows]

    def test_glued_in_one_segment(self) -> None:
        """
        Readings that arrive glued together are each stored once, in order,
        the last once the sensor pauses; nothing is written back.
        """
        self.protocol.dataReceived(b"".join(SEED_READINGS))
        self.commit_all()
        self.assertEqual(len(self.store.rows), 3)
        self.clock.advance(UNTERMINATED_PAUSE)
        self.commit_all()
        self.assertEqual(
            self.stored(),
            [tuple(r.decode().split(",")) for r in SEED_READINGS],
        )
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.store.rejected, [])
        self.assertStillServing(self.transport)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
    def test_split_anywhere(self, cuts) -> None:
        """
        However the stream is cut into segments (at any byte, readings glued
        or split), each reading is stored exactly once as sent.
        """
        self.setUp()
        stream = b"".join(SEED_READINGS)
        points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
        for start, end in zip(points, points[1:]):
            self.protocol.dataReceived(stream[start:end])
        self.protocol.readConnectionLost()
        self.commit_all()
        self.assertEqual(
            self.stored(),
            [tuple(r.decode().split(",")) for r in SEED_READINGS],
        )
        self.assertEqual(self.store.rejected, [])
        self.assertEqual(self.transport.value(), b"")

    def test_every_cut_and_glue(self) -> None:
        """
        Cut once at every byte position (each reading glued to the next),
        the stream is stored reading for reading.
        """
        stream = b"".join(SEED_READINGS)
        for cut in range(len(stream) + 1):
            self.setUp()
            self.protocol.dataReceived(stream[:cut])
            self.protocol.dataReceived(stream[cut:])
            self.protocol.readConnectionLost()
            self.commit_all()
            self.assertEqual(
                self.stored(), [tuple(r.decode().split(",")) for r in SEED_READINGS], cut
            )
            self.assertEqual(self.store.rejected, [], cut)

    def test_pace_of_the_seed(self) -> None:
        """
        One reading every 2 s is stored after the pause, before the next.
        """
        for n, reading in enumerate(SEED_READINGS, 1):
            self.protocol.dataReceived(reading)
            self.clock.advance(UNTERMINATED_PAUSE)
            self.commit_all()
            self.assertEqual(len(self.store.rows), n)
            self.clock.advance(2 - UNTERMINATED_PAUSE)
        self.assertEqual(self.transport.value(), b"")
        status = {
            "connected": self.ingestor.unterminated_connected,
            "accepted": self.ingestor.accepted_unterminated,
        }
        self.assertEqual(status, {"connected": 1, "accepted": 4})

    def test_cut_timestamp_not_taken_on_a_pause(self) -> None:
        """
        A pause inside the timestamp's fraction does not end the reading:
        only a timestamp of the seed's shape (six digits or none) does.
        """
        self.protocol.dataReceived(SEED_READINGS[0][:-3])
        self.clock.advance(UNTERMINATED_PAUSE * 4)
        self.commit_all()
        self.assertEqual(self.store.rows, [])
        self.protocol.dataReceived(SEED_READINGS[0][-3:])
        self.clock.advance(UNTERMINATED_PAUSE)
        self.commit_all()
        self.assertEqual(self.stored(), [tuple(SEED_READINGS[0].decode().split(","))])

    def test_bad_reading_kept_unanswered(self) -> None:
        """
        A reading without line end that cannot be stored is kept in
        rejected_lines with its reason, and answered nothing.
        """
        self.protocol.dataReceived(b"Temperature,39C,2026-13-45 10:00:00" + SEED_READINGS[0])
        self.clock.advance(UNTERMINATED_PAUSE)
        self.commit_all()
        self.assertEqual([r.reason for r in self.store.rejected], ["bad timestamp"])
        self.assertEqual(len(self.store.rows), 1)
        self.assertEqual(self.transport.value(), b"")

    def test_last_reading_at_close(self) -> None:
        """
        A whole reading buffered when the sensor closes is stored.
        """
        self.protocol.dataReceived(SEED_READINGS[1])
        self.protocol.readConnectionLost()
        self.commit_all()
        self.assertEqual(self.stored(), [tuple(SEED_READINGS[1].decode().split(","))])
        self.assertTrue(self.transport.disconnecting)

    def test_line_sensor_never_cut(self) -> None:
        """
        Once a connection has sent a line end, a line arriving in pieces
        with pauses far longer than the pause rule is stored whole and
        answered.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        line = b"Temperature,41C,2020-04-20 23:20:19.231325,r-2\n"
        for piece in (line[:43], line[43:46], line[46:]):
            self.protocol.dataReceived(piece)
            self.clock.advance(UNTERMINATED_PAUSE * 10)
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2"])
        self.assertEqual(self.store.rows[1].reading_id, "r-2")
        self.assertFalse(self.protocol.unterminated)

    def test_refused_when_turned_off(self) -> None:
        """
        With unterminated readings refused, bytes without a line end are
        not readings: at close they are refused as an unterminated line.
        """
        self.factory.unterminated = False
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(SEED_READINGS))
        self.clock.advance(UNTERMINATED_PAUSE)
        protocol.readConnectionLost()
        self.commit_all()
        self.assertEqual(self.store.rows, [])
        self.assertEqual([r.reason for r in self.store.rejected], ["unterminated line"])
        self.assertEqual(self.answers(transport), [b"ERR unterminated line"])
