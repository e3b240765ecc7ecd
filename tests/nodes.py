"""
Real ``twistd -n p2pstore`` processes, simulators and sensors for integration tests.

A test (a trial ``TestCase`` running on the real reactor) uses it like this::

    node = NodeProcess(self)                  # free loopback ports, a temp data dir
    status = yield node.start()               # fires with /status once the node runs
    answers = yield send_lines(node.sensor_port, [b"Temperature,39C"])
    rows = node.rows(SELF_DB, "server_id_" + node.node_id)
    code = yield node.stop()                  # SIGTERM; fires with the exit code

Every wait has a deadline and fails with a L{Deadline} that says what it waited
for (and, for a node, ends with the tail of its log). Every process still
running at the end of its test is killed by the test's cleanup.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.web.client import Agent, readBody

from p2pstore.testing import free_ports

REPO = Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "sensor_simulator.py"
SELF_DB = "self_sensor_data.db"
PEER_DB = "peer_sensor_data.db"

READY_STATES = ("Running", "Syncing")
LOG_TAIL_LINES = 40


class Deadline(AssertionError):
    """
    Something a test waited for did not happen in time.
    """


class NodeExited(Exception):
    """
    A node process ended while it was expected to start.

    @ivar code: its exit code (minus the signal number if a signal ended it).
    @ivar log: its log and console output.
    """

    def __init__(self, code: int, log: str):
        super().__init__(f"the node exited with code {code} before it was ready\n{_tail(log)}")
        self.code = code
        self.log = log


class IncompleteAnswers(Exception):
    """
    A sensor connection ended (or timed out) before every line was answered.

    @ivar answers: the answer lines received, in order.
    """

    def __init__(self, answers: list[bytes], expected: int, why: str):
        super().__init__(f"got {len(answers)} of {expected} answers: {why}")
        self.answers = answers


class KeepRunning:
    """
    The reactor, except that C{stop()}, which a node whose store cannot open
    calls, is only recorded: stopping trial's own reactor would end the
    whole test run instead of failing this test.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self.stopped = False

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def stop(self) -> None:
        self.stopped = True


def endpoint(port: int) -> str:
    """
    The server endpoint description a node is given for ``port``.
    """
    return f"tcp:{port}:interface=127.0.0.1"


def twistd_command() -> list[str]:
    """
    The twistd of the Python running the tests, as the start of a command
    line: ``python -m twisted.scripts.twistd`` does nothing (that module has
    no __main__ block), and a ``twistd`` script next to sys.executable is not
    guaranteed, so this calls its entry point.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "--- last lines of the log ---\n" + "\n".join(text.splitlines()[-lines:])


@inlineCallbacks
def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: Union[str, Callable[[], str]],
    interval: float = 0.05,
):
    """
    Call ``predicate`` every ``interval`` seconds until it returns (or its
    Deferred fires with) something true, and return that.

    An exception from ``predicate`` ends the wait with that exception.

    @param what: what is awaited, for the failure message; a callable is
        called at the deadline, so the message can tell the last state seen.
    @raise Deadline: still false after ``timeout`` seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        result = yield maybeDeferred(predicate)
        if result:
            return result
        if reactor.seconds() >= deadline:
            text = what() if callable(what) else what
            raise Deadline(f"gave up after {timeout:g} s waiting for {text}")
        yield deferLater(reactor, interval, lambda: None)


@inlineCallbacks
def hold_for(
    predicate: Callable[[], object],
    duration: float,
    what: Union[str, Callable[[], str]],
    interval: float = 0.1,
):
    """
    Call ``predicate`` every ``interval`` seconds for ``duration`` seconds
    and check that it stays true: for a test that something does not happen
    (no reconnect, no new error) over a while.

    An exception from ``predicate`` ends the wait with that exception.

    @param what: what should hold, for the failure message; a callable is
        called on failure, so the message can tell the state seen.
    @raise AssertionError: ``predicate`` returned something false.
    """
    deadline = reactor.seconds() + duration
    while True:
        result = yield maybeDeferred(predicate)
        if not result:
            text = what() if callable(what) else what
            elapsed = duration - (deadline - reactor.seconds())
            raise AssertionError(f"{text} no longer held after {elapsed:.1f} s")
        if reactor.seconds() >= deadline:
            return result
        yield deferLater(reactor, interval, lambda: None)


