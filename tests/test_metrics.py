"""
Tests for p2pstore.metrics: ``GET /metrics`` of a real node (a real store in
a temporary directory) over real HTTP on 127.0.0.1, parsed back with
prometheus_client's own parser and held against ``/status``; and the
collector over snapshots made by hand, for what a lone node lacks (peers,
a disk budget, exports).
"""

from __future__ import annotations

import copy
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.test.requesthelper import DummyRequest

from p2pstore.metrics import MetricsResource, metrics_registry
from p2pstore.node import Node
from p2pstore.storage import Store

from .test_httpauth import token_file
from .test_status import NODE_ID, OTHER_ID, StatusTestCase, make_node

THIRD_ID = "00112233445566778899aabbccddeeff"


def samples(text: str) -> dict:
    """
    Every sample of an exposition: ``{(name, ((label, value), ...)): value}``,
    the labels sorted.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def types(text: str) -> dict:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


class MetricsTestCase(StatusTestCase):
    async def metrics(self) -> str:
        """
        GET /metrics: a 200 in Prometheus's text format.
        """
        response = await self.agent.request(b"GET", self.base + b"/metrics")
        body = await readBody(response)
        self.assertEqual(response.code, 200, body)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()]
        )
        return body.decode("utf-8")


class NodeMetricsTests(MetricsTestCase):
    """
    A running node's /metrics says what its /status says.
    """

    async def test_matches_status(self) -> None:
        """
        The readings accepted and refused (by reason), the sensors
        connected, the logs, the commit histograms, the disk, the state and
        the node's id and version are /status's figures.
        """
        await self.node.start()
        await self.send(b"Temperature,39C", b"garbage", b"Humidity,15% RH", b",")
        await self.send(b"Temperature,40C")
        self.sensor()
        text = await self.metrics()
        status = await self.get("/status")
        found = samples(text)
        sensors = status["sensors"]
        self.assertEqual(found[("p2pstore_readings_accepted_total", ())], sensors["accepted"])
        self.assertEqual(sensors["accepted"], 3)
        rejected = {
            dict(labels)["reason"]: value
            for (name, labels), value in found.items()
            if name == "p2pstore_readings_rejected_total"
        }
        self.assertEqual(rejected, sensors["rejected_reasons"])
        self.assertEqual(sum(rejected.values()), 2)
        # Each send() leaves its sensor connected.
        self.assertEqual(found[("p2pstore_sensors_connected", ())], sensors["connected"])
        self.assertEqual(sensors["connected"], 3)
        self.assertEqual(
            found[("p2pstore_log_last_index", (("origin", NODE_ID),))],
            status["origins"][NODE_ID]["last_index"],
        )
        self.assertEqual(status["origins"][NODE_ID]["last_index"], 3)
        [log] = status["logs"]
        self.assertEqual(
            found[("p2pstore_log_first_index", (("epoch", log["epoch"]), ("origin", NODE_ID)))], 1
        )
        for name, key in [("p2pstore_commit_seconds", "seconds"), ("p2pstore_commit_readings", "readings")]:
            histogram = status["commits"][key]
            self.assertEqual(found[(name + "_count", ())], histogram["count"])
            self.assertAlmostEqual(found[(name + "_sum", ())], histogram["sum"])
            self.assertEqual(found[(name + "_bucket", (("le", "+Inf"),))], histogram["count"])
            for bound, count in histogram["buckets"]:
                self.assertEqual(found[(name + "_bucket", (("le", repr(float(bound))),))], count)
        self.assertEqual(found[("p2pstore_commit_readings_sum", ())], 3)
        self.assertEqual(found[("p2pstore_commit_readings_count", ())], 2)
        self.assertEqual(types(text)["p2pstore_commit_seconds"], "histogram")
        self.assertEqual(found[("p2pstore_state", (("state", "Running"),))], 1)
        self.assertEqual(found[("p2pstore_state", (("state", "Initializing"),))], 0)
        self.assertEqual(
            found[("p2pstore_info", (("node_id", NODE_ID), ("version", status["version"])))], 1
        )

    async def test_initializing(self) -> None:
        """
        Before its store is open the node answers /metrics too, in state
        Initializing, with no logs.
        """
        found = samples(await self.metrics())
        self.assertEqual(found[("p2pstore_state", (("state", "Initializing"),))], 1)
        self.assertFalse([key for key in found if key[0] == "p2pstore_log_last_index"])

    async def test_own_registry(self) -> None:
        """
        Each node's metrics come from a registry of its own: two nodes in one
        process each say their own id, and prometheus_client's global
        registry holds none of them.
        """
        other_store = Store(path=self.store.path.with_name("other.db"), node_id=OTHER_ID, reactor=reactor)
        self.addCleanup(other_store.close)
        other = make_node(other_store)
        other.node_id = OTHER_ID
        texts = [
            generate_latest(MetricsResource(node).registry).decode() for node in (self.node, other)
        ]
        ids = [
            {dict(labels)["node_id"] for name, labels in samples(text) if name == "p2pstore_info"}
            for text in texts
        ]
        self.assertEqual(ids, [{NODE_ID}, {OTHER_ID}])
        self.assertNotIn(b"p2pstore", generate_latest(REGISTRY))


class TokenTests(MetricsTestCase):
    """
    With --http-token-file, /metrics stays open like /status: it holds no
    readings, and a scrape job then needs no credentials.
    """

    def site_token(self):
        return token_file(self)

    async def test_open(self) -> None:
        """
        /metrics answers without the token, and holds none of the readings'
        values; /readings still needs it.
        """
        await self.node.start()
        await self.send(b"Temperature,39.5C")
        text = await self.metrics()
        self.assertIn("p2pstore_readings_accepted_total 1.0", text)
        for value in ("39.5", "Temperature"):
            self.assertNotIn(value, text)
        await self.get("/readings", expect=401)


def exports() -> list:
    """
    /status's ``exports`` as the exporter makes it: two destinations, one
    that never took a batch.
    """
    return [
        {
            "url": "http://127.0.0.1:8086/write?db=sensors",
            "pending": 120,
            "oldest_unexported_age_s": 4.5,
            "sent": 5000,
            "dead_lettered": 3,
            "last_success": 1765000000.25,
            "last_error": "503 Service Unavailable",
            "errors": {"503": 2, "429": 1, "connection": 4},
        },
        {
            "url": "https://victoria:8428/write",
            "pending": 0,
            "oldest_unexported_age_s": None,
            "sent": 0,
            "dead_lettered": 0,
            "last_success": None,
            "last_error": None,
            "errors": {},
        },
    ]


class CollectorTests(SynchronousTestCase):
    """
    The collector over snapshots made by hand: a node's own, with a peer,
    a disk budget and export destinations added.
    """

    def setUp(self) -> None:
        store = Store(path=Path(self.mktemp()), node_id=NODE_ID)
        node = make_node(store)
        self.snapshot = node.status_snapshot()
        self.snapshot["origins"] = {
            NODE_ID: {"count": 50, "last_index": 50, "self": True},
            OTHER_ID: {"count": 30, "last_index": 30, "self": False},
            THIRD_ID: {"count": 8, "last_index": 8, "self": False},
        }

    def render(self) -> dict:
        """
        /metrics of the snapshot, through the resource, parsed.
        """
        node = Node.__new__(Node)
        node.status_snapshot = lambda: copy.deepcopy(self.snapshot)
        request = DummyRequest([b"metrics"])
        body = MetricsResource(node).render_GET(request)
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"), [CONTENT_TYPE_LATEST.encode()]
        )
        return samples(body.decode("utf-8"))

    def test_exports(self) -> None:
        """
        Per destination: pending records, the oldest's age, the last
        success, records sent and dead-lettered, errors by code; the age
        and the last success are absent where the status has None.
        """
        self.snapshot["exports"] = exports()
        found = self.render()
        first, second = [(("destination", e["url"]),) for e in exports()]
        self.assertEqual(found[("p2pstore_export_pending_records", first)], 120)
        self.assertEqual(found[("p2pstore_export_pending_records", second)], 0)
        self.assertEqual(found[("p2pstore_export_oldest_unexported_age_seconds", first)], 4.5)
        self.assertNotIn(("p2pstore_export_oldest_unexported_age_seconds", second), found)
        self.assertEqual(
            found[("p2pstore_export_last_success_timestamp_seconds", first)], 1765000000.25
        )
        self.assertNotIn(("p2pstore_export_last_success_timestamp_seconds", second), found)
        self.assertEqual(found[("p2pstore_export_sent_records_total", first)], 5000)
        self.assertEqual(found[("p2pstore_export_dead_lettered_records_total", first)], 3)
        self.assertEqual(found[("p2pstore_export_dead_lettered_records_total", second)], 0)
        errors = {
            dict(labels)["code"]: value
            for (name, labels), value in found.items()
            if name == "p2pstore_export_errors_total" and dict(labels)["destination"] == first[0][1]
        }
        self.assertEqual(errors, {"503": 2, "429": 1, "connection": 4})
        self.assertFalse(
            [k for k in found if k[0] == "p2pstore_export_errors_total" and ("destination", second[0][1]) in k[1]]
        )

    def test_no_exports(self) -> None:
        """
        A node without the exporter's section has no export samples.
        """
        self.snapshot.pop("exports", None)
        self.assertFalse([k for k in self.render() if k[0].startswith("p2pstore_export_")])

    def test_peers(self) -> None:
        """
        Per peer: connected or not, and per origin other than the peer's
        own the records it lacks and the seconds the oldest of them has
        waited (0 for an origin it lacks nothing of); a dialled address
        never reached is named by its address, with no lag.
        """
        peer = {
            "address": "127.0.0.1:7000", "node_id": OTHER_ID, "connected": True,
            "authenticated": True, "sent": 70, "received": 30, "rejected": 1, "conflicts": 0,
            "lag": {NODE_ID: 12}, "lag_s": {NODE_ID: 2.5},
        }
        unreached = dict(
            peer, address="127.0.0.1:7001", node_id=None, connected=False, authenticated=False,
            sent=0, received=0, rejected=0, lag={}, lag_s={},
        )
        self.snapshot["peers"] = [peer, unreached]
        found = self.render()
        self.assertEqual(found[("p2pstore_peer_connected", (("peer", OTHER_ID),))], 1)
        self.assertEqual(found[("p2pstore_peer_connected", (("peer", "127.0.0.1:7001"),))], 0)
        self.assertEqual(found[("p2pstore_peer_sent_records_total", (("peer", OTHER_ID),))], 70)
        lag = {
            (name, dict(labels)["origin"]): value
            for (name, labels), value in found.items()
            if name.startswith("p2pstore_replication_lag_")
        }
        self.assertEqual(
            lag,
            {
                ("p2pstore_replication_lag_records", NODE_ID): 12,
                ("p2pstore_replication_lag_records", THIRD_ID): 0,
                ("p2pstore_replication_lag_seconds", NODE_ID): 2.5,
                ("p2pstore_replication_lag_seconds", THIRD_ID): 0,
            },
        )

    def test_disk(self) -> None:
        """
        The disk section's figures: bytes, the budget, full as 0 or 1, the
        days left, and pruned records by reason; a figure that is None is
        absent.
        """
        self.snapshot["disk"] = {
            "used_bytes": 7_000_000, "own_bytes": 4_000_000, "peer_bytes": 3_000_000,
            "free_bytes": 900_000_000, "budget_bytes": 8_000_000, "peer_share_bytes": 4_000_000,
            "full": True, "full_since": 1765000000.0, "full_failures": 2, "days_left": 3.5,
            "pruned": {"records": {"retention": 400, "evicted": 20}, "ranges": []},
        }
        found = self.render()
        for name, value in [
            ("used_bytes", 7_000_000), ("own_bytes", 4_000_000), ("peer_bytes", 3_000_000),
            ("free_bytes", 900_000_000), ("budget_bytes", 8_000_000),
            ("peer_share_bytes", 4_000_000), ("days_left", 3.5), ("full", 1),
            ("full_failures_total", 2),
        ]:
            self.assertEqual(found[("p2pstore_disk_" + name, ())], value, name)
        self.assertEqual(found[("p2pstore_disk_pruned_records", (("reason", "retention"),))], 400)
        self.assertEqual(found[("p2pstore_disk_pruned_records", (("reason", "evicted"),))], 20)
        self.snapshot["disk"].update(budget_bytes=None, days_left=None, full=False, pruned=None)
        del self.snapshot["disk"]["pruned"]
        found = self.render()
        self.assertEqual(found[("p2pstore_disk_full", ())], 0)
        for name in ("budget_bytes", "days_left"):
            self.assertNotIn(("p2pstore_disk_" + name, ()), found)

    def test_one_snapshot_per_scrape(self) -> None:
        """
        A scrape reads the snapshot once, so every figure in it is of the
        same moment.
        """
        calls = []

        def snapshot():
            calls.append(None)
            return copy.deepcopy(self.snapshot)

        generate_latest(metrics_registry(snapshot))
        self.assertEqual(len(calls), 1)
