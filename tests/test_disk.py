"""
Tests for p2pstore.disk: telling a full disk from other failures, the
reserve file on a real small filesystem, and saying a full disk once.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.disk import RESERVE_BYTES, RESERVE_FILE, SAMPLE_EVERY, Disk, is_full

from .test_disk_full_nodes import fill, mount_tmpfs


def failure(exception: Exception) -> Failure:
    try:
        raise exception
    except Exception:
        return Failure()


class IsFullTests(SynchronousTestCase):
    def test_full(self):
        """
        SQLite's 'database or disk is full', ENOSPC and EDQUOT are a full disk.
        """
        self.assertTrue(is_full(failure(sqlite3.OperationalError("database or disk is full"))))
        self.assertTrue(is_full(failure(OSError(errno.ENOSPC, "No space left on device"))))
        self.assertTrue(is_full(failure(OSError(errno.EDQUOT, "Disk quota exceeded"))))

    def test_not_full(self):
        """
        Other failures are not: they keep their own answer and log.
        """
        self.assertFalse(is_full(failure(sqlite3.OperationalError("database is locked"))))
        self.assertFalse(is_full(failure(OSError(errno.EACCES, "Permission denied"))))
        self.assertFalse(is_full(failure(ValueError("database or disk is full"))))


class DiskTests(SynchronousTestCase):
    def disk(self, size: str = "12m") -> Disk:
        self.where = mount_tmpfs(self, size)
        self.clock = Clock()
        return Disk(self.where / "self_sensor_data.db", self.where / "peer_sensor_data.db", self.clock)

    def test_days_left_ignore_the_wal_filling(self):
        """
        A WAL filling up to its checkpoint size after a start is no growth:
        the days left come from the database file's growth alone, and a
        WAL past its checkpoint size (a checkpoint held back) counts.
        """
        disk = self.disk("64m")
        own = disk.own_path
        wal = own.with_name(own.name + "-wal")
        own.write_bytes(b"\0" * 1_000_000)
        for minute in range(3):
            # 1 MB of WAL a minute, a few KB of file.
            wal.write_bytes(b"\0" * (1_000_000 * (minute + 1)))
            with own.open("ab") as f:
                f.write(b"\0" * 4096)
            disk.sample()
            self.clock.advance(SAMPLE_EVERY * 6)
        disk.sample()
        days = disk.days_left()
        room = disk.free_bytes()
        # About 4 KB a minute: years, not the days 1 MB a minute would give.
        self.assertGreater(days, room / (8192 / 60) / 86400 * 0.5)
        wal.write_bytes(b"\0" * 20_000_000)
        self.clock.advance(SAMPLE_EVERY * 6)
        disk.sample()
        self.assertLess(disk.days_left(), 1)

    def test_reserve_made_when_room(self):
        """
        At start with room, the reserve file is made, taking its space.
        """
        disk = self.disk()
        before = disk.free_bytes()
        disk.prepare()
        self.assertEqual(os.stat(self.where / RESERVE_FILE).st_size, RESERVE_BYTES)
        self.assertLessEqual(disk.free_bytes(), before - RESERVE_BYTES)
        self.assertFalse(disk.refusing())

    def test_released_on_a_full_disk(self):
        """
        At start on a full disk the reserve is deleted, the disk is full in
        status, and writes are refused without being tried until there is
        room for the reserve twice over; then it is made again and the
        return of room logged.
        """
        disk = self.disk()
        disk.prepare()
        fill(self.where / "filler")
        with capturedLogs() as events:
            disk.prepare()
        self.assertFalse((self.where / RESERVE_FILE).exists())
        self.assertEqual(disk.status()["full"], "the filesystem is full")
        self.assertTrue(any("deleted" in formatEvent(e) for e in events))
        self.assertTrue(disk.refusing())
        os.truncate(self.where / "filler", 0)
        with capturedLogs() as events:
            self.assertFalse(disk.refusing())
        self.assertTrue((self.where / RESERVE_FILE).exists())
        self.assertIs(disk.status()["full"], False)
        self.assertTrue(any("room again" in formatEvent(e) for e in events))

    def test_full_said_once(self):
        """
        Many writes failing for lack of space log one line; the first that
        succeeds logs one more; status counts the failures.
        """
        disk = self.disk()
        with capturedLogs() as events:
            for _ in range(5):
                disk.filled("500 readings")
            disk.wrote()
            disk.wrote()
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len([line for line in lines if "is full" in line]), 1, lines)
        self.assertEqual(len([line for line in lines if "room again" in line]), 1, lines)
        self.assertEqual(disk.status()["full_failures"], 5)
