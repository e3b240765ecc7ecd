"""
The last hour of each server, for the page's history charts: readings per
second taken from its sensors, and how far behind its peers it is.

The poller adds a sample per server after each poll; samples go into
buckets of L{BUCKET_S} seconds, of which the last L{BUCKETS} are kept, so
the memory a server takes is bounded whatever the poll interval.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Optional

from attrs import define, frozen

# An hour, in buckets of 30 s.
BUCKET_S = 30.0
BUCKETS = 120
SPAN_S = BUCKET_S * BUCKETS


@define
class Bucket:
    """
    What was seen of one server in C{BUCKET_S} seconds from C{start}.

    @ivar readings: readings its sensors were answered OK for, between
        samples of this bucket and the one before.
    @ivar seconds: the time those counts cover (a restart or a gap in the
        answers is left out, not counted as no readings).
    @ivar lag_records: the most records a connected peer was known to lack.
    @ivar lag_s: the longest the oldest of those had waited.
    """

    start: float
    readings: int = 0
    seconds: float = 0.0
    lag_records: Optional[int] = None
    lag_s: Optional[float] = None

    @property
    def rate(self) -> Optional[float]:
        return self.readings / self.seconds if self.seconds > 0 else None


@frozen
class Sample:
    """
    One poll of one server that answered.

    @ivar accepted: readings answered OK since the node started (a lower
        count than the last means it restarted).
    @ivar lag_records, lag_s: the worst over its connected peers, or None
        when it has none.
    """

    at: float
    accepted: Optional[int]
    lag_records: Optional[int]
    lag_s: Optional[float]
    # Which node answered, and how long it had run: another node at the
    # address, or a shorter uptime, is a restart of the count.
    node_id: Optional[str] = None
    uptime_s: Optional[float] = None


def sample(status, at: float) -> Sample:
    """
    The sample of a node's parsed status (L{web_monitor.answers.NodeStatus}).
    """
    linked = [p for p in status.peers or () if p.connected and p.lag is not None]
    return Sample(
        at=at,
        accepted=status.sensors_accepted,
        lag_records=max((p.lag_records for p in linked), default=None),
        lag_s=max((p.lag_seconds for p in linked if p.lag_s is not None), default=None),
        node_id=status.node_id,
        uptime_s=status.uptime_s,
    )


class ServerHistory:
    """
    The buckets of one server, oldest first.

    @param gap_s: samples further apart than this are not joined into a
        rate (the server did not answer in between).
    """

    def __init__(self, gap_s: float):
        self.gap_s = gap_s
        self.buckets: deque[Bucket] = deque(maxlen=BUCKETS)
        self._last: Optional[Sample] = None

    def add(self, new: Optional[Sample], at: float) -> None:
        """
        Add a poll's sample, or C{None} when the server did not answer.
        """
        if new is None:
            self._last = None
            return
        bucket = self._bucket(at)
        last = self._last
        if (
            last is not None
            and new.accepted is not None
            and last.accepted is not None
            and new.accepted >= last.accepted
            and new.node_id == last.node_id
            and (new.uptime_s is None or last.uptime_s is None or new.uptime_s >= last.uptime_s)
            and 0 < new.at - last.at <= self.gap_s
        ):
            bucket.readings += new.accepted - last.accepted
            bucket.seconds += new.at - last.at
        if new.lag_records is not None:
            bucket.lag_records = max(bucket.lag_records or 0, new.lag_records)
        if new.lag_s is not None:
            bucket.lag_s = max(bucket.lag_s or 0.0, new.lag_s)
        self._last = new

    def _bucket(self, at: float) -> Bucket:
        start = at - at % BUCKET_S
        if not self.buckets or self.buckets[-1].start < start:
            self.buckets.append(Bucket(start))
        return self.buckets[-1]

    def rate(self, now: float, window_s: float = 2 * BUCKET_S) -> Optional[float]:
        """
        Readings per second over about the last C{window_s} seconds.
        """
        recent = [b for b in self.buckets if b.start > now - window_s - BUCKET_S]
        seconds = sum(b.seconds for b in recent)
        return sum(b.readings for b in recent) / seconds if seconds > 0 else None


class History:
    """
    The last hour of every server, by index; safe to use from any thread.
    """

    def __init__(self, servers: int, interval: float):
        self._lock = threading.Lock()
        # Two missed polls make a gap.
        self._servers = [ServerHistory(gap_s=2.5 * interval) for _ in range(servers)]

    def add(self, results, now: float) -> None:
        """
        Add a poll's results (L{web_monitor.poller.ServerResult}s, in order).
        """
        with self._lock:
            for server, result in zip(self._servers, results):
                status = result.status
                server.add(None if status is None else sample(status, now), now)

    def series(self, index: int, now: float) -> list:
        """
        The buckets of server C{index} within the last hour (copies).
        """
        with self._lock:
            return [
                Bucket(b.start, b.readings, b.seconds, b.lag_records, b.lag_s)
                for b in self._servers[index].buckets
                if b.start > now - SPAN_S
            ]

    def rate(self, index: int, now: float) -> Optional[float]:
        with self._lock:
            return self._servers[index].rate(now)
