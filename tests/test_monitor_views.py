"""
The monitor's per-server detail (readings per second, lag to each peer,
sensor names, gone peers), the ranges of its replication matrix, its
history of the last hour and the page of each origin: against real HTTP
servers on 127.0.0.1 that play nodes, with the monitor's clock driven by the
test.
"""

from __future__ import annotations

import re
import time

from twisted.trial.unittest import SynchronousTestCase

from web_monitor.answers import BadAnswer, parse_status
from web_monitor.charts import HISTORY_HEIGHT, HISTORY_TOP, nice_ceiling, timeline
from web_monitor.history import BUCKET_S, BUCKETS, Sample, ServerHistory

from .test_monitor import (
    ESCAPED_XSS, ID_A, ID_B, ID_C, TEMPERATURES as TEMPERATURES_BODY, XSS, FakeNode, MonitorCase, closed_port_address,
    node_readings, node_status,
)

EPOCH_1 = "1" * 32
EPOCH_2 = "2" * 32


def log(origin: str, epoch: str, first: int, last: int, held=None, current=False) -> dict:
    """
    One entry of a ``/status`` answer's ``logs``, shaped as a real node's.
    """
    return {"origin": origin, "epoch": epoch, "first": first, "last": last,
            "held": last - first + 1 if held is None else held, "current": current}


def peer(node_id: str, address: str, connected=True, **extra) -> dict:
    entry = {"address": address, "node_id": node_id, "connected": connected, "gone": False,
             "last_seen": 1000.0, "lag": {}, "lag_s": {}}
    entry.update(extra)
    return entry


