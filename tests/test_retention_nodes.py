"""
C{--retain} and C{--min-copies} between real ``twistd -n p2pstore``
processes on loopback: a node keeps its own readings until a peer holds
them, prunes them once one does, a node that joins after a prune is told
what is gone, and a node killed while it prunes finishes after a restart.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from .nodes import PEER_DB, SELF_DB, ChildProcess, NodeProcess, hold_for, wait_for
from .test_ack_copies_nodes import lines_with_ids
from .test_cluster import (
    CONVERGE,
    cluster_key,
    copy_of,
    feed,
    mesh,
    no_tracebacks,
    own,
    sensor_lines,
    wait_identical,
    wait_links_up,
)

RETAIN = ["--retain", "5s", "--min-copies", "1"]
# Retention (5 s), plus a mark interval (1 s), plus the pruner's step (1 s),
# plus a loaded machine's slack.
PRUNE_WITHIN = 15.0


def count_of(node: NodeProcess, db_name: str, origin: str) -> int:
    """
    How many rows ``node`` holds of ``origin``'s readings in ``db_name`` (0
    when the table does not exist yet).
    """
    try:
        [(count,)] = node.query(db_name, f"SELECT count(*) FROM server_id_{origin}")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return 0
        raise
    return count


def positions(node: NodeProcess, db_name: str, origin: str) -> dict:
    """
    ``{epoch: (first_index, last_index)}`` of ``origin``'s logs in ``db_name``.
    """
    try:
        rows = node.query(
            db_name,
            "SELECT epoch, first_index, last_index FROM log_positions WHERE origin = ?",
            (origin,),
        )
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
    return {epoch: (first, last) for epoch, first, last in rows}


def own_position(node: NodeProcess) -> tuple:
    """
    ``(epoch, first_index, last_index)`` of the node's own (single) log.
    """
    found = positions(node, SELF_DB, node.node_id)
    if len(found) != 1:
        raise AssertionError(f"expected one own log on {node.node_id}, found {found}")
    [(epoch, (first, last))] = found.items()
    return epoch, first, last


def pruned_rows(node: NodeProcess, db_name: str) -> list[tuple]:
    """
    ``(origin, epoch, first_index, last_index, reason)`` of every range in
    ``db_name``'s ``pruned`` table, oldest first.
    """
    return node.query(
        db_name, "SELECT origin, epoch, first_index, last_index, reason FROM pruned ORDER BY id"
    )


def retention_count(status: dict) -> int:
    """
    The records /status says were pruned for retention.
    """
    return status["disk"]["pruned"]["records"].get("retention", 0)


def first_index_of(node: NodeProcess, db_name: str, origin: str) -> int:
    found = positions(node, db_name, origin)
    return max((first for first, _ in found.values()), default=1)


class RetentionTests(TestCase):
    """
    Nodes with --retain, and their peers.
    """

    timeout = 240

    @inlineCallbacks
    def test_retain_prunes_only_what_a_peer_holds(self):
        """
        A node alone keeps its own readings past --retain, since no other
        node holds them (--min-copies 1): nothing acknowledged may go. Once
        a peer holds them it prunes its old ones (its table shrinks, its
        log starts after 1, /status counts them as retention), while the
        peer, which has no --retain, still holds every one: the cluster
        loses nothing, and replication goes on after the prune.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        yield a.start()
        yield feed(self, a, sensor_lines(200, "a"))
        originals = own(a)
        self.assertEqual([row[0] for row in originals], list(range(1, 201)))

        # Well past --retain, and nobody holds them: all kept.
        yield hold_for(
            lambda: count_of(a, SELF_DB, a.node_id) == 200,
            8.0,
            "A holding all of its 200 readings with no peer",
        )
        status = yield a.status()
        self.assertEqual(status["disk"]["pruned"]["retain_s"], 5.0)
        self.assertEqual(status["disk"]["pruned"]["min_copies"], 1)
        self.assertEqual(retention_count(status), 0, status["disk"]["pruned"])
        self.assertEqual(own_position(a)[1], 1)

        b = NodeProcess(self, secret_file=key, peers=[a.peer_address])
        yield b.start()
        # B's copy equals A's original (A may prune as soon as B holds it)...
        yield wait_for(
            lambda: copy_of(b, a) == originals,
            CONVERGE,
            lambda: f"B to hold A's 200 readings as A stored them ({count_of(b, PEER_DB, a.node_id)})",
        )

        # ...and then A prunes its old ones.
        seen = []

        def a_pruned():
            seen[:] = [count_of(a, SELF_DB, a.node_id), own_position(a)]
            return seen[0] < 200 and seen[1][1] > 1

        yield wait_for(
            a_pruned, PRUNE_WITHIN, lambda: f"A to prune its own readings (count, log: {seen})"
        )
        status = yield a.status()
        self.assertGreater(retention_count(status), 0, status["disk"]["pruned"])
        epoch, first, last = own_position(a)
        self.assertEqual(last, 200)
        self.assertEqual(count_of(a, SELF_DB, a.node_id), last - first + 1)
        [entry] = [e for e in status["logs"] if e["origin"] == a.node_id]
        self.assertEqual((entry["epoch"], entry["last"]), (epoch, 200))
        self.assertGreater(entry["first"], 1)
        ranges = [r for r in pruned_rows(a, SELF_DB) if r[0] == a.node_id]
        self.assertTrue(ranges, "A's pruned table has no range of its own log")
        self.assertEqual(ranges[0][2:], (1, ranges[0][3], "retention"))

        # B still holds every reading, and the two hold them all between them.
        self.assertEqual(copy_of(b, a), originals)
        self.assertEqual(positions(b, PEER_DB, a.node_id), {epoch: (1, 200)})
        held = {row[0]: row for row in own(a)}
        held.update((row[0], row) for row in copy_of(b, a))
        self.assertEqual([held[i] for i in sorted(held)], originals)

        # Replication goes on past the pruned range.
        yield feed(self, a, sensor_lines(10, "a", start=200))
        yield wait_for(
            lambda: count_of(b, PEER_DB, a.node_id) == 210, CONVERGE, "B to get A's 10 new readings"
        )
        self.assertEqual([row[0] for row in copy_of(b, a)], list(range(1, 211)))
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_old_readings_all_go_when_the_log_goes_quiet(self):
        """
        Readings stored more than --retain ago are pruned (up to a mark
        interval late, never early): a node fed two quick batches, then
        nothing, prunes both batches once its peer holds them, not only
        the first one.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        b = NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        # Two transactions within the mark interval (1 s), then a quiet log.
        yield feed(self, a, sensor_lines(100, "q"))
        yield feed(self, a, sensor_lines(100, "q", start=100))
        yield wait_identical(b, a)
        seen = []

        def all_pruned():
            seen[:] = [own_position(a), a.query(SELF_DB, "SELECT * FROM log_marks")]
            return seen[0][1] == 201

        yield wait_for(
            all_pruned,
            PRUNE_WITHIN + 5,
            lambda: f"A to prune all 200 of its readings (log (epoch, first, last), "
            f"log_marks: {seen})",
        )
        self.assertEqual(count_of(a, SELF_DB, a.node_id), 0)
        self.assertEqual(count_of(b, PEER_DB, a.node_id), 200)
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_peer_joining_after_prune(self):
        """
        A node that joins after its peers pruned gets what is still held
        and the new readings, records the range it can no longer get as
        'not held by peer <id>: retention', shows the log starting after
        it in /status, and logs no error.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        b = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        yield feed(self, a, sensor_lines(200, "a"))
        yield feed(self, b, sensor_lines(100, "b"))
        yield wait_identical(b, a)
        yield wait_identical(a, b)
        seen = []

        def both_pruned():
            seen[:] = [
                first_index_of(a, SELF_DB, a.node_id),
                first_index_of(b, PEER_DB, a.node_id),
            ]
            return seen[0] > 1 and seen[1] > 1

        def why():
            return (
                f"A and B to prune A's log (first indexes on A, on B: {seen}; "
                f"A's marks {a.query(SELF_DB, 'SELECT * FROM log_marks')}, "
                f"A's pruned {pruned_rows(a, SELF_DB)}, "
                f"B's pruned {b.query(PEER_DB, 'SELECT * FROM pruned')})"
            )

        # Both nodes have the same --retain: each prunes A's log about 5 s
        # after it stored it. Given three times that, A must have pruned its
        # own too, whichever of the two pruned first.
        yield wait_for(both_pruned, 3 * PRUNE_WITHIN, why)
        yield self.check_joiner(key, a, b)

    @inlineCallbacks
    def test_peer_joining_after_the_origin_pruned(self):
        """
        As test_peer_joining_after_prune, with only the origin A on
        --retain (its peer B keeps everything, so A's own readings are
        pruned once B holds them): a node C that joins A afterwards is told
        what A no longer holds, records it, and gets the new readings.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        b = NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        yield feed(self, a, sensor_lines(200, "a"))
        yield wait_identical(b, a)
        yield wait_for(
            lambda: first_index_of(a, SELF_DB, a.node_id) > 1,
            PRUNE_WITHIN,
            "A to prune its own log once B holds it",
        )
        yield self.check_joiner(key, a, b)

    @inlineCallbacks
    def check_joiner(self, key, a: NodeProcess, b: NodeProcess):
        """
        Start a node C peered with A, which pruned its own log; feed A 5
        new readings; check what C holds, records and shows of A's log.
        """
        epoch, a_first, _ = own_position(a)

        c = NodeProcess(self, secret_file=key, peers=[a.peer_address])
        yield c.start()
        yield wait_links_up(c, [a])
        new = yield feed(self, a, sensor_lines(5, "new", start=200))
        self.assertEqual(new, [b"OK %d" % i for i in range(201, 206)])
        yield wait_for(
            lambda: {201, 202, 203, 204, 205} <= {row[0] for row in copy_of(c, a)},
            CONVERGE,
            lambda: f"C to get A's 5 new readings (it holds {[r[0] for r in copy_of(c, a)]})",
        )
        # What C holds of A is what A held, row for row.
        a_rows = {row[0]: row for row in own(a)}
        for row in copy_of(c, a):
            if row[0] in a_rows:
                self.assertEqual(row, a_rows[row[0]])

        gone = [r for r in pruned_rows(c, PEER_DB) if r[0] == a.node_id]
        self.assertTrue(gone, f"C's pruned table has no range of A's log: {pruned_rows(c, PEER_DB)}")
        origin, gone_epoch, first, last, reason = gone[0]
        self.assertEqual((gone_epoch, first), (epoch, 1))
        self.assertGreaterEqual(last, a_first - 1)
        self.assertTrue(reason.startswith("not held by peer"), reason)
        self.assertEqual(reason, f"not held by peer {a.node_id}: retention")

        status = yield c.status()
        [entry] = [e for e in status["logs"] if e["origin"] == a.node_id]
        self.assertEqual(entry["epoch"], epoch)
        self.assertGreater(entry["first"], 1)
        self.assertEqual(entry["last"], 205)
        self.assertEqual(entry["held"], count_of(c, PEER_DB, a.node_id))
        c_first, c_last = positions(c, PEER_DB, a.node_id)[epoch]
        self.assertEqual(c_last, 205)
        self.assertEqual(c_last - c_first + 1, count_of(c, PEER_DB, a.node_id))
        not_held = status["disk"]["pruned"]["records"]
        self.assertGreater(not_held.get("not held by peer " + a.node_id, 0), 0, not_held)
        self.assertNotIn("Traceback", c.log_text())
        no_tracebacks(self, a, b, c)

    @inlineCallbacks
    def test_origin_prunes_after_its_peer_pruned_its_copy(self):
        """
        A node's --retain bounds what it keeps of its own readings once
        they have been on a peer: with A on --retain 10s and its peer B on
        --retain 5s, B prunes its copy of A's readings first (it held them,
        so they reached another node), and A prunes its own when they are
        10 s old instead of keeping them for ever.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=["--retain", "10s", "--min-copies", "1"])
        b = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        yield feed(self, a, sensor_lines(200, "a"))
        yield wait_for(
            lambda: count_of(b, PEER_DB, a.node_id) == 200, CONVERGE, "B to hold A's 200 readings"
        )
        yield wait_for(
            lambda: first_index_of(b, PEER_DB, a.node_id) == 201,
            PRUNE_WITHIN,
            "B to prune its copy of A's readings after 5 s",
        )
        seen = []

        @inlineCallbacks
        def a_pruned():
            status = yield a.status()
            seen[:] = [own_position(a), status["disk"]["pruned"]]
            return seen[0][1] > 1

        yield wait_for(
            a_pruned,
            PRUNE_WITHIN + 10,
            lambda: f"A (--retain 10s) to prune its own readings, which B held and pruned "
            f"(A's log (epoch, first, last) and disk.pruned: {seen})",
        )
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_kill_during_prune_resumes(self):
        """
        A node killed with -9 while it prunes tens of thousands of its own
        readings goes on after a restart: it prunes every old reading, its
        log position still matches its rows (one row per index from
        first_index to last_index), its peer still holds everything, and
        'p2pstore verify' finds nothing wrong after a clean stop.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=RETAIN)
        b = NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        parts, each = 5, 10_000
        for part in range(parts):
            answers = yield feed(self, a, lines_with_ids(f"k{part}", each), timeout=60)
        total = parts * each
        self.assertEqual(answers[-1], b"OK %d" % total)
        # One more reading a mark interval later, so that a mark covers
        # every one of the bulk (see test_old_readings_all_go_when_the_log_goes_quiet).
        yield deferLater(reactor, 1.2, lambda: None)
        yield feed(self, a, lines_with_ids("tail", 1))
        total += 1
        yield wait_for(
            lambda: count_of(b, PEER_DB, a.node_id) == total,
            CONVERGE,
            lambda: f"B to hold all {total} of A's readings ({count_of(b, PEER_DB, a.node_id)})",
        )

        seen = []

        def pruning():
            seen[:] = [own_position(a)]
            return seen[0][1] > 1

        yield wait_for(
            pruning, PRUNE_WITHIN, lambda: f"A to start pruning ({seen})", interval=0.005
        )
        code = yield a.kill()
        self.assertEqual(code, -signal.SIGKILL)
        epoch, first, last = own_position(a)
        # Whether the kill came mid-prune, for the failure messages.
        at_kill = f"at the kill A's log was {first}..{last}"
        self.assertEqual(count_of(a, SELF_DB, a.node_id), last - first + 1, at_kill)

        yield a.start()
        seen = []

        def finished():
            seen[:] = [own_position(a), count_of(a, SELF_DB, a.node_id)]
            return seen[0][1] == total + 1

        yield wait_for(
            finished,
            PRUNE_WITHIN + 15,
            lambda: f"A to prune all {total} readings after its restart ({at_kill}; "
            f"now (epoch, first, last), rows: {seen})",
        )
        epoch_now, first, last = own_position(a)
        self.assertEqual((epoch_now, last), (epoch, total))
        self.assertEqual(count_of(a, SELF_DB, a.node_id), last - first + 1)
        ranges = [r for r in pruned_rows(a, SELF_DB) if r[0] == a.node_id]
        covered = sorted((r[2], r[3]) for r in ranges)
        self.assertEqual(covered[0][0], 1, ranges)
        for (_, end), (start, _) in zip(covered, covered[1:]):
            self.assertEqual(start, end + 1, f"pruned ranges overlap or leave a hole: {ranges}")
        self.assertEqual(covered[-1][1], total, ranges)
        self.assertEqual(count_of(b, PEER_DB, a.node_id), total)

        code = yield a.stop()
        self.assertEqual(code, -signal.SIGTERM)
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        verify = ChildProcess(
            self,
            [sys.executable, "-m", "p2pstore", "verify", "--quiet", "--secret-file", str(key),
             str(a.data_dir)],
            cwd,
            "p2pstore verify",
        )
        code = yield verify.wait_exit(120)
        self.assertEqual(code, 0, verify.output)
        no_tracebacks(self, a, b)
