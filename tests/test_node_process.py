"""
Integration tests: real ``twistd -n p2pstore`` processes on loopback ports, fed
over real sockets by test clients and by the real sensor simulator.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from p2pstore.schema import VERSION

from .nodes import (
    SELF_DB,
    IncompleteAnswers,
    NodeExited,
    NodeProcess,
    endpoint,
    send_lines,
    start_simulator,
    wait_for,
)
from .tsdb import http_get

MAX_LINE = 1024  # the node's default --max-line
# Readings per simulator in the kill -9 test.
BURST = 3000
# The kill -9 comes once this many readings are committed (half from each simulator).
KILL_AFTER = 300


def own_table(node: NodeProcess) -> str:
    return f"server_id_{node.node_id}"


def count_rows(node: NodeProcess) -> int:
    return node.rows(SELF_DB, own_table(node), "count(*)")[0][0]


@inlineCallbacks
def stop_cleanly(test_case, node: NodeProcess):
    """
    SIGTERM the node and check it stopped in order. (twistd ends itself with
    the signal that stopped it, so a clean stop exits with -SIGTERM.)
    """
    code = yield node.stop()
    log = node.log_text()
    test_case.assertEqual(code, -signal.SIGTERM, log)
    test_case.assertNotIn("Traceback", log)
    last = node.log_path.read_text().splitlines()[-1]
    test_case.assertIn("Server Shut Down.", last, log)


class IngestionTests(TestCase):
    """
    A running node stores what sensors send and says so over HTTP.
    """

    timeout = 120

    @inlineCallbacks
    def test_readings_land_in_the_database(self):
        """
        Every line a sensor sends is answered in order: each ``OK n`` names
        the row ``entry_index = n`` of the node's table holding exactly the
        fields sent, and each bad line gets ``ERR <reason>`` and is kept in
        rejected_lines, without disturbing the good lines after it.
        """
        node = NodeProcess(self)
        yield node.start()
        too_long = b"Temperature," + b"9" * 2000
        lines = [
            b"Temperature,39C,2020-04-20 23:20:18.231325",
            b"garbage",
            too_long,
            b"Temperature,39C,yesterday",
            b"Temperature,39C,2020-04-20 23:20:18,r-x,extra",
            b"Humidity,\xff\xfe% RH",
            b"Humidity, ,2020-04-20 23:20:18",
            # Spaces stripped, CRLF, a T separator, a UTC offset and a reading_id.
            b"  Atm. Pressure , 1.798 atm ,2020-04-20T23:20:19+00:00, r-2 \r",
            # No timestamp: the node stamps its own UTC time.
            b"Humidity,15% RH",
            b"Humidity,16% RH,2020-04-20 23:20:20,r-4",
            # A resend of a stored reading_id is answered with the stored index.
            b"Humidity,16% RH,2020-04-20 23:20:20,r-4",
        ]
        before = datetime.now(timezone.utc).replace(tzinfo=None)
        answers = yield send_lines(node.sensor_port, lines)
        rejections = [
            b"ERR missing value",
            b"ERR line too long",
            b"ERR bad timestamp",
            b"ERR too many fields",
            b"ERR not UTF-8",
            b"ERR empty value",
        ]
        self.assertEqual(
            answers, [b"OK 1", *rejections, b"OK 2", b"OK 3", b"OK 4", b"OK 4"]
        )

        rows = node.rows(
            SELF_DB,
            own_table(node),
            "entry_index, sensor_type, sensor_data, timestamp, value, unit, reading_id",
            order_by="entry_index",
        )
        stamped = rows[2][3]
        self.assertEqual(
            rows,
            [
                (1, "Temperature", "39C", "2020-04-20 23:20:18.231325", 39.0, "C", None),
                (2, "Atm. Pressure", "1.798 atm", "2020-04-20T23:20:19+00:00", 1.798, "atm", "r-2"),
                (3, "Humidity", "15% RH", stamped, 15.0, "% RH", None),
                (4, "Humidity", "16% RH", "2020-04-20 23:20:20", 16.0, "% RH", "r-4"),
            ],
        )
        stamped_at = datetime.strptime(stamped, "%Y-%m-%d %H:%M:%S.%f")
        self.assertTrue(
            before - timedelta(seconds=5) <= stamped_at <= before + timedelta(seconds=60),
            f"the node's own timestamp {stamped} is not its UTC time now ({before})",
        )

        sensor_indexes = {row[0] for row in node.rows(SELF_DB, own_table(node), "sensor_index")}
        rejected = node.rows(
            SELF_DB, "rejected_lines", "sensor_index, reason, raw", order_by="id"
        )
        self.assertEqual(
            [(reason, bytes(raw)) for _, reason, raw in rejected],
            [
                ("missing value", b"garbage"),
                ("line too long", too_long[:MAX_LINE]),
                ("bad timestamp", lines[3]),
                ("too many fields", lines[4]),
                ("not UTF-8", lines[5]),
                ("empty value", lines[6]),
            ],
        )
        # One connection: one sensor_index for its readings and its rejected lines.
        self.assertEqual(len(sensor_indexes | {index for index, _, _ in rejected}), 1)

    @inlineCallbacks
    def test_status_and_readings(self):
        """
        ``GET /status`` counts the lines accepted and rejected and what is
        stored per origin; ``GET /readings`` gives the stored readings newest
        first, filtered by type and limited; bad parameters get a 400 and
        unknown paths a 404, each with a JSON error.
        """
        node = NodeProcess(self)
        status = yield node.start()
        self.assertEqual(status["node_id"], node.node_id)
        self.assertEqual(status["state"], "Running")
        answers = yield send_lines(
            node.sensor_port,
            [
                b"Temperature,39C,2020-04-20 23:20:18.231325",
                b"Humidity,15% RH,2020-04-20 23:20:19.000000",
                b"nonsense",
                b"Temperature,34C,2020-04-20 23:20:20.000000",
                b"Temperature",
            ],
        )
        self.assertEqual(
            answers, [b"OK 1", b"OK 2", b"ERR missing value", b"OK 3", b"ERR missing value"]
        )

        status = yield node.status()
        self.assertEqual(
            {key: status["sensors"][key] for key in ("accepted", "rejected")},
            {"accepted": 3, "rejected": 2},
        )
        self.assertEqual(
            status["origins"], {node.node_id: {"count": 3, "last_index": 3, "self": True}}
        )
        self.assertEqual(status["peers"], [])
        self.assertIsInstance(status["version"], str)
        self.assertGreaterEqual(status["uptime_s"], 0)

        code, body = yield node.get_json("/readings")
        self.assertEqual(code, 200)
        readings = body["readings"]
        self.assertEqual([r["entry_index"] for r in readings], [3, 2, 1])
        newest = readings[0]
        fields = ("origin", "sensor_type", "sensor_data", "timestamp", "value", "unit")
        self.assertEqual(
            {key: newest[key] for key in fields},
            {
                "origin": node.node_id,
                "sensor_type": "Temperature",
                "sensor_data": "34C",
                "timestamp": "2020-04-20 23:20:20.000000",
                "value": 34.0,
                "unit": "C",
            },
        )
        self.assertRegex(newest["data_checksum"], r"\A[0-9a-f]{64}\Z")

        code, body = yield node.get_json("/readings?type=Temperature&limit=1")
        self.assertEqual((code, [r["sensor_data"] for r in body["readings"]]), (200, ["34C"]))
        code, body = yield node.get_json(f"/readings?origin={node.node_id}&type=Humidity")
        self.assertEqual((code, [r["sensor_data"] for r in body["readings"]]), (200, ["15% RH"]))

        code, body = yield node.get_json("/readings?limit=0")
        self.assertEqual(code, 400)
        self.assertIn("limit", body["error"])
        code, body = yield node.get_json("/nowhere")
        self.assertEqual(code, 404)
        self.assertIn("error", body)

    @inlineCallbacks
    def test_readings_by_time(self):
        """
        A real node answers a time range oldest first, page after page
        through ``next``, every reading once, with timestamps written in UTC
        and at an offset alike; the same range as CSV has a header and the
        same readings.
        """
        node = NodeProcess(self)
        yield node.start()
        base = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
        lines, inside = [], set()
        for i in range(300):
            when = base + timedelta(seconds=i)
            if i % 3:
                stamp = when.strftime("%Y-%m-%d %H:%M:%S")
            else:
                stamp = when.astimezone(timezone(timedelta(hours=2))).isoformat()
            lines.append(f"Temperature,{i}C,{stamp}".encode())
            if 60 <= i < 180:
                inside.add(f"{i}C")
        answers = yield send_lines(node.sensor_port, lines)
        self.assertEqual(len([a for a in answers if a.startswith(b"OK")]), 300)
        query = "/readings?since=2026-11-28T10:01:00Z&until=2026-11-28T12:03:00%2B02:00&limit=50"
        seen, after, pages = [], None, 0
        while True:
            code, body = yield node.get_json(query + (f"&after={after}" if after else ""))
            self.assertEqual(code, 200, body)
            seen += [r["sensor_data"] for r in body["readings"]]
            pages += 1
            after = body["next"]
            if after is None:
                break
            self.assertLess(pages, 10)
        self.assertEqual(seen, [f"{i}C" for i in range(60, 180)])
        self.assertEqual(pages, 3)
        code, csv_body = yield http_get(
            f"http://127.0.0.1:{node.status_port}{query.replace('limit=50', 'limit=1000')}&format=csv"
        )
        self.assertEqual(code, 200)
        rows = csv_body.decode("utf-8").splitlines()
        self.assertTrue(rows[0].startswith("origin,"), rows[0])
        self.assertEqual(len(rows), 1 + len(inside))
        code, body = yield node.get_json("/readings?since=yesterday")
        self.assertEqual(code, 400)
        self.assertIn("since must be ISO-8601", body["error"])

    @inlineCallbacks
    def test_simulator(self):
        """
        ``sensor_simulator.py --temp --interval 0 --count N`` exits 0 once
        its N readings are acknowledged, printing each as the seed did, and
        the node's table then holds exactly those N readings.
        """
        n = 200
        node = NodeProcess(self)
        yield node.start()
        simulator = start_simulator(self, node.sensor_port, n)
        code = yield simulator.wait_exit(30)
        self.assertEqual(code, 0, simulator.output)
        sent = re.findall(
            r"^Sending Temperature,(\d+)C,\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$",
            simulator.output,
            re.M,
        )
        self.assertEqual(len(sent), n, simulator.output)

        rows = node.rows(SELF_DB, own_table(node), "sensor_type, value, unit, reading_id")
        self.assertEqual(len(rows), n)
        self.assertEqual(len({reading_id for *_, reading_id in rows}), n)
        self.assertEqual({(t, u) for t, _, u, _ in rows}, {("Temperature", "C")})
        self.assertTrue(all(20 <= value <= 40 for _, value, _, _ in rows))


class LifecycleTests(TestCase):
    """
    What a node keeps across a crash, a clean stop and a bad start.
    """

    timeout = 120

    @inlineCallbacks
    def test_kill_during_burst(self):
        """
        kill -9 in the middle of two simulators' bursts, then a restart on
        the same data directory: the simulators resend what was not
        acknowledged and finish, every reading is stored exactly once with a
        gapless entry_index, everything committed before the crash is still
        there unchanged, and connections after the restart get sensor_index
        numbers never used before it.
        """
        node = NodeProcess(self)
        yield node.start()
        table = own_table(node)
        # Frozen, the node still gets its connections (from the kernel), so
        # both bursts start together when it thaws: a few thousand readings
        # take well under a second, and a simulator starting late would
        # miss the crash.
        node.signal(signal.SIGSTOP)
        simulators = [
            start_simulator(self, node.sensor_port, BURST, sensor=kind)
            for kind in ("temp", "humidity")
        ]
        yield wait_for(
            lambda: all("Sending" in s.output for s in simulators), 30, "both simulators to send"
        )
        node.signal(signal.SIGCONT)

        def stored_by_each():
            return node.rows(
                SELF_DB, table, "sum(sensor_type = 'Temperature'), sum(sensor_type = 'Humidity')"
            )[0]

        # Polled more often than usual: the whole burst lasts a fraction of a second.
        yield wait_for(
            lambda: min(n or 0 for n in stored_by_each()) >= KILL_AFTER // 2,
            30,
            lambda: f"{KILL_AFTER // 2} readings of each simulator (have {stored_by_each()})",
            interval=0.01,
        )
        code = yield node.kill()
        self.assertEqual(code, -signal.SIGKILL)

        columns = "entry_index, reading_id, sensor_index, data_checksum, epoch"
        before = node.rows(SELF_DB, table, columns)
        self.assertTrue(
            len(before) < 2 * BURST, f"the kill came after the burst: {len(before)} readings stored"
        )

        yield node.start()
        for simulator in simulators:
            code = yield simulator.wait_exit(60)
            self.assertEqual(code, 0, simulator.output[-3000:])
            # Each saw the crash, said so, and came back on its own.
            self.assertIn("Lost connection", simulator.output, simulator.output[-3000:])
        yield stop_cleanly(self, node)

        after = node.rows(SELF_DB, table, columns)
        self.assertEqual(set(before) - set(after), set(), "rows committed before the crash changed")
        reading_ids = Counter(row[1] for row in after)
        self.assertEqual([r for r, n in reading_ids.items() if n > 1], [], "duplicated readings")
        runs = {reading_id.rsplit("-", 1)[0] for reading_id in reading_ids}
        self.assertEqual(len(runs), 2)
        expected = {f"{run}-{i}" for run in runs for i in range(1, BURST + 1)}
        self.assertEqual(set(reading_ids), expected)
        self.assertEqual(sorted(row[0] for row in after), list(range(1, 2 * BURST + 1)))
        self.assertEqual(len({row[4] for row in after}), 1, "more than one epoch")

        old_indexes = {row[2] for row in before}
        new_indexes = {row[2] for row in set(after) - set(before)}
        self.assertTrue(new_indexes, "nothing was stored after the restart")
        self.assertLess(max(old_indexes), min(new_indexes))

    @inlineCallbacks
    def interrupt_stream(self, node: NodeProcess, total: int = 40000):
        """
        Stream ``total`` readings (reading_ids ``term-0``, ``term-1``...) to
        ``node`` on one connection and SIGTERM it once it has taken 1000.

        @return: the answers received before the node closed the connection.
        """
        lines = [
            b"Temperature,%dC,2020-04-20 23:20:18.%06d,term-%d" % (20 + i % 20, i % 10**6, i)
            for i in range(total)
        ]
        sending = send_lines(node.sensor_port, lines, timeout=60)

        @inlineCallbacks
        def accepted_some():
            status = yield node.status()
            return status["sensors"]["accepted"] >= 1000

        yield wait_for(accepted_some, 30, "the node to accept 1000 readings")
        yield stop_cleanly(self, node)
        failure = yield self.assertFailure(sending, IncompleteAnswers)
        self.assertLess(len(failure.answers), total, "SIGTERM came after the last reading")
        return failure.answers

    @inlineCallbacks
    def test_sigterm_keeps_acknowledged_readings(self):
        """
        SIGTERM while a sensor streams readings: the node exits cleanly; every
        reading it acknowledged is in the file with the index it answered;
        what is stored is the lines it read, in order; and the next start
        counts them all.
        """
        node = NodeProcess(self)
        yield node.start()
        answers = yield self.interrupt_stream(node)
        self.assertEqual(answers, [b"OK %d" % (i + 1,) for i in range(len(answers))])

        rows = node.rows(
            SELF_DB, own_table(node), "entry_index, reading_id", order_by="entry_index"
        )
        self.assertEqual(rows, [(i + 1, f"term-{i}") for i in range(len(rows))])
        self.assertGreaterEqual(len(rows), len(answers), "acknowledged readings are missing")

        status = yield node.start()
        self.assertEqual(status["origins"][node.node_id]["count"], len(rows))
        self.assertEqual(status["origins"][node.node_id]["last_index"], len(rows))

    @inlineCallbacks
    def test_sigterm_answers_every_reading_it_stored(self):
        """
        SIGTERM while a sensor streams readings: every reading the node
        stored was answered before it closed the connection (as the README
        promises), so a sensor without reading_ids never resends, and so
        never duplicates, a stored reading.
        """
        node = NodeProcess(self)
        yield node.start()
        answers = yield self.interrupt_stream(node)
        stored = count_rows(node)
        self.assertEqual(
            len(answers), stored, f"{stored - len(answers)} stored readings unanswered"
        )

    @inlineCallbacks
    def test_sensor_port_in_use(self):
        """
        A second node given the sensor port of a running one exits at once
        with code 1 and one line naming --sensor-port, no traceback; the
        running node goes on.
        """
        first = NodeProcess(self)
        yield first.start()
        second = NodeProcess(self, extra_args=["--sensor-port", endpoint(first.sensor_port)])
        started = reactor.seconds()
        exited = yield self.assertFailure(second.start(), NodeExited)
        self.assertLess(reactor.seconds() - started, 15)
        self.assertEqual(exited.code, 1)
        self.assertNotIn("Traceback", exited.log)
        naming = [line for line in exited.log.splitlines() if "--sensor-port" in line]
        self.assertEqual(len(naming), 1, exited.log)
        self.assertIn(f"tcp:{first.sensor_port}:", naming[0])
        self.assertIn("cannot listen", naming[0])
        status = yield first.status()
        self.assertEqual(status["state"], "Running")

    @inlineCallbacks
    def test_node_id_disagrees_with_database(self):
        """
        A node.id that names another node than the table in
        self_sensor_data.db stops the start with one line saying so (and
        leaves node.id and the readings as they are).
        """
        node = NodeProcess(self)
        yield node.start()
        self.assertEqual((yield send_lines(node.sensor_port, [b"Temperature,39C"])), [b"OK 1"])
        yield stop_cleanly(self, node)
        real = node.node_id
        other = uuid.uuid4().hex
        (node.data_dir / "node.id").write_text(other + "\n")

        exited = yield self.assertFailure(node.start(), NodeExited)
        self.assertEqual(exited.code, 1)
        self.assertNotIn("Traceback", exited.log)
        naming = [line for line in exited.log.splitlines() if other in line]
        self.assertEqual(len(naming), 1, exited.log)
        self.assertIn(f"server_id_{real}", naming[0])
        self.assertIn("not start", naming[0])
        self.assertEqual(node.node_id, other)
        self.assertEqual(len(node.rows(SELF_DB, f"server_id_{real}")), 1)

    @inlineCallbacks
    def test_store_that_cannot_open_exits_1(self):
        """
        A store that cannot open (here a file of a newer p2pstore) ends
        twistd with status 1, so that a supervisor sees the failure, and the
        log says that nothing was stored rather than that all was; the file
        is left as it was.
        """
        node = NodeProcess(self)
        yield node.start()
        self.assertEqual((yield send_lines(node.sensor_port, [b"Temperature,39C"])), [b"OK 1"])
        yield stop_cleanly(self, node)
        path = node.data_dir / SELF_DB
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(VERSION + 1),)
            )
        conn.close()

        exited = yield self.assertFailure(node.start(), NodeExited)
        self.assertEqual(exited.code, 1)
        self.assertIn("cannot open the store", exited.log)
        second = exited.log[exited.log.rindex("cannot open the store"):]
        self.assertIn("upgrade p2pstore", second)
        self.assertIn("stopped without opening the store", second)
        self.assertNotIn("every reading received was stored and answered", second)
        self.assertEqual(len(node.rows(SELF_DB, own_table(node))), 1)


class _SilentSensor(Protocol):
    """
    A sensor that writes what it is given and never reads; it counts what
    the node sends it.
    """

    def __init__(self):
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)


class _SeedSensor(Protocol):
    """
    A sensor as the proof of concept's sensor_simulator.py is: each reading
    in a write of its own, no line end, never reading; then it closes.
    """

    def __init__(self, readings: list[bytes], pace: float):
        self.readings = list(readings)
        self.pace = pace
        self.done = Deferred()

    def connectionMade(self) -> None:
        self._next()

    def _next(self) -> None:
        if not self.readings:
            self.transport.loseConnection()
            return
        self.transport.write(self.readings.pop(0))
        reactor.callLater(self.pace, self._next)

    def connectionLost(self, reason) -> None:
        self.done.callback(None)


def seed_readings(connection: int, count: int) -> list[bytes]:
    """
    ``count`` readings of one sensor with the seed's timestamps,
    str(datetime), all different; sensor 0's first is on a whole second, so
    it has no fraction.
    """
    base = datetime(2026, 12, 4, 18, 16, 36)
    return [
        f"Temperature,{connection % 50}C,{base + timedelta(milliseconds=4 * k + connection // 250, microseconds=connection % 250)}".encode()
        for k in range(count)
    ]


class UnterminatedSensorTests(TestCase):
    """
    Sensors of the proof of concept, which send readings without line ends
    and never read, have every reading stored, each as its own row, while
    line sensors on the same port keep their answers.
    """

    timeout = 120

    @inlineCallbacks
    def feed(self, node: NodeProcess, connections: int, count: int, pace: float):
        sensors = []
        for n in range(connections):
            sensor = _SeedSensor(seed_readings(n, count), pace)
            endpoint_ = TCP4ClientEndpoint(reactor, "127.0.0.1", node.sensor_port)
            yield connectProtocol(endpoint_, sensor)
            sensors.append(sensor)
        yield DeferredList([s.done for s in sensors])
        return [r for n in range(connections) for r in seed_readings(n, count)]

    @inlineCallbacks
    def test_at_the_seeds_pace(self):
        """
        Three sensors sending a reading every 2 s: every reading stored as
        sent, nothing refused, and /status counts them apart.
        """
        node = NodeProcess(self)
        yield node.start()
        feeding = self.feed(node, 3, 3, 2.0)
        yield wait_for(lambda: count_rows(node) >= 3, 10, "the first readings")
        status = yield node.status()
        self.assertEqual(status["sensors"]["unterminated_connected"], 3)
        sent = yield feeding
        yield wait_for(lambda: count_rows(node) == len(sent), 10, "every reading")
        rows = node.rows(SELF_DB, own_table(node), "sensor_type, sensor_data, timestamp")
        self.assertEqual(sorted(",".join(r).encode() for r in rows), sorted(sent))
        self.assertEqual(node.rows(SELF_DB, "rejected_lines", "count(*)"), [(0,)])
        status = yield node.status()
        self.assertEqual(status["sensors"]["unterminated_accepted"], len(sent))
        yield stop_cleanly(self, node)

    @inlineCallbacks
    def test_flat_out_beside_a_line_sensor(self):
        """
        Fifty such sensors sending 200 readings each as fast as they can:
        all 10,000 stored once each, intact; a line sensor sending at the
        same time gets every answer.
        """
        node = NodeProcess(self)
        yield node.start()
        feeding = self.feed(node, 50, 200, 0)
        answers = yield send_lines(
            node.sensor_port, [b"Humidity,%d%% RH,2026-12-04 18:16:36,line-%d" % (n, n) for n in range(50)]
        )
        sent = yield feeding
        self.assertEqual(len(answers), 50)
        self.assertTrue(all(a.startswith(b"OK ") for a in answers), answers)
        yield wait_for(lambda: count_rows(node) == len(sent) + 50, 30, "every reading")
        rows = node.query(
            SELF_DB,
            f"SELECT sensor_type, sensor_data, timestamp FROM {own_table(node)} "
            f"WHERE reading_id IS NULL",
        )
        self.assertEqual(Counter(",".join(r).encode() for r in rows), Counter(sent))
        self.assertEqual(node.rows(SELF_DB, "rejected_lines", "count(*)"), [(0,)])
        yield stop_cleanly(self, node)

    @inlineCallbacks
    def test_no_answers_pile_up(self):
        """
        100,000 readings on one connection that never reads: all stored,
        nothing sent back, and the node's memory does not grow with them
        (answers are not kept for such a sensor).
        """
        node = NodeProcess(self)
        yield node.start()
        sensor = _SilentSensor()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", node.sensor_port), sensor)
        readings = seed_readings(7, 100_000)
        sensor.transport.write(b"".join(readings[:1000]))
        yield wait_for(lambda: count_rows(node) == 999, 20, "the first readings")
        before = node.rss_kib()
        for start in range(1000, len(readings), 1000):
            sensor.transport.write(b"".join(readings[start : start + 1000]))
        yield wait_for(lambda: count_rows(node) == len(readings), 60, "every reading")
        after = node.rss_kib()
        self.assertEqual(sensor.received, 0)
        # Measured 2026-12-04: 44.4 MB before, 51.0-51.2 MB after (SQLite's
        # cache and the table growing), in two runs.
        self.assertLess(after - before, 20 * 1024, (before, after))
        sensor.transport.loseConnection()
        yield stop_cleanly(self, node)
