"""
Group commit of sensor readings, with backpressure.

Readings from every sensor connection queue here; one transaction at a time
stores all that queued while the previous one committed, so the node pays
one fsync per batch rather than per reading. Each reading is answered only
once its transaction has committed. When the queue grows past its high-water
mark every sensor connection stops being read until it drains.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from typing import Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .lines import Reading, Rejected
from .storage import Appended, Opened, Store

# Refused lines held after their commit failed, at most (in lines and in
# bytes of the lines); beyond that the oldest are dropped and the log says
# so, so a broken disk cannot make them grow without end.
MAX_UNSAVED_REJECTED = 10000
MAX_UNSAVED_BYTES = 4 * 1024 * 1024
# Seconds between tries to store held refused lines: each try is its own
# transaction, after a commit of readings succeeded.
UNSAVED_RETRY_INTERVAL = 10.0


class Pending:
    """
    Lines of one sensor connection waiting for their answers: the readings
    that arrived together, or one refused line whose answer is set at once.

    @ivar rows: the readings numbered and signed by L{Store.prepare}, once
        the store is open.
    @ivar answer: the answer lines, each ending in a newline, once known.
    """

    __slots__ = ("sensor", "readings", "rows", "answer")

    def __init__(self, sensor, readings: Sequence[Reading] = (), answer: Optional[bytes] = None):
        self.sensor = sensor
        self.readings = readings
        self.rows: Optional[list] = None
        self.answer = answer


class Ingestor:
    """
    The queue between sensor connections and the store.

    Sensors call L{connect}, L{submit}, L{reject} and L{disconnect}; each
    sensor provides ``sensor_index``, ``pause(reason)``, ``resume(reason)``
    and ``flush_answers()``.
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        clock,
        max_batch: int = 5000,
        high_water: int = 20000,
        low_water: int = 5000,
        on_commit=None,
        max_unsaved_rejected: int = MAX_UNSAVED_REJECTED,
        max_unsaved_bytes: int = MAX_UNSAVED_BYTES,
    ):
        self._store = store
        # Called with the Appended of each commit that added readings.
        self.on_commit = on_commit
        self._clock = clock
        self._max_batch = max_batch
        self._high_water = high_water
        self._low_water = low_water
        self._queue: deque[Pending] = deque()
        # Readings in the queue.
        self._queued = 0
        # The entry_index the log gives its next reading, as far as the
        # commits so far tell.
        self._log_next = 1
        # The entry_index the next reading submitted is numbered with.
        self._next_index = 1
        self._rejected: list[Rejected] = []
        # Refused lines whose commit failed. They are tried again in a
        # transaction of their own, never with readings (their bytes must
        # not keep readings from a disk with a little room again), only
        # after a commit succeeded (a broken disk would otherwise mean a loop
        # of failing transactions) and at most every UNSAVED_RETRY_INTERVAL,
        # and once more by drain().
        self._unsaved: deque[Rejected] = deque()
        self._unsaved_bytes = 0
        self._max_unsaved = max_unsaved_rejected
        self._max_unsaved_bytes = max_unsaved_bytes
        self._unsaved_tried = None
        self._retry_unsaved = False
        self.dropped_rejected = 0
        self._sensors: set = set()
        self._opened = False
        self._busy = False
        self._scheduled = None
        self._overloaded = False
        self._drain_waiters: list[Deferred] = []
        self._last_sensor_index = 0
        self.accepted = 0
        self.rejected = 0
        # Answers 'ERR retry' given because a commit failed (a reading sent
        # again and failing again counts again).
        self.not_stored = 0

    @property
    def connected(self) -> int:
        return len(self._sensors)

    @property
    def queued(self) -> int:
        return self._queued

    def opened(self, opened: Opened) -> None:
        """
        The store is open: let the sensors that connected meanwhile talk.
        """
        self._opened = True
        self._last_sensor_index = opened.last_sensor_index
        for sensor in list(self._sensors):
            sensor.sensor_index = self._next_sensor_index()
        # Readings queued meanwhile are numbered when their batch is taken.
        self._log_next = opened.last_index + 1
        self._next_index = self._log_next + self._queued
        for sensor in list(self._sensors):
            sensor.resume("opening")
        # Lines read before the pause took hold (a read already under way,
        # a TLS record already decrypted) would otherwise wait for the next
        # line, and drain() on stop would never fire.
        self._schedule()

    def _next_sensor_index(self) -> int:
        self._last_sensor_index += 1
        return self._last_sensor_index

    def connect(self, sensor) -> None:
        """
        A sensor connected: number it, or hold it until the store is open.
        """
        self._sensors.add(sensor)
        if self._opened:
            sensor.sensor_index = self._next_sensor_index()
        else:
            sensor.pause("opening")
        if self._overloaded:
            sensor.pause("store")

    def disconnect(self, sensor) -> None:
        """
        A sensor went away; what it sent is still stored.
        """
        self._sensors.discard(sensor)

    def sensors(self) -> list:
        return list(self._sensors)

    def submit(self, pending: Pending) -> None:
        """
        Queue readings; the store will set ``pending.answer`` and call
        ``pending.sensor.flush_answers()`` once they have committed.

        They are numbered and signed now, while the batch before them
        commits in the database thread.
        """
        count = len(pending.readings)
        if self._opened:
            pending.rows = self._store.prepare(
                pending.readings, pending.sensor.sensor_index, self._next_index
            )
            self._next_index += count
        self._queue.append(pending)
        self._queued += count
        self.accepted += count
        if not self._overloaded and self._queued >= self._high_water:
            self._overloaded = True
            self.log.warn(
                "{queued} readings wait for the disk: pausing sensor connections",
                queued=self._queued,
            )
            for sensor in self._sensors:
                sensor.pause("store")
        self._schedule()

    def reject(self, rejected: Rejected) -> None:
        """
        Keep a refused line in the rejected_lines table.
        """
        self._rejected.append(rejected)
        self.rejected += 1
        self._schedule()

    @property
    def unsaved_rejected(self) -> int:
        """
        Refused lines not yet in rejected_lines because their commit failed.
        """
        return len(self._unsaved)

    def drain(self) -> Deferred:
        """
        @return: a Deferred that fires once everything queued so far is
            committed and answered. Refused lines held from failed commits
            get one more try of their own first (or after the commit under
            way), and are not waited for beyond it.
        """
        if self._unsaved:
            self._retry_unsaved = True
            self._schedule()
        if self._idle():
            return succeed(None)
        d = Deferred()
        self._drain_waiters.append(d)
        return d

    def _idle(self) -> bool:
        return not (self._busy or self._queue or self._rejected or self._retry_unsaved)

    def _schedule(self) -> None:
        # Wait for the end of this reactor turn, so every line that arrived
        # in it joins the same transaction.
        if self._scheduled is None and not self._busy and self._opened:
            self._scheduled = self._clock.callLater(0, self._commit)

    def _commit(self) -> None:
        self._scheduled = None
        if self._busy or not self._opened:
            return
        if self._retry_unsaved:
            self._commit_unsaved()
            return
        batch: list[Pending] = []
        count = 0
        queue = self._queue
        while queue and count < self._max_batch:
            pending = queue.popleft()
            batch.append(pending)
            count += len(pending.readings)
        self._queued -= count
        rejected, self._rejected = self._rejected, []
        if not batch and not rejected:
            self._notify_drained()
            return
        self._busy = True
        index = self._log_next
        for pending in batch:
            if pending.rows is None or pending.rows[0][0] != index:
                # Read before the store opened, or numbered before the batch
                # ahead of it ended at another index than expected (a resent
                # reading answered with its stored index, a failed commit).
                pending.rows = self._store.prepare(
                    pending.readings, pending.sensor.sensor_index, index
                )
            index += len(pending.readings)
        rows = list(chain.from_iterable(pending.rows for pending in batch))
        d = self._store.append(rows, rejected, self._last_sensor_index)
        d.addCallbacks(
            self._committed, self._failed, callbackArgs=(batch,), errbackArgs=(batch, rejected)
        )
        d.addBoth(self._done)

    def _committed(self, appended: Appended, batch: list[Pending]) -> None:
        if self._unsaved and (
            self._unsaved_tried is None
            # Not within the interval after the last try (a clock set back
            # counts as past it).
            or not 0 <= self._clock.seconds() - self._unsaved_tried < UNSAVED_RETRY_INTERVAL
        ):
            # The disk takes writes again: the held lines next.
            self._retry_unsaved = True
        self._log_next = appended.last_index + 1
        self._next_index = self._log_next + self._queued
        indexes = appended.indexes
        start = 0
        for pending in batch:
            end = start + len(pending.readings)
            pending.answer = b"".join([b"OK %d\n" % (index,) for index in indexes[start:end]])
            start = end
        self._answer(batch)
        if appended.rows and self.on_commit is not None:
            self.on_commit(appended)

    def _failed(self, failure, batch: list[Pending], rejected: list[Rejected]) -> None:
        count = sum(len(pending.readings) for pending in batch)
        what, then = [], []
        if count:
            what.append("{count} readings")
            then.append("the readings were answered 'ERR retry' (sensors may resend them)")
        if rejected:
            what.append("{rejected} refused lines")
            then.append(
                "the refused lines are held in memory and tried again after a later commit "
                "succeeds and at stop (a crash loses them)"
            )
        self.log.failure(
            "could not store " + " and ".join(what) + " in {path}: " + "; ".join(then)
            + ". Check the disk (space, permissions) and the log above.",
            failure,
            count=count,
            rejected=len(rejected),
            path=str(self._store.path),
        )
        self._keep_unsaved(rejected)
        self.not_stored += count
        # Their numbers were not used: the readings after them take them.
        self._next_index = self._log_next + self._queued
        for pending in batch:
            pending.answer = b"ERR retry: storage failure\n" * len(pending.readings)
        self._answer(batch)

    def _commit_unsaved(self) -> None:
        """
        Try the held refused lines, without readings, with any refused
        since (after them, so rejected_lines keeps the order they came in).
        """
        self._retry_unsaved = False
        self._unsaved_tried = self._clock.seconds()
        held = list(self._unsaved)
        held.extend(self._rejected)
        self._rejected = []
        self._unsaved.clear()
        self._unsaved_bytes = 0
        self._busy = True
        d = self._store.append([], held, self._last_sensor_index)

        def failed(failure) -> None:
            self.log.failure(
                "could not store {count} refused lines held from failed commits in "
                "{path}; they stay in memory and are tried again after a later commit "
                "succeeds (at most every {interval:g} s) and at stop. Check the disk "
                "(space, permissions).",
                failure,
                count=len(held),
                interval=UNSAVED_RETRY_INTERVAL,
                path=str(self._store.path),
            )
            # Nothing was held meanwhile: one transaction runs at a time.
            self._keep_unsaved(held)

        def stored(_) -> None:
            self.log.info(
                "stored {count} refused lines held from failed commits in rejected_lines",
                count=len(held),
            )

        d.addCallbacks(stored, failed)
        d.addBoth(self._done)

    def _keep_unsaved(self, rejected: list[Rejected]) -> None:
        self._unsaved.extend(rejected)
        self._unsaved_bytes += sum(len(r.raw) for r in rejected)
        dropped = 0
        while self._unsaved and (
            len(self._unsaved) > self._max_unsaved
            or self._unsaved_bytes > self._max_unsaved_bytes
        ):
            self._unsaved_bytes -= len(self._unsaved.popleft().raw)
            dropped += 1
        if dropped:
            self.dropped_rejected += dropped
            self.log.warn(
                "{dropped} refused lines are lost, not stored in rejected_lines "
                "({total} since start): commits keep failing and at most {most} "
                "lines ({bytes} bytes) are held to be tried again. Check the disk.",
                dropped=dropped,
                total=self.dropped_rejected,
                most=self._max_unsaved,
                bytes=self._max_unsaved_bytes,
            )

    @staticmethod
    def _answer(batch: list[Pending]) -> None:
        for sensor in {p.sensor for p in batch}:
            sensor.flush_answers()

    def _done(self, result) -> None:
        if isinstance(result, Failure):
            # A bug in the lines above: say so, rather than leave sensors
            # waiting for answers with nothing in the log.
            self.log.failure("answering a commit failed; please report this bug", result)
        self._busy = False
        if self._overloaded and self._queued <= self._low_water:
            self._overloaded = False
            self.log.info("the disk caught up: resuming sensor connections")
            for sensor in self._sensors:
                sensor.resume("store")
        if self._queue or self._rejected or self._retry_unsaved:
            self._commit()
        else:
            self._notify_drained()

    def _notify_drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)
