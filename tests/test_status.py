"""
Tests for the status resource over real HTTP on 127.0.0.1, against a real
node with a real store in a temporary directory.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import urlencode

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from p2pstore import __version__
from p2pstore.ingest import Ingestor
from p2pstore.node import Node
from p2pstore.lines import format_utc
from p2pstore.records import Record, Signer
from p2pstore.replication import Replicator
from p2pstore.schema import VERSION as SCHEMA_VERSION
from p2pstore.rows import OwnRows
from p2pstore.schema import SELF_DB
from p2pstore.sensor import SensorFactory
from p2pstore.status import MAX_LIMIT, _csv_readings, status_site
from p2pstore.storage import Store

NODE_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
KEY = b"cluster key for the status tests"
RECORD_FIELDS = {field.name for field in attrs.fields(Record)}



def make_node(store: Store) -> Node:
    """
    A node over ``store``, wired as the tap wires one.
    """
    signer = Signer.from_key(KEY)
    ingestor = Ingestor(store, OwnRows(NODE_ID, signer), reactor)
    return Node(NODE_ID, store, ingestor, reactor, Replicator(NODE_ID, store, signer, reactor))

class _TrackedWrapper(ProtocolWrapper):
    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        # Only now has the HTTP channel itself seen the connection go.
        self.factory.closed()


class _TrackedFactory(WrappingFactory):
    """
    Wraps the site to tell when every server-side connection has closed, so
    a test ends with a clean reactor without waiting a fixed time.
    """

    protocol = _TrackedWrapper

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self._waiting: list[Deferred] = []

    def closed(self) -> None:
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def all_closed(self) -> Deferred:
        """
        @return: a Deferred firing once no server-side connection is open.
        """
        if not self.protocols:
            return succeed(None)
        d = Deferred()
        self._waiting.append(d)
        return d


class StatusTestCase(TestCase):
    """
    A node (not yet started) serving its status on a loopback port, and an
    HTTP client for it.
    """

    async def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.store = Store(
            path=directory / SELF_DB, node_id=NODE_ID, reactor=reactor
        )
        self.addCleanup(self.store.close)
        self.node = make_node(self.store)
        self.ingestor = self.node.ingestor
        await self.serve(self.node)

    async def serve(self, node: Node) -> None:
        """
        Serve a node's status site on a free loopback port, and make
        C{self.get} ask it.
        """
        self.site = _TrackedFactory(status_site(node, self.site_token()))
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.site)
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.site.all_closed)
        self.base = b"http://127.0.0.1:%d" % (self.port.getHost().port,)

        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool)

    def site_token(self):
        """
        The HTTP token the site is served with (--http-token-file): none.
        """
        return None

    async def get(self, path: str, expect: int = 200) -> dict:
        """
        GET a path; check the status code and that the answer is JSON.
        """
        response = await self.agent.request(b"GET", self.base + path.encode("ascii"))
        body = await readBody(response)
        self.assertEqual(response.code, expect, body)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        return json.loads(body)

    async def get_readings(self, expect: int = 200, **query) -> dict:
        return await self.get("/readings?" + urlencode(query), expect)

    def sensor(self):
        """
        A sensor connected to the node's ingestion.
        """
        factory = SensorFactory(self.ingestor, 1024, lambda: format_utc(reactor.seconds()))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return protocol

    async def send(self, *lines: bytes) -> None:
        """
        Send lines from a new sensor and wait until they are stored.
        """
        self.sensor().dataReceived(b"".join(line + b"\n" for line in lines))
        await self.ingestor.drain()


class StatusTests(StatusTestCase):
    """
    C{GET /status}: what a monitor polls.
    """

    async def test_initializing_then_running(self) -> None:
        """
        Before its store is open the node says C{Initializing} and lists no
        origin; once open it says C{Running} and lists its own origin.
        """
        status = await self.get("/status")
        self.assertEqual(status["node_id"], NODE_ID)
        self.assertEqual(status["state"], "Initializing")
        self.assertEqual(status["version"], __version__)
        # What tells the nodes of a cluster upgraded in turn apart.
        self.assertEqual(status["schema_version"], SCHEMA_VERSION)
        self.assertIsInstance(status["uptime_s"], (int, float))
        self.assertGreaterEqual(status["uptime_s"], 0)
        # The node's clock, for the ages of its other times.
        self.assertLess(abs(status["time"] - reactor.seconds()), 5)
        self.assertEqual(
            {k: status["sensors"][k] for k in ("connected", "accepted", "rejected")},
            {"connected": 0, "accepted": 0, "rejected": 0},
        )
        self.assertEqual(status["origins"], {})
        self.assertEqual(status["peers"], [])

        await self.node.start()
        status = await self.get("/status")
        self.assertEqual(status["state"], "Running")
        self.assertEqual(status["origins"], {NODE_ID: {"count": 0, "last_index": 0, "self": True}})

    async def test_counts(self) -> None:
        """
        Status counts connected sensors, accepted and rejected lines (by
        reason), the commits, and the node's stored readings.
        """
        await self.node.start()
        await self.send(b"Temperature,39C", b"Humidity,15% RH", b"garbage", b"Temperature,40C")
        self.sensor()
        status = await self.get("/status")
        self.assertEqual(
            {k: status["sensors"][k] for k in ("connected", "accepted", "rejected")},
            {"connected": 2, "accepted": 3, "rejected": 1},
        )
        self.assertEqual(status["sensors"]["rejected_reasons"], {"missing value": 1})
        self.assertEqual((status["sensors"]["not_stored"], status["sensors"]["not_full"]), (0, 0))
        commits = status["commits"]
        self.assertEqual((commits["readings"]["count"], commits["readings"]["sum"]), (1, 3))
        self.assertEqual(commits["seconds"]["count"], 1)
        self.assertEqual(status["origins"], {NODE_ID: {"count": 3, "last_index": 3, "self": True}})

    async def test_counts_after_restart(self) -> None:
        """
        The counts of stored readings include those stored before a restart.
        """
        await self.node.start()
        await self.send(b"Temperature,39C", b"Temperature,40C")
        self.store.close()

        store = Store(path=self.store.path, node_id=NODE_ID)
        self.addCleanup(store.close)
        node = make_node(store)
        await node.start()
        await self.serve(node)
        status = await self.get("/status")
        self.assertEqual(status["origins"][NODE_ID], {"count": 2, "last_index": 2, "self": True})
        self.assertEqual(status["sensors"]["accepted"], 0, "accepted counts this run's lines")


class InitializingReadingsTests(StatusTestCase):
    """
    C{GET /readings} while the store is still opening.
    """

    async def test_not_ready(self) -> None:
        """
        Before the store is open, /readings answers 503 with a JSON error
        and a Retry-After, rather than failing; once open it answers.
        """
        response = await self.agent.request(b"GET", self.base + b"/readings")
        body = json.loads(await readBody(response))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertIn("Initializing", body["error"])
        await self.node.start()
        self.assertEqual(await self.get("/readings"), {"readings": []})


class _Client(Protocol):
    def __init__(self) -> None:
        self.lost = Deferred()

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)


class ClientGoneTests(StatusTestCase):
    """
    A client that hangs up while its readings are being read.
    """

    async def test_hang_up(self) -> None:
        """
        When the client is gone before the query returns, nothing is
        written and no error is logged: a monitor closing its tab is no
        database failure.
        """
        await self.node.start()
        # The real query answers too fast to hang up before it: hold it.
        query = Deferred()
        asked = Deferred()

        def readings(origin, sensor_type, limit, time_range=None):
            asked.callback(None)
            return query

        self.node.readings = readings
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = await endpoint.connect(Factory.forProtocol(_Client))
        client.transport.write(b"GET /readings HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await asked
        client.transport.loseConnection()
        await client.lost
        await self.site.all_closed()
        query.callback([])
        query.addErrback(self.fail)


class ReadingsTests(StatusTestCase):
    """
    C{GET /readings}: the newest readings of an origin.
    """

    async def setUp(self) -> None:
        await super().setUp()
        await self.node.start()

    async def test_newest_first(self) -> None:
        """
        Readings come newest first, each with every record field, its
        origin, value and unit; the checksum verifies with the cluster key.
        """
        await self.send(
            b"Temperature,39C,2020-04-20 23:20:18.231325,sim-1",
            b"Atm. Pressure,1.798 atm,2020-04-20 23:20:19.231325",
        )
        readings = (await self.get("/readings"))["readings"]
        self.assertEqual([r["entry_index"] for r in readings], [2, 1])
        self.assertEqual(set(readings[0]), RECORD_FIELDS | {"value", "unit"})
        pressure, temperature = readings
        self.assertEqual(
            {k: temperature[k] for k in ("origin", "epoch", "sensor_type", "sensor_data", "timestamp", "reading_id", "value", "unit")},
            {
                "origin": NODE_ID,
                "epoch": self.store.epoch,
                "sensor_type": "Temperature",
                "sensor_data": "39C",
                "timestamp": "2020-04-20 23:20:18.231325",
                "reading_id": "sim-1",
                "value": 39.0,
                "unit": "C",
            },
        )
        self.assertEqual((pressure["value"], pressure["unit"], pressure["reading_id"]), (1.798, "atm", None))
        signer = Signer.from_key(KEY)
        for r in readings:
            signer.verify(Record(**{k: r[k] for k in RECORD_FIELDS}))

    async def test_origin(self) -> None:
        """
        The node's own id as origin is the same as no origin.
        """
        await self.send(b"Temperature,39C")
        self.assertEqual(
            await self.get_readings(origin=NODE_ID), await self.get("/readings")
        )

    async def test_type(self) -> None:
        """
        C{type} keeps one sensor type, also one with spaces and dots.
        """
        await self.send(b"Temperature,39C", b"Atm. Pressure,1.798 atm", b"Temperature,40C")
        readings = (await self.get_readings(type="Atm. Pressure"))["readings"]
        self.assertEqual([(r["sensor_type"], r["entry_index"]) for r in readings], [("Atm. Pressure", 2)])
        readings = (await self.get_readings(type="Temperature"))["readings"]
        self.assertEqual([r["entry_index"] for r in readings], [3, 1])
        self.assertEqual(await self.get_readings(type="Humidity"), {"readings": []})

    async def test_limit(self) -> None:
        """
        100 readings by default, as many as asked up to the maximum, always
        the newest.
        """
        await self.send(*[b"Temperature,%dC" % (n,) for n in range(150)])
        readings = (await self.get("/readings"))["readings"]
        self.assertEqual([r["entry_index"] for r in readings], list(range(150, 50, -1)))
        readings = (await self.get_readings(limit=3))["readings"]
        self.assertEqual([r["entry_index"] for r in readings], [150, 149, 148])
        readings = (await self.get_readings(limit=MAX_LIMIT))["readings"]
        self.assertEqual(len(readings), 150)
        self.assertEqual(MAX_LIMIT, 10000)

    async def test_bad_limit(self) -> None:
        """
        A limit that is not a whole number from 1 to 10000 is a 400 with a
        JSON error saying so.
        """
        for limit in ["0", "-1", "10001", "abc", "", "1.5"]:
            error = await self.get_readings(400, limit=limit)
            self.assertIn("limit", error["error"], limit)
        error = await self.get("/readings?limit=1&limit=2", 400)
        self.assertIn("limit", error["error"])

    async def test_bad_type(self) -> None:
        """
        An empty type, or one longer than any sensor type can be, is a 400
        with a JSON error.
        """
        for sensor_type in ["", "x" * 41]:
            error = await self.get_readings(400, type=sensor_type)
            self.assertIn("type must be 1 to 40 characters", error["error"], sensor_type)
        readings = (await self.get_readings(type="x" * 40))["readings"]
        self.assertEqual(readings, [])

    async def test_bad_origin(self) -> None:
        """
        An origin that is not a node id is a 400 with a JSON error.
        """
        for origin in ["x", NODE_ID.upper(), NODE_ID + "0", "server_id_" + NODE_ID, "' OR 1=1 --"]:
            error = await self.get_readings(400, origin=origin)
            self.assertIn("origin", error["error"], origin)

    async def test_unknown_origin(self) -> None:
        """
        A node id this node holds no readings of is a 404 with a JSON error.
        """
        error = await self.get_readings(404, origin=OTHER_ID)
        self.assertIn(OTHER_ID, error["error"])


class ReadingsRangeTests(StatusTestCase):
    """
    C{GET /readings?since=&until=}: a time range, oldest first, in pages,
    as JSON or CSV.
    """

    async def setUp(self) -> None:
        await super().setUp()
        await self.node.start()

    async def get_csv(self, expect: int = 200, **query) -> tuple[list[list[str]], object]:
        """
        GET /readings as CSV: its rows, header first, and the response.
        """
        url = self.base + b"/readings?" + urlencode(query | {"format": "csv"}).encode("ascii")
        response = await self.agent.request(b"GET", url)
        body = await readBody(response)
        self.assertEqual(response.code, expect, body)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/csv; charset=utf-8"])
        return list(csv.reader(io.StringIO(body.decode("utf-8"), newline=""))), response

    async def test_range(self) -> None:
        """
        since is inclusive, until exclusive; the readings come oldest first
        by their instant, an offset counted and none taken as UTC; a range
        that ends is answered with next null.
        """
        await self.send(
            b"Temperature,1C,2026-11-28 10:30:00",
            b"Temperature,2C,2026-11-28T12:00:00+02:00",
            b"Temperature,3C,2026-11-28 11:00:00",
            b"Temperature,4C,2026-11-28 09:59:59.999999",
            b"Humidity,5%,2026-11-28 10:10:00Z",
        )
        answer = await self.get_readings(since="2026-11-28T10:00", until="2026-11-28T11:00:00Z")
        self.assertEqual([r["entry_index"] for r in answer["readings"]], [2, 5, 1])
        self.assertIsNone(answer["next"])
        answer = await self.get_readings(since="2026-11-28 12:00:00+02:00", type="Temperature")
        self.assertEqual([r["entry_index"] for r in answer["readings"]], [2, 1, 3])
        answer = await self.get_readings(until="2026-11-28")
        self.assertEqual(answer, {"readings": [], "next": None})

    async def test_pages(self) -> None:
        """
        A full page gives a next token (in the body and a Next-After
        header); following it returns every reading once, when many share
        one timestamp.
        """
        await self.send(*[b"Temperature,%dC,2026-11-28 10:00:00" % (n,) for n in range(1, 26)])
        query = {"since": "2026-11-28", "limit": "10"}
        seen = []
        for _ in range(5):
            answer = await self.get_readings(**query)
            seen += [r["entry_index"] for r in answer["readings"]]
            if answer["next"] is None:
                break
            query["after"] = answer["next"]
        self.assertEqual(seen, list(range(1, 26)))
        rows, response = await self.get_csv(since="2026-11-28", limit="10")
        self.assertEqual(len(rows), 11)
        first = await self.get_readings(since="2026-11-28", limit="10")
        self.assertEqual(response.headers.getRawHeaders(b"next-after"), [first["next"].encode("ascii")])

    async def test_csv(self) -> None:
        """
        format=csv: a header row, then the JSON answer's columns, quoted
        where a type or value holds quotes, in UTF-8; an absent value is
        empty. Without a range, the newest first as in JSON.
        """
        await self.send('Wind "gusts",7 m/s ☃ "N",2026-11-28 10:00:00,id-1'.encode("utf-8"))
        self.sensor().dataReceived(b"Temperature,21.5C,2026-11-28 10:00:01\n")
        await self.ingestor.drain()
        rows, response = await self.get_csv(since="2026-11-28")
        header, *data = rows
        answer = await self.get_readings(since="2026-11-28")
        self.assertEqual(header, list(answer["readings"][0]))
        self.assertEqual(len(data), len(answer["readings"]))
        for row, reading in zip(data, answer["readings"]):
            self.assertEqual(row, ["" if v is None else str(v) for v in reading.values()])
        self.assertIsNone(response.headers.getRawHeaders(b"next-after"))
        newest, _ = await self.get_csv()
        self.assertEqual([row[header.index("entry_index")] for row in newest[1:]], ["2", "1"])

    async def test_bad_range(self) -> None:
        """
        A bound that is not ISO-8601, since after until, a token not made
        by the node, or an unknown format is a 400 with a JSON error that
        names it.
        """
        error = await self.get_readings(400, since="yesterday")
        self.assertEqual(
            error["error"],
            "since must be ISO-8601, e.g. 2026-11-28T10:00:00Z or 2026-11-28, not 'yesterday'"
            " (write + as %2B in a URL)",
        )
        error = await self.get_readings(400, until="2026-11-28T25:00")
        self.assertTrue(error["error"].startswith("until must be ISO-8601"), error)
        error = await self.get_readings(400, since="2026-11-29", until="2026-11-28")
        self.assertEqual(
            error["error"], "since must not be after until (since is inclusive, until exclusive)"
        )
        error = await self.get_readings(400, after="nonsense")
        self.assertIn("after", error["error"])
        error = await self.get_readings(400, format="xml")
        self.assertEqual(error["error"], "format must be json or csv, not 'xml'")


class CSVTests(SynchronousTestCase):
    """
    The CSV of readings, whatever text a record holds.
    """

    def test_quoting(self) -> None:
        """
        Commas, quotes, line ends and any UTF-8 in a type or value come
        back whole through Python's csv reader.
        """
        record = Record(
            NODE_ID, OTHER_ID, 1, 0, 'Wind, "gusts"', "7,5 m/s\r\n☃", "2026-11-28 10:00:00", None, "0" * 64
        )
        request = DummyRequest([b"readings"])
        body = _csv_readings(request, [record], None, True)
        header, row = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
        self.assertEqual(dict(zip(header, row))["sensor_type"], 'Wind, "gusts"')
        self.assertEqual(dict(zip(header, row))["sensor_data"], "7,5 m/s\r\n☃")
        self.assertEqual(dict(zip(header, row))["reading_id"], "")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/csv; charset=utf-8"])


class NotFoundTests(StatusTestCase):
    """
    Unknown paths are a JSON 404.
    """

    async def test_unknown_paths(self) -> None:
        """
        Paths other than /status and /readings answer 404 with a JSON error.
        """
        for path in ["/", "/nope", "/favicon.ico", "/statuses", "/nope/status"]:
            error = await self.get(path, 404)
            self.assertIn("not found", error["error"], path)
