"""
Tests for p2pstore.export: an Exporter over a real store (SQLite files)
posting to a real HTTP server on 127.0.0.1 in this process, whose answers
each test chooses; the exporter's timers run on a task.Clock.

Real InfluxDB and VictoriaMetrics behind real nodes are in
tests/test_export_nodes.py.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.task import Clock, deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from p2pstore import export
from p2pstore.destinations import BadDestination, parse_destination
from p2pstore.export import Exporter
from p2pstore.takeover import HEARD_SAVE_S
from p2pstore.inbound import plan_apply
from p2pstore.replication import Replicator
from p2pstore.wire import Exported

from . import test_storage
from .test_storage import NODE_ID, StoreTestCase, reading


class Destination(Resource):
    """
    A write endpoint that keeps every body posted, and answers each with
    the next of ``answers`` (a status, or a function of the body giving
    one), then 204.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.bodies: list[bytes] = []
        self.headers: list = []
        self.answers: list = []

    def render_POST(self, request):
        body = request.content.read()
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        self.headers.append(request.requestHeaders)
        code = self.answers.pop(0) if self.answers else 204
        if callable(code):
            code = code(body)
        if 200 <= code < 300:
            self.bodies.append(body)
        request.setResponseCode(code)
        return b"" if code == 204 else b'{"error":"unable to parse: bad line"}'

    def lines(self) -> list[bytes]:
        return [line for body in self.bodies for line in body.splitlines()]


class ParseTests(StoreTestCase):
    def test_secrets_hidden(self) -> None:
        """
        The name shown and logged has no password, token or u/p parameter;
        the URL posted to keeps them, and a user in the URL is sent as
        Basic authorization.
        """
        d = parse_destination("http://me:pw@127.0.0.1:8086/write?db=s&u=me&p=secret")
        self.assertEqual(d.name, "http://***@127.0.0.1:8086/write?db=s&u=***&p=***")
        self.assertNotIn("secret", repr(d))
        self.assertIn("p=secret", d.url)
        self.assertTrue(d.authorization.startswith(b"Basic "))
        token = parse_destination("https://h/api/v2/write?org=o&bucket=b", token=b"T0K")
        self.assertEqual(token.authorization, b"Token T0K")

    def test_bad(self) -> None:
        """
        A URL that cannot take writes is refused saying why.
        """
        for text, why in [
            ("ftp://h/write", "only http"),
            ("http:///write", "no host"),
            ("http://h:8086", "no write path"),
            ("http://h:99999/write", "'http://h:99999/write' is not a URL (Port out of range"),
            # Its secrets are not shown, even in a URL that does not parse.
            ("http://me:s3cret@h:99999/write?db=d&p=s3cret", "'http://***@h:99999/write?db=d&p=***' is not a URL"),
        ]:
            with self.assertRaises(BadDestination) as caught:
                parse_destination(text)
            self.assertIn(why, str(caught.exception))


