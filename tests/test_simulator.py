"""
Tests for sensor_simulator.py: readings and their lines, the queue of unacknowledged readings, the
connection handling with a task.Clock and StringTransports, and the real script run against a fake
node on a loopback port.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import sys
from datetime import datetime

from hypothesis import given, strategies as st
from twisted.internet import defer, error, protocol, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import sensor_simulator
from sensor_simulator import (
    SENSORS,
    Answer,
    BadAnswer,
    Reading,
    ReadingSource,
    SensorClientProtocol,
    Simulator,
    UnackedQueue,
    make_service,
    parse_answer,
    parse_args,
)

SCRIPT = os.path.abspath(sensor_simulator.__file__)
TEMP, PRESSURE, HUMIDITY = SENSORS
NOW = datetime(2026, 11, 28, 10, 0, 0, 123456)
STAMP = "2026-11-28 10:00:00.123456"
WHERE = "127.0.0.1:12345"
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
# Generous: the real-socket tests wait for conditions, and this only bounds a hung run.
DEADLINE = 30


def reading(n: int) -> Reading:
    return Reading("Temperature", "{}C".format(20 + n), STAMP, "run-{}".format(n))


def ids_in(data: bytes) -> list[str]:
    """The reading_ids of the lines in C{data}, in order."""
    return [line.rsplit(b",", 1)[1].decode() for line in data.split(b"\n") if line]


class Harness:
    """A Simulator with a Clock, a fixed 'now', its output in a list, and helpers to connect it."""

    def __init__(self, **kwargs):
        self.clock = Clock()
        self.out: list[str] = []
        source = ReadingSource(TEMP, rng=random.Random(7), now=lambda: NOW, run_id="run")
        self.simulator = Simulator(source, self.clock, WHERE, out=self.out.append, **kwargs)
        self.protocol: SensorClientProtocol | None = None
        self.transport: StringTransport | None = None

    def connect(self) -> StringTransport:
        self.protocol = SensorClientProtocol(self.simulator)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.transport

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(error.ConnectionLost()))

    def answer(self, *lines: bytes) -> None:
        self.protocol.dataReceived(b"".join(line + b"\n" for line in lines))

    def sent(self) -> list[str]:
        """The reading_ids sent since the last call, on the current connection."""
        ids = ids_in(self.transport.value())
        self.transport.clear()
        return ids

    def sending_lines(self) -> list[str]:
        return [line for line in self.out if line.startswith("Sending ")]


class ReadingTests(SynchronousTestCase):
    """Values, lines and reading_ids."""

    @given(st.randoms(use_true_random=False))
    def test_temperature_value(self, rng):
        """A temperature is a whole number of degrees from 20 to 40 followed by C, like 39C."""
        value = TEMP.make_value(rng)
        match = re.fullmatch(r"(\d{2})C", value)
        self.assertIsNotNone(match, value)
        self.assertTrue(20 <= int(match.group(1)) <= 40, value)

    @given(st.randoms(use_true_random=False))
    def test_pressure_value(self, rng):
        """A pressure has three decimals, from 1.000 to 5.000, then ' atm', like 1.798 atm."""
        value = PRESSURE.make_value(rng)
        match = re.fullmatch(r"(\d\.\d{3}) atm", value)
        self.assertIsNotNone(match, value)
        self.assertTrue(1.0 <= float(match.group(1)) <= 5.0, value)

    @given(st.randoms(use_true_random=False))
    def test_humidity_value(self, rng):
        """A humidity is a whole percentage from 0 to 100 followed by '% RH', like 15% RH."""
        value = HUMIDITY.make_value(rng)
        match = re.fullmatch(r"(\d{1,3})% RH", value)
        self.assertIsNotNone(match, value)
        self.assertTrue(0 <= int(match.group(1)) <= 100, value)

    def test_sensor_types(self):
        """The three flags name the seed's sensor types."""
        self.assertEqual(
            [(s.flag, s.sensor_type) for s in SENSORS],
            [("temp", "Temperature"), ("pressure", "Atm. Pressure"), ("humidity", "Humidity")],
        )

    def test_line_and_display(self):
        """The wire line is type,value,timestamp,reading_id; the user sees it without the reading_id."""
        source = ReadingSource(PRESSURE, rng=random.Random(1), now=lambda: NOW, run_id="3f2a9c1e")
        first = source.next_reading()
        self.assertEqual(first.timestamp, STAMP)
        self.assertEqual(first.reading_id, "3f2a9c1e-1")
        shown = "Atm. Pressure,{},{}".format(first.value, STAMP)
        self.assertEqual(first.display(), shown)
        self.assertEqual(first.line(), (shown + ",3f2a9c1e-1").encode())
        self.assertEqual(source.next_reading().reading_id, "3f2a9c1e-2")

    def test_reading_ids_differ_between_runs(self):
        """Runs never share a reading_id; each is 1-64 characters, no comma or control character."""
        ids = [ReadingSource(TEMP).next_reading().reading_id for _ in range(50)]
        self.assertEqual(len(set(ids)), 50)
        for reading_id in ids:
            self.assertTrue(1 <= len(reading_id) <= 64)
            self.assertIsNone(re.search(r"[,\x00-\x1f\x7f]", reading_id))

    def test_parse_answer(self):
        """OK carries the entry index, ERR the reason; anything else is a bad answer."""
        self.assertEqual(parse_answer(b"OK 17"), Answer(ok=True, index=17))
        self.assertEqual(parse_answer(b"OK 17\r"), Answer(ok=True, index=17))
        self.assertEqual(parse_answer(b"ERR bad value"), Answer(ok=False, reason="bad value"))
        for bad in (b"OK", b"OK x", b"OK -1", b"OK \xc2\xb2", b"HELLO", b""):
            self.assertRaises(BadAnswer, parse_answer, bad)