def _within(d: Deferred, timeout: float, what: Callable[[], str]) -> Deferred:
    """
    ``d``, failing with L{Deadline} (and cancelled) after ``timeout`` seconds.
    """

    def timed_out(result, timeout):
        raise Deadline(f"gave up after {timeout:g} s waiting for {what()}")

    return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


class _Collector(ProcessProtocol):
    def __init__(self, child: "ChildProcess"):
        self.child = child

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.child._output.append(data)

    def processEnded(self, reason) -> None:
        status = reason.value
        code = status.exitCode if status.exitCode is not None else -(status.signal or 0)
        self.child._ended(code)


class ChildProcess:
    """
    A process of a test: its output (stdout and stderr together) is kept,
    and it is killed at the end of the test if still running.
    """

    def __init__(self, test_case, args: list[str], cwd: Path, name: str):
        self.name = name
        self.exit_code: Optional[int] = None
        self._output: list[bytes] = []
        self._waiters: list[Deferred] = []
        env = dict(os.environ)
        # Run this checkout's code whatever is installed, without buffering the output.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self._transport = reactor.spawnProcess(
            _Collector(self), args[0], args, env=env, path=str(cwd)
        )
        test_case.addCleanup(self._cleanup)

    @property
    def running(self) -> bool:
        return self.exit_code is None

    @property
    def pid(self) -> int:
        return self._transport.pid

    @property
    def output(self) -> str:
        return b"".join(self._output).decode("utf-8", "replace")

    def _ended(self, code: int) -> None:
        self.exit_code = code
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(code)

    def signal(self, sig: int) -> None:
        """
        Send a signal, unless the process has already ended.
        """
        if self.running:
            try:
                self._transport.signalProcess(sig)
            except ProcessExitedAlready:
                pass

    def wait_exit(self, timeout: float) -> Deferred:
        """
        @return: a Deferred firing with the exit code (minus the signal
            number if a signal ended it); L{Deadline} after ``timeout`` s.
        """
        if not self.running:
            return succeed(self.exit_code)
        d = Deferred()
        self._waiters.append(d)
        return _within(d, timeout, lambda: f"{self.name} to exit\n{_tail(self.output)}")

    def _cleanup(self) -> Optional[Deferred]:
        if not self.running:
            return None
        self.signal(signal.SIGKILL)
        return self.wait_exit(30)


def start_simulator(
    test_case,
    port: int,
    count: int,
    sensor: str = "temp",
    interval: float = 0,
    extra_args: Iterable[str] = (),
) -> ChildProcess:
    """
    Run ``sensor_simulator.py --<sensor> --interval <interval> --count <count>``
    against 127.0.0.1:``port``, with ``extra_args`` after (``--tls``); it
    exits 0 once ``count`` readings were acknowledged (L{ChildProcess.wait_exit}).
    """
    cwd = Path(test_case.mktemp()).resolve()
    cwd.mkdir(parents=True)
    args = [
        sys.executable, str(SIMULATOR), f"--{sensor}", "--interval", str(interval),
        "--count", str(count), "--port", str(port), *extra_args,
    ]
    return ChildProcess(test_case, args, cwd, f"the {sensor} simulator")


def _toml(settings: dict[str, object]) -> str:
    """
    A config file of these settings: strings, integers, arrays of strings.
    """
    # A JSON string is a TOML basic string.
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