class ExporterCase(StoreTestCase):
    """
    An exporter over a real store, posting to a L{Destination} resource.
    """

    async def setup(self, readings: int = 10, now: float = 0.0, **kwargs):
        self.clock = Clock()
        self.clock.advance(now)
        self.server = Destination()
        port = reactor.listenTCP(0, Site(self.server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/write?db=sensors"
        self.store = self.make_store()
        opened = await self.store.open()
        self.replicator = Replicator(NODE_ID, self.store, self.signer, self.clock)
        self.replicator.opened(opened.positions, False)
        self.log = (NODE_ID, self.store.epoch)
        if readings:
            await self.add(readings)
        self.exporter = await self.start_exporter(**kwargs)
        return self.exporter

    async def start_exporter(self, **kwargs) -> Exporter:
        pool = HTTPConnectionPool(reactor, persistent=False)
        exporter = Exporter(
            parse_destination(self.url), NODE_ID, self.replicator.source, self.store,
            self.signer, self.clock, agent=Agent(reactor, pool=pool), **kwargs,
        )
        self.addCleanup(exporter.stop)
        await exporter.start()
        return exporter

    async def add(self, n: int, **kwargs) -> None:
        first = self.replicator.source.positions.get(self.log, 0) + 1
        appended = await self.append(
            self.store, [(reading(i, **kwargs), 1) for i in range(first, first + n)]
        )
        self.replicator.appended(self.store.epoch, appended.last_index, appended.entries)
        if getattr(self, "exporter", None) is not None:
            self.exporter.appended(self.log, appended.last_index)

    async def settle(self, until, seconds: float = 1.0, limit: float = 10.0) -> None:
        """
        Run the clock a step of ``seconds`` at a time, and the real reactor
        between steps, until ``until()`` (at most ``limit`` s real time).
        """
        deadline = reactor.seconds() + limit
        while not until():
            if reactor.seconds() > deadline:
                self.fail(f"gave up waiting; exporter status {self.exporter.status()}")
            self.clock.advance(0)
            await deferLater(reactor, 0.01, lambda: None)
            if not self.exporter._request:
                self.clock.advance(seconds)

    def cursor(self):
        return self.query(
            "SELECT exported FROM export_cursors WHERE destination = ? AND origin = ? AND epoch = ?",
            (parse_destination(self.url).name, *self.log),
        )



class ExporterTests(ExporterCase):
    async def test_everything_once(self) -> None:
        """
        Every stored reading is posted once, in order; the cursor in SQLite
        follows; an exporter started again on the same file sends only what
        came since.
        """
        exporter = await self.setup(10)
        await self.settle(lambda: exporter.saved.get(self.log) == 10)
        self.assertEqual(len(self.server.lines()), 10)
        self.assertEqual(self.cursor(), [(10,)])
        self.assertEqual(exporter.status()["pending"], 0)
        self.assertEqual(exporter.status()["sent"], 10)
        await exporter.stop()
        await self.add(5)
        self.exporter = again = await self.start_exporter()
        self.assertEqual(again.status()["pending"], 5)
        await self.settle(lambda: again.saved.get(self.log) == 15)
        lines = self.server.lines()
        self.assertEqual(len(lines), 15)
        self.assertEqual(len(set(lines)), 15)

    async def test_batches_and_interval(self) -> None:
        """
        A backlog goes in batches of at most the limit; once caught up,
        readings that trickle in go out together at most once an interval.
        """
        exporter = await self.setup(25, max_lines=10, interval=5.0)
        await self.settle(lambda: exporter.saved.get(self.log) == 25, seconds=5.0)
        self.assertEqual([b.count(b"\n") for b in self.server.bodies], [10, 10, 5])
        # A reading after a quiet interval goes at once; those right after
        # it wait for the interval's end, and go together.
        self.clock.advance(5.0)
        await self.add(1)
        await self.settle(lambda: exporter.saved.get(self.log) == 26, seconds=0.0)
        for _ in range(3):
            await self.add(1)
        self.clock.advance(4.0)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.server.bodies), 4)
        await self.settle(lambda: exporter.saved.get(self.log) == 29, seconds=1.0)
        self.assertEqual([b.count(b"\n") for b in self.server.bodies[3:]], [1, 3])

    async def test_body_limit(self) -> None:
        """
        A batch larger than the byte limit goes as several writes, none
        over it, nothing left out.
        """
        exporter = await self.setup(20, max_body=300)
        await self.settle(lambda: exporter.saved.get(self.log) == 20)
        self.assertTrue(all(len(b) <= 300 for b in self.server.bodies), self.server.bodies)
        self.assertEqual(len(self.server.lines()), 20)

    async def test_retry_until_it_takes_them(self) -> None:
        """
        500, 429 and a refused connection are tried again, with growing
        delays, counted by code, and shown in the status; nothing is lost
        and the cursor moves only on the 2xx.
        """
        self.patch(export, "FIRST_BACKOFF", 1.0)
        await self.setup(0)
        self.server.answers = [500, 429, 503]
        await self.add(4)
        exporter = self.exporter
        await self.settle(lambda: exporter.errors.get("500"))
        self.assertEqual(self.cursor(), [])
        self.assertEqual(exporter.status()["state"], "retrying")
        self.assertEqual(exporter.status()["pending"], 4)
        waited = exporter.status()["oldest_unexported_age_s"]
        self.clock.advance(0.5)
        self.assertEqual(exporter.status()["oldest_unexported_age_s"], waited + 0.5)
        self.assertIn("500", exporter.status()["last_error"])
        await self.settle(lambda: exporter.saved.get(self.log) == 4)
        self.assertEqual(exporter.errors, {"500": 1, "429": 1, "503": 1})
        self.assertEqual(len(self.server.lines()), 4)
        status = exporter.status()
        self.assertEqual((status["state"], status["last_error"]), ("ok", None))

    async def test_misconfigured(self) -> None:
        """
        404 (a database that does not exist) is kept trying, and the status
        says the destination is misconfigured and what to check.
        """
        await self.setup(0)
        self.server.answers = [404, 404]
        await self.add(2)
        await self.settle(lambda: self.exporter.errors.get("404") == 2)
        status = self.exporter.status()
        self.assertEqual(status["state"], "misconfigured")
        self.assertIn("check the URL", status["last_error"])
        await self.settle(lambda: self.exporter.saved.get(self.log) == 2)

    async def test_bad_point_dead_lettered(self) -> None:
        """
        A batch with a point the destination refuses (400) is split until
        that one reading is alone; it goes to export_dead_letters with the
        answer, and every other reading arrives.
        """
        await self.setup(0)

        def refuse_seven(body):
            return 400 if b"value=7.0 " in body else 204

        self.server.answers = [refuse_seven] * 40
        await self.add(12)
        await self.settle(lambda: self.exporter.saved.get(self.log) == 12)
        self.assertEqual(len(self.server.lines()), 11)
        self.assertEqual(self.exporter.status()["dead_lettered"], 1)
        ((index, line, status, answer),) = self.query(
            "SELECT entry_index, line, status, answer FROM export_dead_letters"
        )
        self.assertEqual((index, status), (7, 400))
        self.assertIn("value=7.0", line)
        self.assertIn("unable to parse", answer)

    async def test_pruning_waits_for_export(self) -> None:
        """
        What the destination has not taken is not safe to prune.
        """
        exporter = await self.setup(6)
        self.assertEqual(exporter.exported(self.log), 0)
        await self.settle(lambda: exporter.saved.get(self.log) == 6)
        self.assertEqual(exporter.exported(self.log), 6)

    async def test_only_own_logs(self) -> None:
        """
        Another origin's records held here are left to their own node.
        """
        exporter = await self.setup(3)
        self.assertTrue(exporter._skip(("f" * 32, "e" * 32)))
        await self.settle(lambda: exporter.saved.get(self.log) == 3)


