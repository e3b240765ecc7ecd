"""
Group commit of sensor readings, with backpressure.

Readings from every sensor connection queue here; one transaction at a time
stores all that queued while the previous one committed, so the node pays
one fsync per batch rather than per reading. With a commit interval, a
commit starts no sooner than that long after the one before began, so under
load more readings share each commit and fewer pages are written for each
(less wear on an SD card); a reading that arrives after a quiet spell still
commits at once, and so does a commit when every connected sensor has
readings in it (each waits for its answers, so waiting gains nothing: a
sensor that sends one reading at a time is not slowed). Each reading is
answered only once its transaction has committed. When the queue grows past
its high-water mark every sensor connection stops being read until it
drains.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from .disk import FULL_DISK, is_full
from .histogram import COMMIT_READINGS, COMMIT_SECONDS, Histogram
from .interfaces import ISensor
from .lines import RETRY_STORAGE, Reading, Rejected
from .opening import Opened
from .refused import MAX_BYTES, MAX_LINES, RefusedLines
from .rows import Appended, OwnRows
from .storage import Store


# Readings that commit without waiting out the commit interval: a commit
# this large writes about as few bytes a reading as a larger one, and
# sensors with many lines unanswered are not held back by the interval.
ENOUGH_TO_COMMIT = 1000


class Pending:
    """
    Lines of one sensor connection waiting for their answers: the readings
    that arrived together, or one refused line whose answer is set at once.

    @ivar rows: the readings as L{OwnRows.number} numbered and signed them,
        once the store is open.
    @ivar indexes: once stored, the entry_index answered for each reading.
    @ivar error: the reason each of them is refused (an ``ERR`` answer).
    @ivar silent: the lines came from a sensor that sends no line ends, and
        so reads no answers: they are not sent.
    @ivar copies: the nodes that must hold the readings before they are
        answered OK (L{p2pstore.copies.CopyWait}), this one included.
    @ivar reply: an answer of its own (to a line that is not a reading).
    """

    __slots__ = ("sensor", "readings", "rows", "indexes", "error", "silent", "copies", "reply")

    def __init__(
        self,
        sensor: ISensor,
        readings: Sequence[Reading] = (),
        error: Optional[str] = None,
        silent: bool = False,
        copies: int = 1,
        reply: Optional[bytes] = None,
    ):
        self.sensor = sensor
        self.readings = readings
        self.silent = silent
        self.rows: Optional[list] = None
        self.indexes: Optional[Sequence[int]] = None
        self.error = error
        self.copies = copies
        self.reply = reply

    @property
    def answered(self) -> bool:
        return self.indexes is not None or self.error is not None or self.reply is not None


class Ingestor:
    """
    The queue between sensor connections and the store.

    Sensors (L{ISensor}) call L{connect}, L{submit}, L{reject} and
    L{disconnect}; each commit's outcome goes to every callable in
    L{observers}.
    """

    log = Logger()

    def __init__(
        self,
        store: Store,
        rows: OwnRows,
        clock,
        max_batch: int = 5000,
        high_water: int = 20000,
        low_water: int = 5000,
        max_unsaved_rejected: int = MAX_LINES,
        max_unsaved_bytes: int = MAX_BYTES,
        commit_interval: float = 0.0,
    ):
        self._store = store
        self._rows = rows
        self._clock = clock
        # Called in turn with the Appended of each commit that added
        # readings (replication, and whatever else attaches).
        self.observers: list[Callable[[Appended], None]] = []
        # Where readings that need copies on other nodes wait for them
        # (p2pstore.copies.CopyWait), once set.
        self.copy_wait = None
        # The disk under the store (p2pstore.disk.Disk), which tells a
        # full disk from other failures, once set.
        self.disk = None
        self._max_batch = max_batch
        # The least time (seconds) from the start of one commit to the
        # start of the next; what arrives meanwhile joins the next.
        self._commit_interval = commit_interval
        self._last_commit = float("-inf")
        self._high_water = high_water
        self._low_water = low_water
        self._queue: deque[Pending] = deque()
        # Entries in the queue by sensor, and how many connected sensors
        # have any: once all have, none can add to the next commit by
        # waiting (each waits for its answers), so it does not wait.
        self._queued_by: dict = {}
        self._sensors_waiting = 0
        # Readings in the queue.
        self._queued = 0
        self.refused = RefusedLines(clock, max_unsaved_rejected, max_unsaved_bytes)
        self._sensors: set = set()
        self._opened = False
        self._busy = False
        self._scheduled = None
        self._overloaded = False
        self._drain_waiters: list[Deferred] = []
        self._last_sensor_index = 0
        self.accepted = 0
        # Readings from sensors that send no line ends (within accepted).
        self.accepted_unterminated = 0
        # Answers 'ERR retry' given because a commit failed (a reading sent
        # again and failing again counts again).
        self.not_stored = 0
        # Answers 'ERR full' given because the disk was full.
        self.not_full = 0
        # How long each commit of readings took, and how many it stored.
        self.commit_seconds = Histogram(COMMIT_SECONDS)
        self.commit_readings = Histogram(COMMIT_READINGS)

    @property
    def connected(self) -> int:
        return len(self._sensors)

    @property
    def unterminated_connected(self) -> int:
        """
        Connected sensors that send readings without line ends.
        """
        return sum(1 for sensor in self._sensors if sensor.unterminated)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def rejected(self) -> int:
        """
        Lines refused since the node started.
        """
        return self.refused.count

    @property
    def unsaved_rejected(self) -> int:
        """
        Refused lines not yet in rejected_lines because their commit failed.
        """
        return self.refused.held

    @property
    def dropped_rejected(self) -> int:
        return self.refused.dropped

    def opened(self, opened: Opened) -> None:
        """
        The store is open: let the sensors that connected meanwhile talk.
        """
        self._opened = True
        self._last_sensor_index = opened.last_sensor_index
        for sensor in list(self._sensors):
            sensor.sensor_index = self._next_sensor_index()
        # Readings queued meanwhile are numbered when their batch is taken.
        self._rows.opened(opened.epoch, opened.last_index, self._queued)
        for sensor in list(self._sensors):
            sensor.resume("opening")
        # Lines read before the pause took hold (a read already under way,
        # a TLS record already decrypted) would otherwise wait for the next
        # line, and drain() on stop would never fire.
        self._schedule()

    def _next_sensor_index(self) -> int:
        self._last_sensor_index += 1
        return self._last_sensor_index

    def connect(self, sensor: ISensor) -> None:
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

    def disconnect(self, sensor: ISensor) -> None:
        """
        A sensor went away; what it sent is still stored.
        """
        if sensor in self._sensors and self._queued_by.get(sensor):
            self._sensors_waiting -= 1
        self._sensors.discard(sensor)

    def sensors(self) -> list:
        return list(self._sensors)

    def submit(self, pending: Pending) -> None:
        """
        Queue readings; once they have committed, ``pending.indexes`` (or
        ``pending.error``) is set and ``pending.sensor.answers_ready()`` is
        called.

        They are numbered and signed now, while the batch before them
        commits in the database thread.
        """
        count = len(pending.readings)
        if self._opened:
            sensor = pending.sensor
            pending.rows = self._rows.number(pending.readings, sensor.sensor_index, sensor.sensor_name)
        self._queue.append(pending)
        sensor = pending.sensor
        before = self._queued_by.get(sensor, 0)
        self._queued_by[sensor] = before + 1
        if not before and sensor in self._sensors:
            self._sensors_waiting += 1
        self._queued += count
        self.accepted += count
        if pending.silent:
            self.accepted_unterminated += count
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
        self.refused.add(rejected)
        self._schedule()

    def drain(self) -> Deferred:
        """
        @return: a Deferred that fires once everything queued so far is
            committed and answered. Refused lines held from failed commits
            get one more try of their own first (or after the commit under
            way), and are not waited for beyond it.
        """
        self.refused.stopping()
        if self.refused.retry_due:
            self._schedule()
        if self._idle():
            return succeed(None)
        d = Deferred()
        self._drain_waiters.append(d)
        # Stopping: what waits for the commit interval commits now.
        self._schedule()
        return d

    def _idle(self) -> bool:
        return not (self._busy or self._queue or self.refused.waiting or self.refused.retry_due)

    def _schedule(self) -> None:
        # Wait for the end of this reactor turn, so every line that arrived
        # in it joins the same transaction, and for the commit interval.
        if self._busy or not self._opened:
            return
        delay = self._delay()
        if self._scheduled is None:
            self._scheduled = self._clock.callLater(delay, self._commit)
        elif delay == 0 and self._scheduled.getTime() > self._clock.seconds():
            # Enough readings wait, or a stop: no need to wait longer.
            self._scheduled.reset(0)

    def _delay(self) -> float:
        if (
            self._queued >= min(self._max_batch, ENOUGH_TO_COMMIT)
            or self._sensors_waiting >= len(self._sensors)
            or self._drain_waiters
            or self.refused.retry_due
        ):
            return 0
        return max(0.0, self._last_commit + self._commit_interval - self._clock.seconds())

    def _commit(self) -> None:
        self._scheduled = None
        if self._busy or not self._opened:
            return
        if self.refused.retry_due:
            self._commit_held()
            return
        batch: list[Pending] = []
        count = 0
        queue = self._queue
        while queue and count < self._max_batch:
            pending = queue.popleft()
            sensor = pending.sensor
            left = self._queued_by.pop(sensor) - 1
            if left:
                self._queued_by[sensor] = left
            elif sensor in self._sensors:
                self._sensors_waiting -= 1
            batch.append(pending)
            count += len(pending.readings)
        self._queued -= count
        rejected = self.refused.take()
        if not batch and not rejected:
            self._notify_drained()
            return
        refusing = self.disk.refusing() if self.disk is not None and batch else None
        if refusing is not None:
            self._refuse_full(batch, rejected, refusing)
            if self._idle():
                self._notify_drained()
            else:
                self._schedule()
            return
        self._busy = True
        self._last_commit = self._clock.seconds()
        rows = self._rows.batch(
            (p.readings, p.sensor.sensor_index, p.sensor.sensor_name, p.rows) for p in batch
        )
        d = self._store.append(rows, rejected, self._last_sensor_index, self._rows.renumber)
        d.addCallbacks(
            self._committed, self._failed, callbackArgs=(batch,), errbackArgs=(batch, rejected)
        )
        d.addBoth(self._done)

    def _committed(self, appended: Appended, batch: list[Pending]) -> None:
        if self.disk is not None:
            self.disk.wrote()
        if batch:
            # Per commit, not per reading: two bisects.
            self.commit_seconds.observe(self._clock.seconds() - self._last_commit)
            self.commit_readings.observe(sum(len(pending.readings) for pending in batch))
        self.refused.committed()
        self._rows.committed(appended.last_index, self._queued)
        indexes = appended.indexes
        start = 0
        for pending in batch:
            end = start + len(pending.readings)
            stored = indexes[start:end]
            start = end
            if pending.copies > 1 and stored and self.copy_wait is not None and not pending.silent:
                self.copy_wait.wait(pending, stored, pending.copies)
            else:
                pending.indexes = stored
        self._answer(batch)
        if appended.rows:
            for observer in self.observers:
                observer(appended)

    def _failed(self, failure, batch: list[Pending], rejected: list[Rejected]) -> None:
        count = sum(len(pending.readings) for pending in batch)
        if self.disk is not None and is_full(failure):
            # Said once for the whole time the disk is full (p2pstore.disk).
            what = [f"{count} readings"] if count else []
            what += [f"{len(rejected)} refused lines"] if rejected else []
            self.disk.filled(" and ".join(what))
            self._refuse_full(batch, rejected)
            return
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
        self.refused.failed(rejected)
        self.not_stored += count
        self._rows.failed(self._queued)
        for pending in batch:
            pending.error = RETRY_STORAGE
        self._answer(batch)

    def _refuse_full(self, batch: list[Pending], rejected: list[Rejected], why: str = FULL_DISK) -> None:
        # Not stored for lack of space: answered ERR full, to be sent again.
        self.refused.failed(rejected)
        self.not_full += sum(len(pending.readings) for pending in batch)
        self._rows.failed(self._queued)
        for pending in batch:
            pending.error = why
        self._answer(batch)

    def _commit_held(self) -> None:
        """
        Try the held refused lines, without readings, with any refused
        since (after them, so rejected_lines keeps the order they came in).
        """
        held = self.refused.take_held()
        self._busy = True
        self._last_commit = self._clock.seconds()
        d = self._store.append([], held, self._last_sensor_index, self._rows.renumber)
        d.addCallbacks(
            lambda _: self.refused.held_stored(held),
            self.refused.held_failed,
            errbackArgs=(held, str(self._store.path)),
        )
        d.addBoth(self._done)

    @staticmethod
    def _answer(batch: list[Pending]) -> None:
        for sensor in {p.sensor for p in batch}:
            sensor.answers_ready()

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
        if self._idle():
            self._notify_drained()
        elif self._delay() == 0:
            self._commit()
        else:
            self._schedule()

    def _notify_drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)
