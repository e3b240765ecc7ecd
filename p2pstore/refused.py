"""
Refused sensor lines on their way to the ``rejected_lines`` table, and
those held in memory after a disk error failed their commit.

Held lines are tried again in a transaction of their own, never with
readings (their bytes must not keep readings from a disk with a little
room again), only after a commit of readings succeeded (a broken disk would
otherwise mean a loop of failing transactions), at most every
``retry_interval``, and once more when the node stops. At most
``max_lines`` lines or ``max_bytes`` bytes are held; beyond that the oldest
are dropped and the log says so, so a broken disk cannot make them grow
without end.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from twisted.logger import Logger

from .lines import Rejected

MAX_LINES = 10000
MAX_BYTES = 4 * 1024 * 1024
RETRY_INTERVAL = 10.0


class RefusedLines:
    """
    The refused lines of one node not yet in ``rejected_lines``.

    @ivar count: lines refused since the node started.
    @ivar reasons: ... by the reason they were answered (``{reason: n}``).
    @ivar dropped: held lines given up on because too many were held.
    """

    log = Logger()

    def __init__(
        self,
        clock,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        retry_interval: float = RETRY_INTERVAL,
    ):
        self._clock = clock
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self.retry_interval = retry_interval
        self._new: list[Rejected] = []
        self._held: deque[Rejected] = deque()
        self._held_bytes = 0
        self._tried: Optional[float] = None
        self.retry_due = False
        self.count = 0
        self.reasons: dict[str, int] = {}
        self.dropped = 0

    @property
    def waiting(self) -> bool:
        """
        Are there lines refused since the last commit took them?
        """
        return bool(self._new)

    @property
    def held(self) -> int:
        """
        Lines held in memory because their commit failed.
        """
        return len(self._held)

    def add(self, rejected: Rejected) -> None:
        self._new.append(rejected)
        self.count += 1
        self.reasons[rejected.reason] = self.reasons.get(rejected.reason, 0) + 1

    def take(self) -> list[Rejected]:
        """
        The lines refused since the last commit, for the next one.
        """
        taken, self._new = self._new, []
        return taken

    def take_held(self) -> list[Rejected]:
        """
        The held lines, then those refused since (in the order they came),
        for a transaction of their own.
        """
        self.retry_due = False
        self._tried = self._clock.seconds()
        taken = list(self._held)
        taken.extend(self.take())
        self._held.clear()
        self._held_bytes = 0
        return taken

    def committed(self) -> None:
        """
        A commit of readings succeeded: the disk takes writes again, so the
        held lines are due, unless they were tried within the interval (a
        clock set back counts as past it).
        """
        if self._held and (
            self._tried is None
            or not 0 <= self._clock.seconds() - self._tried < self.retry_interval
        ):
            self.retry_due = True

    def stopping(self) -> None:
        """
        The node stops: the held lines get one more try.
        """
        if self._held:
            self.retry_due = True

    def failed(self, lines: list[Rejected]) -> None:
        """
        The commit of these lines failed: hold them, dropping the oldest
        held beyond the bounds.
        """
        self._held.extend(lines)
        self._held_bytes += sum(len(r.raw) for r in lines)
        dropped = 0
        while self._held and (
            len(self._held) > self._max_lines or self._held_bytes > self._max_bytes
        ):
            self._held_bytes -= len(self._held.popleft().raw)
            dropped += 1
        if dropped:
            self.dropped += dropped
            self.log.warn(
                "{dropped} refused lines are lost, not stored in rejected_lines "
                "({total} since start): commits keep failing and at most {most} "
                "lines ({bytes} bytes) are held to be tried again. Check the disk.",
                dropped=dropped,
                total=self.dropped,
                most=self._max_lines,
                bytes=self._max_bytes,
            )

    def held_stored(self, lines: list[Rejected]) -> None:
        self.log.info(
            "stored {count} refused lines held from failed commits in rejected_lines",
            count=len(lines),
        )

    def held_failed(self, failure, lines: list[Rejected], path: str) -> None:
        self.log.failure(
            "could not store {count} refused lines held from failed commits in "
            "{path}; they stay in memory and are tried again after a later commit "
            "succeeds (at most every {interval:g} s) and at stop. Check the disk "
            "(space, permissions).",
            failure,
            count=len(lines),
            interval=self.retry_interval,
            path=path,
        )
        # Nothing was held meanwhile: one transaction runs at a time.
        self.failed(lines)