class TakeoverTests(ExporterCase):
    """
    --export-takeover: a peer's log this node holds is exported here once
    that peer has been unreachable long enough, from where it said it got.
    """

    OTHER = test_storage.ApplyTests.OTHER
    OTHER_EPOCH = test_storage.ApplyTests.EPOCH
    entries = test_storage.ApplyTests.entries

    async def setup_peer(self, records: int = 8):
        self.up = {self.OTHER: True}
        exporter = await self.setup(
            2, takeover=10.0, reachable=lambda node_id: self.up.get(node_id, False)
        )
        self.other = (self.OTHER, self.OTHER_EPOCH)
        await self.store.apply(
            [(*self.other, self.entries(*self.other, 1, records))], plan_apply
        )
        self.replicator.source.added(self.other, records, list, keep=False)
        await self.settle(lambda: exporter.saved.get(self.log) == 2)
        return exporter

    def origins_sent(self) -> list:
        return [line.split(b",")[1] for line in self.server.lines()]

    async def test_takes_over_from_announced_cursor(self) -> None:
        """
        While the peer is up its log is left to it; down for the takeover
        time, its records after the cursor it announced are exported here,
        and the status says so; up again, it is left to it again.
        """
        exporter = await self.setup_peer(8)
        name = exporter.destination.name
        exporter.heard_exported(Exported(name, {self.other: 3}))
        self.clock.advance(30)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.origins_sent(), [f"origin={NODE_ID}".encode()] * 2)
        self.up[self.OTHER] = False
        # Seen up at the last check, up to a second before.
        for _ in range(8):
            self.clock.advance(1)
        self.assertEqual(exporter.taken_over, set())
        await self.settle(lambda: exporter.saved.get(self.other) == 8)
        self.assertEqual(exporter.status()["taken_over"], [self.OTHER])
        sent = self.server.lines()[2:]
        self.assertEqual(len(sent), 5)
        self.assertTrue(all(f"origin={self.OTHER}".encode() in line for line in sent))
        self.assertEqual(exporter.announcement().positions[self.other], 8)
        self.up[self.OTHER] = True
        self.clock.advance(1)
        self.assertEqual(exporter.taken_over, set())

    async def test_goes_on_from_a_peers_cursor(self) -> None:
        """
        An own log a peer exported further (while this node was away) goes
        on from there: the cursor is saved, nothing before it sent again.
        """
        exporter = await self.setup_peer(1)
        exporter.heard_exported(Exported(exporter.destination.name, {self.log: 6}))
        await self.settle(lambda: self.cursor() == [(6,)])
        await self.add(5)
        await self.settle(lambda: exporter.saved.get(self.log) == 7)
        self.assertEqual(len(self.server.lines()), 3)
        self.assertIn(b"value=7.0", self.server.lines()[-1])

    async def test_retention_limit(self) -> None:
        """
        Retention may prune a peer's copy here only as far as the
        destination holds it, once its origin announced cursors for this
        destination or this node exports it in its place; a peer that
        announced nothing for it sets no limit.
        """
        exporter = await self.setup_peer(8)
        self.assertIsNone(exporter.retention_limit(self.other))
        exporter.heard_exported(Exported(exporter.destination.name, {self.other: 3}))
        self.assertEqual(exporter.retention_limit(self.other), 3)
        # Another epoch of the same origin, not announced yet: nothing of it is known exported.
        self.assertEqual(exporter.retention_limit((self.OTHER, "f" * 32)), 0)
        self.up[self.OTHER] = False
        await self.settle(lambda: exporter.saved.get(self.other) == 8)
        self.assertEqual(exporter.retention_limit(self.other), 8)

    async def test_retention_limit_survives_a_restart(self) -> None:
        """
        Cursors peers announced for their own logs, 0 included (an origin
        with nothing taken yet), are saved within HEARD_SAVE_S: an exporter
        started again on the same file, while the origin is down, keeps
        the same limits though no peer speaks again, and before it has read
        them nothing may go.
        """
        exporter = await self.setup_peer(8)
        name = exporter.destination.name
        exporter.heard_exported(Exported(name, {self.other: 0}))
        self.assertEqual(exporter.retention_limit(self.other), 0)
        exporter.heard_exported(Exported(name, {self.other: 5}))
        await self.settle(lambda: exporter.saved.get(self.other) == 5, seconds=HEARD_SAVE_S)
        await exporter.stop()
        again = Exporter(
            parse_destination(self.url), NODE_ID, self.replicator.source, self.store,
            self.signer, self.clock, takeover=10.0, reachable=lambda node_id: False,
        )
        self.assertEqual(again.retention_limit(self.other), 0)
        await again.start()
        self.addCleanup(again.stop)
        self.assertEqual(again.retention_limit(self.other), 5)
        self.assertEqual(again.retention_limit((self.OTHER, "f" * 32)), 0)

    async def test_announces_nothing_taken(self) -> None:
        """
        An exporter announces its own logs even before anything of them
        was taken, at 0, so that peers know this origin exports there.
        """
        exporter = Exporter(
            parse_destination("http://127.0.0.1:1/write?db=a"), NODE_ID, SimpleNamespace(positions={
                (NODE_ID, "e" * 32): 4, (self.OTHER, self.OTHER_EPOCH): 9,
            }), None, None, Clock(),
        )
        self.assertEqual(exporter.announcement().positions, {(NODE_ID, "e" * 32): 0})

    def test_other_destination_ignored(self) -> None:
        """
        Cursors of another destination say nothing about this one.
        """
        exporter = Exporter(
            parse_destination("http://127.0.0.1:1/write?db=a"), NODE_ID, None, None, None, Clock()
        )
        exporter.heard_exported(Exported("http://127.0.0.1:1/write?db=b", {(NODE_ID, NODE_ID): 5}))
        self.assertEqual(exporter.heard, {})


