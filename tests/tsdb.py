"""
Real time-series databases for the export tests: Debian's ``influxdb``
(1.x) and ``victoria-metrics``, each started by a test on a loopback port
with its data in the test's temporary directory, and stopped (killed if
need be) when the test ends.

CI installs them (scripts/install-tsdb). A test that needs one and cannot
find it fails: no test is skipped.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from p2pstore.testing import free_ports

from .nodes import ChildProcess, wait_for

START_TIMEOUT = 60.0


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        raise AssertionError(
            f"{name} is not installed: run scripts/install-tsdb (Debian's influxdb and "
            f"victoria-metrics packages)"
        )
    return found


@inlineCallbacks
def http_get(url: str, timeout: float = 10.0):
    """
    GET ``url``: (code, body bytes).
    """
    agent = Agent(reactor, connectTimeout=timeout)
    d = agent.request(b"GET", url.encode("ascii"), Headers({}))
    d.addTimeout(timeout, reactor)
    response = yield d
    body = yield readBody(response)
    return response.code, body


class _Server:
    """
    A database server process of a test.
    """

    name = "server"

    def __init__(self, test_case, directory: Path):
        self.test_case = test_case
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = None
        self.process = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        raise NotImplementedError

    @inlineCallbacks
    def start(self):
        if self.port is None:
            self.port, self.cluster_port = free_ports(2)
        self.process = ChildProcess(self.test_case, self._args(), self.directory, self.name)

        def up():
            if not self.process.running:
                raise AssertionError(f"{self.name} exited:\n{self.process.output[-3000:]}")
            d = http_get(self.base + self.ping_path, timeout=2.0)
            d.addCallbacks(lambda result: result[0] in (200, 204), lambda f: False)
            return d

        yield wait_for(up, START_TIMEOUT, f"{self.name} to answer on {self.base}")

    @inlineCallbacks
    def stop(self):
        """
        Stop the server with SIGTERM (its data kept, for a start again).
        """
        if self.process is not None and self.process.running:
            self.process.signal(signal.SIGTERM)
            yield self.process.wait_exit(30)


class InfluxDB(_Server):
    """
    InfluxDB 1.x: writes to ``write_url(db)``; ``query(db, q)`` runs
    InfluxQL.

    @param admin: with a C{(user, password)}, authentication is on and the
        test's queries go as that user, its first admin (made by
        L{make_admin}).
    """

    name = "influxd"
    ping_path = "/ping"

    def __init__(self, test_case, directory: Path, admin=None):
        super().__init__(test_case, directory)
        self.admin = admin

    @inlineCallbacks
    def make_admin(self):
        """
        Create the admin user, as InfluxDB lets anyone while it has none.
        """
        user, password = self.admin
        admin, self.admin = self.admin, None
        try:
            yield self.query(
                None, f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES", "POST"
            )
        finally:
            self.admin = admin

    def _args(self) -> list[str]:
        config = self.directory / "influxdb.conf"
        data = self.directory / "data"
        config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.cluster_port}"\n'
            f'[meta]\n  dir = "{data}/meta"\n'
            f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            f"  auth-enabled = {'true' if self.admin else 'false'}\n"
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        return [_binary("influxd"), "-config", str(config)]

    def write_url(self, db: str) -> str:
        return f"{self.base}/write?db={db}"

    @inlineCallbacks
    def create(self, db: str):
        yield self.query(None, f'CREATE DATABASE "{db}"', method="POST")

    @inlineCallbacks
    def query(self, db, q: str, method: str = "GET"):
        """
        The JSON answer of an InfluxQL query (``epoch=ns`` times).
        """
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        if self.admin is not None:
            params["u"], params["p"] = self.admin
        url = f"{self.base}/query?{urlencode(params)}"
        agent = Agent(reactor, connectTimeout=10)
        d = agent.request(method.encode(), url.encode("ascii"), Headers({}))
        d.addTimeout(30, reactor)
        response = yield d
        body = yield readBody(response)
        if response.code != 200:
            raise AssertionError(f"influxd answered {response.code} to {q!r}: {body!r}")
        return json.loads(body)

    @inlineCallbacks
    def points(self, db: str, measurement: str = None):
        """
        Every point of ``db`` (or of one measurement), as dicts of column
        to value, with ``measurement`` added.
        """
        what = f'"{measurement}"' if measurement else "/.*/"
        answer = yield self.query(db, f"SELECT * FROM {what}")
        points = []
        for result in answer.get("results", []):
            for series in result.get("series", []):
                for row in series["values"]:
                    points.append(dict(zip(series["columns"], row), measurement=series["name"]))
        return points


class VictoriaMetrics(_Server):
    """
    VictoriaMetrics, single node: InfluxDB line protocol at ``write_url()``,
    its raw samples out through ``/api/v1/export``.
    """

    name = "victoria-metrics"
    ping_path = "/health"

    def _args(self) -> list[str]:
        return [
            _binary("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.directory / 'data'}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def write_url(self) -> str:
        return f"{self.base}/write"

    @inlineCallbacks
    def export(self, match: str = '{__name__!=""}'):
        """
        Every raw sample of the series ``match`` selects: a list of
        ``(metric labels, values, timestamps in ms)``.
        """
        # What was just written becomes searchable once flushed.
        yield http_get(f"{self.base}/internal/force_flush")
        code, body = yield http_get(f"{self.base}/api/v1/export?{urlencode({'match[]': match})}")
        if code != 200:
            raise AssertionError(f"victoria-metrics answered {code} to export: {body!r}")
        series = [json.loads(line) for line in body.splitlines() if line.strip()]
        return [(s["metric"], s["values"], s["timestamps"]) for s in series]