class NodeProcess:
    """
    One p2pstore node run by ``twistd -n p2pstore`` on free 127.0.0.1 ports.

    The ports and the data directory stay the same across L{start}s, so a
    node can be stopped or killed and started again as the same node.
    Arguments in ``extra_args`` come last, so they win over the ones made
    here (``--sensor-port`` and so on).

    @ivar data_dir: its data directory (by default under the test's mktemp()).
    @ivar log_path: its twistd log, kept across restarts.
    @ivar peers: the addresses given in ``--peers`` at the next L{start}; it
        may be changed after construction, so that two nodes can list each
        other (each one's port is known only once it is made).
    @ivar config_file: with ``config`` given, the TOML file the node starts
        from (``--config``), which holds its data directory (relative to
        the file), ports and key file, and ``config``'s settings.
    """

    def __init__(
        self,
        test_case,
        data_dir: Optional[Path] = None,
        secret_file: Optional[Path] = None,
        peers: Iterable[str] = (),
        extra_args: Iterable[str] = (),
        config: Optional[dict[str, object]] = None,
    ):
        self._test = test_case
        self._home = Path(test_case.mktemp()).resolve()
        self._home.mkdir(parents=True)
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else self._home / "data"
        self.log_path = self._home / "node.log"
        self.sensor_port, self.peer_port, self.status_port = free_ports(3)
        # The cluster key's file: the one given, or the data directory's own.
        self.secret_file = (
            Path(secret_file).resolve() if secret_file is not None else self.data_dir / "cluster.key"
        )
        settings = {
            "data-dir": str(self.data_dir),
            "sensor-port": endpoint(self.sensor_port),
            "peer-port": endpoint(self.peer_port),
            "status-port": endpoint(self.status_port),
        }
        if secret_file is not None:
            settings["secret-file"] = str(self.secret_file)
        self._args = [*twistd_command(), "-n", "--pidfile=", f"--logfile={self.log_path}", "p2pstore"]
        self.config_file = None
        if config is None:
            for name, value in settings.items():
                self._args += [f"--{name}", value]
        else:
            settings["data-dir"] = os.path.relpath(self.data_dir, self._home)
            self.config_file = self._home / "node.toml"
            self.config_file.write_text(_toml({**settings, **config}))
            self._args += ["--config", str(self.config_file)]
        self.peers = list(peers)
        self._extra_args = list(extra_args)
        self._runs: list[ChildProcess] = []
        self._agent = Agent(reactor)

    @property
    def pid(self) -> int:
        """
        The process id of the node's current run.
        """
        return self._runs[-1].pid

    def rss_kib(self) -> int:
        """
        The resident memory of the node's current run, from /proc.
        """
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    @property
    def peer_address(self) -> str:
        """
        What other nodes give in ``--peers`` to reach this one.
        """
        return f"127.0.0.1:{self.peer_port}"

    @property
    def node_id(self) -> str:
        """
        The node id in ``<data_dir>/node.id``.
        """
        return (self.data_dir / "node.id").read_text().strip()

    @property
    def running(self) -> bool:
        return bool(self._runs) and self._runs[-1].running

    def log_text(self) -> str:
        """
        The twistd log of every run, then what each run wrote to its console
        (errors that come before logging starts end up there).
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        for n, run in enumerate(self._runs, 1):
            if run.output:
                text += f"--- console of run {n} ---\n{run.output}"
        return text

    @inlineCallbacks
    def start(self, timeout: float = 30.0):
        """
        Start the node and wait until ``/status`` says Running or Syncing.

        @return: a Deferred firing with that status.
        @raise NodeExited: the process ended first (e.g. a bad option).
        @raise Deadline: it was not ready after ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError("the node is already running")
        args = list(self._args)
        if self.peers:
            args += ["--peers", ",".join(self.peers)]
        args += self._extra_args
        run = ChildProcess(self._test, args, self._home, "the node")
        self._runs.append(run)
        seen = []

        @inlineCallbacks
        def ready():
            if not run.running:
                raise NodeExited(run.exit_code, self.log_text())
            try:
                status = yield self.status(timeout=2.0)
            except Exception as e:
                seen[:] = [f"no answer from /status yet ({e.__class__.__name__})"]
                return None
            if not (self.data_dir / "node.id").exists():
                # A new node writes node.id only once its store is open.
                seen[:] = [f"state {status.get('state')!r}, node.id not written yet"]
                return None
            if status.get("node_id") != self.node_id:
                # Another process took the port between free_ports() and the bind.
                raise AssertionError(
                    f"127.0.0.1:{self.status_port} answers for node {status.get('node_id')}, "
                    f"not for this one ({self.node_id})"
                )
            seen[:] = [f"state {status.get('state')!r}"]
            return status if status.get("state") in READY_STATES else None

        try:
            status = yield wait_for(
                ready, timeout, lambda: f"the node to be ready ({''.join(seen)})"
            )
        except Deadline as e:
            raise Deadline(f"{e}\n{_tail(self.log_text())}") from None
        return status

    def stop(self, timeout: float = 30.0) -> Deferred:
        """
        SIGTERM the node; fire with its exit code once it has ended.

        twistd ends itself with the signal that stopped it, so a clean stop
        gives ``-signal.SIGTERM``, not 0.
        """
        return self._end(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 30.0) -> Deferred:
        """
        SIGKILL the node; fire with its exit code once it has ended.
        """
        return self._end(signal.SIGKILL, timeout)

    def signal(self, sig: int) -> None:
        """
        Send a signal to the running node (e.g. SIGSTOP and SIGCONT to
        freeze it: the kernel still accepts connections for it meanwhile).
        """
        if not self._runs:
            raise RuntimeError("the node was never started")
        self._runs[-1].signal(sig)

    def _end(self, sig: int, timeout: float) -> Deferred:
        self.signal(sig)
        return self._runs[-1].wait_exit(timeout)

    def delete_db(self, db_name: str) -> None:
        """
        Delete ``<data_dir>/<db_name>`` with its ``-wal`` and ``-shm`` files,
        as a lost disk would (the node must not be running).
        """
        if self.running:
            raise RuntimeError("delete a database only while its node is down")
        for suffix in ("", "-wal", "-shm"):
            path = self.data_dir / (db_name + suffix)
            if path.exists():
                path.unlink()

    def delete_data_dir(self) -> None:
        """
        Delete the whole data directory (node.id and both databases), as a
        lost disk would (the node must not be running). The next L{start}
        makes a new node id; the ports stay the same.
        """
        if self.running:
            raise RuntimeError("delete the data directory only while its node is down")
        shutil.rmtree(self.data_dir)

    @inlineCallbacks
    def get_json(self, path: str, timeout: float = 5.0):
        """
        GET ``path`` (e.g. ``/readings?limit=3``) from the status port.

        @return: a Deferred firing with ``(HTTP code, parsed JSON body)``.
        """
        url = f"http://127.0.0.1:{self.status_port}{path}".encode("ascii")

        @inlineCallbacks
        def fetch():
            response = yield self._agent.request(b"GET", url)
            body = yield readBody(response)
            return response.code, json.loads(body)

        result = yield _within(fetch(), timeout, lambda: f"an answer to GET {path}")
        return result

    @inlineCallbacks
    def status(self, timeout: float = 5.0):
        """
        @return: a Deferred firing with the parsed ``GET /status``.
        """
        code, body = yield self.get_json("/status", timeout)
        if code != 200:
            raise AssertionError(f"GET /status answered {code}: {body}")
        return body

    def rows(
        self, db_name: str, table: str, columns: str = "*", order_by: Optional[str] = None
    ) -> list[tuple]:
        """
        Every row of ``table`` in ``<data_dir>/<db_name>`` (e.g. L{SELF_DB}):
        ``SELECT <columns> FROM <table> [ORDER BY <order_by>]``.
        """
        sql = f"SELECT {columns} FROM {table}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        return self.query(db_name, sql)

    def query(self, db_name: str, sql: str, params: tuple = ()) -> list[tuple]:
        """
        Run one query on ``<data_dir>/<db_name>`` through a read-only
        connection of its own, opened and closed here (the node may be
        running: its files are in WAL mode, so this never blocks it).
        """
        path = (self.data_dir / db_name).absolute()
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


