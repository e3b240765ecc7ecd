"""
A node whose data directory is on a real small filesystem (a tmpfs the test
mounts; the tests run as root) that fills up: it stays up, answers 'ERR
full', says so once, keeps every reading it answered OK, starts on a full
disk, and resumes by itself when space is freed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pstore.disk import FULL_DISK

from .nodes import SELF_DB, NodeProcess, send_lines
from .test_ack_copies_nodes import lines_with_ids
from .test_cluster import no_tracebacks

# The filesystem's size, and a file that takes part of it (freed later).
SIZE = "16m"
FILLER = 1024 * 1024
BATCH = 500


def mount_tmpfs(test_case, size: str) -> Path:
    """
    A tmpfs of ``size`` mounted for the test, unmounted after it.
    """
    where = Path(test_case.mktemp()).resolve()
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    test_case.addCleanup(subprocess.run, ["umount", "-l", str(where)], check=False)
    return where


def fill(path: Path, size: int = 0) -> None:
    """
    Write ``path`` until it is ``size`` bytes, or until the filesystem is full.
    """
    with open(path, "wb") as f:
        try:
            written = 0
            while not size or written < size:
                f.write(b"\0" * 65536)
                f.flush()
                written += 65536
        except OSError:
            pass


class DiskFullTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def fill_with_readings(self, node: NodeProcess, tag: str):
        """
        Send batches of readings until they are refused for lack of space.

        @return: the readings answered OK, and the first refusal.
        """
        stored, refusal = [], None
        for batch in range(200):
            lines = lines_with_ids(f"{tag}{batch}", BATCH)
            answers = yield send_lines(node.sensor_port, lines, timeout=30)
            for line, answer in zip(lines, answers):
                if answer.startswith(b"OK "):
                    self.assertIsNone(refusal, "an OK after an ERR full in the same fill")
                    stored.append((int(answer[3:]), line.rsplit(b",", 1)[1].decode()))
                elif refusal is None:
                    refusal = answer
            if refusal is not None:
                return stored, refusal
        self.fail("the disk never filled")

    @inlineCallbacks
    def test_full_disk(self):
        """
        The node answers 'ERR full: ...' once the filesystem is full, stays
        Running with /status saying so, logs it once, and resumes by itself
        when a file is deleted; after a restart on a disk filled to the
        last byte it comes up, refuses, and resumes again. Every reading
        answered OK is in the database, once.
        """
        where = mount_tmpfs(self, SIZE)
        filler = where / "filler"
        fill(filler, FILLER)
        node = NodeProcess(self, data_dir=where / "data")
        yield node.start()
        stored, refusal = yield self.fill_with_readings(node, "a")
        self.assertEqual(refusal, b"ERR " + FULL_DISK.encode())
        self.assertGreater(len(stored), 1000)
        status = yield node.status()
        self.assertEqual(status["state"], "Running")
        self.assertEqual(status["disk"]["full"], "the filesystem is full")
        self.assertGreater(status["disk"]["own_bytes"], 0)
        # More refusals, said once in the log.
        more = yield send_lines(node.sensor_port, lines_with_ids("refused", BATCH))
        self.assertEqual(set(more), {refusal})
        self.assertEqual(node.log_text().count("is full"), 1, node.log_text()[-2000:])

        filler.unlink()
        again = yield send_lines(node.sensor_port, lines_with_ids("room", 10))
        self.assertEqual([a.split(b" ")[0] for a in again], [b"OK"] * 10)
        stored += [(int(a[3:]), f"room-{i}") for i, a in enumerate(again)]
        self.assertIn("has room again", node.log_text())
        status = yield node.status()
        self.assertIs(status["disk"]["full"], False)

        yield node.stop()
        fill(where / "filler2")
        self.assertLess(os.statvfs(where).f_bavail, 2)
        # Without the reserve file SQLite could not open the databases.
        yield node.start()
        self.assertIn("deleted", node.log_text())
        status = yield node.status()
        self.assertEqual(status["state"], "Running")
        # Opening may have returned some space (a WAL checkpointed): take it.
        fill(where / "filler3")
        refused = yield send_lines(node.sensor_port, lines_with_ids("after", 5))
        self.assertEqual(set(refused), {refusal})
        (where / "filler2").unlink()
        (where / "filler3").unlink()
        resumed = yield send_lines(node.sensor_port, lines_with_ids("resumed", 5))
        self.assertEqual([a.split(b" ")[0] for a in resumed], [b"OK"] * 5)
        stored += [(int(a[3:]), f"resumed-{i}") for i, a in enumerate(resumed)]

        rows = node.query(SELF_DB, f"SELECT entry_index, reading_id FROM server_id_{node.node_id}")
        held = dict(rows)
        self.assertEqual(len(rows), len(held))
        self.assertEqual({i: held.get(i) for i, _ in stored}, dict(stored))
        no_tracebacks(self, node)
