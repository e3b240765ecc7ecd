"""
Polls every monitored node's ``/status`` and ``/readings`` in the background
and keeps the latest result of each, classified.

One thread runs the cycles; each cycle asks every server at once through a
small thread pool, with a deadline shorter than the interval, and cuts off
whatever has not answered by then, so one slow or dead server never delays
the others.
"""

from __future__ import annotations

import errno
import http.client
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Optional

import attrs
from attrs import frozen

from .addresses import ServerAddress
from .answers import BadAnswer, NodeStatus, decode_json, error_message, parse_readings, parse_status
from .health import Memory, remember
from .history import History

# What the monitor says about a server: the node's own state when it answers...
RUNNING, SYNCING, INITIALIZING = "Running", "Syncing", "Initializing"
# ...or why it does not.
TIMEOUT = "Timeout"
INVALID = "Invalid IP address"
DOWN = "Down"
ERROR = "Error"
# Not asked yet (before the first cycle ends).
WAITING = "Waiting"

DEFAULT_READINGS_LIMIT = 100
# No node answer is this large; a bigger one is refused rather than read into memory.
MAX_STATUS_BYTES = 1 << 20
MAX_READINGS_BYTES = 8 << 20
# At most this many requests at once, however many servers are monitored.
MAX_WORKERS = 32
# How long a cycle waits past the deadline for workers to report (their sockets
# time out at the deadline itself).
GRACE_S = 0.2

log = logging.getLogger(__name__)


def default_timeout(interval: float) -> float:
    """
    The deadline of one server's check: well inside the interval.
    """
    return min(10.0, interval * 0.8)


@frozen
class ServerResult:
    """
    The latest check of one server.

    @ivar message: why the server is not answering as a node should, or C{None}.
    @ivar readings: its newest readings of its own, newest first.
    @ivar readings_error: why its readings could not be had, if its status could.
    @ivar checked_at: when the check ended (the monitor's wall clock).
    @ivar last_answer_at: when the server last answered its status.
    @ivar last_node_id: the node id of that answer.
    """

    address: ServerAddress
    state: str
    message: Optional[str] = None
    status: Optional[NodeStatus] = None
    readings: tuple = ()
    readings_error: Optional[str] = None
    checked_at: Optional[float] = None
    last_answer_at: Optional[float] = None
    last_node_id: Optional[str] = None


@frozen
class Snapshot:
    """
    The latest result of every server, in the order they were given.

    @ivar updated_at: when the last cycle ended, or C{None} before the first.
    @ivar generation: how many cycles have ended.
    @ivar memory: when each condition the page reports was first seen.
    """

    results: tuple
    updated_at: Optional[float]
    generation: int
    interval: float
    timeout: float
    memory: Memory = Memory()


class HTTPStatusError(Exception):
    def __init__(self, code: int, reason: str, detail: Optional[str]):
        text = f"HTTP {code} {reason}".strip()
        if code == 401:
            # The node's reason names its own option; this is the monitor's.
            detail = f"{detail} (start the monitor with --token-file)" if detail else detail
        super().__init__(f"{text}: {detail}" if detail else text)


def console_line(result: ServerResult) -> str:
    """
    The console's line about one server, as in the seed's monitor.
    """
    name = result.address.text
    if result.state in (RUNNING, SYNCING, INITIALIZING):
        return f"    [INFO] Server '{name}' is {result.state}"
    what = {
        TIMEOUT: "timed out",
        INVALID: "is invalid",
        DOWN: "is down",
        WAITING: "is not checked yet",
    }.get(result.state)
    if what is None:
        # The seed's words, and then what went wrong.
        what = "thrown an unhandled error" + (f": {result.message}" if result.message else "")
    return f"    [ERROR] Server '{name}' {what}"