class OldestAgeTests(ExporterCase):
    async def test_readings_stored_before_the_start(self) -> None:
        """
        The age of the oldest reading waiting, when it was stored before
        export started, is told by its own timestamp, not counted from the
        start. (One stored since is aged by when this node stored it, the
        source's held times, as before.)
        """
        # An hour after the readings' timestamps (2020-04-20 23:20:0n UTC).
        start = datetime(2020, 4, 20, 23, 20, 1, tzinfo=timezone.utc).timestamp() + 3600
        exporter = await self.setup(5, now=start)
        self.server.answers = [503] * 100
        self.clock.advance(2)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(exporter.status()["pending"], 5)
        age = exporter.status()["oldest_unexported_age_s"]
        self.assertLess(abs(age - 3602), 1, age)

    async def test_failed_read_tried_again(self) -> None:
        """
        A read of the waiting reading's time that fails is logged and tried
        again at the next flush, and its age then comes from it.
        """
        start = datetime(2020, 4, 20, 23, 20, 1, tzinfo=timezone.utc).timestamp() + 3600
        exporter = await self.setup(5, now=start)
        self.server.answers = [503] * 100
        row_at, calls = type(self.store).row_at, []

        def failing_once(store, *args):
            calls.append(args)
            return fail(OSError("disk I/O error")) if len(calls) == 1 else row_at(store, *args)

        self.patch(type(self.store), "row_at", failing_once)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.clock.advance(1)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(calls), 2)
        age = exporter.status()["oldest_unexported_age_s"]
        self.assertLess(abs(age - 3602), 1, age)

class RefusesEverythingTests(ExporterCase):
    async def test_every_write_refused(self) -> None:
        """
        A destination that refuses every write with 400 (InfluxDB's
        "database is required" for a URL without ?db=) sends a few readings
        to the dead letters, then is shown as misconfigured and the rest
        wait, retried, until it takes them; 400s are counted.
        """
        self.patch(export, "REFUSED_IN_A_ROW", 2)
        await self.setup(0)
        self.server.answers = [400] * 30
        await self.add(6)
        exporter = self.exporter
        await self.settle(lambda: exporter.status()["state"] == "misconfigured")
        status = exporter.status()
        self.assertEqual(status["dead_lettered"], 2)
        self.assertIn("check the URL", status["last_error"])
        self.assertGreater(status["errors"]["400"], 2)
        self.assertEqual(status["pending"], 4)
        self.server.answers = []
        await self.settle(lambda: exporter.saved.get(self.log) == 6, limit=20.0)
        self.assertEqual(len(self.server.lines()), 4)
        self.assertEqual(exporter.status()["state"], "ok")
