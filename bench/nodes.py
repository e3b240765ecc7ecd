"""
The nodes of a benchmark: the one twistd launcher, a node process in its
own directory on free loopback ports (started, checked, stopped with
SIGTERM and checked to have stopped cleanly), its cluster key, and HTTP
status calls to it.

``use_node_code(DIR)`` (``--node-code``) makes every node run the p2pstore
package of DIR instead of this checkout's: each node's log starts with the
directory its process imported p2pstore from, and that is checked.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from core import REPO, BenchFailure, sleep

from p2pstore.identity import KEY_FILE, NODE_ID_FILE  # noqa: E402
from p2pstore.schema import PEER_DB, SELF_DB  # noqa: E402
# Listening ports outside the kernel's ephemeral range, as the tests pick them.
from p2pstore.testing import free_ports  # noqa: E402

# What the node logs once SIGTERM has committed and answered everything.
STOPPED_CLEANLY = "every reading received was stored and answered"
# What the launcher writes first into a node's log: where its p2pstore is.
IMPORTED_FROM = "bench: p2pstore imported from "
# Nodes still running, killed however the benchmark ends.
LIVE_NODES: set = set()

# The one launcher: twistd's own run(), after noting which p2pstore this
# process imports (the plugin's p2pstore.tap is found through that
# package's __path__, so it is the code the node runs).
_LAUNCH = (
    "import os, sys\n"
    "import p2pstore\n"
    "sys.stderr.write(%r + os.path.dirname(os.path.realpath(p2pstore.__file__)) + '\\n')\n"
    "sys.stderr.flush()\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
) % IMPORTED_FROM

# The checkout whose p2pstore the nodes run (--node-code), and the
# directories put on their PYTHONPATH for it.
_node_code = REPO
_shims: dict = {}


def use_node_code(directory) -> Path:
    """
    Run every node started from now on with the p2pstore package (and
    twistd plugin) of ``directory``, a checkout; returns the package's
    resolved path.
    """
    global _node_code
    code = Path(directory).resolve()
    if not (code / "p2pstore" / "__init__.py").exists():
        raise BenchFailure(f"--node-code: {code} holds no p2pstore package")
    if not (code / "twisted" / "plugins").is_dir():
        raise BenchFailure(f"--node-code: {code} holds no twisted/plugins (the twistd plugin)")
    _node_code = code
    return code / "p2pstore"


def node_code() -> Path:
    return _node_code


def _shim(code: Path) -> Path:
    """
    A temporary directory holding only ``p2pstore`` (a link to the
    checkout's) and a copy of its twistd plugin: the nodes' PYTHONPATH.
    Twisted writes its plugin cache (dropin.cache) beside the plugin, so
    nothing is ever written into the checkout itself.
    """
    if code not in _shims:
        shim = Path(tempfile.mkdtemp(prefix="p2pstore-bench-code-"))
        atexit.register(shutil.rmtree, shim, True)
        (shim / "p2pstore").symlink_to(code / "p2pstore", target_is_directory=True)
        plugins = shim / "twisted" / "plugins"
        plugins.mkdir(parents=True)
        for plugin in (code / "twisted" / "plugins").glob("*.py"):
            shutil.copy(plugin, plugins / plugin.name)
        _shims[code] = shim
    return _shims[code]


def twistd_command(code: Optional[Path] = None) -> tuple[list[str], dict]:
    """
    The command and environment of a ``twistd`` running the p2pstore of
    ``code`` (the --node-code checkout, by default this one) under this
    Python.
    """
    code = _node_code if code is None else code
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_shim(code)), env.get("PYTHONPATH")]))
    # Never write bytecode into another checkout.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return [sys.executable, "-c", _LAUNCH], env


def make_secret(path: Path) -> Path:
    """
    A cluster key file: 32 random bytes, mode 0600.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path


class Node:
    """
    One ``twistd -n --pidfile= p2pstore`` process in its own directory, on
    free loopback ports that stay the same across restarts.
    """

    def __init__(
        self,
        workdir: Path,
        sync: str = "full",
        name: str = "node",
        secret_file: Optional[Path] = None,
        peers: Iterable[str] = (),
        extra_args: Iterable[str] = (),
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "node.log"
        self.sync = sync
        self.secret_file = secret_file
        self.peers = list(peers)
        # More options of twistd p2pstore, at every start (may be changed).
        self.extra_args = list(extra_args)
        self.sensor_port, self.status_port, self.peer_port = free_ports(3)
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def peer_address(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        # This checkout's p2pstore and plugin (or --node-code's), wherever
        # this runs from.
        self.code = _node_code
        command, env = twistd_command(self.code)
        command += [
            "-n", "--pidfile=", "p2pstore",
            "--data-dir", str(self.data_dir),
            "--sensor-port", f"tcp:{self.sensor_port}:interface=127.0.0.1",
            "--status-port", f"tcp:{self.status_port}:interface=127.0.0.1",
            "--peer-port", f"tcp:{self.peer_port}:interface=127.0.0.1",
            "--sync", self.sync,
        ]
        if self.secret_file is not None:
            command += ["--secret-file", str(self.secret_file)]
        if self.peers:
            command += ["--peers", ",".join(self.peers)]
        command += self.extra_args
        # Appended to: a restarted node keeps the log of its earlier runs.
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        LIVE_NODES.add(self)

    def imported_from(self) -> Optional[str]:
        """
        Where this node's latest process imported p2pstore from, as its
        launcher logged it (None: not logged yet).
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        found = None
        for line in text.splitlines():
            if line.startswith(IMPORTED_FROM):
                found = line[len(IMPORTED_FROM):].strip()
        return found

    def check_code(self) -> str:
        """
        Fail unless the node's process imported p2pstore from the checkout
        it was meant to run (``--node-code``, or this one).
        """
        wanted = str((self.code / "p2pstore").resolve())
        got = self.imported_from()
        if got != wanted:
            raise BenchFailure(f"node {self.name} runs the p2pstore of {got}, not {wanted}")
        return got

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=30)
        LIVE_NODES.discard(self)

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchFailure(
                f"node {self.name} exited with {self.process.returncode}:\n" + self.log_tail()
            )

    async def stop(self, reactor, timeout: float = 60.0) -> None:
        """
        SIGTERM, wait for the exit, and check the node stopped cleanly.
        """
        if not self.alive():
            raise BenchFailure(
                f"node {self.name} had already exited ({self.process.returncode}):\n"
                + self.log_tail()
            )
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            await sleep(reactor, 0.05)
        if self.alive():
            raise BenchFailure(f"node {self.name} did not stop within {timeout:.0f} s of SIGTERM")
        LIVE_NODES.discard(self)
        self.check_code()
        # twistd ends by killing itself with the signal it stopped on.
        if self.process.returncode not in (0, -signal.SIGTERM) or STOPPED_CLEANLY not in self.log_tail(5):
            raise BenchFailure(
                f"node {self.name} did not stop cleanly (exit {self.process.returncode}):\n"
                + self.log_tail()
            )

    @property
    def key_file(self) -> Path:
        """
        The cluster key: --secret-file, or the one the node made in its
        data directory.
        """
        return self.secret_file or self.data_dir / KEY_FILE

    @property
    def node_id(self) -> str:
        return (self.data_dir / NODE_ID_FILE).read_text().strip()

    def delete_self_db(self) -> None:
        """
        Lose the node's own database, as a dead disk would (node stopped).
        """
        if self.alive():
            raise BenchFailure("delete a database only while its node is down")
        for suffix in ("", "-wal", "-shm"):
            path = self.data_dir / (SELF_DB + suffix)
            if path.exists():
                path.unlink()

    def db_path(self, origin: str) -> Path:
        """
        The file holding the log of ``origin`` at this node.
        """
        return self.data_dir / (SELF_DB if origin == self.node_id else PEER_DB)


class Http:
    """
    GET JSON from the nodes' status ports over persistent connections.
    """

    def __init__(self, reactor):
        from twisted.web.client import Agent, HTTPConnectionPool

        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 4
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=5)

    async def get(self, port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
        from twisted.web.client import readBody

        url = f"http://127.0.0.1:{port}{path}".encode("ascii")
        d = self.agent.request(b"GET", url)
        d.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response.code, json.loads(body))))
        d.addTimeout(timeout, self.reactor)
        return await d

    async def status(self, node: Node, timeout: float = 10.0) -> dict:
        code, body = await self.get(node.status_port, "/status", timeout)
        if code != 200:
            raise BenchFailure(f"GET /status of {node.name} answered {code}: {body}")
        return body

    async def wait(
        self,
        node: Node,
        predicate: Callable[[dict], bool],
        timeout: float,
        what: str,
        interval: float = 0.05,
    ) -> dict:
        """
        Poll /status until ``predicate(status)`` holds; fails after ``timeout``
        seconds or when the node exits.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            node.check_alive()
            try:
                status = await self.status(node, timeout=5)
            except BenchFailure:
                raise
            except Exception as e:  # not listening yet
                last = f"no answer ({e.__class__.__name__})"
            else:
                if predicate(status):
                    return status
                last = f"state {status.get('state')}"
            if time.monotonic() >= deadline:
                raise BenchFailure(
                    f"gave up after {timeout:.0f} s waiting for {node.name} {what} ({last})\n"
                    + node.log_tail()
                )
            await sleep(self.reactor, interval)

    async def wait_running(self, node: Node, timeout: float = 60.0) -> dict:
        status = await self.wait(node, lambda s: s.get("state") == "Running", timeout, "to be Running")
        node.check_code()
        return status

    def close(self):
        return self.pool.closeCachedConnections()


def origin_count(status: dict, origin: str) -> int:
    return status.get("origins", {}).get(origin, {}).get("count", 0)
