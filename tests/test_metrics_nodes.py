"""
A real Prometheus (Debian's ``prometheus`` package) scraping a real
``twistd -n p2pstore`` node's ``/metrics`` every second on 127.0.0.1, and
PromQL over what it scraped held against the node's ``/status``.

CI installs Prometheus (scripts/install-prometheus); without it this test
fails, it is not skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from p2pstore.testing import free_ports

from .nodes import ChildProcess, NodeProcess, send_lines, wait_for

START_TIMEOUT = 60.0
# A few scrapes at 1 s, with room for a slow CI machine.
SCRAPED_TIMEOUT = 60.0

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: p2pstore
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        raise AssertionError(
            "prometheus is not installed: run scripts/install-prometheus (Debian's prometheus)"
        )
    return found


class Prometheus:
    """
    A Prometheus server of a test, scraping one target every second, with
    its database in the test's temporary directory.
    """

    def __init__(self, test_case, target_port: int):
        self._test = test_case
        self.directory = Path(test_case.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        (self.directory / "prometheus.yml").write_text(CONFIG.format(port=target_port))
        [self.port] = free_ports(1)
        self._agent = Agent(reactor)
        self.process = None

    @inlineCallbacks
    def get(self, path: str, timeout: float = 5.0):
        """
        GET ``path`` from Prometheus: ``(code, body bytes)``.
        """
        d = self._agent.request(b"GET", f"http://127.0.0.1:{self.port}{path}".encode("ascii"))
        d.addTimeout(timeout, reactor)
        response = yield d
        body = yield readBody(response)
        return response.code, body

    @inlineCallbacks
    def start(self):
        args = [
            prometheus_binary(),
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.process = ChildProcess(self._test, args, self.directory, "prometheus")
        seen = []

        @inlineCallbacks
        def ready():
            if not self.process.running:
                raise AssertionError(f"prometheus exited:\n{self.process.output[-3000:]}")
            try:
                code, _ = yield self.get("/-/ready", timeout=2.0)
            except Exception as e:
                seen[:] = [e.__class__.__name__]
                return False
            seen[:] = [str(code)]
            return code == 200

        yield wait_for(
            ready, START_TIMEOUT,
            lambda: f"prometheus to be ready ({''.join(seen)})\n{self.process.output[-3000:]}",
        )

    @inlineCallbacks
    def query(self, promql: str) -> list:
        """
        An instant PromQL query: the result's ``[{"metric": ..., "value": [t, "v"]}]``.
        """
        code, body = yield self.get("/api/v1/query?" + urlencode({"query": promql}))
        answer = json.loads(body)
        if code != 200 or answer.get("status") != "success":
            raise AssertionError(f"query {promql!r} answered {code}: {body[:500]!r}")
        return answer["data"]["result"]

    @inlineCallbacks
    def value(self, promql: str):
        """
        The one value of an instant query, as a float, or None without one.
        """
        result = yield self.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise AssertionError(f"query {promql!r} gave {len(result)} series: {result}")
        return float(result[0]["value"][1])


class ScrapeTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def test_promql_matches_status(self):
        """
        Prometheus scrapes the node; once it has scraped the readings sent,
        PromQL says what /status says: readings accepted and refused, the
        node's own last index, the readings committed, the state and id.
        """
        node = NodeProcess(self)
        yield node.start()
        prometheus = Prometheus(self, node.status_port)
        yield prometheus.start()
        good = [b"Temperature,%dC" % n for n in range(25)]
        answers = yield send_lines(node.sensor_port, good + [b"garbage", b","])
        self.assertEqual([a.split()[0] for a in answers], [b"OK"] * 25 + [b"ERR"] * 2)
        status = yield node.status()
        accepted = status["sensors"]["accepted"]
        self.assertEqual(accepted, 25)

        seen = []

        @inlineCallbacks
        def scraped():
            value = yield prometheus.value("p2pstore_readings_accepted_total")
            seen[:] = [repr(value)]
            return value == accepted

        yield wait_for(
            scraped, SCRAPED_TIMEOUT,
            lambda: f"prometheus to scrape {accepted} readings accepted (last: {''.join(seen)})",
            interval=0.2,
        )
        node_id = status["node_id"]
        expected = {
            "up": 1,
            f'p2pstore_log_last_index{{origin="{node_id}"}}':
                status["origins"][node_id]["last_index"],
            "sum(p2pstore_readings_rejected_total)": status["sensors"]["rejected"],
            "p2pstore_commit_readings_sum": status["commits"]["readings"]["sum"],
            "p2pstore_commit_seconds_count": status["commits"]["seconds"]["count"],
            'p2pstore_state{state="Running"}': 1,
            f'count(p2pstore_info{{node_id="{node_id}"}})': 1,
            "p2pstore_disk_full": 0,
        }
        found = {}
        for promql in expected:
            found[promql] = yield prometheus.value(promql)
        self.assertEqual(found, expected)
        self.assertEqual(expected[f'p2pstore_log_last_index{{origin="{node_id}"}}'], 25)
        self.assertEqual(status["sensors"]["rejected"], 2)
