"""
The sensor load: the lines the benchmarks send, and the one Python driver
of sensor connections to a node (L{Stream}), pipelined (a window of
unanswered lines per connection) or paced (readings/s in all, the window
still capping each connection).

Two kinds of line. Seed lines (``lines="seed"``) are the seed's format,
``Temperature,39C,2026-11-28 HH:MM:SS.ffffff``, and their timestamp says
which line they are: line k of connection n is stamped START plus
k * SPREAD + n microseconds, so that, as with real sensors, every
connection's readings are near the same time. Lines with reading ids
(``lines="ids"``, as the simulator sends) end in ``<tag>-<n>-<k>``.
bench/loadclient.c writes the same bytes (see L{cload}).
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from datetime import datetime, timedelta

from core import BenchFailure

START = datetime(2026, 11, 28)
SPREAD = 1000
ID_LINE_PREFIX = b"Temperature,39C,2026-11-28 10:00:00.123456,"


def seed_line(number: int, i: int) -> bytes:
    """
    Line ``i`` of connection ``number`` in the seed's format.
    """
    seconds, micro = divmod(i * SPREAD + number, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return b"Temperature,39C,2026-11-28 %02d:%02d:%02d.%06d\n" % (hour, minute, second, micro)


def id_prefix(tag: bytes, number: int) -> bytes:
    return ID_LINE_PREFIX + tag + b"-%d-" % number


def line_at(timestamp: str) -> tuple[int, int]:
    """
    The connection and line number a seed line's timestamp names.
    """
    line, number = divmod((datetime.fromisoformat(timestamp) - START) // timedelta(microseconds=1), SPREAD)
    return number, line


def line_of(reading_id: str, tag: str) -> tuple[int, int]:
    """
    The connection and line number a reading id of ``tag`` names.
    """
    got, number, seq = reading_id.rsplit("-", 2)
    if got != tag:
        raise ValueError(reading_id)
    return int(number), int(seq)


class Sent:
    """
    What one connection sent and got back, for the check afterwards:
    ``sent`` lines, ``acked`` answers, each answer's entry_index in
    ``indexes`` (-1: not OK), and ``line(k)``, the bytes of its line k.
    """

    def __init__(self, number: int, lines: str, tag: bytes):
        self.number = number
        self.sent = 0
        self.acked = 0
        self.lost = False
        self.indexes = array("q")
        if lines == "seed":
            self.line = self.seed_line
        else:
            self.prefix = id_prefix(tag, number)
            self.line = self.id_line

    def seed_line(self, i: int) -> bytes:
        return seed_line(self.number, i)

    def id_line(self, i: int) -> bytes:
        return b"%s%d\n" % (self.prefix, i)


def _client_class():
    """
    The sensor connection, made once the reactor is installed.
    """
    from twisted.internet.protocol import Protocol

    perf_counter = time.perf_counter

    class SensorClient(Protocol, Sent):
        """
        One sensor connection of a L{Stream}: it remembers when each write
        went out and how many of its lines are unanswered, and hands every
        batch of answers to the stream.
        """

        def __init__(self, stream: "Stream", number: int):
            Sent.__init__(self, number, stream.lines, stream.tag)
            self.stream = stream
            # --rate: lines this connection was due to send so far.
            self.paced = 0
            # [send time, lines of that write still unanswered], oldest first.
            self.writes: deque = deque()
            self.buffer = b""
            if not stream.keep_indexes:
                self.indexes = None

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)

        def connectionLost(self, reason):
            self.lost = True
            self.stream.connection_lost(self, reason)

        def send(self, n: int) -> None:
            if n <= 0:
                return
            start = self.sent
            line = self.line
            data = b"".join([line(i) for i in range(start, start + n)])
            self.sent = start + n
            self.writes.append([perf_counter(), n])
            self.transport.write(data)

        def dataReceived(self, data: bytes) -> None:
            now = perf_counter()
            lines = (self.buffer + data).split(b"\n")
            self.buffer = lines.pop()
            n = len(lines)
            if not n:
                return
            stream = self.stream
            try:
                values = [int(line[3:]) if line[:3] == b"OK " else -1 for line in lines]
            except ValueError:
                values = [-1] * n
            ok = n
            if -1 in values:
                for line, value in zip(lines, values):
                    if value == -1:
                        ok -= 1
                        stream.error(self, line)
            if self.indexes is not None:
                self.indexes.extend(values)
            self.acked += n
            recording = stream.recording
            if recording:
                stream.recorded_ok += ok
                if stream.lag:
                    stream.ok_indexes.extend(values)
                    stream.ok_times.extend([now] * n)
            latencies = stream.latencies
            writes = self.writes
            k = n
            while k:
                if not writes:
                    stream.error(self, b"(%d answers more than lines sent)" % k)
                    break
                write = writes[0]
                take = write[1] if write[1] <= k else k
                if recording:
                    latencies.extend([now - write[0]] * take)
                write[1] -= take
                k -= take
                if not write[1]:
                    writes.popleft()
            stream.acked += n
            stream.ok += ok
            stream.after_answers(self, n)

    return SensorClient


class Stream:
    """
    Readings sent to one node over ``connections`` sensor connections from
    this process: pipelined (``window`` unanswered lines per connection, up
    to ``budget`` lines in all) or paced (``rate`` readings/s spread over the
    connections round robin, each connection's window capping what it has
    unanswered).

    While ``recording``, each answer's latency is kept (in ``latencies``)
    and the OKs counted (``recorded_ok``); with ``lag``, also each OK's
    entry_index and arrival time (for replication lag). With
    ``keep_indexes``, each connection keeps every answer's entry_index, for
    a check of what the node stored.
    """

    # Who sends the lines (ingest.py reports the client's CPU beside the
    # node's): None is this process.
    pid = None
    kind = "python"

    def __init__(self, reactor, node, connections: int, tag: str, lines: str = "ids",
                 keep_indexes: bool = False, lag: bool = False):
        self.reactor = reactor
        self.node = node
        self.connections = connections
        self.tag = tag.encode()
        self.lines = lines
        self.keep_indexes = keep_indexes
        self.lag = lag
        self.clients: list = []
        self.acked = 0
        self.ok = 0
        self.errors: list[str] = []
        # Answers "ERR copies: ..." (--ack-copies).
        self.err_copies = 0
        self.lost_early: list[str] = []
        self.closing = False
        self.recording = False
        self.recorded_ok = 0
        self.latencies = array("d")
        self.ok_indexes = array("q")
        self.ok_times = array("d")
        self.window = 0
        self.budget = 0
        # Ticks at which a paced connection's window held lines back.
        self.held_back = 0
        self._pacer = None
        self._drain_waiter = None

    async def connect(self) -> None:
        from twisted.internet.defer import gatherResults
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        Client = _client_class()
        # A few at a time, so the node's accept backlog never overflows into
        # SYN retries that would skew the start.
        step = 50
        for first in range(0, self.connections, step):
            waiting = []
            for number in range(first, min(first + step, self.connections)):
                client = Client(self, number)
                endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.node.sensor_port, timeout=10)
                waiting.append(connectProtocol(endpoint, client))
            self.clients.extend(await gatherResults(waiting, consumeErrors=True))

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.clients)

    # From the clients.

    def error(self, client, line: bytes) -> None:
        if line.startswith(b"ERR copies"):
            self.err_copies += 1
        if len(self.errors) < 10:
            self.errors.append(f"connection {client.number}: {line[:200]!r}")
        elif len(self.errors) == 10:
            self.errors.append("...")

    def connection_lost(self, client, reason) -> None:
        if not self.closing:
            self.lost_early.append(f"connection {client.number}: {reason.getErrorMessage()}")
        self._maybe_drained()

    def after_answers(self, client, n: int) -> None:
        if self.window and self.budget > 0:
            k = min(n, self.budget)
            self.budget -= k
            client.send(k)
        self._maybe_drained()

    def _maybe_drained(self) -> None:
        if (
            self._drain_waiter is not None
            and (not self.window or self.budget <= 0)
            and all(c.acked == c.sent or c.lost for c in self.clients)
        ):
            d, self._drain_waiter = self._drain_waiter, None
            d.callback(None)

    # Driving.

    def pipeline(self, window: int, budget: int) -> None:
        """
        Keep ``window`` lines unanswered per connection until ``budget``
        lines were sent.
        """
        self.window = window
        self.budget = budget
        for client in self.clients:
            k = min(window, self.budget)
            self.budget -= k
            client.send(k)

    def pace(self, rate: float, tick: float = 0.002, window: int = 0, budget: int = 0) -> None:
        """
        Send ``rate`` readings/s in all, round robin over the connections,
        checked every ``tick`` seconds (a late tick sends what is due). With
        a ``window``, a connection holding that many unanswered lines skips
        its turn: the line is late, counted in ``held_back``, and not owed
        later (catching up in a burst would hide that the node was behind).
        With a ``budget``, at most that many lines are sent.
        """
        from twisted.internet.task import LoopingCall

        t0 = time.perf_counter()
        state = {"due": 0, "next": 0, "left": budget or float("inf")}
        clients = self.clients

        def tick_():
            due = int(rate * (time.perf_counter() - t0)) - state["due"]
            if due <= 0:
                return
            state["due"] += due
            # Spread over the connections, starting where the last tick stopped.
            per, extra = divmod(due, len(clients))
            for k in range(len(clients)):
                client = clients[(state["next"] + k) % len(clients)]
                n = per + (1 if k < extra else 0)
                if window:
                    room = window - (client.sent - client.acked)
                    if n > room:
                        self.held_back += 1
                        n = max(0, room)
                n = min(n, state["left"])
                if n:
                    state["left"] -= n
                    client.send(n)
            state["next"] = (state["next"] + extra) % len(clients)

        self._pacer = LoopingCall(tick_)
        self._pacer.clock = self.reactor
        self._pacer.start(tick, now=True)

    def stop_sending(self) -> None:
        self.window = 0
        self.budget = 0
        if self._pacer is not None and self._pacer.running:
            self._pacer.stop()

    async def drain(self, timeout: float, stop: bool = True) -> None:
        """
        Wait until every line sent is answered: after stopping the sending
        (``stop``), or once a pipeline's whole budget has been sent.
        """
        from twisted.internet.defer import Deferred

        if stop:
            self.stop_sending()
        elif self._pacer is not None:
            raise ValueError("a paced stream never finishes by itself")
        self._drain_waiter = Deferred()
        waiter = self._drain_waiter
        self._maybe_drained()
        waiter.addTimeout(timeout, self.reactor)
        try:
            await waiter
        except Exception:
            raise BenchFailure(
                f"{self.sent - self.acked} lines to {self.node.name} still unanswered "
                f"{timeout:.0f} s after sending stopped ({self.budget} not sent yet)"
            ) from None

    # A measured period, as L{cload.CompiledStream} has it too.

    async def start_recording(self) -> None:
        self.recorded_ok = 0
        self.latencies = array("d")
        self.recording = True

    async def stop_recording(self) -> int:
        """
        Stop recording; the OK answers received while recording.
        """
        self.recording = False
        return self.recorded_ok

    def close(self) -> None:
        self.closing = True
        for client in self.clients:
            if client.transport is not None:
                client.transport.loseConnection()

    async def finish(self) -> list:
        """
        Close the connections; what each one sent and got back.
        """
        self.close()
        return self.clients

    async def abort(self) -> None:
        """
        However the run ends: nothing left open.
        """
        self.stop_sending()
        self.close()

    def problems(self) -> list[str]:
        out = []
        if self.errors:
            out.append(f"answers other than OK from {self.node.name}: " + "; ".join(self.errors))
        if self.lost_early:
            out.append(f"sensor connections to {self.node.name} dropped: " + "; ".join(self.lost_early[:5]))
        return out