class UnackedQueueTests(SynchronousTestCase):
    """The queue of readings that have no answer yet."""

    def test_answers_remove_oldest_first(self):
        """Answers belong to the readings in the order they were sent."""
        queue = UnackedQueue()
        for n in range(3):
            queue.add(reading(n))
        taken = [queue.take_unsent()[0] for _ in range(3)]
        self.assertEqual(taken, [reading(0), reading(1), reading(2)])
        self.assertEqual(queue.answered(), reading(0))
        self.assertEqual(queue.answered(), reading(1))
        self.assertEqual(list(queue), [reading(2)])

    def test_answer_without_reading_in_flight(self):
        """An answer when nothing is in flight is a bad answer, and changes nothing."""
        queue = UnackedQueue()
        queue.add(reading(0))
        self.assertRaises(BadAnswer, queue.answered)
        self.assertEqual(list(queue), [reading(0)])

    def test_resend_order_after_connection_lost(self):
        """After a lost connection all unanswered readings go again, oldest first, then new ones."""
        queue = UnackedQueue()
        for n in range(3):
            queue.add(reading(n))
        first_sends = [queue.take_unsent() for _ in range(3)]
        self.assertEqual(first_sends, [(reading(n), True) for n in range(3)])
        queue.answered()
        queue.connection_lost()
        queue.add(reading(3))
        resent = [queue.take_unsent() for _ in range(3)]
        self.assertEqual(resent, [(reading(1), False), (reading(2), False), (reading(3), True)])
        self.assertFalse(queue.has_unsent())


