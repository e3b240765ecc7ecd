"""
Tests for C{p2pstore verify} (p2pstore.cli and p2pstore.verify), run as a
user runs it, on data directories made by real nodes: a good one passes,
an edited row, a deleted row and flipped bytes in the file each fail with
a line that says where and what to do, and a running node's directory is
refused.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore.schema import INDEX_BITS, rows_table
from p2pstore.verify import Progress

from .damage import edit, flip_page
from .nodes import PEER_DB, REPO, SELF_DB, NodeProcess
from .test_cluster import cluster_key, feed, log_rows, replicated_pair, sensor_lines

COMMAND_TIMEOUT = 60


def p2pstore(*args: str) -> subprocess.CompletedProcess:
    """
    Run ``python -m p2pstore ARGS`` from this checkout and collect its
    output and exit code.
    """
    return subprocess.run(
        [sys.executable, "-m", "p2pstore", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


# A row of one log in a rows table (schema version 5), by its key: the
# log's ordinal in the database's epochs table shifted past the entry index;
# for the parameters (origin, epoch, entry index).
ROW_OF_LOG = (
    f"key = ((SELECT ordinal FROM epochs WHERE origin = ? AND epoch = ?) << {INDEX_BITS}) | ?"
)


def digests(data_dir: Path) -> dict:
    """
    The SHA-256 of every file in the data directory, by name.
    """
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.iterdir())
        if path.is_file()
    }


class CommandLineTests(SynchronousTestCase):
    """
    The command's usage: help on each level, exit code 2 for a usage error.
    """

    def test_help(self):
        """
        C{p2pstore --help} lists the verify command; C{p2pstore verify --help}
        describes its argument and options; both exit 0.
        """
        top = p2pstore("--help")
        self.assertEqual(top.returncode, 0, top.stderr)
        self.assertIn("verify", top.stdout)
        verify = p2pstore("verify", "--help")
        self.assertEqual(verify.returncode, 0, verify.stderr)
        for text in ("DATA_DIR", "--secret-file", "--progress-every"):
            self.assertIn(text, verify.stdout)

    def test_usage_errors(self):
        """
        No command, an unknown command, a missing DATA_DIR, a directory
        that does not exist and a missing key file each exit 2 with a
        message on stderr that says what was wrong.
        """
        missing = Path(self.mktemp()).resolve()
        empty = Path(self.mktemp()).resolve()
        empty.mkdir()
        for args, says in [
            ((), "COMMAND"),
            (("frobnicate",), "invalid choice"),
            (("verify",), "DATA_DIR"),
            (("verify", str(missing)), "is not a directory"),
            (("verify", str(empty)), "--secret-file"),
            (("verify", "--progress-every", "0", str(empty)), "not at least 1"),
        ]:
            result = p2pstore(*args)
            self.assertEqual(result.returncode, 2, (args, result.stdout, result.stderr))
            self.assertIn(says, result.stderr, args)

    def test_progress_lines(self):
        """
        Progress names the table and the count, every N records, and also
        every few seconds when the records come slowly.
        """
        out = io.StringIO()
        now = [0.0]
        progress = Progress(out, every=100, seconds=5.0, clock=lambda: now[0])
        progress.start("t", 1000)
        for done in range(1, 251):
            progress.tick(done, 1000, "t")
        now[0] = 6.0
        progress.tick(251, 1000, "t")
        lines = out.getvalue().splitlines()
        self.assertEqual(
            lines,
            [
                "checking t: 1,000 records",
                "  t: 100 of 1,000 records checked",
                "  t: 200 of 1,000 records checked",
                "  t: 251 of 1,000 records checked",
            ],
        )


class VerifyTests(TestCase):
    """
    C{p2pstore verify} on the directories of real nodes.
    """

    timeout = 120

    @inlineCallbacks
    def stopped_pair(self):
        """
        Two nodes that replicated 300 and 100 readings, then stopped: A's
        data directory holds its own log and a copy of B's.
        """
        a, b, rows_a, rows_b = yield replicated_pair(self, 300, 100)
        yield a.stop()
        yield b.stop()
        self.key = str(a.secret_file)
        return a, b, rows_a, rows_b

    def verify(self, node: NodeProcess, *extra: str) -> subprocess.CompletedProcess:
        return p2pstore("verify", "--secret-file", self.key, *extra, str(node.data_dir))

    @inlineCallbacks
    def test_good_directory(self):
        """
        A stopped node's directory passes: exit 0, no problem lines, a
        summary counting every record of both databases, and progress on
        stderr. Not a byte of the files changes.
        """
        a, _, rows_a, rows_b = yield self.stopped_pair()
        before = digests(a.data_dir)
        result = self.verify(a, "--progress-every", "100")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(
            result.stdout.splitlines(),
            [f"checked {len(rows_a) + len(rows_b)} records in 2 logs of 2 databases: no problems"],
        )
        self.assertIn(f"checking {SELF_DB} server_id_{a.node_id}: 300 records", result.stderr)
        self.assertIn("200 of 300 records checked", result.stderr)
        self.assertEqual(digests(a.data_dir), before)

    @inlineCallbacks
    def test_edited_row(self):
        """
        A row whose sensor_data was changed with sqlite3 fails its checksum:
        exit 1, and one line naming the table, the log (origin/epoch) and the
        entry, saying what to do.
        """
        a, _, rows_a, _ = yield self.stopped_pair()
        table = f"server_id_{a.node_id}"
        epoch = rows_a[0][9]
        self.assertEqual(
            edit(
                a.data_dir / SELF_DB,
                f"UPDATE {rows_table(a.node_id)} SET sensor_data = '99C' WHERE {ROW_OF_LOG}",
                (a.node_id, epoch, 42),
            ),
            1,
        )
        result = self.verify(a, "--quiet")
        self.assertEqual(result.returncode, 1, result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(
            lines[0].startswith(f"{SELF_DB} {table} log {a.node_id}/{epoch} entry 42: checksum mismatch"),
            lines[0],
        )
        self.assertIn("quarantines the row and puts a peer's good copy in its place", lines[0])
        self.assertEqual(lines[1], "checked 400 records in 2 logs of 2 databases: 1 problem")
        self.assertEqual(result.stderr, "")

    @inlineCallbacks
    def test_deleted_row(self):
        """
        A deleted row of a peer's copy is a gap: exit 1 and a line naming the
        missing entry of that log in the peer database.
        """
        a, b, _, rows_b = yield self.stopped_pair()
        table = f"server_id_{b.node_id}"
        epoch = rows_b[0][9]
        self.assertEqual(
            edit(a.data_dir / PEER_DB, f"DELETE FROM {rows_table(b.node_id)} WHERE {ROW_OF_LOG}",
                 (b.node_id, epoch, 50)),
            1,
        )
        result = self.verify(a, "--quiet")
        self.assertEqual(result.returncode, 1, result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(
            lines[0],
            f"{PEER_DB} {table} log {b.node_id}/{epoch}: entry 50 missing (the log is held "
            f"from 1 to 100); move the file aside and start the node with its peers: it "
            f"fetches the records back (or restore the file from a backup)",
        )
        self.assertEqual(lines[-1], "checked 399 records in 2 logs of 2 databases: 1 problem")

    @inlineCallbacks
    def test_times_not_covering(self):
        """
        A peer's copy whose block index of times lost its entries (another
        program deleted them) is a problem: exit 1 and a line naming the
        table, how many rows it misses and the first of them, and saying
        that reads of a time range would leave them out.
        """
        a, b, _, rows_b = yield self.stopped_pair()
        table = f"server_id_{b.node_id}"
        epoch = rows_b[0][9]
        self.assertGreater(edit(a.data_dir / PEER_DB, f"DELETE FROM {table}_times", ()), 0)
        result = self.verify(a, "--quiet")
        self.assertEqual(result.returncode, 1, result.stdout)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(
            lines[0].startswith(
                f"{PEER_DB} {table}_times: does not cover 100 rows (the first log "
                f"{b.node_id}/{epoch} entry 1): reads of a time range would leave them out; "
                f"move the file aside"
            ),
            lines[0],
        )
        self.assertEqual(lines[1], "checked 400 records in 2 logs of 2 databases: 1 problem")

    @inlineCallbacks
    def test_flipped_bytes(self):
        """
        64 bytes flipped in a page of the readings table: SQLite's integrity
        check fails, and verify says so (exit 1), naming the file.
        """
        a, _, _, _ = yield self.stopped_pair()
        path = a.data_dir / SELF_DB
        flip_page(path, rows_table(a.node_id))
        before = digests(a.data_dir)
        result = self.verify(a, "--quiet")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn(f"{SELF_DB}: integrity check: ", result.stdout)
        self.assertIn("move the file aside", result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(digests(a.data_dir), before)

    @inlineCallbacks
    def test_wrong_key(self):
        """
        Checked with another cluster's key, every record fails, and the
        summary asks whether the key is this cluster's.
        """
        a, _, _, _ = yield self.stopped_pair()
        self.key = str(cluster_key(self))
        result = self.verify(a, "--quiet")
        self.assertEqual(result.returncode, 1)
        self.assertIn("every record failed its checksum: is ", result.stdout)
        self.assertIn("more like the above", result.stdout)

    @inlineCallbacks
    def test_running_node_refused(self):
        """
        A directory a running node holds is refused (exit 2), naming the
        node's pid, and the node goes on running and storing readings.
        """
        node = NodeProcess(self)
        yield node.start()
        result = p2pstore("verify", str(node.data_dir))
        self.assertEqual(result.returncode, 2, result.stdout)
        self.assertIn(f"in use by a running p2pstore node (pid {node.pid})", result.stderr)
        self.assertIn("stop it first", result.stderr)
        self.assertEqual(result.stdout, "")
        yield feed(self, node, sensor_lines(5, "after"))
        self.assertEqual(len(log_rows(node, SELF_DB, node.node_id)), 5)
        yield node.stop()
        result = p2pstore("verify", "--quiet", str(node.data_dir))
        self.assertEqual(result.returncode, 0, result.stdout)