class Poller:
    """
    The background checks of a list of servers, and their latest results.

    @param console: called with each console line.
    @param clock: the wall clock results are stamped with.
    """

    def __init__(
        self,
        servers: list,
        interval: float,
        timeout: Optional[float] = None,
        readings_limit: int = DEFAULT_READINGS_LIMIT,
        console: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        token: Optional[str] = None,
    ):
        self.servers = list(servers)
        # Sent to every node as "Authorization: Bearer <token>" (--token-file).
        self.token = token
        self.interval = interval
        self.timeout = default_timeout(interval) if timeout is None else timeout
        if not 0 < self.timeout < interval:
            raise ValueError("the timeout must be shorter than the interval")
        self.readings_limit = readings_limit
        self.console = console
        self.clock = clock
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, min(MAX_WORKERS, len(self.servers))),
            thread_name_prefix="monitor-check",
        )
        self._snapshot = Snapshot(
            tuple(ServerResult(address, WAITING) for address in self.servers),
            None, 0, interval, self.timeout,
        )
        # The check of each server still running, by index. A check past its
        # deadline has its connection cut; one stuck where that cannot reach
        # (a slow name lookup) keeps its server from being asked again until
        # it ends, so that stuck checks never pile up.
        self._in_flight: dict[int, tuple[Future, Check]] = {}
        # The last hour of each server, for the history charts.
        self.history = History(len(self.servers), interval)
        self._cycle = threading.Lock()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def snapshot(self) -> Snapshot:
        """
        The latest results (an immutable value: safe to read from any thread).
        """
        return self._snapshot

    def start(self) -> None:
        """
        Run a cycle now and then every interval, in a thread of its own.
        """
        self.console("[INFO] Started data refresh thread")
        self._thread = threading.Thread(target=self._run, name="monitor-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """
        End the cycles; checks still waiting on a server are abandoned.
        """
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.interval + self.timeout + 1)
        with self._cycle:
            for _, check in self._in_flight.values():
                check.abandon()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_cycle = time.monotonic()
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("a monitor cycle failed")
            next_cycle = max(next_cycle + self.interval, time.monotonic())
            self._stopping.wait(next_cycle - time.monotonic())

    def poll_once(self) -> Snapshot:
        """
        Check every server at once, wait at most the timeout, and publish
        the results.
        """
        with self._cycle:
            self.console("[INFO] Updating data...")
            deadline = time.monotonic() + self.timeout
            asked = {}
            for index, address in enumerate(self.servers):
                busy = self._in_flight.get(index)
                if address.valid and (busy is None or busy[0].done()):
                    check = Check(address, deadline, self.timeout, self.readings_limit, self.token)
                    asked[index] = self._executor.submit(check.run)
                    self._in_flight[index] = (asked[index], check)
            wait(asked.values(), timeout=max(0.0, deadline - time.monotonic()) + GRACE_S)
            for future, check in self._in_flight.values():
                if not future.done():
                    check.abandon()
            now = self.clock()
            results = []
            for index, (address, previous) in enumerate(zip(self.servers, self._snapshot.results)):
                if not address.valid:
                    result = ServerResult(address, INVALID, address.error)
                elif index in asked and asked[index].done():
                    result = asked[index].result()
                else:
                    result = ServerResult(address, TIMEOUT, _timeout_message(self.timeout))
                result = _stamp(result, previous, now)
                results.append(result)
                self.console(console_line(result))
            self.history.add(results, now)
            self._snapshot = Snapshot(
                tuple(results), now, self._snapshot.generation + 1, self.interval, self.timeout,
                remember(self._snapshot.memory, results, now),
            )
            self.console("[INFO] Data updated.")
            return self._snapshot


def _stamp(result: ServerResult, previous: ServerResult, now: float) -> ServerResult:
    if result.status is not None:
        return attrs.evolve(
            result, checked_at=now, last_answer_at=now, last_node_id=result.status.node_id
        )
    return attrs.evolve(
        result,
        checked_at=now,
        last_answer_at=previous.last_answer_at,
        last_node_id=previous.last_node_id,
    )


class Check:
    """
    One server's check: its status and then its readings, all before
    C{deadline} (on C{time.monotonic}).

    Each socket operation may only take the time left, and the body is read
    in pieces checking it; L{abandon} cuts the connection from another
    thread, for a server that trickles its answer a byte at a time.
    """

    def __init__(
        self,
        address: ServerAddress,
        deadline: float,
        timeout: float,
        readings_limit: int,
        token: Optional[str] = None,
    ):
        self.address = address
        self.token = token
        self.deadline = deadline
        self.timeout = timeout
        self.readings_limit = readings_limit
        self._lock = threading.Lock()
        self._socket: Optional[socket.socket] = None
        self._abandoned = False

    def run(self) -> ServerResult:
        """
        Never raises: whatever goes wrong is the result.
        """
        address = self.address
        try:
            status = parse_status(decode_json(self.fetch("/status", MAX_STATUS_BYTES)))
        except Exception as e:
            state, message = classify(e, self.timeout)
            return ServerResult(address, state, message)
        readings, readings_error = (), None
        if status.state != INITIALIZING:
            try:
                body = self.fetch(f"/readings?limit={self.readings_limit}", MAX_READINGS_BYTES)
                readings = parse_readings(decode_json(body))
            except Exception as e:
                readings_error = classify(e, self.timeout)[1]
        return ServerResult(address, status.state, None, status, readings, readings_error)

    def fetch(self, path: str, max_bytes: int) -> bytes:
        """
        GET C{path} and return the body of a 200 answer.

        @raise HTTPStatusError: another code than 200.
        @raise TimeoutError: the deadline passed.
        @raise BadAnswer: the body is longer than C{max_bytes}.
        """
        deadline = self.deadline
        connection = http.client.HTTPConnection(
            self.address.host, self.address.port, timeout=_left(deadline)
        )
        try:
            connection.connect()
            sock = connection.sock
            self._watch(sock)
            headers = {"Accept": "application/json"}
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
            connection.request("GET", path, headers=headers)
            sock.settimeout(_left(deadline))
            response = connection.getresponse()
            pieces, size = [], 0
            while True:
                sock.settimeout(_left(deadline))
                piece = response.read1(65536)
                if not piece:
                    break
                size += len(piece)
                if size > max_bytes:
                    raise BadAnswer(f"the answer is longer than {max_bytes} bytes")
                pieces.append(piece)
        finally:
            self._watch(None)
            connection.close()
        body = b"".join(pieces)
        if response.status != 200:
            raise HTTPStatusError(response.status, response.reason, error_message(body))
        return body

    def abandon(self) -> None:
        """
        Cut the connection in use, if any, and any later one at once.
        """
        with self._lock:
            self._abandoned = True
            if self._socket is not None:
                _cut(self._socket)

    def _watch(self, sock: Optional[socket.socket]) -> None:
        with self._lock:
            self._socket = sock
            if sock is not None and self._abandoned:
                _cut(sock)


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline has passed")
    return left


def _timeout_message(timeout: float) -> str:
    return f"no answer within {timeout:g} s"


def classify(error: Exception, timeout: float) -> tuple:
    """
    What a failed check says about the server: a state and a message.
    """
    if isinstance(error, socket.gaierror):
        return INVALID, f"cannot resolve the host name: {error.strerror}"
    if isinstance(error, TimeoutError):
        return TIMEOUT, _timeout_message(timeout)
    if isinstance(error, ConnectionRefusedError):
        return DOWN, "connection refused"
    if isinstance(error, OSError) and error.errno in (
        errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN
    ):
        return DOWN, error.strerror
    if isinstance(error, (HTTPStatusError, BadAnswer)):
        return ERROR, str(error)
    if isinstance(error, http.client.HTTPException):
        return ERROR, f"not an HTTP answer ({type(error).__name__})"
    if isinstance(error, OSError):
        return ERROR, error.strerror or type(error).__name__
    log.error("unexpected error while checking a server", exc_info=error)
    return ERROR, f"unexpected {type(error).__name__}"
