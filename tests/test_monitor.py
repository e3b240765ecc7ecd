"""
Tests of the web monitor against real HTTP servers on 127.0.0.1 that play
nodes, through Flask's test client and through the monitor's own command.
"""

from __future__ import annotations

import configparser
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.testing import free_port
from web_monitor import create_app
from web_monitor.addresses import DEFAULT_STATUS_PORT, parse_server, parse_servers
from web_monitor.cli import HELP, USAGE
from web_monitor.poller import (
    DOWN, ERROR, INITIALIZING, INVALID, RUNNING, SYNCING, TIMEOUT, classify,
)

REPO = Path(__file__).resolve().parent.parent
VIEWS = REPO / "web_monitor" / "views.py"

ID_A = "a" * 32
ID_B = "b" * 32
ID_C = "c" * 32
XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


def node_status(node_id: str = ID_A, state: str = "Running", origins: Optional[dict] = None,
                peers: Optional[list] = None, **extra) -> dict:
    """
    A ``/status`` answer shaped as a real node's.
    """
    if origins is None:
        origins = {node_id: 3}
    status = {
        "node_id": node_id,
        "state": state,
        "version": "0.1.0",
        "uptime_s": 125.5,
        "sensors": {"connected": 2, "accepted": 3, "rejected": 1, "queued": 0},
        "origins": {
            origin: {"count": count, "last_index": count, "self": origin == node_id}
            for origin, count in origins.items()
        },
        "peers": peers if peers is not None else [
            {"address": "127.0.0.1:22346", "node_id": ID_B, "connected": True},
            {"address": "127.0.0.1:32346", "node_id": None, "connected": False},
        ],
        "replication": {"sent": 0, "received": 0},
    }
    status.update(extra)
    return status


def export_status(url: str = "http://***@127.0.0.1:8086/write?db=sensors", state: str = "ok",
                  pending: int = 0, **extra) -> dict:
    """
    One entry of a ``/status`` answer's ``exports``, shaped as a real node's.
    """
    export = {
        "url": url, "state": state, "pending": pending, "oldest_unexported_age_s": None,
        "sent": 100, "dead_lettered": 0, "last_success": 1796630000.5, "last_error": None,
        "failing_since": None, "errors": {}, "taken_over": [],
    }
    export.update(extra)
    return export


def node_readings(*readings: tuple) -> dict:
    """
    A ``/readings`` answer from (type, data, value, unit, timestamp) tuples, newest first.
    """
    return {
        "readings": [
            {"origin": ID_A, "epoch": ID_A, "entry_index": len(readings) - n, "sensor_index": 1,
             "sensor_type": t, "sensor_data": d, "timestamp": ts, "reading_id": None,
             "data_checksum": "00", "value": v, "unit": u}
            for n, (t, d, v, u, ts) in enumerate(readings)
        ]
    }


TEMPERATURES = node_readings(
    ("Temperature", "39C", 39.0, "C", "2026-11-28 10:00:04.5"),
    ("Temperature", "34C", 34.0, "C", "2026-11-28 10:00:02.5"),
    ("Humidity", "15% RH", 15.0, "% RH", "2026-11-28 10:00:01"),
    ("Temperature", "25C", 25.0, "C", "2026-11-28 10:00:00"),
)