class _LineClient(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024

    def __init__(self, lines: list[bytes], done: Deferred):
        self.lines = lines
        self.done = done
        self.answers: list[bytes] = []
        self.why = ""

    def connectionMade(self) -> None:
        self.transport.write(b"".join(line + b"\n" for line in self.lines))

    def lineReceived(self, line: bytes) -> None:
        self.answers.append(line.rstrip(b"\r"))
        if len(self.answers) == len(self.lines):
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if len(self.answers) == len(self.lines):
            self.done.callback(self.answers)
        else:
            why = self.why or f"the connection closed ({reason.getErrorMessage()})"
            self.done.errback(IncompleteAnswers(self.answers, len(self.lines), why))


def send_lines(port: int, lines: list[bytes], timeout: float = 10.0) -> Deferred:
    """
    Connect to a node's sensor port on 127.0.0.1, send every line at once
    (each followed by ``\\n``; end one with ``\\r`` to send ``\\r\\n``), and
    collect one answer per line.

    @return: a Deferred firing with the answers (e.g. ``b"OK 3"``), in order,
        once the connection is closed again; it fails with
        L{IncompleteAnswers} when the node closes the connection or
        ``timeout`` passes before every line is answered.
    """
    done = Deferred()
    client = _LineClient(list(lines), done)
    sensor_port = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    connecting = connectProtocol(sensor_port, client)
    connecting.addErrback(done.errback)

    def give_up():
        client.why = f"no answer to every line after {timeout:g} s"
        if client.transport is not None and client.connected:
            client.transport.abortConnection()
        else:
            connecting.cancel()

    timer = reactor.callLater(timeout, give_up)

    def finished(result):
        if timer.active():
            timer.cancel()
        return result

    return done.addBoth(finished)
