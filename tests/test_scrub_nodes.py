"""
Real twistd nodes whose stored rows were edited in their SQLite files while
they were stopped: the bad copies are found (by the check at start, by a
peer's refusal, by the scrub's pass), put in quarantine, repaired from a
peer that holds good copies, and never block the log for anyone.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pstore.schema import INDEX_MASK, rows_table

from .damage import edit
from .nodes import PEER_DB, SELF_DB, NodeProcess, wait_for
from .test_cluster import (
    CONVERGE,
    cluster_key,
    copy_of,
    feed,
    no_tracebacks,
    own,
    replicated_pair,
    sensor_lines,
)

# Positions edited in A's log of 3,000: the first far from its tail, which
# the check at start covers (its last 1,000 rows).
EDITED = (511, 1200, 1800, 2500, 2990)


class QuarantineTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def scrub_status(self, node: NodeProcess) -> dict:
        status = yield node.status()
        return status["scrub"]

    @inlineCallbacks
    def test_edited_rows_repaired(self):
        """
        Five rows edited in A's own table. A new node C peered with A only
        gets all 3,000 of A's readings, as A signed them: the first edited
        row, which C refuses, no longer blocks the ones after it. A logs
        each bad row and puts it in quarantine, gets a good copy from B,
        and its own table is whole again; its status counts five found and
        five repaired.
        """
        a, b, rows_a, _ = yield replicated_pair(self, 3000, 10)
        yield a.stop()
        # As another program would: in the table that stores the rows (the
        # view users query is read-only), the entry index in the key's low bits.
        table = rows_table(a.node_id)
        for index in EDITED:
            changed = edit(
                a.data_dir / SELF_DB,
                f"UPDATE {table} SET sensor_data = '99C', value = 99.0 WHERE key & {INDEX_MASK} = ?",
                (index,),
            )
            self.assertEqual(changed, 1)
        yield a.start()
        c = NodeProcess(self, secret_file=a.secret_file, peers=[a.peer_address])
        yield c.start()
        yield wait_for(
            lambda: copy_of(c, a) == rows_a, CONVERGE * 2,
            lambda: f"C to hold A's 3000 readings as signed (holds {len(copy_of(c, a))})",
        )
        yield wait_for(lambda: own(a) == rows_a, CONVERGE, "A's own table to be whole again")
        scrub = yield self.scrub_status(a)
        self.assertEqual(
            (scrub["found"], scrub["repaired"], scrub["quarantined"]), (len(EDITED), len(EDITED), 0)
        )
        log = a.log_text()
        for index in EDITED:
            self.assertIn(f"record {index} of log {a.node_id}/", log)
        self.assertIn("moved to its quarantine table", log)
        self.assertIn("with good copies from peer", log)
        no_tracebacks(self, a, b, c)

    @inlineCallbacks
    def test_pass_repairs_a_peer_copy(self):
        """
        A row of A's copy of B's log edited, far from the table's tail:
        nobody reads it, but the scrub's pass finds it, and A fetches a good
        copy from B.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=["--scrub-rate", "1000"])
        b = NodeProcess(self, secret_file=key)
        a.peers = [b.peer_address]
        yield b.start()
        yield feed(self, b, sensor_lines(2000, "b"))
        yield a.start()
        yield wait_for(lambda: len(copy_of(a, b)) == 2000, CONVERGE, "A to copy B's log")
        good = copy_of(a, b)
        yield a.stop()
        changed = edit(
            a.data_dir / PEER_DB,
            f"UPDATE {rows_table(b.node_id)} SET timestamp = '2026-01-01 00:00:00' "
            f"WHERE key & {INDEX_MASK} = 3",
        )
        self.assertEqual(changed, 1)
        yield a.start()
        yield wait_for(lambda: copy_of(a, b) == good, CONVERGE, "A's copy of B to be repaired")
        scrub = yield self.scrub_status(a)
        self.assertEqual((scrub["found"], scrub["repaired"]), (1, 1))
        self.assertGreaterEqual(scrub["checked"], 2000)
        self.assertIn(f"record 3 of log {b.node_id}/", a.log_text())
        self.assertIn("peer_sensor_data.db", a.log_text())
        no_tracebacks(self, a, b)