class FakeNode:
    """
    A node played by a threaded http.server on 127.0.0.1: each path answers
    what the test says, after an optional delay.
    """

    def __init__(self, test_case, status=None, readings=None):
        self.answers: dict = {}
        self.requests: list = []
        # The Authorization header of each request (None when absent).
        self.authorizations: list = []
        # Set at the end of the test, to let slow answers go.
        self.released = threading.Event()
        self.answer("/status", body=status if status is not None else node_status())
        self.answer("/readings", body=readings if readings is not None else TEMPERATURES)
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                node.requests.append(self.path)
                node.authorizations.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                code, body, delay, raw, trickle = node.answers.get(
                    path, (404, b'{"error": "not found"}', 0, False, 0)
                )
                if delay:
                    node.released.wait(delay)
                try:
                    self.reply(code, body, raw, trickle)
                except OSError:
                    pass  # the monitor gave up waiting: as it should

            def reply(self, code, body, raw, trickle):
                if raw:
                    step = 1 if trickle else len(body)
                    for n in range(0, len(body), step):
                        if trickle and node.released.wait(trickle):
                            return
                        self.wfile.write(body[n : n + step])
                        self.wfile.flush()
                    return
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        test_case.addCleanup(self.close)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, code: int = 200, body=None, delay: float = 0,
               raw: bool = False, trickle: float = 0):
        """
        Answer ``path`` with ``body`` (JSON-encoded unless bytes) after
        ``delay`` seconds. With ``raw``, ``body`` is the whole answer, status
        line and all, sent a byte every ``trickle`` seconds if given.
        """
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (code, data, delay, raw, trickle)

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_address() -> str:
    """
    127.0.0.1 and a port nothing listens on (it was free a moment ago).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


class MonitorCase(SynchronousTestCase):
    """
    Builds monitors whose polling the test drives, with console lines kept.
    """

    def monitor(self, *servers, interval: float = 2.0, timeout: float = 1.0, clock=time.time, token=None):
        self.console: list = []
        app = create_app({
            "SERVERS": list(servers),
            "INTERVAL": interval,
            "TIMEOUT": timeout,
            "START_POLLER": False,
            "CONSOLE": self.console.append,
            "CLOCK": clock,
            "TOKEN": token,
        })
        self.addCleanup(app.extensions["monitor"].stop)
        return app

    def poll(self, *servers, **options):
        """
        One cycle of a new monitor of ``servers``: its results.
        """
        app = self.monitor(*servers, **options)
        return app.extensions["monitor"].poll_once().results


class AddressTests(SynchronousTestCase):
    """
    The entries of --servers.
    """

    def test_host_and_port(self):
        """
        An entry is HOST[:PORT], the port 8000 when left out; IPv6 goes in brackets.
        """
        cases = {
            "127.0.0.1:8001": ("127.0.0.1", 8001),
            "192.168.1.42": ("192.168.1.42", DEFAULT_STATUS_PORT),
            "localhost": ("localhost", DEFAULT_STATUS_PORT),
            "node-1.example.org:9000": ("node-1.example.org", 9000),
            "[::1]:8002": ("::1", 8002),
            "::1": ("::1", DEFAULT_STATUS_PORT),
            " 10.0.0.1:80 ": ("10.0.0.1", 80),
        }
        for text, expected in cases.items():
            address = parse_server(text)
            self.assertIsNone(address.error, text)
            self.assertEqual((address.host, address.port), expected, text)

    def test_malformed(self):
        """
        A malformed entry is kept, with the reason, and never raises.
        """
        for text in ["bad host!", "999.1.1.1", "1.2.3", "host:99999", "host:0", "host:http",
                     "[::1", "[::1]8000", ":8000", "-leading.dash", "a" * 64 + ".org", "[zz::1]:80"]:
            address = parse_server(text)
            self.assertIsNotNone(address.error, text)
            self.assertEqual(address.text, text.strip())

    def test_list(self):
        """
        --servers is comma-separated; empty entries (a trailing comma) are dropped.
        """
        self.assertEqual(
            [a.text for a in parse_servers("127.0.0.1, bad host!,[::1]:8000,")],
            ["127.0.0.1", "bad host!", "[::1]:8000"],
        )


class ClassificationTests(MonitorCase):
    """
    Each server is classified by what it answers, or by why it does not.
    """

    def test_running(self):
        """
        A node that says Running is Running, with its status and readings.
        """
        node = FakeNode(self)
        [result] = self.poll(node.address)
        self.assertEqual((result.state, result.message), (RUNNING, None))
        self.assertEqual(result.status.node_id, ID_A)
        self.assertEqual(result.status.own_readings, 3)
        self.assertEqual((result.status.links_up, result.status.links_down), (1, 1))
        self.assertEqual([r.sensor_data for r in result.readings], ["39C", "34C", "15% RH", "25C"])
        self.assertIn("/readings?limit=100", node.requests)
        self.assertEqual(self.console[1], f"    [INFO] Server '{node.address}' is Running")

    def test_syncing(self):
        """
        A node recovering its own readings is Syncing.
        """
        node = FakeNode(self, status=node_status(state="Syncing", recovery={"fetched": 2}))
        [result] = self.poll(node.address)
        self.assertEqual(result.state, SYNCING)
        self.assertEqual(self.console[1], f"    [INFO] Server '{node.address}' is Syncing")

    def test_initializing(self):
        """
        A node still opening its store is Initializing, and is not asked for
        readings it cannot give yet.
        """
        node = FakeNode(self, status=node_status(state="Initializing", origins={}))
        node.answer("/readings", 503, {"error": "the node is opening its database"})
        [result] = self.poll(node.address)
        self.assertEqual((result.state, result.readings_error), (INITIALIZING, None))
        self.assertEqual(node.requests, ["/status"])
        self.assertEqual(self.console[1], f"    [INFO] Server '{node.address}' is Initializing")

    def test_timeout(self):
        """
        A server that answers later than the timeout is Timeout, and the
        check ends at the timeout.
        """
        node = FakeNode(self)
        node.answer("/status", body=node_status(), delay=10)
        started = time.monotonic()
        [result] = self.poll(node.address, timeout=0.5)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual((result.state, result.message), (TIMEOUT, "no answer within 0.5 s"))
        self.assertEqual(self.console[1], f"    [ERROR] Server '{node.address}' timed out")

    def test_invalid_address(self):
        """
        A malformed host or a numeric one that is no IPv4 address is
        "Invalid IP address", without any lookup.
        """
        started = time.monotonic()
        results = self.poll("bad host!", "999.1.1.1")
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual([r.state for r in results], [INVALID, INVALID])
        self.assertEqual(results[0].message, "'bad host!' is neither an IP address nor a host name")
        self.assertEqual(results[1].message, "'999.1.1.1' is not an IPv4 address")
        self.assertEqual(self.console[1:3], [
            "    [ERROR] Server 'bad host!' is invalid",
            "    [ERROR] Server '999.1.1.1' is invalid",
        ])

    def test_unresolvable_name(self):
        """
        A host name that does not resolve is "Invalid IP address" too.
        """
        error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.assertEqual(
            classify(error, 1.0), (INVALID, "cannot resolve the host name: Name or service not known")
        )

    def test_down(self):
        """
        A server that refuses the connection is Down.
        """
        address = closed_port_address()
        [result] = self.poll(address)
        self.assertEqual((result.state, result.message), (DOWN, "connection refused"))
        self.assertEqual(self.console[1], f"    [ERROR] Server '{address}' is down")

    def test_http_error(self):
        """
        An HTTP error is Error, with the code and the node's own message.
        """
        node = FakeNode(self)
        node.answer("/status", 500, {"error": "could not read the database"})
        [result] = self.poll(node.address)
        self.assertEqual(
            (result.state, result.message),
            (ERROR, "HTTP 500 Internal Server Error: could not read the database"),
        )
        self.assertEqual(
            self.console[1],
            f"    [ERROR] Server '{node.address}' thrown an unhandled error: "
            "HTTP 500 Internal Server Error: could not read the database",
        )

    def test_token_sent(self):
        """
        With a token, every request carries it as a bearer token; without
        one, none has an Authorization header.
        """
        node = FakeNode(self)
        self.poll(node.address, token="t0ken-for-the-readers-0123456789")
        self.assertEqual(node.requests, ["/status", "/readings?limit=100"])
        self.assertEqual(node.authorizations, ["Bearer t0ken-for-the-readers-0123456789"] * 2)
        other = FakeNode(self)
        self.poll(other.address)
        self.assertEqual(other.authorizations, [None, None])

    def test_readings_need_a_token(self):
        """
        A node whose /readings answers 401 is still Running by its status;
        its readings error says to give the monitor --token-file.
        """
        node = FakeNode(self)
        node.answer("/readings", 401, {"error": "this needs a token"})
        [result] = self.poll(node.address)
        self.assertEqual(result.state, RUNNING)
        self.assertEqual(
            result.readings_error,
            "HTTP 401 Unauthorized: this needs a token (start the monitor with --token-file)",
        )

    def test_not_json(self):
        """
        An answer that is not JSON is Error, saying so.
        """
        node = FakeNode(self)
        node.answer("/status", body=b"<html>It works!</html>")
        [result] = self.poll(node.address)
        self.assertEqual(result.state, ERROR)
        self.assertTrue(result.message.startswith("the answer is not JSON: Expecting value"), result.message)

    def test_odd_answers(self):
        """
        Answers of the wrong shape are Error, each with a message naming
        what is wrong; none breaks the poller, which goes on to the next.
        """
        good = node_status()
        cases = [
            (b"[]", "the status should be an object, not a list"),
            (b"null", "the status should be an object, not null"),
            (b'"Running"', "the status should be an object, not \"Running\""),
            (json.dumps({"state": "Running"}).encode(), "'node_id' is missing"),
            (json.dumps(good | {"node_id": "xyz"}).encode(), "'node_id' should be a node id"),
            (json.dumps(good | {"state": XSS}).encode(), "'state' should be one of Running, Syncing, Initializing"),
            (json.dumps(good | {"state": 1}).encode(), "'state' should be one of"),
            (json.dumps(good | {"uptime_s": "long"}).encode(), "'uptime_s' should be a number of seconds"),
            (json.dumps(good | {"uptime_s": -1}).encode(), "'uptime_s' should be a number of seconds"),
            (json.dumps(good).replace('"uptime_s": 125.5', '"uptime_s": NaN').encode(), "not JSON: NaN"),
            (json.dumps(good | {"sensors": []}).encode(), "'sensors' should be an object, not a list"),
            (json.dumps(good | {"sensors": {"connected": -1}}).encode(), "'sensors.connected' should be a whole number"),
            (json.dumps(good | {"sensors": {"connected": True}}).encode(), "'sensors.connected' should be a whole number"),
            (json.dumps(good | {"sensors": {"rejected": 1.5}}).encode(), "'sensors.rejected' should be a whole number"),
            (json.dumps(good | {"origins": []}).encode(), "'origins' should be an object"),
            (json.dumps(good | {"origins": {XSS: {"count": 1}}}).encode(), "'origins' has a key that is not a node id"),
            (json.dumps(good | {"origins": {ID_A: 5}}).encode(), f"'origins.{ID_A}' should be an object"),
            (json.dumps(good | {"origins": {ID_A: {"count": "5"}}}).encode(), f"'origins.{ID_A}.count' should be a whole number"),
            (json.dumps(good | {"peers": {}}).encode(), "'peers' should be a list"),
            (json.dumps(good | {"peers": [{"connected": "yes"}]}).encode(), "'peers[0].connected' should be true or false"),
            (json.dumps(good | {"peers": ["x"]}).encode(), "'peers[0]' should be an object"),
            (json.dumps(good | {"exports": {}}).encode(), "'exports' should be a list"),
            (json.dumps(good | {"exports": [{"state": "ok", "pending": 0}]}).encode(), "'exports[0].url' is missing"),
            (json.dumps(good | {"exports": [export_status(pending=-1)]}).encode(),
             "'exports[0].pending' should be a whole number"),
            (json.dumps(good | {"exports": [export_status(oldest_unexported_age_s="old")]}).encode(),
             "'exports[0].oldest_unexported_age_s' should be a number of seconds"),
            (json.dumps(good | {"exports": [export_status(last_error="x" * 2001)]}).encode(),
             "'exports[0].last_error' should be a string of 1 to 2000 characters or null"),
            (json.dumps(good | {"exports": [export_status()] * 101}).encode(), "'exports' lists more than 100"),
            (b"[" * 100000 + b"]" * 100000, "the answer is not JSON"),
            (b'{"node_id": "\xff"}', "the answer is not UTF-8"),
            (b"1" * 5000, "the answer is not JSON"),
            (b" " * (2 << 20), "the answer is longer than"),
        ]
        node = FakeNode(self)
        app = self.monitor(node.address)
        poller = app.extensions["monitor"]
        seen = []
        for body, expected in cases:
            node.answer("/status", body=body)
            [result] = poller.poll_once().results
            seen.append((result.state, expected in (result.message or ""), result.message))
        self.assertEqual(
            [(state, ok) for state, ok, _ in seen], [(ERROR, True)] * len(cases),
            "\n".join(f"{expected!r} -> {message!r}" for (_, expected), (_, _, message) in zip(cases, seen)),
        )
        node.answer("/status", body=good)
        self.assertEqual(poller.poll_once().results[0].state, RUNNING)
        self.assertEqual(app.test_client().get("/").status_code, 200)

    def test_odd_readings(self):
        """
        A node whose status is fine but whose readings are not is still
        classified by its status; the readings' problem is shown instead of them.
        """
        node = FakeNode(self)
        bad_value = node_readings(("Temperature", "39C", "hot", "C", "2026-11-28 10:00:00"))
        for body, expected in [
            ({"readings": {}}, "'readings' should be a list"),
            (bad_value, "'readings[0].value' should be a finite number or null"),
            (node_readings(("", "1", 1.0, None, "t")), "'readings[0].sensor_type' should be a string of 1 to 200"),
            (node_readings(("T" * 201, "1", 1.0, None, "t")), "'readings[0].sensor_type' should be a string"),
        ]:
            node.answer("/readings", body=body)
            [result] = self.poll(node.address)
            self.assertEqual(result.state, RUNNING)
            self.assertEqual(result.readings, ())
            self.assertIn(expected, result.readings_error)
        node.answer("/readings", 500, b"oops")
        [result] = self.poll(node.address)
        self.assertEqual((result.state, result.readings_error), (RUNNING, "HTTP 500 Internal Server Error"))


class ConsoleTests(MonitorCase):
    """
    The console says what the seed's monitor said.
    """

    def test_lines(self):
        """
        A cycle prints "Updating data...", a line per server in the order
        given, and "Data updated."; starting prints "Started data refresh thread".
        """
        running = FakeNode(self)
        broken = FakeNode(self)
        broken.answer("/status", 500, b"")
        slow = FakeNode(self)
        slow.answer("/status", body=node_status(), delay=10)
        down = closed_port_address()
        app = self.monitor(running.address, down, "bad host!", broken.address, slow.address, timeout=0.5)
        app.extensions["monitor"].poll_once()
        self.assertEqual(self.console, [
            "[INFO] Updating data...",
            f"    [INFO] Server '{running.address}' is Running",
            f"    [ERROR] Server '{down}' is down",
            "    [ERROR] Server 'bad host!' is invalid",
            f"    [ERROR] Server '{broken.address}' thrown an unhandled error: "
            "HTTP 500 Internal Server Error",
            f"    [ERROR] Server '{slow.address}' timed out",
            "[INFO] Data updated.",
        ])

    def test_background(self):
        """
        Started, the poller says so and then runs a cycle every interval.
        """
        node = FakeNode(self)
        app = self.monitor(node.address, interval=0.5, timeout=0.3)
        poller = app.extensions["monitor"]
        poller.start()
        deadline = time.monotonic() + 5
        while poller.snapshot().generation < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(poller.snapshot().generation, 3)
        self.assertEqual(self.console[:2], ["[INFO] Started data refresh thread", "[INFO] Updating data..."])
        self.assertGreaterEqual(self.console.count("[INFO] Data updated."), 3)


class ConcurrencyTests(MonitorCase):
    """
    One slow or stuck server never delays the others.
    """

    def test_slow_server_does_not_delay_others(self):
        """
        With one server that takes 30 s, a cycle still ends at the timeout,
        with the others' fresh results.
        """
        slow = FakeNode(self)
        slow.answer("/status", body=node_status(), delay=30)
        fast = [FakeNode(self) for _ in range(3)]
        started = time.monotonic()
        results = self.poll(fast[0].address, slow.address, fast[1].address, fast[2].address, timeout=1.0)
        elapsed = time.monotonic() - started
        self.assertEqual([r.state for r in results], [RUNNING, TIMEOUT, RUNNING, RUNNING])
        self.assertLess(elapsed, 2.0)

    def test_servers_are_asked_at_once(self):
        """
        Servers are asked in parallel: four that take 0.6 s each take about
        0.6 s together, not 2.4 s.
        """
        nodes = [FakeNode(self) for _ in range(4)]
        for node in nodes:
            node.answer("/status", body=node_status(), delay=0.6)
        started = time.monotonic()
        results = self.poll(*[n.address for n in nodes], interval=3.0, timeout=2.0)
        elapsed = time.monotonic() - started
        self.assertEqual([r.state for r in results], [RUNNING] * 4)
        self.assertLess(elapsed, 1.6)

    def test_trickling_server_is_cut_off(self):
        """
        A server that trickles its answer a byte at a time (each read within
        the timeout) is cut off at the deadline: Timeout in every cycle, each
        cycle ending in time, its checks never piling up.
        """
        trickler = FakeNode(self)
        trickler.answer("/status", body=b"HTTP/1.0 200 OK\r\nX-Slow: " + b"x" * 40, raw=True, trickle=0.1)
        fast = FakeNode(self)
        app = self.monitor(trickler.address, fast.address, interval=2.0, timeout=0.5)
        poller = app.extensions["monitor"]
        for _ in range(3):
            started = time.monotonic()
            results = poller.poll_once().results
            self.assertLess(time.monotonic() - started, 1.5)
            self.assertEqual([r.state for r in results], [TIMEOUT, RUNNING])
            # Cut off, the check ends at once, freeing its worker.
            cut = poller._in_flight[0][0]
            deadline = time.monotonic() + 0.5
            while not cut.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertTrue(cut.done())
        self.assertEqual(trickler.requests, ["/status"] * 3)

    def test_stuck_lookup_is_not_repeated(self):
        """
        A check stuck where no timeout reaches (a name lookup that hangs)
        is Timeout, and its server is not asked again until it ends; the
        others are checked as usual meanwhile.
        """
        fast = FakeNode(self)
        port = int(fast.address.split(":")[1])
        lookups = []
        answered = threading.Event()
        self.addCleanup(answered.set)
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if host != "slow-lookup.test":
                return real_getaddrinfo(host, *args, **kwargs)
            lookups.append(host)
            answered.wait(30)
            return real_getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)

        socket.getaddrinfo = getaddrinfo
        self.addCleanup(setattr, socket, "getaddrinfo", real_getaddrinfo)
        app = self.monitor(f"slow-lookup.test:{port}", fast.address, interval=2.0, timeout=0.5)
        poller = app.extensions["monitor"]
        for _ in range(3):
            started = time.monotonic()
            results = poller.poll_once().results
            self.assertLess(time.monotonic() - started, 1.5)
            self.assertEqual([r.state for r in results], [TIMEOUT, RUNNING])
        self.assertEqual(lookups, ["slow-lookup.test"])
        answered.set()
        deadline = time.monotonic() + 5
        while poller._in_flight[0][0].running() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual([r.state for r in poller.poll_once().results], [RUNNING, RUNNING])
        # Asked again: a lookup for its status and one for its readings.
        self.assertEqual(len(lookups), 3)


class PageTests(MonitorCase):
    """
    The page, its JSON and its charts.
    """

    def test_rows(self):
        """
        Each server has a row: address, state, node id, uptime, own readings,
        readings held for others, sensors connected, rejected lines, links.
        """
        node = FakeNode(self, status=node_status(origins={ID_A: 12, ID_B: 30, ID_C: 4}))
        down = closed_port_address()
        app = self.monitor(node.address, down)
        app.extensions["monitor"].poll_once()
        html = app.test_client().get("/").get_data(as_text=True)
        rows = re.findall(r'<tr class="server".*?</tr>', html, re.S)
        self.assertEqual(len(rows), 2)
        cells = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)]
        self.assertEqual(cells, [node.address, "Running", "aaaaaaaa", "2 min 05 s", "12", "34", "2", "1", "—", "—", "1 up · 1 down"])
        self.assertIn('data-state="Down"', rows[1])
        self.assertIn("connection refused", rows[1])
        api = app.test_client().get("/api/servers").get_json()
        self.assertEqual([s["state"] for s in api["servers"]], ["Running", "Down"])
        self.assertEqual(
            {k: api["servers"][0][k] for k in ("node_id", "own_readings", "held_for_others",
                                               "sensors_connected", "rejected_lines", "links_up", "links_down")},
            {"node_id": ID_A, "own_readings": 12, "held_for_others": 34, "sensors_connected": 2,
             "rejected_lines": 1, "links_up": 1, "links_down": 1},
        )

    def test_sensors_without_line_ends(self):
        """
        Sensors that send readings without line ends are counted under the
        sensors connected, on the page and in its JSON.
        """
        status = node_status()
        status["sensors"]["unterminated_connected"] = 2
        node = FakeNode(self, status=status)
        app = self.monitor(node.address)
        app.extensions["monitor"].poll_once()
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertIn("2 without line ends", html)
        api = app.test_client().get("/api/servers").get_json()
        self.assertEqual(api["servers"][0]["sensors_unterminated"], 2)

    def test_trouble_and_warnings(self):
        """
        A server whose peer links are in trouble says how many and the
        first one's trouble line (cut short when long); records in quarantine and damaged files
        moved aside are warnings under its state, on the page and in its
        JSON. A server without them shows neither.
        """
        status = node_status(
            peers=[
                {"address": "127.0.0.1:22346", "node_id": ID_B, "connected": True,
                 "trouble": "12 links dropped (bad MAC) in the last 5 min" + "; more detail" * 40},
                {"address": "127.0.0.1:32346", "node_id": ID_C, "connected": True, "trouble": None},
            ],
            scrub={"checked": 100, "found": 2, "quarantined": 2, "repaired": 0},
            damaged_files=[{"moved_to": "/x/self_sensor_data.db.damaged-1"}],
        )
        node = FakeNode(self, status=status)
        calm = FakeNode(self, status=node_status(ID_B))
        app = self.monitor(node.address, calm.address)
        app.extensions["monitor"].poll_once()
        html = app.test_client().get("/").get_data(as_text=True)
        rows = re.findall(r'<tr class="server".*?</tr>', html, re.S)
        self.assertIn("1 in trouble", rows[0])
        # Longer than the page shows (the status has it whole): cut short.
        self.assertIn("127.0.0.1:22346: 12 links dropped (bad MAC) in the last 5 min; more detail", rows[0])
        self.assertIn("…", rows[0])
        self.assertIn("2 records failed their check on disk, waiting for a good copy from a peer", rows[0])
        self.assertIn("1 damaged database file moved aside at start", rows[0])
        self.assertNotIn("in trouble", rows[1])
        self.assertNotIn("warning", rows[1])
        api = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual((api[0]["links_trouble"], api[1]["links_trouble"]), (1, 0))
        self.assertEqual(len(api[0]["warnings"]), 2)
        self.assertEqual(api[1]["warnings"], [])

    def test_disk_warnings(self):
        """
        A full disk stands out as a warning with the node's reason; a disk
        at 90% of its budget, or with less than a week left at the last
        hour's growth, is a warning too; a roomy disk is none.
        """
        full = FakeNode(self, status=node_status(ID_A, disk={
            "used_bytes": 12_000_000, "budget_bytes": 12_000_000, "days_left": None,
            "full": "full: this node's data takes 12.0 MB of its --max-disk 12.0 MB"}))
        near = FakeNode(self, status=node_status(ID_B, disk={
            "used_bytes": 9_500_000, "budget_bytes": 10_000_000, "days_left": 2.5, "full": False}))
        roomy = FakeNode(self, status=node_status(ID_C, disk={
            "used_bytes": 1_000, "budget_bytes": None, "days_left": 300.0, "full": False}))
        app = self.monitor(full.address, near.address, roomy.address)
        app.extensions["monitor"].poll_once()
        api = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertEqual(
            api[0]["warnings"], ["disk full: this node's data takes 12.0 MB of its --max-disk 12.0 MB"]
        )
        self.assertEqual(
            api[1]["warnings"],
            ["disk at 95% of its --max-disk (9.5 MB of 10.0 MB)",
             "disk full in about 2.5 days at the last hour's growth"],
        )
        self.assertEqual(api[2]["warnings"], [])
        # Each row shows the disk used, of its budget, and the days left.
        self.assertEqual(
            [(s["disk"], s["disk_left"], s["disk_full"]) for s in api],
            [("12.0 MB of 12.0 MB", "full", True), ("9.5 MB of 10.0 MB", "2.5 days left", False),
             ("1.0 kB", "300 days left", False)],
        )
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertIn("disk full: this node", html)
        # The used and the budget each on one line, so the column wraps between them only.
        self.assertIn('<td class="num disk full" data-label="Disk"><span class="nw">12.0 MB</span> '
                      '<span class="nw">of 12.0 MB</span><div class="why">full</div></td>', html)
        self.assertIn('<span class="nw">9.5 MB</span> <span class="nw">of 10.0 MB</span><div class="why">2.5 days left</div>', html)

    def test_exports(self):
        """
        The Export column: a dash for a node that exports nowhere; per
        destination, its backlog and the age of its oldest reading waiting,
        or "up to date"; a destination that fails stands out with its state
        and why (its whole error and the URL on hover), and dead letters are
        counted. Two destinations are told apart by their hosts.
        """
        plain = FakeNode(self, status=node_status(ID_A))
        fine = FakeNode(self, status=node_status(ID_B, exports=[export_status()]))
        failing_since = 1796630000.0
        behind = FakeNode(self, status=node_status(ID_C, exports=[export_status(
            state="retrying", pending=12345, oldest_unexported_age_s=185.2, dead_lettered=3,
            last_error="Connection was refused by other side: 111: Connection refused.",
            failing_since=failing_since, errors={"connection": 7})]))
        answer = '404 {"error":"database not found: \\"sensors\\""} (not found: check the URL\'s database or bucket)'
        wrong = FakeNode(self, status=node_status(ID_A, exports=[
            export_status("https://influx.example:8086/api/v2/write?org=o&bucket=" + XSS, state="misconfigured",
                          pending=40, oldest_unexported_age_s=7200.0, last_error=answer, failing_since=failing_since,
                          errors={"404": 2}),
            export_status("http://vm.example:8428/write", state="starting", pending=40, oldest_unexported_age_s=2.0),
            export_status("http://quest.example:9000/write", state="retrying", pending=1, oldest_unexported_age_s=90,
                          last_error="503 " + "the server is busy, " * 10, failing_since=failing_since),
        ]))
        app = self.monitor(plain.address, fine.address, behind.address, wrong.address)
        app.extensions["monitor"].poll_once()
        api = app.test_client().get("/api/servers").get_json()["servers"]
        self.assertIsNone(api[0]["exports"])
        self.assertEqual(api[1]["exports"], [{
            "url": "http://***@127.0.0.1:8086/write?db=sensors", "name": "127.0.0.1:8086", "state": "ok",
            "backlog": "up to date", "trouble": None, "error": None, "note": None, "dead_letters": None,
        }])
        [retrying] = api[2]["exports"]
        self.assertEqual(
            (retrying["backlog"], retrying["trouble"], retrying["dead_letters"]),
            ("12,345 behind, oldest 3 min", "retrying: connection refused", "3 dead letters"),
        )
        self.assertEqual(retrying["error"], "Connection was refused by other side: 111: Connection refused.")
        misconfigured, starting, busy = api[3]["exports"]
        self.assertEqual(misconfigured["backlog"], "40 behind, oldest 2 h")
        self.assertEqual(misconfigured["name"], "influx.example:8086")
        # InfluxDB's JSON answer: its message.
        self.assertEqual(misconfigured["trouble"], 'misconfigured: 404 database not found: "sensors"')
        self.assertEqual(misconfigured["error"], answer)
        self.assertEqual(
            (starting["backlog"], starting["trouble"], starting["note"]), ("40 behind, oldest 2 s", None, "starting")
        )
        # A long error is cut short.
        self.assertEqual(busy["backlog"], "1 behind, oldest 1 min")
        self.assertEqual(busy["trouble"], "retrying: " + ("503 " + "the server is busy, " * 10)[:79] + "…")

        html = app.test_client().get("/").get_data(as_text=True)
        rows = re.findall(r'<tr class="server".*?</tr>', html, re.S)
        cells = [re.search(r'<td class="export"[^>]*>(.*?)</td>', row, re.S).group(1) for row in rows]
        self.assertEqual(cells[0], "—")
        self.assertEqual(
            cells[1], '<div class="destination" title="http://***@127.0.0.1:8086/write?db=sensors">up to date</div>'
        )
        self.assertEqual(
            cells[2],
            '<div class="destination" title="http://***@127.0.0.1:8086/write?db=sensors">12,345 behind, oldest 3 min'
            '<div class="why trouble" title="Connection was refused by other side: 111: Connection refused.">'
            'retrying: connection refused</div><div class="why warning">3 dead letters</div></div>',
        )
        self.assertIn('<span class="sub">influx.example:8086</span>40 behind, oldest 2 h', cells[3])
        self.assertIn('<div class="why trouble" title="404 {&#34;error&#34;', cells[3])
        self.assertIn(">misconfigured: 404 database not found: &#34;sensors&#34;</div>", cells[3])
        self.assertIn('<span class="sub">vm.example:8428</span>40 behind, oldest 2 s<div class="why">starting</div>',
                      cells[3])
        self.assertNotIn(XSS, html)
        self.assertIn("bucket=" + ESCAPED_XSS, cells[3])

    def test_matrix(self):
        """
        The matrix has a row per origin and a column per server: how many of
        the origin's readings each holds and lacks; an origin held by fewer
        servers than are monitored is marked.
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 10, ID_B: 7, ID_C: 4}))
        b = FakeNode(self, status=node_status(ID_B, origins={ID_A: 10, ID_B: 7}))
        c = FakeNode(self, status=node_status(ID_C, origins={ID_A: 6, ID_C: 4}))
        app = self.monitor(a.address, b.address, c.address)
        app.extensions["monitor"].poll_once()
        matrix = app.test_client().get("/api/servers").get_json()["matrix"]
        table = {
            row["origin"]: ([(cell["have"], cell["lacking"]) for cell in row["cells"]], row["held_by"], row["short"])
            for row in matrix["rows"]
        }
        self.assertEqual([row["origin"] for row in matrix["rows"]], [ID_A, ID_B, ID_C])
        self.assertEqual(table, {
            ID_A: ([(10, 0), (10, 0), (6, 4)], 3, False),
            ID_B: ([(7, 0), (7, 0), (0, 7)], 2, True),
            ID_C: ([(4, 0), (0, 4), (4, 0)], 2, True),
        })
        self.assertEqual([row["address"] for row in matrix["rows"]], [a.address, b.address, c.address])
        html = app.test_client().get("/").get_data(as_text=True)
        self.assertEqual(html.count('<tr class="short">'), 2)
        self.assertIn("2 of 3", html)

    def test_matrix_unknown_holder(self):
        """
        A server that does not answer is a column of unknowns, and every
        origin is then held by fewer servers than are monitored.
        """
        a = FakeNode(self, status=node_status(ID_A, origins={ID_A: 5}))
        app = self.monitor(a.address, closed_port_address())
        app.extensions["monitor"].poll_once()
        [row] = app.test_client().get("/api/servers").get_json()["matrix"]["rows"]
        self.assertEqual([cell["state"] for cell in row["cells"]], ["full", "unknown"])
        self.assertEqual((row["held_by"], row["short"]), (1, True))

    def test_latest_readings_and_charts(self):
        """
        Each server's latest readings are listed, and each sensor type with
        numeric values has a server-drawn SVG chart of them, oldest first.
        """
        node = FakeNode(self)
        app = self.monitor(node.address)
        app.extensions["monitor"].poll_once()
        client = app.test_client()
        server = client.get("/api/servers").get_json()["servers"][0]
        self.assertEqual(server["readings"][0], {"type": "Temperature", "data": "39C", "time": "2026-11-28 10:00:04"})
        self.assertEqual([(c["type"], c["count"], c["last"], c["min"], c["max"]) for c in server["charts"]],
                         [("Humidity", 1, "15% RH", "15", "15"), ("Temperature", 3, "39C", "25", "39")])
        html = client.get("/").get_data(as_text=True)
        for chart in server["charts"]:
            self.assertIn(chart["url"].replace("&", "&amp;"), html)
        svg = client.get(server["charts"][1]["url"])
        self.assertEqual(svg.mimetype, "image/svg+xml")
        points = re.search(r'<polyline points="([^"]+)"', svg.get_data(as_text=True)).group(1).split()
        ys = [float(p.split(",")[1]) for p in points]
        # 25, 34, 39: rising values are drawn higher up (smaller y).
        self.assertEqual(len(ys), 3)
        self.assertTrue(ys[0] > ys[1] > ys[2], ys)
        self.assertEqual(client.get("/chart.svg?server=0&type=Pressure").status_code, 404)
        self.assertEqual(client.get("/chart.svg?server=7&type=Temperature").status_code, 404)
        self.assertEqual(client.get("/chart.svg?server=x").status_code, 404)

    def test_untrusted_text_is_escaped(self):
        """
        Markup in anything a server sends is shown as text: in the page, in
        the chart and in error messages; the only script is the page's own.
        """
        node = FakeNode(
            self,
            status=node_status(peers=[{"address": XSS, "node_id": None, "connected": True}]),
            readings=node_readings((XSS, XSS, 1.0, XSS, XSS), (XSS, "2" + XSS, 2.0, XSS, XSS)),
        )
        broken = FakeNode(self)
        broken.answer("/status", 503, {"error": XSS})
        app = self.monitor(node.address, broken.address)
        app.extensions["monitor"].poll_once()
        client = app.test_client()
        html = client.get("/").get_data(as_text=True)
        self.assertNotIn(XSS, html)
        self.assertIn(ESCAPED_XSS, html)
        self.assertIn(f"HTTP 503 Service Unavailable: {ESCAPED_XSS}", html)
        self.assertEqual(re.findall(r"<script[^>]*>", html, re.I), ['<script src="/static/monitor.js">'])
        [chart] = client.get("/api/servers").get_json()["servers"][0]["charts"]
        svg = client.get(chart["url"]).get_data(as_text=True)
        self.assertNotIn("<script", svg)
        self.assertIn(ESCAPED_XSS, svg)
        response = client.get("/")
        self.assertIn("script-src 'self'", response.headers["Content-Security-Policy"])

    def test_assets_are_local(self):
        """
        The page loads its CSS, script and icon from the monitor itself,
        and they load nothing from elsewhere.
        """
        app = self.monitor(FakeNode(self).address)
        client = app.test_client()
        html = client.get("/").get_data(as_text=True)
        links = re.findall(r'(?:src|href)="([^"]*)"', html)
        self.assertEqual(
            sorted(links),
            ["/static/favicon.svg", "/static/monitor.css", "/static/monitor.js"],
        )
        for link in links:
            response = client.get(link)
            self.assertEqual(response.status_code, 200, link)
            body = response.get_data(as_text=True)
            response.close()
            self.assertNotRegex(body.replace("http://www.w3.org/2000/svg", ""), r"https?:|//[a-z]|@import|url\(")

    def test_stale_notice(self):
        """
        The page says it is waiting before the first cycle ends, and says
        the data is stale once cycles stop for more than two intervals.
        """
        now = [1000.0]
        app = self.monitor(FakeNode(self).address, interval=2.0, clock=lambda: now[0])
        client = app.test_client()
        self.assertIn("Waiting for the first answers", client.get("/").get_data(as_text=True))
        self.assertTrue(client.get("/api/servers").get_json()["stale"].startswith("Waiting"))
        app.extensions["monitor"].poll_once()
        now[0] += 4.5
        self.assertIsNone(client.get("/api/servers").get_json()["stale"])
        self.assertIn('id="stale" class="notice" role="status" hidden', client.get("/").get_data(as_text=True))
        now[0] += 1.0
        self.assertEqual(client.get("/api/servers").get_json()["stale"], "The data is stale: last updated 5 s ago.")
        self.assertIn("The data is stale: last updated 5 s ago.", client.get("/").get_data(as_text=True))


