"""
The web monitor against real ``twistd -n p2pstore`` nodes: through Flask's
test client, and in a real headless Chromium driven by Playwright.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from werkzeug.serving import WSGIRequestHandler, make_server

from p2pstore.schema import INDEX_MASK, rows_table
from p2pstore.testing import free_port
from web_monitor import create_app

from .damage import edit
from .nodes import SELF_DB, NodeProcess, send_lines, wait_for
from .proxy import Proxy
from .test_cluster import cluster_key, feed, sensor_lines
from .test_link_integrity import NoisyTamper

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, headless, touching nothing outside this machine.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
INSTALL_HINT = "run scripts/test (the README's test command), which installs it"


def status_address(node: NodeProcess) -> str:
    return f"127.0.0.1:{node.status_port}"


@inlineCallbacks
def start_nodes(test_case, peered: int, standalone: int = 0, first_args=()):
    """
    Start ``peered`` nodes that replicate to each other and ``standalone``
    ones with the same cluster key but no peers; the first one is also
    given ``first_args``.
    """
    first = NodeProcess(test_case, extra_args=first_args)
    yield first.start()
    key = first.data_dir / "cluster.key"
    nodes = [first]
    for n in range(1, peered + standalone):
        peers = [first.peer_address] if n < peered else []
        node = NodeProcess(test_case, secret_file=key, peers=peers)
        yield node.start()
        nodes.append(node)
    return nodes


@inlineCallbacks
def wait_replicated(holder: NodeProcess, origin: NodeProcess, count: int):
    """
    Wait until ``holder`` holds ``count`` readings of ``origin``.
    """
    seen = {}

    @inlineCallbacks
    def holds():
        status = yield holder.status()
        seen["origins"] = status.get("origins")
        return status["origins"].get(origin.node_id, {}).get("count") == count

    yield wait_for(holds, 20, lambda: f"{count} readings of {origin.node_id} at {holder.node_id}: {seen}")


class QuietRequestHandler(WSGIRequestHandler):
    """
    Log only the requests that failed, not the page's every poll.
    """

    def log_request(self, code="-", size="-") -> None:
        if str(code)[:1] not in ("1", "2", "3"):
            super().log_request(code, size)


def serve(test_case, app) -> str:
    """
    Serve ``app`` on a free 127.0.0.1 port in a thread; return its URL.
    (Not with the command's twisted.web server: these tests block the
    reactor's thread while Chromium asks for the page.)
    """
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    test_case.addCleanup(server.server_close)
    test_case.addCleanup(server.shutdown)
    test_case.server = server
    return f"http://127.0.0.1:{server.server_port}/"


class RealNodesTests(TestCase):
    """
    The page and /api/servers against real nodes.
    """

    @inlineCallbacks
    def test_cluster_and_matrix(self):
        """
        Two replicating nodes and one alone: the monitor shows all three
        Running with their node ids and readings, and its matrix shows that
        the pair hold each other's readings while the third holds only its own.
        """
        a, b, c = yield start_nodes(self, peered=2, standalone=1)
        yield send_lines(a.sensor_port, [b"Temperature,%dC" % t for t in (21, 23, 22, 25)])
        yield send_lines(b.sensor_port, [b"Atm. Pressure,1.5 atm", b"Atm. Pressure,1.7 atm"])
        yield send_lines(c.sensor_port, [b"Humidity,15% RH", b"Humidity,20% RH", b"Humidity,18% RH"])
        yield wait_replicated(b, a, 4)
        yield wait_replicated(a, b, 2)

        app = create_app({
            "SERVERS": [status_address(n) for n in (a, b, c)],
            "INTERVAL": 2.0,
            "START_POLLER": False,
            "CONSOLE": lambda line: None,
        })
        poller = app.extensions["monitor"]
        self.addCleanup(poller.stop)
        poller.poll_once()
        client = app.test_client()
        data = client.get("/api/servers").get_json()

        servers = data["servers"]
        self.assertEqual([s["state"] for s in servers], ["Running"] * 3)
        self.assertEqual([s["node_id"] for s in servers], [a.node_id, b.node_id, c.node_id])
        self.assertEqual([s["own_readings"] for s in servers], [4, 2, 3])
        self.assertEqual([s["held_for_others"] for s in servers], [2, 4, 0])
        self.assertEqual([(s["links_up"], s["links_down"]) for s in servers], [(1, 0), (1, 0), (0, 0)])
        self.assertEqual(
            [(r["type"], r["data"]) for r in servers[0]["readings"]],
            [("Temperature", "25C"), ("Temperature", "22C"), ("Temperature", "23C"), ("Temperature", "21C")],
        )
        self.assertEqual([c["type"] for c in servers[1]["charts"]], ["Atm. Pressure"])

        rows = {row["origin"]: row for row in data["matrix"]["rows"]}
        self.assertEqual(list(rows), [a.node_id, b.node_id, c.node_id])
        cells = {origin: [(cell["have"], cell["lacking"]) for cell in row["cells"]] for origin, row in rows.items()}
        self.assertEqual(cells, {
            a.node_id: [(4, 0), (4, 0), (0, 4)],
            b.node_id: [(2, 0), (2, 0), (0, 2)],
            c.node_id: [(0, 3), (0, 3), (3, 0)],
        })
        self.assertEqual([(row["held_by"], row["short"]) for row in rows.values()], [(2, True), (2, True), (1, True)])

        html = client.get("/").get_data(as_text=True)
        for node in (a, b, c):
            self.assertIn(status_address(node), html)
            self.assertIn(f'title="{node.node_id}"', html)
        self.assertEqual(html.count('data-state="Running"'), 3)
        self.assertIn("1 of 3", html)
        chart = client.get(servers[0]["charts"][0]["url"])
        self.assertEqual(chart.mimetype, "image/svg+xml")
        self.assertEqual(len(re.search(r'points="([^"]+)"', chart.get_data(as_text=True)).group(1).split()), 4)


class BrowserTests(TestCase):
    """
    The page in a real headless Chromium.
    """

    def launch_browser(self):
        if not os.path.exists(CHROMIUM):
            self.fail(f"Chromium is not installed at {CHROMIUM}: {INSTALL_HINT}")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            self.fail(f"Playwright is not installed: {INSTALL_HINT}")
        playwright = sync_playwright().start()
        self.addCleanup(playwright.stop)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.addCleanup(browser.close)
        return browser

    @inlineCallbacks
    def test_page_follows_the_nodes(self):
        """
        The page shows two replicating nodes Running and their matrix full;
        when one node stops, the page shows it Down within two intervals
        without a reload; when the monitor itself stops answering, the page
        says its data is stale. Screenshots are left in the test's directory.
        """
        browser = self.launch_browser()
        shots = Path(self.mktemp())
        shots.mkdir(parents=True)
        # The first exports to a port where nothing listens: it retries.
        nowhere = f"http://127.0.0.1:{free_port()}/write?db=sensors"
        first, second = yield start_nodes(self, peered=2, first_args=["--export", nowhere])
        yield send_lines(first.sensor_port, [b"Temperature,%dC" % t for t in (21, 25, 23)])
        yield send_lines(second.sensor_port, [b"Humidity,%d%% RH" % h for h in (40, 45)])

        interval = 1.0
        app = create_app({
            "SERVERS": [status_address(first), status_address(second)],
            "INTERVAL": interval,
            "CONSOLE": lambda line: None,
        })
        self.addCleanup(app.extensions["monitor"].stop)
        url = serve(self, app)

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems = []
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda message: message.type == "error" and problems.append(message.text))
        page.goto(url)
        page.evaluate("window.notReloaded = true")
        # Full matrix: each node holds all of both origins.
        page.wait_for_function(
            """() => document.querySelectorAll('tr.server[data-state="Running"]').length === 2
                  && document.querySelectorAll('#matrix td.cell.full').length === 4
                  && document.querySelectorAll('#matrix tr.short').length === 0
                  && document.querySelectorAll('#nodes img.chart').length === 2""",
            timeout=15000,
        )
        page.screenshot(path=str(shots / "running.png"), full_page=True)
        self.assertEqual(problems, [])
        # Each row, drawn by the page's script, shows what the node's
        # databases take (these nodes have no --max-disk).
        for index in (0, 1):
            disk = page.locator(f'tr.server[data-index="{index}"] td.disk').text_content()
            self.assertRegex(disk, r"\A[0-9.]+ (kB|MB)", f"server {index}")
        # The script draws the first node's export as failing, with its
        # backlog; the second exports nowhere.
        export = page.locator('tr.server[data-index="0"] td.export')
        page.wait_for_function(
            """() => document.querySelector('tr.server[data-index="0"] td.export .trouble')""", timeout=10000
        )
        self.assertEqual(export.locator(".trouble").text_content(), "retrying: connection refused")
        self.assertRegex(export.text_content(), r"\A3 behind, oldest [0-9]+ s")
        self.assertEqual(export.locator(".destination").get_attribute("title"), nowhere)
        self.assertEqual(page.locator('tr.server[data-index="1"] td.export').text_content(), "—")

        stopped_at = time.monotonic()
        yield second.stop()
        down = page.locator('tr.server[data-index="1"][data-state="Down"]')
        try:
            down.wait_for(timeout=(2 * interval + 0.5) * 1000)
        except Exception:
            page.screenshot(path=str(shots / "not-down.png"), full_page=True)
            self.fail(f"the page did not show the stopped node Down within {2 * interval + 0.5} s; see {shots}")
        self.assertLessEqual(time.monotonic() - stopped_at, 2 * interval + 0.5)
        self.assertEqual(page.locator('tr.server[data-index="1"] .why').first.text_content(), "connection refused")
        self.assertEqual(page.locator('tr.server[data-index="0"]').get_attribute("data-state"), "Running")
        self.assertTrue(page.evaluate("window.notReloaded === true"), "the page was reloaded")
        self.assertTrue(page.locator("#stale").is_hidden())
        page.screenshot(path=str(shots / "down.png"), full_page=True)
        self.assertEqual(problems, [])

        # The monitor itself goes away: the page must not go on looking current.
        self.server.shutdown()
        self.server.server_close()
        page.locator("#stale").wait_for(state="visible", timeout=(2 * interval + 1 + 3) * 1000)
        self.assertIn("The monitor does not answer", page.locator("#stale").text_content())
        self.assertTrue(page.evaluate("window.notReloaded === true"), "the page was reloaded")
        page.screenshot(path=str(shots / "stale.png"), full_page=True)

    @inlineCallbacks
    def test_trouble_and_quarantine_shown(self):
        """
        B reaches A through a path that flips bits: the page, updated
        without a reload, shows B's links "in trouble" with the reason. A
        node alone whose stored record was edited (no peer to repair it)
        shows the record waiting in quarantine.
        """
        browser = self.launch_browser()
        shots = Path(self.mktemp())
        shots.mkdir(parents=True)
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key)
        yield a.start()
        yield feed(self, a, sensor_lines(300, "a"))
        lonely = NodeProcess(self, secret_file=key)
        yield lonely.start()
        yield feed(self, lonely, sensor_lines(5, "lonely"))
        yield lonely.stop()
        # In the table that stores the rows: the view users query is read-only.
        changed = edit(
            lonely.data_dir / SELF_DB,
            f"UPDATE {rows_table(lonely.node_id)} SET sensor_data = '99C', value = 99 "
            f"WHERE key & {INDEX_MASK} = 2",
        )
        self.assertEqual(changed, 1)
        yield lonely.start()
        rng = random.Random(7)
        proxy = Proxy(a.peer_port)
        proxy.tamper = lambda direction: NoisyTamper(rng, 500)
        yield proxy.start()
        self.addCleanup(proxy.stop)
        # Started once the page shows the others: its trouble comes live.
        b = NodeProcess(self, secret_file=key, peers=[f"127.0.0.1:{proxy.port}"])

        app = create_app({
            "SERVERS": [status_address(n) for n in (a, lonely, b)],
            "INTERVAL": 1.0,
            "CONSOLE": lambda line: None,
        })
        self.addCleanup(app.extensions["monitor"].stop)
        url = serve(self, app)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems = []
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.goto(url)
        page.evaluate("window.notReloaded = true")
        page.wait_for_function(
            "() => document.querySelectorAll('tr.server[data-state=\"Running\"]').length === 2",
            timeout=15000,
        )
        warning = page.locator('tr.server[data-index="1"] .why.warning')
        warning.wait_for(timeout=5000)
        self.assertEqual(
            warning.text_content(), "1 record failed their check on disk, waiting for a good copy from a peer"
        )
        self.assertEqual(page.locator("tr.server .trouble").count(), 0)

        yield b.start()
        trouble = page.locator('tr.server[data-index="2"] .links .trouble')
        try:
            # Not trouble.wait_for: the proxy runs in this reactor, which
            # must go on turning meanwhile.
            yield wait_for(lambda: trouble.count() > 0, 30, "the page to show B's links in trouble", 0.2)
        except Exception:
            page.screenshot(path=str(shots / "no-trouble.png"), full_page=True)
            raise
        self.assertEqual(trouble.text_content(), "1 in trouble")
        why = page.locator('tr.server[data-index="2"] .links .why').text_content()
        self.assertIn(f"127.0.0.1:{proxy.port}", why)
        # A, whose end of the same links is in trouble too, is shown, not
        # refused for the length of its trouble line.
        self.assertEqual(page.locator('tr.server[data-index="0"]').get_attribute("data-state"), "Running")
        self.assertTrue(page.evaluate("window.notReloaded === true"), "the page was reloaded")
        page.screenshot(path=str(shots / "trouble.png"), full_page=True)
        self.assertEqual(problems, [])


def ten_node_statuses() -> list:
    """
    The /status answers of a 10-node cluster, each holding every origin, one
    with a link in trouble, one with an export behind, one disk nearly full.
    """
    from .test_monitor import export_status, node_status

    ids = [f"{n:x}" * 32 for n in range(10)]
    origins = {node_id: 1000 + 37 * n for n, node_id in enumerate(ids)}
    statuses = []
    for n, node_id in enumerate(ids):
        peers = [
            {"address": f"10.0.0.{m + 1}:12346", "node_id": other, "connected": True}
            for m, other in enumerate(ids) if other != node_id
        ]
        extra = {"disk": {"used_bytes": 123456789 * (n + 1), "budget_bytes": 4 * 10**9,
                          "days_left": 3.5 if n == 4 else 120.0, "full": False}}
        if n == 2:
            peers[0]["trouble"] = "3 records refused from 10.0.0.1:12346: bad MAC, the link was dropped"
        if n == 6:
            extra["exports"] = [export_status(
                url="http://***@influx.example.net:8086/write?db=sensors", state="retrying", pending=12345,
                oldest_unexported_age_s=420.0, last_error="HTTP 503 Service Unavailable: the database is busy")]
        status = node_status(node_id=node_id, origins=origins, peers=peers, **extra)
        status["sensors"]["unterminated_connected"] = 1 if n == 3 else 0
        statuses.append(status)
    return statuses


class LayoutTests(TestCase):
    """
    The page with 10 nodes, at a laptop's and a phone's width.
    """

    launch_browser = BrowserTests.launch_browser

    def test_ten_nodes_fit(self):
        """
        At 1280x800 and at 390x844, the page with 10 nodes does not scroll
        sideways, its answers line is the first thing under the title, its
        history charts load, an origin's page opened from the matrix does
        not scroll sideways either, and screenshots of all are left in the
        test's directory.
        """
        from .test_monitor import FakeNode

        browser = self.launch_browser()
        shots = Path(self.mktemp()).resolve()
        shots.mkdir(parents=True)
        nodes = [FakeNode(self, status=status) for status in ten_node_statuses()]
        app = create_app({
            "SERVERS": [node.address for node in nodes],
            "INTERVAL": 1.0,
            "CONSOLE": lambda line: None,
        })
        self.addCleanup(app.extensions["monitor"].stop)
        url = serve(self, app)
        for name, width, height in (("laptop", 1280, 800), ("phone", 390, 844)):
            page = browser.new_page(viewport={"width": width, "height": height})
            problems = []
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.goto(url)
            page.wait_for_function(
                """() => document.querySelectorAll('tr.server[data-state="Running"]').length === 10
                      && document.querySelectorAll('#health li').length === 3""",
                timeout=15000,
            )
            # The last hour of each server is charted once it has been polled.
            page.wait_for_function(
                """() => [...document.querySelectorAll('#history img.history-chart')]
                         .filter(i => i.complete && i.naturalWidth > 0).length === 20""",
                timeout=15000,
            )
            page.screenshot(path=str(shots / f"{name}.png"))
            page.screenshot(path=str(shots / f"{name}-full.png"), full_page=True)
            overflow = page.evaluate(
                """() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                          wide: [...document.querySelectorAll('main *')]
                                .filter(e => !e.closest('.scroll'))
                                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                                .slice(0, 5).map(e => e.tagName + '.' + e.className)})"""
            )
            self.assertLessEqual(overflow["scroll"], overflow["inner"], f"{name}: {overflow}; see {shots}")
            self.assertEqual(overflow["wide"], [], f"{name}: see {shots}")
            # The servers fit without scrolling in their card, at either width;
            # only the matrix may scroll in its own (10 columns on a phone).
            box = page.locator("table.servers").evaluate("t => [t.parentNode.scrollWidth, t.parentNode.clientWidth]")
            self.assertLessEqual(box[0], box[1], f"{name}: the servers' table scrolls; see {shots}")
            headline = page.locator("#health .headline")
            self.assertEqual(headline.text_content(), "Every reading has at least 2 copies.")
            # The answers are on the first screen, right under the title.
            self.assertLess(headline.bounding_box()["y"], 200)
            # An origin's page, opened from the matrix, fits too.
            page.locator("#matrix th.origin a").first.click()
            page.wait_for_selector("article.type")
            page.screenshot(path=str(shots / f"{name}-origin.png"), full_page=True)
            self.assertEqual(
                page.locator("article.type h3 .latest").all_text_contents(), ["15% RH", "39C"]
            )
            self.assertLessEqual(page.evaluate("document.documentElement.scrollWidth"), width, f"{name}: {shots}")
            self.assertEqual(problems, [])
            page.close()
        self.shots = shots
