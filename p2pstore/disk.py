"""
The disk under a node's databases: how much they take, how much room the
filesystem has, and whether a failed write means that the disk is full.

A full disk is a state the node lives through, not an error per commit: it
is logged once when writes start failing for lack of space (with what to
do) and once when they succeed again, and sensors are answered ``ERR full:
...`` meanwhile.

A node keeps a reserve file in its data directory (L{RESERVE_BYTES}). On a
disk full to the last byte SQLite cannot even open a database in WAL mode
(it must create the ``-shm`` file), so a node that starts on such a disk
deletes the reserve to open its databases, and refuses readings, without
trying to store them, until the filesystem has room for the reserve again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections import deque
from pathlib import Path
from typing import Optional

from twisted.logger import Logger
from twisted.python.failure import Failure

from .opening import PAGE_SIZE, WAL_BYTES

# The answer to readings that could not be stored for lack of space.
FULL_DISK = (
    "full: the disk holding this node's data is full; free space there, or send again "
    "later (the node resumes by itself)"
)


def is_full(failure: Failure) -> bool:
    """
    Whether a failed write failed for lack of space.
    """
    value = failure.value
    if isinstance(value, sqlite3.Error):
        return getattr(value, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "database or disk is full" in str(value)
        )
    return isinstance(value, OSError) and value.errno in (errno.ENOSPC, errno.EDQUOT)


# At most this share of --max-disk goes to copies of peers' logs; this
# node's own readings may use the whole budget.
PEER_SHARE = 0.5

# What a replicated record takes in the peer database, about (its row, its
# index entries, its WAL frame before a checkpoint): the records one
# transaction may add to a node with a budget are its room over this.
RECORD_BYTES = 400

# The reserve file's name in the data directory, and its size: room for
# the checkpoint of a full WAL (p2pstore.opening.WAL_BYTES), which a stop
# on a full disk may leave unwritten and which must go into the file
# before the WAL gives its space back.
RESERVE_FILE = "space.reserve"
RESERVE_BYTES = 4 * 1024 * 1024
# The databases' size is sampled this often (seconds), and the growth over
# the last SAMPLES samples (an hour) gives the days left.
SAMPLE_EVERY = 10.0
SAMPLES = 360
# The days left are estimated once the samples span this long (seconds).
MIN_SPAN = 60.0


def file_bytes(path: Path, wal_floor: int = 0) -> int:
    """
    What a database takes on disk: its file, its WAL and its shared memory;
    the WAL counted as at least ``wal_floor``.
    """
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            taken = os.stat(f"{path}{suffix}").st_blocks * 512
        except OSError:
            taken = 0
        total += max(taken, wal_floor) if suffix == "-wal" else taken
    return total


class Disk:
    """
    The databases of one node and the filesystem they are on.
    """

    log = Logger()

    def __init__(self, own_path: Path, peer_path: Path, clock, budget: Optional[int] = None):
        self._clock = clock
        # --max-disk: the most both databases may take, or None.
        self.budget = budget
        self.own_path = own_path
        self.peer_path = peer_path
        # Why writes fail now (a FULL_DISK-like reason), or None.
        self.full: Optional[str] = None
        self.full_since: Optional[float] = None
        # Writes refused for lack of space, since the start.
        self.full_failures = 0
        self.reserve = own_path.parent / RESERVE_FILE
        # The reserve was deleted to open the databases on a full disk.
        self.released = False
        # The bytes of free pages inside the own and the peer file, which
        # new rows take before the files grow (set by p2pstore.pruning).
        self.reusable = (0, 0)
        # Why --on-full evict-safe finds nothing to remove, while it does not.
        self.nothing_safe: Optional[str] = None
        # (time, bytes used) now and then, for the days left.
        self._samples: deque = deque(maxlen=SAMPLES)

    def prepare(self) -> None:
        """
        At start, before the databases open: release the reserve on a full
        disk, or make it when there is room.
        """
        free = self.free_bytes()
        if free is None:
            return
        if self.reserve.exists() and free < RESERVE_BYTES:
            self.reserve.unlink()
            self.released = True
            self.full = "the filesystem is full"
            self.full_since = self._clock.seconds()
            self.log.error(
                "the disk holding {path} is full ({free} bytes free): deleted {reserve} to open "
                "the databases. Readings are answered 'ERR full' until {room} bytes are free; "
                "then the node stores them again by itself. Free space on that filesystem.",
                path=str(self.own_path.parent),
                free=free,
                reserve=str(self.reserve),
                room=2 * RESERVE_BYTES,
            )
        elif not self.reserve.exists() and free >= 2 * RESERVE_BYTES:
            self._make_reserve()

    def _make_reserve(self) -> None:
        try:
            with open(self.reserve, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
                except OSError:
                    f.write(b"\0" * RESERVE_BYTES)
                os.fsync(f.fileno())
        except OSError as e:
            self.log.warn("could not make the reserve file {path}: {e}", path=str(self.reserve), e=e)
            self.reserve.unlink(missing_ok=True)

    def refusing(self) -> Optional[str]:
        """
        Why this node's own readings are refused without being tried (the
        answer after ``ERR``), or None: the reserve was released and there
        is not yet room to make it again, or the databases take the budget.
        """
        if self.released:
            if self._short_of_room():
                return FULL_DISK
            self.released = False
            self._make_reserve()
            self.wrote()
        if self.budget is not None:
            used = self.used_bytes()
            if used >= self.budget:
                why = f" ({self.nothing_safe})" if self.nothing_safe else ""
                return (
                    f"full: this node's data takes {size_text(used)} of its --max-disk "
                    f"{size_text(self.budget)}{why}; raise --max-disk, connect its peers, or "
                    "set --retain, then send again"
                )
        return None

    def peer_room(self) -> Optional[int]:
        """
        How many more bytes peers' copies may take (None: no budget).
        """
        if self.budget is None:
            return None
        own, peer = self._sizes()
        return max(min(int(self.budget * PEER_SHARE) - peer, self.budget - own - peer), 0)

    def peer_refusing(self) -> Optional[str]:
        """
        Why copies of peers' records are refused now, or None: the disk is
        full, or they take their share of the budget (L{PEER_SHARE}), or the
        databases take all of it.
        """
        if (self.full is not None or self.released) and self._short_of_room():
            return "its disk is full"
        if self.budget is None:
            return None
        own, peer = self._sizes()
        share = int(self.budget * PEER_SHARE)
        if peer >= share:
            return (
                f"peers' copies take {size_text(peer)}, their share of --max-disk "
                f"{size_text(self.budget)}"
            )
        if own + peer >= self.budget:
            return f"its data takes all of --max-disk {size_text(self.budget)}"
        return None

    def _sizes(self, wal_floor: int = 0) -> tuple[int, int]:
        # What the own and the peer database take now, without the free
        # pages inside them; each WAL counted as at least ``wal_floor``.
        own, peer = file_bytes(self.own_path, wal_floor), file_bytes(self.peer_path, wal_floor)
        return max(own - self.reusable[0], 0), max(peer - self.reusable[1], 0)

    def used_bytes(self) -> int:
        return sum(self._sizes())

    def near_full(self, share: float) -> bool:
        """
        Whether the data takes ``share`` of the budget, or the filesystem
        is full.
        """
        if (self.full is not None or self.released) and self._short_of_room():
            return True
        return self.budget is not None and self.used_bytes() >= share * self.budget

    def sample(self) -> None:
        """
        Note how much the databases take now, at most every SAMPLE_EVERY.
        """
        now = self._clock.seconds()
        if not self._samples or now - self._samples[-1][0] >= SAMPLE_EVERY:
            self._samples.append((now, self._lasting_bytes()))

    def _lasting_bytes(self) -> int:
        # What the databases take, each WAL counted as full: a WAL fills to
        # its checkpoint size once after a start (a clean stop cuts it
        # back) and then stays about that size, so its filling is no
        # growth to estimate the days left by. A few MB in the first
        # minutes would otherwise read as days left for a small disk.
        checkpoint = wal_limit(self.budget) or WAL_BYTES
        # Its frames are pages with a 24-byte header each, after a 32-byte one.
        return sum(self._sizes(wal_floor=checkpoint // PAGE_SIZE * (PAGE_SIZE + 24) + 32))

    def days_left(self) -> Optional[float]:
        """
        At the growth of the last hour, the days until the data takes the
        budget or the filesystem's room: None while that is unknown (less
        than a minute sampled) or the data is not growing.
        """
        if len(self._samples) < 2:
            return None
        (then, before), (now, lasting) = self._samples[0], self._samples[-1]
        if now - then < MIN_SPAN or lasting <= before:
            return None
        used = self.used_bytes()
        room = self.free_bytes()
        if self.budget is not None:
            room = self.budget - used if room is None else min(room, self.budget - used)
        if room is None:
            return None
        rate = (lasting - before) / (now - then)
        return round(max(room, 0) / rate / 86400, 2)

    def _short_of_room(self) -> bool:
        # Less free than the reserve needs twice over (or unknown).
        free = self.free_bytes()
        return free is None or free < 2 * RESERVE_BYTES

    def free_bytes(self) -> Optional[int]:
        try:
            stat = os.statvfs(self.own_path.parent)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def filled(self, what: str) -> None:
        """
        A write of ``what`` failed for lack of space.
        """
        self.full_failures += 1
        if self.full is not None:
            return
        self.full = "the filesystem is full"
        self.full_since = self._clock.seconds()
        self.log.error(
            "the disk holding {path} is full ({free} bytes free): {what} could not be stored. "
            "Sensors are answered 'ERR full' and peers send their records again later; the "
            "node stays up and resumes by itself once there is room. Free space on that "
            "filesystem.",
            path=str(self.own_path.parent),
            free=self.free_bytes(),
            what=what,
        )

    def wrote(self) -> None:
        """
        A write succeeded.
        """
        if self.full is None:
            return
        self.full = None
        self.full_since = None
        self.log.info(
            "the disk holding {path} has room again ({free} bytes free): storing readings",
            path=str(self.own_path.parent),
            free=self.free_bytes(),
        )

    def status(self) -> dict:
        own, peer = self._sizes()
        return {
            "used_bytes": own + peer,
            "own_bytes": own,
            "peer_bytes": peer,
            "free_bytes": self.free_bytes(),
            "budget_bytes": self.budget,
            "peer_share_bytes": int(self.budget * PEER_SHARE) if self.budget else None,
            "full": self.full or False,
            "full_since": self.full_since,
            "full_failures": self.full_failures,
            "days_left": self.days_left(),
        }


def size_text(size: int) -> str:
    """
    A size for people: ``12.0 MB``, ``512 kB``.
    """
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def wal_limit(budget: Optional[int]) -> Optional[int]:
    """
    The most each WAL file may keep under a disk budget: a sixteenth of it,
    from 256 KiB to 4 MiB (None without a budget: SQLite's defaults).
    """
    if budget is None:
        return None
    return min(max(budget // 16, 256 * 1024), 4 * 1024 * 1024)