class CommandTests(SynchronousTestCase):
    """
    ``python web_monitor/views.py``, as a user runs it.
    """

    def run_command(self, *args, module=False):
        command = [sys.executable, "-m", "web_monitor.views"] if module else [sys.executable, str(VIEWS)]
        return subprocess.run(command + list(args), cwd=REPO, capture_output=True, text=True, timeout=60)

    def test_installed_with_the_package(self):
        """
        Flask, which the command needs, is one of the package's own
        dependencies: the README's `pip install .` is enough to run it.
        """
        setup = configparser.ConfigParser()
        setup.read(REPO / "setup.cfg")
        requires = [line.split()[0] for line in setup["options"]["install_requires"].splitlines()
                    if line.strip() and not line.strip().startswith("#")]
        self.assertIn("flask", requires)

    def test_usage_without_servers(self):
        """
        Without --servers the command prints its usage and fails, run as a
        script or as a module.
        """
        for module in (False, True):
            done = self.run_command(module=module)
            self.assertEqual((done.returncode, done.stdout.strip(), done.stderr), (1, USAGE, ""))
        self.assertTrue(USAGE.startswith("You must specify the servers to monitor.\n"))

    def test_help(self):
        """
        --help prints the usage, without saying servers are missing, and
        succeeds.
        """
        done = self.run_command("--help")
        self.assertEqual(done.returncode, 0)
        self.assertTrue(done.stdout.startswith("Usage: python web_monitor/views.py --servers"), done.stdout)
        self.assertEqual(done.stdout.strip(), USAGE.split("\n", 1)[1])

    def test_bad_option(self):
        """
        A bad value stops the command with one line naming the option.
        """
        done = self.run_command("--servers", "127.0.0.1", "--port", "99999")
        self.assertEqual(done.returncode, 2)
        self.assertEqual(
            done.stderr,
            "web_monitor/views.py: error: argument --port: must be a port number from 1 to 65535, not '99999'\n",
        )

    def test_misspelled_option(self):
        """
        An option that does not exist is named, and the usage follows.
        """
        done = self.run_command("--servers", "127.0.0.1", "--intervall", "3")
        self.assertEqual(done.returncode, 2)
        self.assertEqual(
            done.stderr, "web_monitor/views.py: error: unrecognized arguments: --intervall 3\n" + HELP + "\n"
        )

    def test_port_in_use(self):
        """
        When the port is taken, the command says so in one line naming
        --port, and fails before polling anything.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = self.run_command("--servers", "127.0.0.1", "--port", str(port))
        self.assertEqual((done.returncode, done.stdout), (1, ""))
        self.assertEqual(
            done.stderr,
            f"web_monitor/views.py: error: cannot serve the page on 127.0.0.1:{port}: "
            "address already in use; choose another port with --port\n",
        )

    def test_bad_token_file(self):
        """
        A --token-file that is missing or holds no single token stops the
        command with one line naming the option and the file.
        """
        missing = Path(self.mktemp()).resolve()
        done = self.run_command("--servers", "127.0.0.1", "--token-file", str(missing))
        self.assertEqual(done.returncode, 2)
        self.assertTrue(done.stderr.startswith(f"web_monitor/views.py: error: --token-file: cannot read {missing}"), done.stderr)
        self.assertEqual(done.stderr.count("\n"), 1)
        two = Path(self.mktemp()).resolve()
        two.write_text("one\ntwo\n")
        done = self.run_command("--servers", "127.0.0.1", "--token-file", str(two))
        self.assertEqual(
            (done.returncode, done.stderr),
            (2, f"web_monitor/views.py: error: --token-file: {two} must hold one line: the token\n"),
        )

    def test_serves_and_polls(self):
        """
        With servers it prints the seed's console lines, a malformed entry
        only affecting its own line, and serves the page on --port.
        """
        node = FakeNode(self)
        port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, str(VIEWS), "--servers", f"{node.address},bad host!",
             "--port", str(port), "--interval", "1"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.kill)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l.rstrip("\n")) for l in process.stdout], daemon=True).start()
        seen = []
        deadline = time.monotonic() + 20
        while seen.count("[INFO] Data updated.") < 2:
            try:
                seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                self.fail(f"no two cycles within 20 s; printed: {seen}")
        cycle = [
            "[INFO] Updating data...",
            f"    [INFO] Server '{node.address}' is Running",
            "    [ERROR] Server 'bad host!' is invalid",
            "[INFO] Data updated.",
        ]
        self.assertEqual(seen, ["[INFO] Started data refresh thread"] + cycle + cycle)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/servers", timeout=10) as response:
            data = json.load(response)
        self.assertEqual([s["state"] for s in data["servers"]], ["Running", "Invalid IP address"])
        with self.assertRaises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing-here", timeout=10)
        self.assertEqual(missing.exception.code, 404)
        process.terminate()
        self.assertEqual(process.wait(10), 0)
        # Served by twisted.web, not Flask's development server: its start
        # lines are the seed's, without the development server's warning,
        # and the page's polls are not logged. (Whether the 404's log line
        # is written before the SIGTERM races with the client's read of
        # the answer on a loaded machine, so it is not asserted.)
        stderr = process.stderr.read().splitlines()
        self.assertEqual(stderr[:2], [f" * Running on http://127.0.0.1:{port}", "Press CTRL+C to quit"])
        self.assertFalse([line for line in stderr if "production" in line or "GET /api/servers" in line], stderr)
