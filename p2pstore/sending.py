"""
Shipping logs to a destination: the engine replication uses for each peer,
and that an exporter can use for an upstream system.

A L{LogSource} is what the node holds: how far each log runs, and a tail of
each log's recent records so that live records go out without being read
back from disk. A L{LogSender} ships those logs to one destination, in
order and in batches: a cursor per log (what the destination is known to
hold, and what was sent), at most ``window`` batches unacknowledged, reads
from the tail or from disk, acknowledgements, and a retry after a pause
when the destination refused part of a batch.

Batches shrink on a link that damages them: each refused batch, and each
channel lost with batches in flight, halves the batch size (down to one
record), and each batch acknowledged whole doubles it back. A link that
corrupts one byte in a few thousand rarely carries a batch of 1,000 records
intact, but carries most batches of a few.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from itertools import islice
from typing import Callable, Optional

from twisted.logger import Logger

from .gaps import Gap
from .records import ENTRY_INDEX
from .storage import BadEntry

Log = tuple  # (origin, epoch)

# Recent records of each log, kept to send live without reading them back
# (as RECORDS entries, p2pstore.wire.Records).
TAIL = 4096
# Batches read from disk at once, at most, for a destination that lacks
# them: while sensors keep the database thread busy, each read waits for a
# commit, so one batch per read could not keep up with a fast log.
READ_BATCHES = 4
# How long before records a destination refused are sent again.
RETRY_DELAY = 1.0
# How long a destination that said it has no room is left alone.
FULL_BACKOFF = 10.0
# When each log's records came to be held is marked at most once a second,
# and the last hour of marks is kept (a few hundred kB at most per log).
MARK_SPACING = 1.0
MARKS_KEPT = 3600


class HeldTimes:
    """
    When this node came to hold each log's records, to within
    ``spacing`` seconds: for the replication lag in seconds (how long the
    oldest record a destination lacks has been waiting for it).

    A mark is one commit's (last index, time), one a log per ``spacing``
    (a later commit within it moves that mark's index on, so a record may
    look up to ``spacing`` older than it is). Records held before the
    oldest mark kept count as held since that mark: a lag is then at
    least what is said.
    """

    def __init__(self, clock, spacing: float = MARK_SPACING, kept: int = MARKS_KEPT):
        self._clock = clock
        self._spacing = spacing
        self._kept = kept
        # {log: ([last index], [time])}, oldest first.
        self._marks: dict = {}

    def held(self, log: Log, last_index: int) -> None:
        """
        This node now holds ``log`` up to ``last_index``.
        """
        now = self._clock.seconds()
        marks = self._marks.get(log)
        if marks is None:
            marks = self._marks[log] = ([], [])
        indexes, times = marks
        if indexes and last_index <= indexes[-1]:
            return
        if times and 0 <= now - times[-1] < self._spacing:
            indexes[-1] = last_index
            return
        indexes.append(last_index)
        times.append(now)
        if len(indexes) > 2 * self._kept:
            # In bulk, so the trim costs nothing per commit.
            del indexes[: self._kept]
            del times[: self._kept]

    def since(self, log: Log, index: int) -> Optional[float]:
        """
        When this node came to hold record ``index`` of ``log`` (or the
        oldest mark kept, for an older one); None if it was never marked.
        """
        marks = self._marks.get(log)
        if not marks:
            return None
        indexes, times = marks
        at = bisect_left(indexes, index)
        return times[min(at, len(times) - 1)]


class LogSource:
    """
    The logs a node holds, for its senders: ``positions`` (``{log:
    last_index}``), where the logs that start past 1 start (``firsts``),
    the ranges it no longer holds (``gaps``: ``{log: [Gap]}``), a tail of
    recent records per log, and the store to read older ones from.
    """

    def __init__(self, store, tail: int = TAIL, clock=None):
        self._store = store
        self._tail_size = tail
        self.positions: dict = {}
        self.firsts: dict = {}
        self.gaps: dict = {}
        self._tails: dict = {}
        # When the records came to be held (for lag in seconds), with a clock.
        self.held = HeldTimes(clock) if clock is not None else None

    def opened(self, positions: dict) -> None:
        """
        The logs as the store opened: held since now, as far as the lag
        can tell.
        """
        self.positions = dict(positions)
        if self.held is not None:
            for log, position in self.positions.items():
                self.held.held(log, position)

    def lost(self, log: Log, first: int, last: int, reason: str) -> None:
        """
        This node no longer holds records ``first`` to ``last`` of a log:
        a range extended, or a new one.
        """
        ranges = self.gaps.setdefault(log, [])
        if ranges and ranges[-1].last == first - 1 and ranges[-1].reason == reason:
            first = ranges.pop().first
        ranges.append(Gap(first, last, reason))
        if self.firsts.get(log, 1) >= first:
            self.firsts[log] = last + 1

    def gap_at(self, log: Log, index: int) -> Optional[Gap]:
        """
        The range this node no longer holds that has ``index``, or None.
        """
        for gap in self.gaps.get(log, ()):
            if gap.first <= index <= gap.last:
                return gap
        return None

    def added(self, log: Log, last_index: int, entries: Callable[[], list], keep: bool) -> None:
        """
        A log grew to ``last_index``; ``entries()`` builds the new records,
        which are kept in its tail when ``keep`` (someone may send them).
        """
        self.positions[log] = last_index
        if self.held is not None:
            self.held.held(log, last_index)
        if keep:
            tail = self._tails.get(log)
            if tail is None:
                tail = self._tails[log] = deque(maxlen=self._tail_size)
            tail.extend(entries())
        else:
            # Nobody to keep them for. A tail with a gap would hand out
            # wrong records, so one that falls behind is dropped; a sender
            # that starts later reads from disk.
            self._tails.pop(log, None)

    def from_tail(self, log: Log, start: int, end: int) -> Optional[list]:
        """
        Records ``start`` to ``end`` of a log from its tail, or C{None}
        when the tail does not hold them all.
        """
        tail = self._tails.get(log)
        if not tail or tail[0][ENTRY_INDEX] > start or tail[-1][ENTRY_INDEX] < end:
            return None
        offset = start - tail[0][ENTRY_INDEX]
        # Not tail[i] per record: indexing into the middle of a deque walks it.
        entries = list(islice(tail, offset, offset + end - start + 1))
        if entries[0][ENTRY_INDEX] != start or entries[-1][ENTRY_INDEX] != end:
            # A gap in the tail (records that never reached it): from disk.
            return None
        return entries

    def read(self, log: Log, after: int, limit: int):
        """
        Up to ``limit`` records of a log after index ``after``, from disk.
        """
        return self._store.read_entries(log[0], log[1], after, limit)


class LogSender:
    """
    Ships a node's logs to one destination over its current channel.

    @ivar channel: what batches go out on now (a peer link), or C{None}
        while there is none; a read that returns after the channel changed
        is not sent.
    @ivar has: how far the destination is known to hold each log.
    @ivar sent: how far each log was sent on this channel.
    @ivar known: whether the destination has said what it holds, so the
        cursors are set.
    @ivar batch_size: the records per batch now: ``max_batch_size`` on a
        link that delivers them, less on one that damages them.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        source: LogSource,
        clock,
        transmit: Callable[[object, Log, list], None],
        batch_size: int,
        window: int,
        skip: Callable[[Log], bool] = lambda log: False,
        idle: Callable[[], None] = lambda: None,
        refused: Callable[[Log, int], None] = lambda log, index: None,
        read_batches: int = READ_BATCHES,
        retry_delay: float = RETRY_DELAY,
    ):
        self.name = name
        self._source = source
        self._clock = clock
        # transmit(channel, log, entries) sends one batch.
        self._transmit = transmit
        self.max_batch_size = self.batch_size = batch_size
        self.window = window
        # Logs this destination gets from elsewhere.
        self._skip = skip
        # Called when a read ends, for a stop that waits for them.
        self._idle = idle
        # Called with (log, index) of a record the destination refused, or
        # that a read found missing: this node's copy may be bad.
        self._refused = refused
        # The (log, index) a read last found missing, logged once.
        self._missing = None
        self._read_batches = read_batches
        self._retry_delay = retry_delay
        self.channel = None
        self.has: dict = {}
        self.sent: dict = {}
        self.known = False
        # (log, first index, last index) of each unacknowledged batch, oldest first: the
        # destination acknowledges batches in the order it received them.
        self.unacked: deque = deque()
        self.reading = False
        self.retry = None
        self.stopped = False
        self.sent_count = 0
        # Why the destination has no room for more records (its budget or
        # its disk), and since when; None while it takes them.
        self.full: Optional[str] = None
        self.full_since: Optional[float] = None

    @property
    def inflight(self) -> int:
        return len(self.unacked)

    def next_to_send(self, log: Log) -> int:
        return self.sent.get(log, self.has.get(log, 0)) + 1

    def holds(self, log: Log, position: int) -> None:
        """
        The destination holds ``log`` up to ``position`` (it sent us those
        records): do not send them, nor count them as lacking.
        """
        if position > self.has.get(log, 0):
            self.has[log] = position
        if log in self.sent and self.sent[log] < position:
            self.sent[log] = position

    def told(self, has: dict, on_channel: bool) -> None:
        """
        The destination says how far it holds every log (``{log: n}``);
        ``on_channel`` when it says so on the channel batches go out on,
        whose order tells what it says against what is in flight.
        """
        self.has = dict(has)
        if on_channel:
            if not self.known or self.inflight == 0:
                self.sent = dict(has)
                self.known = True
            else:
                for log, n in has.items():
                    if n > self.sent.get(log, 0):
                        self.sent[log] = n
        self.pump()

    def switch(self, channel) -> None:
        """
        The channel batches went out on is gone; ``channel`` (or C{None})
        carries them from now on. Batches in flight are lost: send again
        from what the destination is known to hold, in smaller batches if
        the old channel broke with some in flight (a batch damaged on the
        way is the likeliest reason a link closes then).
        """
        if self.unacked:
            self._shrink()
        if self.retry is not None and self.retry.active():
            # The pause after a refusal keeps one link from spinning; a new
            # link starts afresh (its dialler paced it).
            self.retry.cancel()
        self.channel = channel
        self.unacked.clear()
        self.sent = {}
        self.known = channel is not None
        self.pump()

    def no_room(self, reason: str, backoff: float = FULL_BACKOFF) -> None:
        """
        The destination has no room for records: what is in flight comes
        back unstored, and nothing more is sent for ``backoff`` seconds.
        """
        if self.full is None:
            self.full_since = self._clock.seconds()
            self.log.warn(
                "peer {destination} has no room for records ({reason}): sending again every "
                "{backoff:g} s",
                destination=self.name,
                reason=reason,
                backoff=backoff,
            )
        self.full = reason
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = self._clock.callLater(backoff, self.pump)

    def acked(self, log: Log, last_index: int) -> None:
        """
        The destination acknowledged the oldest batch in flight: it holds
        ``log`` up to ``last_index`` now.
        """
        if self.inflight == 0:
            return
        # Only a position below that batch's end means a refusal; below what
        # was sent since is just the pipeline.
        sent_log, start, end = self.unacked.popleft()
        if log != sent_log:
            # The batch reached the destination under another name (its
            # origin or epoch corrupted in transit), so none of it was
            # stored: send it again from what the destination holds.
            self.sent[sent_log] = self.has.get(sent_log, 0)
            self._shrink()
            self._retry_later()
            return
        self.has[log] = last_index
        if last_index < end and self.full is not None:
            # Not stored for lack of room: sent again after the backoff.
            self.sent[log] = last_index
            return
        if last_index < end:
            # The destination refused part of what was sent (a record failed
            # its check): send it again, after a pause.
            self.sent[log] = last_index
            if last_index >= start - 1:
                # A record of this batch was refused, not just the batch
                # sent after one refused before it.
                self._shrink()
                self._refused(log, last_index + 1)
            self._retry_later()
            return
        self.batch_size = min(self.batch_size * 2, self.max_batch_size)
        if self.full is not None:
            self.log.info("peer {destination} takes records again", destination=self.name)
            self.full = self.full_since = None
        self.pump()

    def took(self, log: Log, last_index: int) -> None:
        """
        The destination took the oldest batch in flight up to
        ``last_index`` only, and wants the rest as another batch (it was
        too large for one): no refusal, so no pause.
        """
        if self.inflight == 0:
            return
        self.unacked.popleft()
        self.has[log] = max(self.has.get(log, 0), last_index)
        self.sent[log] = last_index
        self.pump()

    def resend_smaller(self) -> None:
        """
        The destination could not take the oldest batch in flight whole
        (one of its records, or its size): send it again at once in half
        the size, down to one record, which tells the bad one apart.
        """
        if self.inflight == 0:
            return
        log, start, _ = self.unacked.popleft()
        self.sent[log] = start - 1
        self._shrink()
        self.pump()

    def _shrink(self) -> None:
        self.batch_size = max(self.batch_size // 2, 1)

    def stop(self) -> None:
        self.stopped = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()

    def _retry_later(self) -> None:
        # After a pause, so that a link that corrupts everything does not spin.
        if self.retry is None or not self.retry.active():
            self.retry = self._clock.callLater(self._retry_delay, self.pump)

    def _next_log(self) -> Optional[Log]:
        for log, position in self._source.positions.items():
            if not self._skip(log) and self.next_to_send(log) <= position:
                return log
        return None

    def pump(self) -> None:
        """
        Send what the destination lacks, as far as the window allows.
        """
        if self.stopped or self.channel is None or not self.known or self.reading:
            return
        if self.retry is not None and self.retry.active():
            return
        positions = self._source.positions
        while self.inflight < self.window:
            log = self._next_log()
            if log is None:
                return
            start = self.next_to_send(log)
            gap = self._source.gap_at(log, start)
            if gap is not None:
                # In order with the batches, answered like one.
                self._send(log, gap)
                continue
            end = min(start + self.batch_size - 1, positions[log])
            entries = self._source.from_tail(log, start, end)
            if entries is None:
                batches = min(self.window - self.inflight, self._read_batches)
                end = min(start + batches * self.batch_size - 1, positions[log])
                self.reading = True
                d = self._source.read(log, start - 1, end - start + 1)
                d.addCallback(self._read, self.channel, log, start)
                d.addErrback(self._read_failed, log)
                return
            self._send(log, entries)

    def _read(self, entries: list, channel, log: Log, start: int) -> None:
        self.reading = False
        self._idle()
        if not entries and not self.stopped:
            # The position says these rows exist but the table has none (rows
            # deleted by hand?): try again later rather than spin on reads.
            self.log.warn(
                "log {log} is held up to {position} but has no rows from {start}; retrying",
                log=log,
                position=self._source.positions.get(log),
                start=start,
            )
            self._retry_later()
            return
        if (
            entries
            and not self.stopped
            and channel is self.channel
            and entries[0][ENTRY_INDEX] == self.next_to_send(log)
        ):
            # Acknowledgements meanwhile only made room in the window.
            for at in range(0, len(entries), self.batch_size):
                self._send(log, entries[at : at + self.batch_size])
        self.pump()

    def _read_failed(self, failure, log: Log) -> None:
        self.reading = False
        if self.stopped:
            self._idle()
            return
        if failure.check(BadEntry):
            # A record in quarantine, or changed on disk: the scrub checks
            # it and asks peers for a good copy; until then, wait.
            missing = (log, failure.value.index)
            if missing != self._missing:
                self._missing = missing
                self.log.warn(
                    "cannot send {destination} log {origin}/{epoch} from entry {index} on: "
                    "{reason}; sending it once repaired",
                    destination=self.name,
                    origin=log[0],
                    epoch=log[1],
                    index=failure.value.index,
                    reason=failure.getErrorMessage(),
                )
            self._refused(log, failure.value.index)
            self._retry_later()
            return
        self.log.failure(
            "could not read log {log} to send to {destination}; will retry",
            failure,
            log=log,
            destination=self.name,
        )
        self.retry = self._clock.callLater(self._retry_delay, self.pump)

    def _send(self, log: Log, entries) -> None:
        # entries: a batch of records, or a Gap in their place.
        self._transmit(self.channel, log, entries)
        if isinstance(entries, Gap):
            first, last = self.next_to_send(log), entries.last
        else:
            first, last = entries[0][ENTRY_INDEX], entries[-1][ENTRY_INDEX]
            self.sent_count += len(entries)
        self.sent[log] = last
        self.unacked.append((log, first, last))

    def lag(self) -> dict:
        """
        How many records of each origin the destination is known to lack.
        """
        lag: dict = {}
        firsts = self._source.firsts
        for log, position in self._source.positions.items():
            # Not what this node no longer holds itself.
            missing = position - max(self.has.get(log, 0), firsts.get(log, 1) - 1)
            if missing > 0:
                lag[log[0]] = lag.get(log[0], 0) + missing
        return lag

    def lag_seconds(self) -> dict:
        """
        How long the oldest record of each origin the destination is known
        to lack has been held here (seconds; the origins of L{lag} only).
        """
        held = self._source.held
        if held is None:
            return {}
        now = self._clock.seconds()
        lag: dict = {}
        firsts = self._source.firsts
        for log, position in self._source.positions.items():
            oldest = max(self.has.get(log, 0), firsts.get(log, 1) - 1) + 1
            if oldest > position:
                continue
            since = held.since(log, oldest)
            if since is not None:
                lag[log[0]] = max(lag.get(log[0], 0.0), round(max(now - since, 0.0), 3))
        return lag
