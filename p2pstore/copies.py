"""
Copies: who holds how much of each log, as far as this node has heard on
authenticated links, and the sensor answers that wait until enough nodes
hold their readings (C{--ack-copies}).

A node hears that another holds a log up to an index from that node's own
messages, each sent only after the commit it reports: its C{ACK} of a batch,
its C{HAVE}, and the records it sends (it holds what it sends). It hears of
nodes beyond its peers from C{HELD}, which a relay sends towards a log's
origin when a node it forwarded the log to acknowledges it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Callable, Optional

from twisted.logger import Logger

from .wire import Held

# A log, (origin, epoch), as in p2pstore.sending.
Log = tuple[str, str]

# Where this node has heard a log is held, kept per log for /status: the
# time each range of it was first held here, at most this many ranges.
MAX_MARKS = 1000
# Readings whose answers wait for copies, at most: past it, the connections
# that send more are not read until half of them are answered.
MAX_WAITING = 100_000


class Holdings:
    """
    How far each other node holds each log: ``{log: {node id: last index}}``,
    and from where, for those that said they hold it from past 1 (their
    ``HAVE``).

    Listeners are called with ``(log, holder, last)`` for every rise.
    """

    def __init__(self, node_id: str, clock):
        self.node_id = node_id
        self._clock = clock
        self._held: dict[Log, dict[str, int]] = {}
        self._firsts: dict[Log, dict[str, int]] = {}
        # When the ranges of each log held here were first held here, as
        # rising (last index, time) marks: what /status calls "since".
        self._marks: dict[Log, deque] = {}
        self.listeners: list[Callable[[Log, str, int], None]] = []
        # Nodes gone (p2pstore.departed): what others relay of them is not taken.
        self._gone: set[str] = set()

    def heard(self, log: Log, holder: str, last: int, first: Optional[int] = None) -> None:
        """
        ``holder`` holds ``log`` up to ``last`` at least, and from ``first``
        when it says so (its HAVE): what it pruned no longer counts.
        """
        holders = self._held.setdefault(log, {})
        if holder == self.node_id or holder in self._gone:
            return
        if first is not None:
            if first > 1:
                self._firsts.setdefault(log, {})[holder] = first
            else:
                self._firsts.get(log, {}).pop(holder, None)
        if last <= holders.get(holder, 0):
            return
        holders[holder] = last
        for listener in self.listeners:
            listener(log, holder, last)

    def forget(self, holder: str) -> None:
        """
        Forget what ``holder`` was heard to hold: it linked again after all
        its links were down, and may have lost a file meanwhile; its HAVE on
        the new link says what it holds now. (A HAVE is not taken as
        lowering what is known: one sent on another link may arrive after a
        newer ACK.)
        """
        for holders in (*self._held.values(), *self._firsts.values()):
            holders.pop(holder, None)

    def gone(self, holder: str) -> None:
        """
        ``holder`` is gone: its copies exist only if it comes back, so they
        count for no ``--ack-copies`` or ``--min-copies`` (retention must
        not prune what only a gone node holds), and what other nodes relay
        of it is not taken, until it links again (L{back}).
        """
        self.forget(holder)
        self._gone.add(holder)

    def back(self, holder: str) -> None:
        """
        ``holder`` linked again: what it holds counts again, from its HAVE.
        """
        self._gone.discard(holder)

    def stored(self, log: Log, last: int) -> None:
        """
        This node now holds ``log`` up to ``last``.
        """
        marks = self._marks.setdefault(log, [])
        if marks and marks[-1][0] >= last:
            return
        marks.append((last, self._clock.seconds()))
        if len(marks) > MAX_MARKS:
            # Merge the older half's marks in pairs, each pair one mark
            # reaching as far as the later with the time of the earlier: the
            # recent ranges keep their times, and an old one's "since" errs
            # early, never late.
            half = len(marks) // 2 // 2 * 2
            merged = [(marks[i + 1][0], marks[i][1]) for i in range(0, half, 2)]
            marks[:half] = merged

    def _since(self, log: Log, first: int) -> Optional[float]:
        # When this node stored the record at ``first``, or a little before.
        marks = self._marks.get(log)
        if not marks:
            return None
        at = bisect_left(marks, first, key=lambda mark: mark[0])
        return marks[min(at, len(marks) - 1)][1]

    def holders(self, log: Log) -> dict:
        return dict(self._held.get(log, {}))

    def nodes(self) -> set:
        """
        Every node heard of as holding something.
        """
        return {holder for holders in self._held.values() for holder in holders}

    def others(self, log: Log, index: int) -> int:
        """
        How many other nodes are known to hold the record at ``index``.
        """
        firsts = self._firsts.get(log, {})
        return sum(
            1
            for holder, last in self._held.get(log, {}).items()
            if firsts.get(holder, 1) <= index <= last
        )

    def held_from(self, log: Log, first: int, others: int) -> int:
        """
        The highest index up to which at least ``others`` other nodes hold
        every record of ``log`` from ``first`` on (``first - 1`` when they
        do not): how far this node may prune it.
        """
        if others <= 0:
            return 2**63 - 1
        firsts = self._firsts.get(log, {})
        held = sorted(
            (
                last
                for holder, last in self._held.get(log, {}).items()
                if firsts.get(holder, 1) <= first
            ),
            reverse=True,
        )
        return max(held[others - 1], first - 1) if len(held) >= others else first - 1

    def copied_to(self, log: Log, others: int) -> int:
        """
        The highest index that at least ``others`` other nodes hold.
        """
        if others <= 0:
            return 2**63 - 1
        held = sorted(self._held.get(log, {}).values(), reverse=True)
        return held[others - 1] if len(held) >= others else 0

    def under_copied(self, positions: dict, copies: int) -> list:
        """
        The ranges of the logs this node holds that fewer than ``copies``
        nodes (this one included) hold, and since when they have been held
        here.
        """
        ranges = []
        for log, last in sorted(positions.items()):
            first = self.copied_to(log, copies - 1) + 1
            if first > last:
                continue
            since = self._since(log, first)
            ranges.append(
                {
                    "origin": log[0],
                    "epoch": log[1],
                    "first": first,
                    "last": last,
                    "copies": 1 + self.others(log, first),
                    "since": since,
                }
            )
        return ranges


class HeldRelay:
    """
    Tells each log's origin (or, when this node is not linked to it, the
    peer that sent this node that log) which other nodes hold the log, as
    this node hears of them: so the origin counts the copies beyond its
    peers. News about one log to one peer goes out once a reactor turn.

    @param send: called with ``(peer id, Held)``; it sends when the peer is
        linked.
    @param linked: whether a peer is linked now.
    @param reaches: whether a node says (its LINKS) it is linked to an
        origin: that origin hears from it directly, so nothing is relayed.
    """

    def __init__(
        self,
        node_id: str,
        holdings: Holdings,
        clock,
        send: Callable[[str, Held], None],
        linked: Callable[[str], bool],
        reaches: Callable[[str, str], bool] = lambda holder, origin: False,
    ):
        self.node_id = node_id
        self._clock = clock
        self._send = send
        self._linked = linked
        self._reaches = reaches
        # The peer each log last came from: the way towards its origin.
        self._upstream: dict[Log, str] = {}
        self._out: dict[str, dict[Log, dict]] = {}
        self._call = None
        self.stopped = False
        holdings.listeners.append(self._heard)

    def came_from(self, log: Log, peer_id: str) -> None:
        self._upstream[log] = peer_id

    def _heard(self, log: Log, holder: str, last: int) -> None:
        origin = log[0]
        if origin == self.node_id or self.stopped or self._reaches(holder, origin):
            # In a full mesh every node hears of every other directly.
            return
        target = origin if self._linked(origin) else self._upstream.get(log)
        if target is None or target == holder:
            return
        self._out.setdefault(target, {}).setdefault(log, {})[holder] = last
        if self._call is None:
            self._call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        out, self._out = self._out, {}
        for target, logs in out.items():
            for (origin, epoch), holders in logs.items():
                self._send(target, Held(origin, epoch, holders))

    def stop(self) -> None:
        self.stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class _Waiting:
    """
    Readings of one L{Pending} waiting for copies.
    """

    __slots__ = ("deadline", "last", "pending", "indexes", "done")

    def __init__(self, deadline: float, last: int, pending, indexes):
        self.deadline = deadline
        self.last = last
        self.pending = pending
        self.indexes = indexes
        self.done = False


class CopyWait:
    """
    The answers of readings that wait for copies: a reading asked for with
    ``k`` copies is answered ``OK <index>`` once ``k - 1`` other nodes hold
    it, or ``ERR copies: ...`` after ``timeout`` seconds; it stays stored
    either way, and replicates when it can.

    @param own_log: this node's current log.
    @param why: why copies are lacking, for the ERR.
    """

    log = Logger()

    def __init__(
        self,
        holdings: Holdings,
        clock,
        timeout: float,
        own_log: Callable[[], Log],
        why: Callable[[], str],
        max_waiting: int = MAX_WAITING,
    ):
        self._holdings = holdings
        self.max_waiting = max_waiting
        # Sensor connections not read while too many answers wait.
        self._paused: set = set()
        self._clock = clock
        self.timeout = timeout
        self._own_log = own_log
        self._why = why
        # By copies wanted: what waits in the order it was stored (so by
        # deadline), and as a heap by its highest index (a resent reading's
        # index is below the newer ones'); an entry leaves both lazily.
        self._by_deadline: dict[int, deque] = {}
        self._by_index: dict[int, list] = {}
        self._order = count()
        self._timer = None
        self.waiting = 0
        self.timeouts = 0
        self.confirmed = 0
        holdings.listeners.append(self._heard)

    def wait(self, pending, indexes, copies: int) -> None:
        """
        Answer ``pending``'s readings, stored at ``indexes`` of this node's
        log, once ``copies`` nodes hold them: now, if they already do.
        """
        last = max(indexes)
        if self._holdings.others(self._own_log(), last) >= copies - 1:
            pending.indexes = indexes
            self.confirmed += len(indexes)
            return
        entry = _Waiting(self._clock.seconds() + self.timeout, last, pending, indexes)
        self._by_deadline.setdefault(copies, deque()).append(entry)
        heappush(self._by_index.setdefault(copies, []), (last, next(self._order), entry))
        self.waiting += len(indexes)
        if self.waiting > self.max_waiting and pending.sensor not in self._paused:
            self._paused.add(pending.sensor)
            pending.sensor.pause("copies")
        if self._timer is None:
            self._timer = self._clock.callLater(self.timeout, self._expire)

    def _confirm(self, entry: "_Waiting"):
        entry.done = True
        pending, entry.pending = entry.pending, None
        pending.indexes = entry.indexes
        self.waiting -= len(entry.indexes)
        self.confirmed += len(entry.indexes)
        return pending.sensor

    def _heard(self, log: Log, holder: str, last: int) -> None:
        if log != self._own_log() or not self.waiting:
            return
        sensors = set()
        for copies, heap in self._by_index.items():
            # Everything up to the index that many others hold.
            upto = self._holdings.copied_to(log, copies - 1)
            while heap and heap[0][0] <= upto:
                entry = heappop(heap)[2]
                if not entry.done:
                    sensors.add(self._confirm(entry))
        for queue in self._by_deadline.values():
            # Confirmed mostly in the order they came: keep no readings
            # until their deadline (at 80,000 readings/s, 10 s of them).
            while queue and queue[0].done:
                queue.popleft()
        self._answer(sensors)

    def _answer(self, sensors: set) -> None:
        for sensor in sensors:
            sensor.answers_ready()
        if self._paused and self.waiting <= self.max_waiting // 2:
            paused, self._paused = self._paused, set()
            for sensor in paused:
                sensor.resume("copies")

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        self._give_up(lambda deadline: deadline <= now, self._why())
        deadlines = [queue[0].deadline for queue in self._by_deadline.values() if queue]
        if deadlines:
            self._timer = self._clock.callLater(max(min(deadlines) - now, 0), self._expire)

    def _give_up(self, due: Callable[[float], bool], why: str) -> None:
        own = self._own_log()
        sensors = set()
        given_up = 0
        for copies, queue in self._by_deadline.items():
            while queue and due(queue[0].deadline):
                entry = queue.popleft()
                if entry.done:
                    continue
                held = 1 + self._holdings.others(own, entry.last)
                if held >= copies:
                    sensors.add(self._confirm(entry))
                    continue
                entry.done = True
                entry.pending.error = (
                    f"copies: {held} of {copies} ({why}); kept, send again to confirm"
                )
                self.waiting -= len(entry.indexes)
                given_up += len(entry.indexes)
                sensors.add(entry.pending.sensor)
        for copies, heap in self._by_index.items():
            if len(heap) > 2 * self.waiting + 64:
                # Entries given up wait there for copies that may never come.
                heap[:] = [item for item in heap if not item[2].done]
                heapify(heap)
        if given_up:
            self.timeouts += given_up
            self.log.warn(
                "{count} readings were answered 'ERR copies' ({why}): they are stored here "
                "and replicate when they can; sensors that send them again are answered OK "
                "once enough nodes hold them. Check the peers' links in /status.",
                count=given_up,
                why=why,
            )
        self._answer(sensors)

    def stop(self) -> None:
        """
        Answer everything still waiting, at a stop.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._give_up(lambda deadline: True, "this node is stopping")

    def status(self) -> dict:
        return {
            "ack_timeout_s": self.timeout,
            "waiting_for_copies": self.waiting,
            "copies_timeouts": self.timeouts,
            "confirmed": self.confirmed,
        }
