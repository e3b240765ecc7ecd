"""
A running node (in this process, on the real reactor, with real SQLite
files and real sensor sockets) whose database stops taking writes for a
while, as a full disk would make it.

SQLite's ``max_page_count`` makes the writer's connection fail with
``database or disk is full`` exactly as a full disk does; raising it again
is the disk getting space back.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

from p2pstore.disk import FULL_DISK
from p2pstore.schema import SELF_DB
from p2pstore.node import RUNNING
from p2pstore.tap import Options, makeNode
from p2pstore.testing import free_port

from .nodes import KeepRunning, endpoint, send_lines, wait_for

READING = b"Temperature,39C,2026-11-28 10:00:00.%06d"


class FullDiskTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.data_dir = Path(self.mktemp()).resolve()
        self.sensor_port = free_port()
        options = Options()
        options.parseOptions(
            [
                "--data-dir", str(self.data_dir),
                "--sensor-port", endpoint(self.sensor_port),
                "--peer-port", endpoint(free_port()),
                "--status-port", endpoint(free_port()),
            ]
        )
        self.service = makeNode(options, reactor=reactor)
        self.service.reactor = keeper = KeepRunning(reactor)
        # Before starting: a listener that fails to start is stopped too.
        self.addCleanup(self.stop)
        self.service.startService()
        yield self.service._opening
        self.assertFalse(keeper.stopped, "the node's store could not open: see the log")
        self.assertEqual(self.service.node.state, RUNNING)

    def stop(self):
        if self.service.running:
            return self.service.stopService()

    def disk_full(self, full: bool, room: int = 0):
        """
        Make the node's writer fail as on a full disk (with ``room`` pages
        still free), or take writes again.
        """

        def limit(txn):
            (pages,) = txn.execute("PRAGMA page_count").fetchone()
            txn.execute(f"PRAGMA max_page_count = {pages + room if full else 2**30}")

        return self.service.node.store._pool.runInteraction(limit)

    def stored(self, sql: str) -> list:
        with closing(sqlite3.connect(self.data_dir / SELF_DB)) as db:
            return db.execute(sql).fetchall()

    @inlineCallbacks
    def test_refused_lines_kept_and_stop_says_what_was_not_stored(self):
        """
        While the disk is full, readings are answered ``ERR full: ...`` and
        the error log says once, without a traceback, that the disk is full
        and to free space; a refused line sent then is stored in
        rejected_lines once the disk takes writes again, and the stop says
        how many readings were not stored.
        """
        yield self.disk_full(True)
        lines = [READING % i for i in range(50)] + [b"bad line while full"]
        with capturedLogs() as events:
            answers = yield send_lines(self.sensor_port, lines)
        self.assertEqual(answers, [b"ERR " + FULL_DISK.encode()] * 50 + [b"ERR missing value"])
        self.assertEqual(self.flushLoggedErrors(sqlite3.OperationalError), [])
        texts = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(texts), 1, texts)
        self.assertIn("is full", texts[0])
        self.assertIn("Free space on that filesystem", texts[0])

        yield self.disk_full(False)
        answers = yield send_lines(self.sensor_port, [READING % 50])
        self.assertEqual(answers, [b"OK 1"])
        # In a transaction of their own, after that reading's.
        rejected = "SELECT reason, raw FROM rejected_lines"
        yield wait_for(lambda: self.stored(rejected), 10, "the refused line to be stored")
        self.assertEqual(self.stored(rejected), [("missing value", b"bad line while full")])

        with capturedLogs() as events:
            yield self.service.stopService()
        [last] = [e for e in events if "stopped;" in e.get("log_format", "")]
        self.assertEqual(last["log_level"], LogLevel.warn)
        self.assertIn("50 readings were answered 'ERR full'", formatEvent(last))

    @inlineCallbacks
    def test_held_lines_do_not_block_readings(self):
        """
        When the disk has room again for readings but not for the refused
        lines held from a failed commit, readings are stored all the same.
        """
        # One try of the held lines in this test, however slow the machine.
        self.patch(self.service.node.ingestor.refused, "retry_interval", 3600.0)
        yield self.disk_full(True)
        bad = [b"bad %d " % i + b"x" * 1000 for i in range(70)]
        yield send_lines(self.sensor_port, bad)
        ingestor = self.service.node.ingestor
        yield wait_for(lambda: ingestor.unsaved_rejected == 70, 10, "their commit to fail")
        self.flushLoggedErrors(sqlite3.OperationalError)

        # Room for a few pages: some readings, not 70 KB of refused lines.
        yield self.disk_full(True, room=4)
        answers = yield send_lines(self.sensor_port, [READING % i for i in range(3)])
        self.assertEqual(answers, [b"OK 1", b"OK 2", b"OK 3"])
        yield wait_for(lambda: self.flushLoggedErrors(sqlite3.OperationalError), 10,
                       "the held lines' own commit to fail")
        self.assertEqual(ingestor.unsaved_rejected, 70)
        answers = yield send_lines(self.sensor_port, [READING % 3])
        self.assertEqual(answers, [b"OK 4"])

        # Room at last: the stop's last try stores them.
        yield self.disk_full(False)
        yield self.service.stopService()
        self.assertEqual(self.stored("SELECT count(*) FROM rejected_lines"), [(70,)])

    @inlineCallbacks
    def test_stop_while_still_full(self):
        """
        A node stopped while its disk is still full stops (it does not wait
        for writes that cannot happen) and says how many refused lines it
        could not store.
        """
        yield self.disk_full(True)
        # More than SQLite's largest page (64 KiB) of them, so they cannot
        # fit in the free space of pages the file has already.
        bad = [b"bad %d " % i + b"x" * 1000 for i in range(70)]
        answers = yield send_lines(self.sensor_port, bad)
        self.assertEqual(answers, [b"ERR missing value"] * 70)
        # Refused lines are answered at once, and stored after.
        ingestor = self.service.node.ingestor
        yield wait_for(lambda: ingestor.unsaved_rejected == 70, 10, "their commit to fail")
        self.assertEqual(self.service.node.disk.full, "the filesystem is full")

        with capturedLogs() as events:
            yield self.service.stopService()
        # The stop tried them once more, in vain.
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        texts = [formatEvent(e) for e in events]
        self.assertTrue(
            any("70 refused lines are lost, not stored in rejected_lines" in t for t in texts), texts
        )
        self.assertEqual(self.stored("SELECT count(*) FROM rejected_lines"), [(0,)])