class Clock:
    """
    The monitor's wall clock, moved by the test.
    """

    def __init__(self, now: float = 36_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class ServerDetailTests(MonitorCase):
    """
    What the page says of each server beyond its counts.
    """

    def test_lag_to_each_peer(self):
        """
        Each server's card lists its peers: the link's state and what a
        connected peer lacks, in records and in how long the oldest has
        waited; the row of the server names the peer furthest behind.
        """
        status = node_status(ID_A, peers=[
            peer(ID_B, "10.0.0.2:12346", lag={ID_A: 120, ID_C: 5}, lag_s={ID_A: 4.2, ID_C: 75.0}),
            peer(ID_C, "10.0.0.3:12346"),
            peer(None, "10.0.0.4:12346", connected=False, last_seen=None),
        ])
        node = FakeNode(self, status=status)
        app = self.monitor(node.address)
        app.extensions["monitor"].poll_once()
        [server] = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual(
            [(p["name"], p["state"], p["lag"]) for p in server["peers"]],
            [("10.0.0.2:12346", "up", "125 records, 1 min"), ("10.0.0.3:12346", "up", "caught up"),
             ("10.0.0.4:12346", "down", "—")],
        )
        self.assertEqual(server["lag"], "10.0.0.2:12346 lacks 125 records, 1 min")
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertIn('<div class="why lag">10.0.0.2:12346 lacks 125 records, 1 min</div>', html)
        self.assertIn('<tr class="peer down"><td>10.0.0.4:12346</td>', html)
        # A peer's node id under its address: one address can have two.
        self.assertIn('<td>10.0.0.2:12346<span class="mono sub">bbbbbbbb</span></td>', html)
        # Without an address, the id is its name, written once.
        lone = node_status(ID_A, peers=[peer(ID_B, None)])
        node.answer("/status", body=lone)
        app.extensions["monitor"].poll_once()
        [server] = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual((server["peers"][0]["name"], server["peers"][0]["node_short"]), ("bbbbbbbb", None))
        # Records younger than 5 s are on their way, as readings flow: no lag to report.
        status["peers"][0].update(lag={ID_A: 2}, lag_s={ID_A: 0.4})
        node.answer("/status", body=status)
        app.extensions["monitor"].poll_once()
        [server] = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual(server["peers"][0]["lag"], "caught up (2 on the way)")
        self.assertIsNone(server["lag"])

    def test_gone_peer(self):
        """
        A peer its node found gone is counted apart from the links down,
        shown as gone with when it was last seen, and reported in the
        answers as a warning, not as a link down.
        """
        clock = Clock(10_000.0)
        status = node_status(ID_A, peers=[
            peer(ID_B, "10.0.0.2:12346"),
            peer(ID_C, "10.0.0.3:12346", connected=False, gone=True, last_seen=10_000.0 - 900),
        ])
        node = FakeNode(self, status=status)
        app = self.monitor(node.address, clock=clock)
        app.extensions["monitor"].poll_once()
        data = app.test_client().get("/api/servers").get_json()
        [server] = data["servers"]
        self.assertEqual((server["links_up"], server["links_down"], server["links_gone"]), (1, 0, 1))
        self.assertEqual(server["peers"][1]["state"], "gone")
        self.assertEqual(server["peers"][1]["seen"], "last seen 15 min ago")
        items = data["health"]["items"]
        self.assertEqual([i["kind"] for i in items], ["gone"])
        self.assertEqual(items[0]["level"], "warn")
        self.assertIn("peer 10.0.0.3:12346 is gone", items[0]["text"])
        self.assertEqual(items[0]["since"], "15 min")
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertIn('<span class="gone">1 gone</span>', html)

    def test_ages_by_the_nodes_clock(self):
        """
        A node whose clock is an hour ahead of the monitor's: how long ago
        its peer was last seen is told by the node's clock, which its
        last_seen is on.
        """
        clock = Clock(10_000.0)
        ahead = 10_000.0 + 3600
        status = node_status(ID_A, time=ahead, peers=[
            peer(ID_C, "10.0.0.3:12346", connected=False, gone=True, last_seen=ahead - 900),
        ])
        app = self.monitor(FakeNode(self, status=status).address, clock=clock)
        app.extensions["monitor"].poll_once()
        data = app.test_client().get("/api/servers").get_json()
        self.assertEqual(data["servers"][0]["peers"][0]["seen"], "last seen 15 min ago")
        self.assertEqual(data["health"]["items"][0]["since"], "15 min")

    def test_sensor_names(self):
        """
        The names connected sensors go by (nodes with --sensor-tokens) are
        listed under their count, with how many share a name; the names are
        text, never markup.
        """
        status = node_status(ID_A)
        status["sensors"]["names"] = {"greenhouse-2": 1, "boiler": 2, XSS: 1}
        node = FakeNode(self, status=status)
        app = self.monitor(node.address)
        app.extensions["monitor"].poll_once()
        [server] = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual(server["sensor_names"], f"{XSS}, boiler (2), greenhouse-2")
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertNotIn(XSS, html)

    def test_huge_figures_refused(self):
        """
        A count past SQLite's largest integer, or a number too large for a
        float, is an answer that names the field, not a crash of the page.
        """
        for extra, message in (
            ({"sensors": {"connected": 1, "accepted": 10**400}}, "'sensors.accepted' should be a whole number"),
            ({"time": 10**400}, "'time' should be a time"),
            ({"peers": [peer(ID_B, "x", lag_s={ID_A: 10**400})]}, "'peers[0].lag_s' should be"),
        ):
            with self.assertRaises(BadAnswer) as raised:
                parse_status(node_status(ID_A, **extra))
            self.assertIn(message, str(raised.exception))
        node = FakeNode(self, status=node_status(ID_A, sensors={"connected": 1, "accepted": 10**400}))
        app = self.monitor(node.address)
        app.extensions["monitor"].poll_once()
        response = app.test_client().get("/api/servers")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json()["servers"][0]["state"], "Error")

    def test_bad_fields_named(self):
        """
        A node whose new fields are malformed is an error naming the field.
        """
        cases = [
            ({"logs": [log(ID_A, "nope", 1, 3)]}, "'logs[0].epoch' should be an epoch id"),
            ({"logs": [{**log(ID_A, EPOCH_1, 1, 3), "held": -1}]}, "'logs[0].held' should be a whole number"),
            ({"peers": [peer(ID_B, "x", lag={ID_A: "many"})]}, "'peers[0].lag' should be an object of node ids"),
            ({"sensors": {"connected": 1, "names": {"a": True}}}, "'sensors.names' should be an object"),
        ]
        for extra, message in cases:
            with self.assertRaises(BadAnswer) as raised:
                parse_status(node_status(ID_A, **extra))
            self.assertIn(message, str(raised.exception))