class SimulatorTests(SynchronousTestCase):
    """The simulator over StringTransports, with time from a Clock."""

    def test_interval_sends_one_reading_per_tick(self):
        """With an interval, a reading goes out at once, then one per interval, each printed."""
        h = Harness(interval=2)
        h.connect()
        h.simulator.start()
        self.assertEqual(h.sent(), ["run-1"])
        h.clock.advance(1.9)
        self.assertEqual(h.sent(), [])
        h.clock.advance(0.1)
        self.assertEqual(h.sent(), ["run-2"])
        self.assertEqual(len(h.sending_lines()), 2)
        shown = r"^Sending Temperature,\d\dC," + re.escape(STAMP) + "$"
        self.assertRegex(h.sending_lines()[0], shown)

    def test_ok_removes_and_err_drops(self):
        """OK forgets a reading; ERR prints the rejected line with its reason and forgets it too."""
        h = Harness(interval=1)
        h.connect()
        h.simulator.start()
        h.clock.pump([1, 1])
        self.assertEqual(h.sent(), ["run-1", "run-2", "run-3"])
        first, second, third = list(h.simulator.queue)
        h.answer(b"OK 1", b"ERR bad value")
        self.assertEqual(list(h.simulator.queue), [third])
        self.assertEqual(h.simulator.accepted, 1)
        self.assertIn("Rejected {}: bad value".format(second.line().decode()), h.out)

    def test_retry_answer_keeps_the_reading(self):
        """
        ``ERR retry: ...`` (the node could not store it just now) keeps the reading: the
        simulator says so once, drops the connection, and sends it first on the next one.
        """
        h = Harness(interval=1)
        h.connect()
        h.simulator.start()
        h.clock.pump([1])
        self.assertEqual(h.sent(), ["run-1", "run-2"])
        h.answer(b"OK 1", b"ERR retry: storage failure")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual([r.reading_id for r in h.simulator.queue], ["run-2"])
        self.assertEqual(h.simulator.accepted, 1)
        self.assertEqual(len([line for line in h.out if "could not store" in line]), 1)
        h.drop()
        h.connect()
        self.assertEqual(h.sent()[0], "run-2")

    def test_copies_answer_keeps_the_reading(self):
        """
        ``ERR copies: ...`` (stored, but not yet on as many nodes as asked) keeps the reading
        too: the simulator says the node kept it, and sends it again on the next connection,
        where the node answers it OK once the copies exist.
        """
        h = Harness(interval=1)
        h.connect()
        h.simulator.start()
        h.clock.pump([1])
        h.answer(b"OK 1", b"ERR copies: 1 of 2 (no peer connected); kept, send again to confirm")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual([r.reading_id for r in h.simulator.queue], ["run-2"])
        [said] = [line for line in h.out if "copies" in line]
        self.assertIn(
            "kept a reading but could not confirm its copies (1 of 2, no peer connected)", said
        )
        h.drop()
        h.connect()
        self.assertEqual(h.sent()[0], "run-2")
        h.answer(b"OK 2")
        self.assertEqual(h.simulator.accepted, 2)

    def test_resends_unacknowledged_in_order_after_reconnect(self):
        """
        After a reconnect the unanswered readings go out again, oldest first, before new ones,
        and no reading is printed twice.
        """
        h = Harness(interval=1)
        h.connect()
        h.simulator.start()
        h.clock.pump([1, 1])
        self.assertEqual(h.sent(), ["run-1", "run-2", "run-3"])
        h.answer(b"OK 1")
        h.drop()
        h.clock.advance(1)  # made while disconnected: kept, not sent
        self.assertEqual(len(h.simulator.queue), 3)
        h.connect()
        self.assertEqual(h.sent(), ["run-2", "run-3", "run-4"])
        self.assertEqual(len(h.sending_lines()), 4)
        self.assertEqual(
            [line for line in h.out if not line.startswith("Sending ")],
            [
                "Lost connection to 127.0.0.1:12345; reconnecting",
                "Connected to 127.0.0.1:12345; sending 3 unacknowledged readings",
            ],
        )

    def test_interval_zero_keeps_a_window_in_flight(self):
        """With interval 0, readings go out until the window is full, and one more for each answer."""
        h = Harness(interval=0, window=3)
        h.connect()
        h.simulator.start()
        self.assertEqual(h.sent(), ["run-1", "run-2", "run-3"])
        h.clock.advance(10)
        self.assertEqual(h.sent(), [])
        h.answer(b"OK 1")
        self.assertEqual(h.sent(), ["run-4"])
        h.answer(b"ERR nope", b"OK 2")
        self.assertEqual(h.sent(), ["run-5", "run-6"])
        self.assertEqual(h.simulator.queue.in_flight, 3)

    def test_count_stops_after_n_acknowledged(self):
        """
        With a count, done fires after that many OKs (a rejected reading does not count and is
        replaced); after that nothing more is sent.
        """
        h = Harness(interval=0, count=3)
        h.connect()
        h.simulator.start()
        self.assertEqual(h.sent(), ["run-1", "run-2", "run-3"])
        h.answer(b"OK 1", b"ERR nope")
        self.assertEqual(h.sent(), ["run-4"])
        h.answer(b"OK 2")
        self.assertNoResult(h.simulator.done)
        h.answer(b"OK 3")
        self.successResultOf(h.simulator.done)
        self.assertEqual(h.simulator.accepted, 3)
        self.assertEqual(h.sent(), [])
        self.assertEqual(len(h.simulator.queue), 0)

    def test_count_with_interval_stops_ticking(self):
        """With an interval and a count, no reading is made after the count is reached."""
        h = Harness(interval=1, count=2)
        h.connect()
        h.simulator.start()
        h.clock.pump([1] * 5)
        self.assertEqual(h.sent(), ["run-1", "run-2"])
        h.answer(b"OK 1", b"OK 2")
        self.successResultOf(h.simulator.done)
        h.clock.advance(5)
        self.assertEqual(h.sent(), [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_backlog_is_bounded(self):
        """While the node is away, no reading is made past the backlog bound; all go out on connecting."""
        h = Harness(interval=1, backlog_limit=5)
        h.simulator.start()
        h.clock.pump([1] * 20)
        self.assertEqual(len(h.simulator.queue), 5)
        h.connect()
        self.assertEqual(h.sent(), ["run-{}".format(n) for n in range(1, 6)])
        h.answer(b"OK 1")
        h.clock.advance(1)
        self.assertEqual(h.sent(), ["run-6"])

    def test_garbled_answer_drops_connection(self):
        """An answer that is neither OK nor ERR drops the connection (said once); the reading is kept."""
        h = Harness(interval=0, window=1)
        h.connect()
        h.answer(b"HELLO")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(len(h.simulator.queue), 1)
        self.assertEqual(
            h.out[1:], ["Bad answer from 127.0.0.1:12345: unexpected answer 'HELLO'; reconnecting"]
        )
        h.drop()
        self.assertEqual(len(h.out), 2)

    def test_answer_with_nothing_in_flight_drops_connection(self):
        """An answer when no reading awaits one drops the connection."""
        h = Harness(interval=1)
        h.connect()
        h.answer(b"OK 1")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(
            h.out,
            ["Bad answer from 127.0.0.1:12345: answer with no reading awaiting one; reconnecting"],
        )

    def test_overlong_answer_drops_connection(self):
        """An answer line longer than MAX_LENGTH drops the connection."""
        h = Harness(interval=0)
        h.connect()
        h.protocol.dataReceived(b"x" * (SensorClientProtocol.MAX_LENGTH + 1))
        self.assertTrue(h.transport.disconnecting)

    def test_no_lost_connection_line_after_finishing(self):
        """Closing the connection after --count is reached prints nothing."""
        h = Harness(interval=0, count=1)
        h.connect()
        h.simulator.start()
        h.answer(b"OK 1")
        h.drop()
        self.assertEqual(h.out, [h.sending_lines()[0]])


class FakeEndpoint:
    """A client endpoint whose connection attempts the test fails or completes by hand."""

    def __init__(self):
        self.attempts: list[tuple[protocol.Factory, defer.Deferred]] = []

    def connect(self, factory):
        d = defer.Deferred()
        self.attempts.append((factory, d))
        return d

    def fail(self):
        refused = error.ConnectionRefusedError(111, "Connection refused")  # as the reactor makes it
        self.attempts[-1][1].errback(Failure(refused))

    def succeed(self) -> tuple[protocol.Protocol, StringTransport]:
        factory, d = self.attempts[-1]
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        d.callback(proto)
        return proto, transport


class ServiceTests(SynchronousTestCase):
    """The ClientService wiring: retries with growing delays, one line per change of state."""

    def test_cannot_connect_reported_once_then_reconnects(self):
        """
        Repeated failed attempts print one 'Cannot connect' line; the retry that works sends the
        backlog in order; shutting down then prints nothing.
        """
        h = Harness(interval=1)
        endpoint = FakeEndpoint()
        service = make_service(endpoint, h.simulator, h.clock, jitter=lambda: 0)
        service.startService()
        h.simulator.start()
        for _ in range(6):
            endpoint.fail()
            h.clock.pump([1] * 10)  # a reading a second; the retry comes within the 10 s cap
        self.assertEqual(len(endpoint.attempts), 7)
        self.assertEqual(
            [line for line in h.out if not line.startswith("Sending ")],
            ["Cannot connect to 127.0.0.1:12345 (Connection refused); retrying"],
        )
        proto, transport = endpoint.succeed()
        backlog = len(h.simulator.queue)
        self.assertGreater(backlog, 5)
        self.assertEqual(
            ids_in(transport.value()), ["run-{}".format(n) for n in range(1, backlog + 1)]
        )
        self.assertEqual(
            h.out[1], "Connected to 127.0.0.1:12345; sending {} unacknowledged readings".format(backlog)
        )
        # Shutting down, as run() does it: no 'Lost connection' line.
        h.simulator.stop()
        stopped = service.stopService()
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(Failure(error.ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(len(h.out), 2 + len(h.sending_lines()))

    def test_retry_delays_grow_to_a_cap(self):
        """The delay between attempts grows from half a second and stops growing at ten seconds."""
        h = Harness(interval=0)
        endpoint = FakeEndpoint()
        service = make_service(endpoint, h.simulator, h.clock, jitter=lambda: 0)
        service.startService()
        delays = []
        for _ in range(15):
            endpoint.fail()
            (retry,) = h.clock.getDelayedCalls()
            delays.append(retry.getTime() - h.clock.seconds())
            h.clock.advance(delays[-1])
        self.assertEqual(delays, sorted(delays))
        self.assertLess(delays[0], 1)
        self.assertEqual(delays[-1], 10)
        self.successResultOf(service.stopService())


class OptionTests(SynchronousTestCase):
    """The command line, parsed in-process."""

    def test_defaults(self):
        """Only the sensor flag is needed: by default a reading every 2 s to 127.0.0.1:12345."""
        options = parse_args(["--pressure"])
        self.assertEqual(
            (options.sensor, options.host, options.port, options.interval, options.count),
            (PRESSURE, "127.0.0.1", 12345, 2.0, None),
        )

    def test_all_options(self):
        """Every option is read with its type."""
        options = parse_args(
            ["--humidity", "--host", "::1", "--port", "1", "--interval", "0", "--count", "5"]
        )
        self.assertEqual(
            (options.sensor, options.host, options.port, options.interval, options.count),
            (HUMIDITY, "::1", 1, 0.0, 5),
        )


    def misspelled(self, *args: str) -> tuple[int, list[str]]:
        """The exit status and the stderr lines of parse_args(C{args})."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as exited:
            parse_args(args)
        return exited.exception.code, err.getvalue().splitlines()

    def test_misspelled_flag_lists_sensor_flags(self):
        """
        A misspelled flag is named, the nearest flag is suggested, and the seed's list of sensor
        flags follows, with where the other options are.
        """
        code, err = self.misspelled("--tmp")
        self.assertEqual(code, 2)
        self.assertEqual(
            err,
            [
                "sensor_simulator.py: error: unrecognized arguments: --tmp",
                "Did you mean --temp?",
                "Available options:",
                "--temp",
                "--pressure",
                "--humidity",
                "Run sensor_simulator.py --help for the other options.",
            ],
        )

    def test_misspelled_other_flag(self):
        """A misspelled option that is not a sensor flag is guessed too, with its value named."""
        code, err = self.misspelled("--temp", "--prot", "1")
        self.assertEqual(code, 2)
        self.assertEqual(err[:2], [
            "sensor_simulator.py: error: unrecognized arguments: --prot 1",
            "Did you mean --port?",
        ])
        self.assertIn("--humidity", err)

    def test_flag_without_dashes(self):
        """A sensor named without its dashes is guessed as its flag."""
        code, err = self.misspelled("pressure")
        self.assertEqual((code, err[1]), (2, "Did you mean --pressure?"))

    def test_nothing_near(self):
        """A word near no flag gets no guess, only the list."""
        code, err = self.misspelled("--xyzzy")
        self.assertEqual((code, err[1]), (2, "Available options:"))


class FakeNodeProtocol(LineOnlyReceiver):
    """
    Answers OK with the stored index, storing each reading_id once; or, if told to, drops the
    first connection after some lines without answering them.
    """

    delimiter = b"\n"

    def connectionMade(self):
        self.lines: list[bytes] = []
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        self.factory.closed(self)

    def lineReceived(self, line):
        node = self.factory
        self.lines.append(line)
        if node.drop_first_after and len(node.connections) == 1:
            if len(self.lines) >= node.drop_first_after:
                self.transport.loseConnection()
            return
        reading_id = line.rsplit(b",", 1)[1]
        index = node.stored.setdefault(reading_id, len(node.stored) + 1)
        node.acks.append(reading_id)
        self.sendLine(b"OK %d" % index)


class FakeNode(protocol.Factory):
    """A tiny node on a loopback port, recording what it received and answered."""

    protocol = FakeNodeProtocol
    noisy = False

    def __init__(self, drop_first_after: int = 0):
        self.drop_first_after = drop_first_after
        self.connections: list[FakeNodeProtocol] = []
        self.stored: dict[bytes, int] = {}
        self.acks: list[bytes] = []
        self._open: dict[FakeNodeProtocol, defer.Deferred] = {}
        self.port = None

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        self._open[proto] = defer.Deferred()
        return proto

    def closed(self, proto):
        self._open.pop(proto).callback(None)

    def listen(self, port_number: int = 0) -> int:
        self.port = reactor.listenTCP(port_number, self, interface="127.0.0.1")
        return self.port.getHost().port

    def close(self) -> defer.Deferred:
        """Stop listening and wait until every connection is closed."""
        waits = list(self._open.values())
        for proto in list(self._open):
            proto.transport.abortConnection()
        if self.port is not None:
            waits.append(defer.maybeDeferred(self.port.stopListening))
        return defer.gatherResults(waits)


class SimulatorProcess(protocol.ProcessProtocol):
    """The real script in a child process, its output collected and waited on."""

    def __init__(self):
        self.stdout = b""
        self.stderr = b""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._waiting: list[tuple[bytes, defer.Deferred]] = []
        self.running = True

    @classmethod
    def spawn(cls, test: TestCase, *args: str) -> SimulatorProcess:
        proc = cls()
        argv = [sys.executable, SCRIPT, *args]
        reactor.spawnProcess(proc, sys.executable, argv, env=os.environ.copy())

        def kill_if_running():
            if proc.running:
                proc.transport.signalProcess("KILL")
            return proc.ended.addErrback(lambda _: None)

        test.addCleanup(kill_if_running)
        return proc

    def outReceived(self, data):
        self.stdout += data
        for text, d in list(self._waiting):
            if text in self.stdout:
                self._waiting.remove((text, d))
                d.callback(None)

    def errReceived(self, data):
        self.stderr += data

    def processEnded(self, reason):
        self.running = False
        for text, d in self._waiting:
            problem = "process ended without printing {!r}: {!r}".format(text, self.stdout)
            d.errback(AssertionError(problem))
        self._waiting = []
        self.ended.callback(reason.value.exitCode)

    def printed(self, text: str) -> defer.Deferred:
        """Fires once stdout contains C{text}, or fails after the deadline."""
        wanted = text.encode()
        if wanted in self.stdout:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append((wanted, d))
        return d.addTimeout(DEADLINE, reactor)

    def exit_code(self) -> defer.Deferred[int]:
        """Fires with the exit status, or fails after the deadline."""
        d = defer.Deferred()

        def fire(result):
            if not d.called:
                d.callback(result)
            return result

        self.ended.addBoth(fire)
        return d.addTimeout(DEADLINE, reactor)

    def lines(self) -> list[str]:
        return self.stdout.decode().splitlines()


class CommandLineTests(TestCase):
    """The script run as a user runs it."""

    timeout = DEADLINE * 2

    @defer.inlineCallbacks
    def test_no_sensor_prints_usage(self):
        """Without a sensor flag the seed's usage text is printed exactly; the exit status is 1."""
        proc = SimulatorProcess.spawn(self)
        code = yield proc.exit_code()
        self.assertEqual(code, 1)
        self.assertEqual(
            proc.stdout.decode(),
            "You must specify the type of sensor data to simulate.\n"
            "Available options:\n"
            "--temp\n"
            "--pressure\n"
            "--humidity\n",
        )

    @defer.inlineCallbacks
    def test_bad_options(self):
        """A bad option value gives exit status 2 and one line on stderr naming the option."""
        cases = [
            (["--temp", "--port", "abc"], "--port"),
            (["--temp", "--port", "70000"], "--port"),
            (["--temp", "--interval", "-1"], "--interval"),
            (["--temp", "--interval", "nan"], "--interval"),
            (["--temp", "--count", "0"], "--count"),
            (["--temp", "--humidity"], "--humidity"),
        ]
        for args, option in cases:
            proc = SimulatorProcess.spawn(self, *args)
            code = yield proc.exit_code()
            self.assertEqual(code, 2, args)
            err = proc.stderr.decode().splitlines()
            self.assertEqual(len(err), 1, err)
            self.assertIn(option, err[0])
            self.assertEqual(proc.stdout, b"")

    @defer.inlineCallbacks
    def test_misspelled_flag(self):
        """
        A misspelled sensor flag gives exit status 2 and, on stderr, the error line, a guess and
        the list of sensor flags; nothing is sent.
        """
        proc = SimulatorProcess.spawn(self, "--temperature")
        code = yield proc.exit_code()
        self.assertEqual(code, 2)
        err = proc.stderr.decode().splitlines()
        self.assertEqual(
            err[:2],
            [
                "sensor_simulator.py: error: unrecognized arguments: --temperature",
                "Did you mean --temp?",
            ],
        )
        self.assertIn("--pressure", err)
        self.assertEqual(proc.stdout, b"")


class RealSocketTests(TestCase):
    """The script against a fake node over real loopback sockets."""

    timeout = DEADLINE * 2

    def start_node(self, **kwargs) -> tuple[FakeNode, int]:
        node = FakeNode(**kwargs)
        port = node.listen()
        self.addCleanup(node.close)
        return node, port

    @defer.inlineCallbacks
    def test_count_with_interval_zero(self):
        """--count 5 --interval 0 sends five readings as fast as they are acknowledged, exits 0."""
        node, port = self.start_node()
        proc = SimulatorProcess.spawn(
            self, "--temp", "--port", str(port), "--interval", "0", "--count", "5"
        )
        code = yield proc.exit_code()
        self.assertEqual((code, proc.stderr), (0, b""))
        self.assertEqual(len(node.acks), 5)
        self.assertEqual(len(set(node.acks)), 5)
        lines = proc.lines()
        self.assertEqual(len(lines), 5, lines)
        for line in lines:
            self.assertRegex(line, r"^Sending Temperature,\d\dC," + TIMESTAMP + "$")

    @defer.inlineCallbacks
    def check_resends_after_drop(self, interval: str):
        node, port = self.start_node(drop_first_after=3)
        proc = SimulatorProcess.spawn(
            self, "--humidity", "--port", str(port), "--interval", interval, "--count", "6"
        )
        code = yield proc.exit_code()
        self.assertEqual((code, proc.stderr), (0, b""))
        dropped = [line.rsplit(b",", 1)[1] for line in node.connections[0].lines]
        self.assertGreaterEqual(len(dropped), 3)
        # Each reading acknowledged exactly once, the unanswered ones resent first and in order.
        self.assertEqual(len(node.acks), 6)
        self.assertEqual(len(set(node.acks)), 6)
        self.assertEqual(node.acks[: len(dropped)], dropped)
        lines = proc.lines()
        self.assertEqual(len([line for line in lines if line.startswith("Sending Humidity,")]), 6)
        lost = "Lost connection to 127.0.0.1:{}; reconnecting".format(port)
        self.assertEqual(lines.count(lost), 1, lines)

    def test_resends_after_drop_interval_zero(self):
        """Readings a node dropped unanswered are resent, each acknowledged once (--interval 0)."""
        return self.check_resends_after_drop("0")

    def test_resends_after_drop_with_interval(self):
        """Readings a node dropped unanswered are resent, each acknowledged once (--interval 0.05)."""
        return self.check_resends_after_drop("0.05")

    @defer.inlineCallbacks
    def test_node_starts_after_simulator(self):
        """With no node listening, one 'Cannot connect' line; once the node is up, readings arrive."""
        probe = FakeNode()
        port = probe.listen()
        yield probe.close()  # a port that was free a moment ago, now refusing connections
        proc = SimulatorProcess.spawn(
            self, "--pressure", "--port", str(port), "--interval", "0.1", "--count", "3"
        )
        cannot = "Cannot connect to 127.0.0.1:{} (Connection refused); retrying".format(port)
        yield proc.printed(cannot)
        node = FakeNode()
        node.listen(port)
        self.addCleanup(node.close)
        code = yield proc.exit_code()
        self.assertEqual((code, proc.stderr), (0, b""))
        lines = proc.lines()
        self.assertEqual(lines.count(cannot), 1, lines)
        self.assertEqual(len(node.acks), 3)
        self.assertEqual(len(set(node.acks)), 3)
        sending = [line for line in lines if line.startswith("Sending Atm. Pressure,")]
        self.assertEqual(len(sending), 3, lines)


class TokenTests(SynchronousTestCase):
    """
    With --token-file the simulator sends AUTH <token> first and readings
    only once the node answered OK auth.
    """

    def test_auth_first(self):
        h = Harness(interval=0, count=2, token=b"t0ken-0123456789")
        transport = h.connect()
        self.assertEqual(transport.value(), b"AUTH t0ken-0123456789\n")
        transport.clear()
        h.answer(b"OK auth kitchen")
        self.assertEqual(h.sent(), ["run-1", "run-2"])

    def test_name_said_once(self):
        """
        The name the node knows the sensor by is printed on the first
        connection, not again on each reconnection.
        """
        h = Harness(interval=0, count=5, token=b"t0ken-0123456789")
        for _ in range(2):
            h.connect()
            h.answer(b"OK auth kitchen")
            h.drop()
        named = [line for line in h.out if "as sensor" in line]
        self.assertEqual(len(named), 1, h.out)
        self.assertIn("as sensor kitchen", named[0])

    def test_refused_said_once(self):
        h = Harness(interval=0, count=2, token=b"wrong-0123456789")
        for _ in range(3):
            transport = h.connect()
            h.answer(b"ERR not authenticated")
            self.assertTrue(transport.disconnecting)
            self.assertEqual(transport.value(), b"AUTH wrong-0123456789\n")
            h.drop()
        refused = [line for line in h.out if "refused the token" in line]
        self.assertEqual(len(refused), 1, h.out)
        self.assertIn("ERR not authenticated", refused[0])
        self.assertNotIn("Lost connection", " ".join(h.out))
