"""
A real twistd node started on a database a failing disk damaged: SQLite's
quick_check finds it, the file is moved aside, and the readings come back
from the peers, as after a lost database.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pstore.schema import rows_table

from .damage import flip_page
from .nodes import PEER_DB, SELF_DB, NodeProcess, wait_for
from .test_cluster import (
    CONVERGE,
    copy_of,
    epochs,
    feed,
    no_tracebacks,
    own,
    replicated_pair,
    sensor_lines,
    wait_identical,
)


def damaged_files(node: NodeProcess, name: str) -> list:
    return sorted(p.name for p in node.data_dir.iterdir() if p.name.startswith(name + ".damaged-"))


class DamagedDatabaseTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def state_is(self, node: NodeProcess, state: str):
        status = yield node.status()
        return status["state"] == state

    @inlineCallbacks
    def test_own_database(self):
        """
        A's own database with flipped bytes in its readings table: A moves
        it aside, says so in its log (what, where, what next) and in
        /status, starts a new epoch, and gets every earlier reading back
        from B; the damaged file is kept.
        """
        a, b, rows_a, _ = yield replicated_pair(self, 2000, 10)
        yield a.stop()
        flip_page(a.data_dir / SELF_DB, rows_table(a.node_id))

        yield a.start()
        log = a.log_text()
        self.assertIn(f"{a.data_dir / SELF_DB} is damaged (", log)
        self.assertIn("fetched back from its peers", log)
        [moved] = damaged_files(a, SELF_DB)
        self.assertIn(f"moved it aside to {a.data_dir / moved}", log)
        status = yield a.status()
        [entry] = status["damaged_files"]
        self.assertEqual(entry["moved_to"], str(a.data_dir / moved))

        answers = yield feed(self, a, sensor_lines(5, "new"))
        self.assertEqual(answers[-1], b"OK 5")
        old_epoch = epochs(rows_a)[0]
        yield wait_for(
            lambda: [row for row in own(a) if row[9] == old_epoch] == rows_a, CONVERGE,
            "A to get its 2000 earlier readings back from B",
        )
        yield wait_for(lambda: self.state_is(a, "Running"), CONVERGE, "A to be Running")
        yield wait_identical(b, a)
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_peer_database(self):
        """
        A's copy of B's readings damaged: moved aside, and fetched again
        from B whole.
        """
        a, b, _, rows_b = yield replicated_pair(self, 10, 2000)
        yield a.stop()
        flip_page(a.data_dir / PEER_DB, rows_table(b.node_id))

        yield a.start()
        self.assertEqual(len(damaged_files(a, PEER_DB)), 1)
        self.assertIn("fetched again from the peers that hold them", a.log_text())
        yield wait_for(lambda: copy_of(a, b) == rows_b, CONVERGE, "A to hold B's readings again")
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_alone(self):
        """
        A node without peers on a damaged own database still starts,
        Running on an empty log, and its error says its readings are only
        in the damaged file now.
        """
        a = NodeProcess(self)
        yield a.start()
        yield feed(self, a, sensor_lines(2000, "a"))
        yield a.stop()
        flip_page(a.data_dir / SELF_DB, rows_table(a.node_id))
        status = yield a.start()
        self.assertEqual(status["state"], "Running")
        self.assertIn("its readings are only in the damaged file now", a.log_text())
        self.assertEqual(own(a), [])
        answers = yield feed(self, a, sensor_lines(3, "new"))
        self.assertEqual(answers[-1], b"OK 3")