class MatrixRangeTests(MonitorCase):
    """
    The positions each server holds of each origin.
    """

    def test_ranges(self):
        """
        Each cell of the matrix gives the positions held of each epoch of
        the origin's log, oldest epoch first, and says how many are missing
        inside a range; each origin links to its page.
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 36, ID_B: 7}, logs=[
            log(ID_A, EPOCH_1, 1, 10), log(ID_A, EPOCH_2, 1, 26, current=True), log(ID_B, EPOCH_1, 1, 7),
        ]))
        b = FakeNode(self, status=node_status(ID_B, origins={ID_A: 30, ID_B: 7}, logs=[
            log(ID_A, EPOCH_1, 5, 10), log(ID_A, EPOCH_2, 1, 26, held=24), log(ID_B, EPOCH_1, 1, 7),
        ]))
        app = self.monitor(a.address, b.address)
        app.extensions["monitor"].poll_once()
        rows = app.test_client().get("/api/servers").get_json()["matrix"]["rows"]
        self.assertEqual(
            [[cell["ranges"] for cell in row["cells"]] for row in rows],
            [[["1–10", "1–26"], ["5–10", "1–26 (2 missing)"]], [["1–7"], ["1–7"]]],
        )
        self.assertEqual(rows[0]["url"], f"/origin/{ID_A}")
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertIn('<span class="range">1–26 (2 missing)</span>', html)
        # Counts are written with thousands separators, as the ranges are.
        big = FakeNode(self, status=node_status(ID_C, origins={ID_C: 1234567}))
        app = self.monitor(big.address)
        app.extensions["monitor"].poll_once()
        page = app.test_client().get("/").get_data(as_text=True)
        self.assertIn('<td class="num" data-label="Own readings">1,234,567', page)
        self.assertIn('<td class="num">1,234,567</td>', page)
        self.assertIn(f'href="/origin/{ID_A}"', html)


class HistoryTests(SynchronousTestCase):
    """
    The buckets of one server's last hour.
    """

    def test_rate(self):
        """
        The readings per second of a bucket are the readings answered OK
        between its samples over the time between them.
        """
        history = ServerHistory(gap_s=5)
        for n in range(11):
            history.add(Sample(n * 2.0, accepted=30 * n, lag_records=0, lag_s=0.0), n * 2.0)
        [bucket] = history.buckets
        self.assertEqual((bucket.readings, bucket.seconds, bucket.rate), (300, 20.0, 15.0))
        self.assertEqual(history.rate(20.0), 15.0)

    def test_restart_and_gap_are_no_readings(self):
        """
        A count lower than the last (the node restarted) and samples
        further apart than the gap (it did not answer) add no time and no
        readings, so the rate is that of the times it was seen.
        """
        history = ServerHistory(gap_s=5)
        history.add(Sample(0.0, 1000, None, None), 0.0)
        history.add(Sample(2.0, 1010, None, None), 2.0)
        # Restarted: counting from 0 again.
        history.add(Sample(4.0, 3, None, None), 4.0)
        history.add(Sample(6.0, 13, None, None), 6.0)
        # Not answering, then back 10 s later.
        history.add(None, 8.0)
        history.add(Sample(18.0, 500, None, None), 18.0)
        history.add(Sample(20.0, 510, None, None), 20.0)
        [bucket] = history.buckets
        self.assertEqual((bucket.readings, bucket.seconds), (30, 6.0))

    def test_another_node_is_a_restart(self):
        """
        Another node answering at the address, or the same one with a
        shorter uptime, starts the count again: its count is no readings
        of the last period.
        """
        history = ServerHistory(gap_s=5)
        history.add(Sample(0.0, 100, None, None, ID_A, 50.0), 0.0)
        history.add(Sample(2.0, 50_100, None, None, ID_B, 9_000.0), 2.0)
        history.add(Sample(4.0, 50_110, None, None, ID_B, 9_002.0), 4.0)
        history.add(Sample(6.0, 60_000, None, None, ID_B, 1.0), 6.0)
        [bucket] = history.buckets
        self.assertEqual((bucket.readings, bucket.seconds), (10, 2.0))

    def test_lag_is_the_worst(self):
        """
        A bucket keeps the worst lag seen in it, and no lag at all when the
        server had no connected peer.
        """
        history = ServerHistory(gap_s=5)
        for at, lag in ((0.0, 3.0), (2.0, 9.5), (4.0, 1.0)):
            history.add(Sample(at, 0, 10, lag), at)
        history.add(Sample(BUCKET_S, 0, None, None), BUCKET_S)
        self.assertEqual([(b.lag_records, b.lag_s) for b in history.buckets], [(10, 9.5), (None, None)])

    def test_bounded(self):
        """
        Only the last hour's buckets are kept, however long it runs.
        """
        history = ServerHistory(gap_s=5)
        for n in range(3 * BUCKETS):
            history.add(Sample(n * BUCKET_S, n, None, None), n * BUCKET_S)
        self.assertEqual(len(history.buckets), BUCKETS)
        self.assertEqual(history.buckets[0].start, 2 * BUCKETS * BUCKET_S)


class TimelineTests(SynchronousTestCase):
    """
    The geometry of a history chart.
    """

    def test_gaps_break_the_line(self):
        """
        Points further apart than a step, or without a value, are not
        joined; a lone point is a dot; values are scaled from zero.
        """
        points = [(0, 10.0), (30, 5.0), (60, None), (90, 0.0), (120, 10.0), (240, 2.0)]
        chart = timeline(points, 0, 240, 30)
        self.assertEqual(len(chart["lines"]), 2)
        self.assertEqual(len(chart["dots"]), 1)
        self.assertEqual(chart["high"], "10")
        ys = [float(p.split(",")[1]) for p in chart["lines"][0].split()]
        self.assertEqual(ys[0], HISTORY_TOP)
        self.assertEqual(ys[1], HISTORY_TOP + (HISTORY_HEIGHT - HISTORY_TOP - 14) / 2)


    def test_nice_axis(self):
        """
        The top of a history chart's axis is a round figure above its
        highest value, so that a lag of 0.981 s is drawn under "1".
        """
        self.assertEqual(
            [nice_ceiling(v) for v in (0, 0.981, 1.03, 6.001, 20, 37, 51, 999)],
            [1, 1, 2, 10, 20, 50, 100, 1000],
        )
        self.assertEqual(timeline([(0, 0.981), (30, 0.2)], 0, 60, 30)["high"], "1")


class PageHistoryTests(MonitorCase):
    """
    The page's "Last hour", through polls of real HTTP servers.
    """

    def test_rate_and_charts(self):
        """
        After polls of a node whose sensors were answered 20 readings per
        second, its row says 20/s and its history charts draw it; a server
        that never answered has no charts.
        """
        clock = Clock()
        status = node_status(ID_A, peers=[peer(ID_B, "10.0.0.2:12346", lag={ID_B: 40}, lag_s={ID_B: 12.0})])
        node = FakeNode(self, status=status)
        app = self.monitor(node.address, closed_port_address(), clock=clock)
        poller = app.extensions["monitor"]
        for n in range(6):
            status["sensors"]["accepted"] = 40 * n
            node.answer("/status", body=status)
            poller.poll_once()
            clock.now += 2.0
        client = app.test_client()
        servers = client.get("/api/servers").get_json()["servers"]
        self.assertEqual(servers[0]["rate"], "20/s")
        self.assertEqual([c["what"] for c in servers[0]["history"]], ["rate", "lag"])
        self.assertEqual(servers[1]["history"], [])
        rate = client.get(servers[0]["history"][0]["url"])
        self.assertEqual(rate.mimetype, "image/svg+xml")
        body = rate.get_data(as_text=True)
        self.assertIn("readings/s, last hour", body)
        self.assertIn(">20/s<", body)
        lag = client.get(servers[0]["history"][1]["url"]).get_data(as_text=True)
        self.assertIn(">12 s<", lag)
        self.assertEqual(client.get("/history.svg?server=0&what=other").status_code, 404)
        self.assertEqual(client.get("/history.svg?server=9&what=rate").status_code, 404)
        html = client.get("/").get_data(as_text=True)
        self.assertEqual(len(re.findall(r'<img class="history-chart"', html)), 2)
        # Stopped, it has no rate: its last one is not what it does now.
        node.close()
        poller.poll_once()
        self.assertIsNone(client.get("/api/servers").get_json()["servers"][0]["rate"])


class OriginPageTests(MonitorCase):
    """
    ``/origin/<node id>``: who holds an origin's readings, and its latest
    readings by type.
    """

    def test_latest_by_type(self):
        """
        The page asks the origin itself for its readings and shows, per
        type, the newest value, a chart and the newest few; the holders'
        table gives each server's count, positions and lack.
        """
        readings = node_readings(
            ("Temperature", "39C", 39.0, "C", "2026-11-28 10:00:04.5"),
            ("Humidity", "15% RH", 15.0, "% RH", "2026-11-28 10:00:03"),
            ("Temperature", "34C", 34.0, "C", "2026-11-28 10:00:02.5"),
            ("Door", "open", None, None, "2026-11-28 10:00:01"),
        )
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 4, ID_B: 2}, logs=[log(ID_A, EPOCH_1, 1, 4)]),
                     readings=readings)
        b = FakeNode(self, status=node_status(ID_B, origins={ID_A: 3, ID_B: 2}, logs=[log(ID_A, EPOCH_1, 1, 3)]))
        app = self.monitor(b.address, a.address)
        app.extensions["monitor"].poll_once()
        response = app.test_client().get(f"/origin/{ID_A}")
        self.assertEqual(response.status_code, 200)
        html = response.get_data(as_text=True)
        self.assertIn(f"/readings?origin={ID_A}&limit=300", a.requests)
        self.assertNotIn(f"/readings?origin={ID_A}&limit=300", b.requests)
        types = re.findall(r'<article class="card type" data-type="([^"]+)">\s*<h3>[^<]*<span class="latest">([^<]*)', html)
        self.assertEqual(types, [("Door", "open"), ("Humidity", "15% RH"), ("Temperature", "39C")])
        # Temperature's chart, drawn in the page; Door has no numbers to draw.
        self.assertEqual(html.count("<polyline"), 2)
        holders = re.findall(r'<tr class="cell (\w+)">.*?<td class="num">([^<]*)</td>\s*<td>([^<]*)</td>', html, re.S)
        self.assertEqual(holders, [("partial", "3", "1–3"), ("full", "4", "1–4")])
        self.assertIn(f"as {a.address} holds them", html)

    def test_untrusted_text_escaped(self):
        """
        What a node sends goes into the origin's page as text, never markup,
        in the readings, the chart drawn in the page and the type's name.
        """
        readings = node_readings((XSS, XSS, 1.0, None, XSS), (XSS, "2", 2.0, None, "2026-11-28 10:00:00"))
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 2}), readings=readings)
        app = self.monitor(a.address)
        app.extensions["monitor"].poll_once()
        html = app.test_client().get(f"/origin/{ID_A}").get_data(as_text=True)
        self.assertNotIn(XSS, html)
        self.assertIn(f'data-type="{ESCAPED_XSS}"', html)
        self.assertIn(f"<title>{ESCAPED_XSS}: 2 recent values", html)

    def test_falls_back_to_a_holder(self):
        """
        When the origin's own server does not answer, the page asks the
        server holding the most of it, and says which.
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 4, ID_C: 1}))
        b = FakeNode(self, status=node_status(ID_B, origins={ID_A: 3, ID_C: 9}))
        c = FakeNode(self, status=node_status(ID_C, origins={ID_A: 1, ID_C: 9}))
        app = self.monitor(a.address, b.address, c.address)
        app.extensions["monitor"].poll_once()
        c.answer("/readings", code=503, body={"error": "busy"})
        html = app.test_client().get(f"/origin/{ID_C}").get_data(as_text=True)
        self.assertIn(f"as {b.address} holds them", html)
        self.assertIn(f"/readings?origin={ID_C}&limit=300", c.requests)
        self.assertIn(f"Its own server, {c.address}, is Running.", html)

    def test_one_timeout_for_the_page(self):
        """
        Holders that do not answer are asked within one timeout for the
        whole page, at most two of them, and the page says why.
        """
        nodes = [FakeNode(self, status=node_status(node_id, origins={ID_A: 3 - n}))
                 for n, node_id in enumerate((ID_A, ID_B, ID_C))]
        app = self.monitor(*(n.address for n in nodes), timeout=1.0)
        app.extensions["monitor"].poll_once()
        for node in nodes:
            node.answer("/readings", body=TEMPERATURES_BODY, delay=5)
        started = time.monotonic()
        html = app.test_client().get(f"/origin/{ID_A}").get_data(as_text=True)
        # One timeout of 1 s for the page, not one per server asked.
        self.assertLess(time.monotonic() - started, 1.8)
        self.assertIn("Its readings could not be read", html)
        self.assertNotIn(f"/readings?origin={ID_A}&limit=300", nodes[2].requests)

    def test_unknown_or_unreadable(self):
        """
        An origin no server has heard of, or no node id, is a 404; when no
        holder answers, the page says why for each.
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 4}))
        app = self.monitor(a.address)
        app.extensions["monitor"].poll_once()
        client = app.test_client()
        self.assertEqual(client.get(f"/origin/{ID_B}").status_code, 404)
        self.assertEqual(client.get("/origin/not-an-id").status_code, 404)
        a.answer("/readings", code=503, body={"error": "the node is stopping"})
        html = client.get(f"/origin/{ID_A}").get_data(as_text=True)
        self.assertIn(f"Its readings could not be read: {a.address}: HTTP 503", html)
        self.assertIn("the node is stopping", html)

    def test_own_server_down_or_replaced(self):
        """
        The page says when the origin's own server does not answer, and
        when no monitored server runs as the origin any more (a node that
        lost its data directory answers under a new id).
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 4, ID_C: 2}))
        b = FakeNode(self, status=node_status(ID_B, origins={ID_A: 4, ID_C: 2}))
        app = self.monitor(a.address, b.address)
        poller = app.extensions["monitor"]
        poller.poll_once()
        client = app.test_client()
        html = client.get(f"/origin/{ID_C}").get_data(as_text=True)
        self.assertIn("No monitored server runs as this origin now", html)
        a.close()
        poller.poll_once()
        html = client.get(f"/origin/{ID_A}").get_data(as_text=True)
        self.assertIn(f"Its own server, {a.address}, does not answer (down)", html)
        self.assertIn(f"as {b.address} holds them", html)
