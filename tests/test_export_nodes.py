"""
Export between real processes on loopback: ``twistd -n p2pstore --export``
nodes posting to Debian's InfluxDB 1.x and VictoriaMetrics, started by each
test (tests/tsdb.py). Every acknowledged reading arrives once, as the point
p2pstore.lineprotocol makes of it, through a destination stopped and
started again and a node killed with -9 in the middle of a backlog; a point
the destination refuses goes to the dead letters while the rest flows.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from p2pstore.lineprotocol import nanoseconds
from p2pstore.records import parse_value_unit
from p2pstore.testing import free_ports

from .nodes import SELF_DB, NodeProcess, wait_for
from .test_cluster import (
    cluster_key, copy_of, feed, mesh, no_tracebacks, own, sensor_lines, wait_identical,
    wait_links_up,
)
from .tsdb import InfluxDB, VictoriaMetrics, http_get

DB = "sensors"
# Catching up a backlog at a few thousand records a second, on a loaded
# machine, after a backoff of up to 16 s.
EXPORTED_WITHIN = 90.0


def expected_points(node: NodeProcess, rows=None) -> set:
    """
    The points a node's own readings (or ``rows`` of its log) should be,
    as InfluxDB returns them: (measurement, time ns, origin, unit, value,
    data).
    """
    points = set()
    for row in own(node) if rows is None else rows:
        index, _, sensor_type, data, timestamp = row[:5]
        value, unit = parse_value_unit(data)
        points.add(
            (sensor_type, nanoseconds(timestamp, index), node.node_id, unit, value,
             None if value is not None else data)
        )
    return points


def influx_points(points: list) -> set:
    return {
        (p["measurement"], p["time"], p["origin"], p.get("unit"), p.get("value"), p.get("data"))
        for p in points
    }


@inlineCallbacks
def export_status(node: NodeProcess, index: int = 0):
    status = yield node.status()
    return status["exports"][index]


@inlineCallbacks
def exported(node: NodeProcess, count: int, index: int = 0, timeout: float = EXPORTED_WITHIN):
    """
    Wait until the node's destination ``index`` has taken ``count`` of its
    readings and none is pending.
    """

    seen = []

    @inlineCallbacks
    def done():
        status = yield export_status(node, index)
        (saved,) = node.query(
            SELF_DB, "SELECT coalesce(sum(exported), 0) FROM export_cursors WHERE destination = ?",
            (status["url"],),
        )
        seen[:] = [status, saved]
        return status["pending"] == 0 and saved[0] >= count

    yield wait_for(done, timeout, lambda: f"export of {count} readings: {seen}")


def points_of(influx: InfluxDB, node: NodeProcess, count: int):
    """
    Wait until InfluxDB holds ``count`` points of ``node``'s readings: those points.
    """

    def all_there():
        d = influx.points(DB)
        return d.addCallback(
            lambda points: [p for p in points if p["origin"] == node.node_id]
        ).addCallback(lambda mine: len(mine) == count and mine)

    return wait_for(all_there, EXPORTED_WITHIN, f"InfluxDB to hold all {count} of {node.node_id}'s readings")


class InfluxDBExportTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def start(self, extra=()):
        self.influx = InfluxDB(self, self.mktemp())
        yield self.influx.start()
        yield self.influx.create(DB)
        self.node = NodeProcess(self, extra_args=["--export", self.influx.write_url(DB), *extra])
        yield self.node.start()
        return self.node

    @inlineCallbacks
    def test_every_reading_arrives(self):
        """
        Every acknowledged reading is one point in InfluxDB, with its
        measurement, tags, field and time as documented: names with spaces
        and non-ASCII, UTC offsets, readings stamped by the node, several
        with the same timestamp to the second.
        """
        node = yield self.start()
        yield feed(self, node, sensor_lines(400, "a"))
        yield exported(node, 400)
        points = yield self.influx.points(DB)
        self.assertEqual(len(points), 400)
        self.assertEqual(influx_points(points), expected_points(node))
        status = yield export_status(node)
        self.assertEqual((status["sent"], status["state"]), (400, "ok"))
        no_tracebacks(self, node)

    @inlineCallbacks
    def test_awkward_names(self):
        """
        Types and values with equals signs, quotes, backslashes, spaces, a
        leading "#", and any UTF-8 (a sensor line cannot hold commas in a
        field) arrive in InfluxDB as they were sent.
        """
        node = yield self.start()
        lines = [
            "Eq=Type,5 m=s,2026-11-28 10:00:00.000001",
            'Quote"d Type,"open" door,2026-11-28 10:00:00.000002',
            "Back\\slash,back\\slash text,2026-11-28 10:00:00.000003",
            "#hash,7 #units,2026-11-28 10:00:00.000004",
            "Température ☃,21 °C,2026-11-28 10:00:00.000005",
            "Space  inside,  12.5 kPa a,2026-11-28 10:00:00.000006",
        ]
        yield feed(self, node, [line.encode("utf-8") for line in lines])
        yield exported(node, len(lines))
        points = yield self.influx.points(DB)
        found = influx_points(points)
        expected = expected_points(node)
        # InfluxDB 1.x keeps the backslash of an escaped "#" (documented).
        hashed = {p for p in expected if p[0] == "#hash"}
        self.assertEqual(
            {("\\" + p[0],) + p[1:] for p in hashed} | (expected - hashed), found
        )
        self.assertIn(("Eq=Type", "m=s"), {(p[0], p[3]) for p in found})

    @inlineCallbacks
    def test_destination_down_then_back(self):
        """
        Readings stored while InfluxDB is down wait, shown in /status as
        pending and retrying; once it is back they arrive, none missing
        and none twice.
        """
        node = yield self.start()
        yield feed(self, node, sensor_lines(50, "before"))
        yield exported(node, 50)
        yield self.influx.stop()
        yield feed(self, node, sensor_lines(300, "during", start=50))
        yield wait_for(
            lambda: export_status(node).addCallback(lambda s: s["state"] == "retrying"),
            30, "the export to retry",
        )
        status = yield export_status(node)
        self.assertEqual(status["pending"], 300)
        self.assertIn("connection", status["errors"])
        self.assertIsNotNone(status["oldest_unexported_age_s"])
        yield self.influx.start()
        yield exported(node, 350)
        points = yield self.influx.points(DB)
        self.assertEqual(len(points), 350)
        self.assertEqual(influx_points(points), expected_points(node))
        self.assertIn("works again", node.log_text())

    @inlineCallbacks
    def test_killed_mid_export(self):
        """
        A node killed with -9 while it exports a backlog sends on from its
        saved cursor after the restart: InfluxDB holds every reading once
        (the batch in flight at the kill is overwritten, not doubled).
        """
        node = yield self.start()
        yield self.influx.stop()
        lines = sensor_lines(20000, "k")
        for at in range(0, len(lines), 5000):
            yield feed(self, node, lines[at:at + 5000], timeout=60)
        yield self.influx.start()

        def some_exported():
            saved = node.query(SELF_DB, "SELECT coalesce(sum(exported), 0) FROM export_cursors")
            return 0 < saved[0][0] < 20000

        yield wait_for(some_exported, EXPORTED_WITHIN, "a part of the backlog to be exported")
        yield node.kill()
        yield node.start()
        yield exported(node, 20000)
        (answer,) = (yield self.influx.query(DB, 'SELECT count("value") FROM "Temperature"'))["results"]
        temperatures = sum(1 for p in expected_points(node) if p[0] == "Temperature")
        self.assertEqual(answer["series"][0]["values"][0][1], temperatures)
        points = yield self.influx.points(DB)
        self.assertEqual(len(points), 20000)
        self.assertEqual(influx_points(points), expected_points(node))

    @inlineCallbacks
    def test_refused_point_dead_lettered(self):
        """
        A reading InfluxDB cannot hold (a time past 2262) goes to
        export_dead_letters with InfluxDB's answer, counted in /status;
        every other reading arrives.
        """
        node = yield self.start()
        lines = sensor_lines(20, "d")
        lines.insert(7, b"Temperature,20C,2300-01-01 00:00:00,far-future")
        yield feed(self, node, lines)
        yield exported(node, 21)
        status = yield export_status(node)
        self.assertEqual(status["dead_lettered"], 1)
        ((index, status, answer, line),) = node.query(
            SELF_DB, "SELECT entry_index, status, answer, line FROM export_dead_letters"
        )
        self.assertEqual((index, status), (8, 400))
        self.assertIn("out of range", answer)
        self.assertIn("value=20.0 10413792000000000008", line)
        points = yield self.influx.points(DB)
        self.assertEqual(len(points), 20)
        self.assertIn("export_dead_letters", node.log_text())


class VictoriaMetricsExportTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def test_two_destinations(self):
        """
        A node with two --export destinations, InfluxDB and
        VictoriaMetrics, sends every reading to each; VictoriaMetrics holds
        each numeric reading as ``<type>_value`` at its millisecond.
        """
        influx = InfluxDB(self, self.mktemp())
        victoria = VictoriaMetrics(self, self.mktemp())
        yield influx.start()
        yield influx.create(DB)
        yield victoria.start()
        node = NodeProcess(
            self, extra_args=["--export", influx.write_url(DB), "--export", victoria.write_url()]
        )
        yield node.start()
        yield feed(self, node, sensor_lines(200, "v"))
        yield exported(node, 200, index=0)
        yield exported(node, 200, index=1)
        points = yield influx.points(DB)
        self.assertEqual(influx_points(points), expected_points(node))
        expected = {
            (f"{kind}_value", unit, value, when // 10**6)
            for kind, when, _, unit, value, _ in expected_points(node)
        }

        def held():
            d = victoria.export()

            def samples(series):
                found = []
                for labels, values, stamps in series:
                    for value, stamp in zip(values, stamps):
                        found.append((labels["__name__"], labels.get("unit"), value, stamp))
                return found

            return d.addCallback(samples)

        # Readings of one type less than 1 ms apart share a timestamp
        # there: the samples are compared as a set, and counted.
        found = yield wait_for(
            lambda: held().addCallback(lambda found: found if set(found) == expected else None),
            30, "VictoriaMetrics to hold every reading",
        )
        self.assertEqual(len(found), 200)
        no_tracebacks(self, node)


class TakeoverTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def backlog_on_a(self, backlog: int, b_args=()):
        """
        Two linked nodes exporting to one InfluxDB, a with 50 readings
        exported and then ``backlog`` more taken while InfluxDB is stopped;
        b with ``b_args`` too.
        """
        influx = InfluxDB(self, self.mktemp())
        yield influx.start()
        yield influx.create(DB)
        key = cluster_key(self)
        args = ["--export", influx.write_url(DB), "--export-takeover", "3s"]
        a = NodeProcess(self, secret_file=key, extra_args=args)
        b = NodeProcess(self, secret_file=key, extra_args=[*args, *b_args])
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        yield feed(self, a, sensor_lines(50, "up"))
        yield exported(a, 50)
        yield influx.stop()
        yield feed(self, a, sensor_lines(backlog, "down", start=50))
        return influx, a, b

    @inlineCallbacks
    def test_peer_exports_for_a_dead_node(self):
        """
        Readings a node stored while InfluxDB was down, then died with, are
        exported by its peer once it has been unreachable for
        --export-takeover, from where it had got; back, the node goes on
        from where the peer got. InfluxDB holds each reading once.
        """
        influx, a, b = yield self.backlog_on_a(150)
        rows = yield wait_identical(b, a)
        yield a.kill()
        yield influx.start()

        points = yield points_of(influx, a, 200)
        self.assertEqual(influx_points(points), expected_points(a, rows))
        status = yield export_status(b)
        self.assertEqual(status["taken_over"], [a.node_id])
        self.assertIn("has been unreachable", b.log_text())
        self.assertEqual(copy_of(b, a), rows)

        yield a.start()
        yield wait_for(
            lambda: export_status(b).addCallback(lambda s: s["taken_over"] == []),
            30, "b to leave a's export to a",
        )
        yield feed(self, a, sensor_lines(10, "back", start=200))
        yield exported(a, 210)
        points = yield influx.points(DB)
        self.assertEqual(len([p for p in points if p["origin"] == a.node_id]), 210)
        self.assertEqual(
            influx_points([p for p in points if p["origin"] == a.node_id]), expected_points(a)
        )
        no_tracebacks(self, a, b)


    @inlineCallbacks
    def test_retention_waits_for_takeover(self):
        """
        A peer run with --retain 2s keeps a node's readings the destination
        does not hold yet, past the retention and across its own restart,
        and exports them when the node dies; only then are they pruned
        there. InfluxDB holds each of
        the node's readings once.
        """
        influx, a, b = yield self.backlog_on_a(100, ["--retain", "2s"])

        def held_by_b(first, last):
            def check():
                d = b.status()
                return d.addCallback(lambda status: [
                    (log["first"], log["last"]) for log in status["logs"] if log["origin"] == a.node_id
                ] == [(first, last)])
            return check

        # What InfluxDB holds goes by age; the rest stays, well past --retain.
        yield wait_for(held_by_b(51, 150), 30, "b to prune what InfluxDB holds of a's, and only that")
        rows = own(a)[50:]
        yield deferLater(reactor, 4, lambda: None)
        yield wait_for(held_by_b(51, 150), 1, "b to keep a's readings InfluxDB lacks")
        yield a.kill()
        # Restarted while a is down, b still knows a exports there and how
        # far: it keeps them, though no peer tells it again.
        yield b.stop()
        yield b.start()
        yield deferLater(reactor, 4, lambda: None)
        yield wait_for(held_by_b(51, 150), 1, "b, restarted, to keep a's readings InfluxDB lacks")
        yield influx.start()

        points = yield points_of(influx, a, 150)
        self.assertEqual(len(influx_points(points)), 150)
        self.assertTrue(expected_points(a, rows) <= influx_points(points))
        # Exported, they go by age there too.
        yield wait_for(held_by_b(151, 150), 30, "b to prune a's readings once exported")
        no_tracebacks(self, b)


class SecretsTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_credentials_checked_by_influxdb(self):
        """
        Against an InfluxDB with authentication on: a URL without a user
        is answered 401 and one of a user who may only read 403, each shown
        as misconfigured with InfluxDB's answer while the readings wait;
        the writer's URL then exports every one of them, once.
        """
        influx = InfluxDB(self, self.mktemp(), admin=("admin", "admin-pw"))
        yield influx.start()
        yield influx.make_admin()
        yield influx.create(DB)
        for q in (
            "CREATE USER \"writer\" WITH PASSWORD 'w-pw'", f'GRANT WRITE ON "{DB}" TO "writer"',
            "CREATE USER \"reader\" WITH PASSWORD 'r-pw'", f'GRANT READ ON "{DB}" TO "reader"',
        ):
            yield influx.query(None, q, "POST")
        base = f"127.0.0.1:{influx.port}/write?db={DB}"
        data_dir = None
        for url, code, answer in (
            (f"http://{base}", 401, "unable to parse authentication credentials"),
            (f"http://reader:r-pw@{base}", 403, "user is not authorized to write to database"),
        ):
            node = NodeProcess(self, data_dir=data_dir, extra_args=["--export", url])
            data_dir = node.data_dir
            yield node.start()
            if code == 401:
                yield feed(self, node, sensor_lines(20, "auth"))
            yield wait_for(
                lambda: export_status(node).addCallback(lambda s: s["state"] == "misconfigured"),
                30, f"the export to be misconfigured ({code})",
            )
            status = yield export_status(node)
            self.assertEqual(status["pending"], 20)
            self.assertIn(str(code), status["last_error"])
            self.assertIn(answer, status["last_error"])
            yield node.stop()
        node = NodeProcess(self, data_dir=data_dir, extra_args=["--export", f"http://writer:w-pw@{base}"])
        yield node.start()
        yield exported(node, 20)
        points = yield influx.points(DB)
        self.assertEqual(influx_points(points), expected_points(node))
        self.assertEqual(len(points), 20)
        status = yield export_status(node)
        self.assertEqual(status["url"], f"http://***@{base}")
        no_tracebacks(self, node)

    @inlineCallbacks
    def test_credentials_never_shown(self):
        """
        A password in the URL and in InfluxDB 1.x's p= parameter reach
        neither the log, nor /status, nor /metrics, even while every write
        fails; the URL is shown with them as ***.
        """
        (closed,) = free_ports(1)
        url = f"http://reader:s3cret-pw@127.0.0.1:{closed}/write?db=sensors&u=reader&p=s3cret-p"
        node = NodeProcess(self, extra_args=["--export", url])
        yield node.start()
        yield feed(self, node, sensor_lines(5, "s"))
        yield wait_for(
            lambda: export_status(node).addCallback(lambda s: s["errors"].get("connection", 0) >= 2),
            30, "two failed writes",
        )
        status = yield node.status()
        code, metrics = yield http_get(f"http://127.0.0.1:{node.status_port}/metrics")
        shown = f"http://***@127.0.0.1:{closed}/write?db=sensors&u=***&p=***"
        self.assertEqual(status["exports"][0]["url"], shown)
        self.assertIn(shown, node.log_text())
        for text in (node.log_text(), json.dumps(status), metrics.decode()):
            self.assertNotIn("s3cret", text)
