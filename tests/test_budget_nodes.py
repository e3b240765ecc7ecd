"""
C{--max-disk} between real ``twistd -n p2pstore`` processes on loopback: a
node with a budget beside a peer that ingests far more than it, and its
own sensors past the budget.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pstore.disk import PEER_SHARE

from .nodes import SELF_DB, NodeProcess, send_lines, wait_for
from .test_ack_copies_nodes import lines_with_ids
from .test_cluster import CONVERGE, cluster_key, mesh, no_tracebacks, wait_links_up

BUDGET = 8 * 10**6
# What one transaction may add past a check of the sizes before it.
SLACK = 2 * 10**6


class BudgetTests(TestCase):
    timeout = 240

    @inlineCallbacks
    def test_peer_flood_and_own_budget(self):
        """
        B ingests far more than A's budget: A's copies of it stop at their
        share, B is told so (its entry for A says 'full'), and A's own
        sensors keep getting OK meanwhile. Then A's own readings fill the
        rest: they are answered ERR full past the budget, A stays within it,
        and every reading A answered OK is stored once.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=["--max-disk", "8MB"])
        b = NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        for part in range(8):
            yield send_lines(b.sensor_port, lines_with_ids(f"b{part}", 10_000), timeout=60)


        statuses = {}

        @inlineCallbacks
        def a_full_for_b():
            status = yield b.status()
            statuses["b"] = status
            [entry] = [e for e in status["peers"] if e["node_id"] == a.node_id]
            return entry["full"]

        yield wait_for(a_full_for_b, CONVERGE, lambda: f"B to be told A is full ({statuses})")
        status = yield a.status()
        disk = status["disk"]
        self.assertEqual(disk["budget_bytes"], BUDGET)
        self.assertLessEqual(disk["peer_bytes"], BUDGET * PEER_SHARE + SLACK, disk)
        mine = yield send_lines(a.sensor_port, lines_with_ids("own", 100))
        self.assertEqual([x.split(b" ")[0] for x in mine], [b"OK"] * 100)

        stored = [(int(x[3:]), f"own-{i}") for i, x in enumerate(mine)]
        refusal = None
        for part in range(100):
            lines = lines_with_ids(f"a{part}", 2000)
            answers = yield send_lines(a.sensor_port, lines, timeout=60)
            for line, answer in zip(lines, answers):
                if answer.startswith(b"OK "):
                    stored.append((int(answer[3:]), line.rsplit(b",", 1)[1].decode()))
                elif refusal is None:
                    refusal = answer
            if refusal is not None:
                break
        self.assertIsNotNone(refusal, "A never reached its budget")
        self.assertTrue(refusal.startswith(b"ERR full: this node's data takes "), refusal)
        self.assertIn(b"--max-disk 8.0 MB", refusal)
        status = yield a.status()
        self.assertLessEqual(status["disk"]["used_bytes"], BUDGET + SLACK, status["disk"])
        held = dict(a.query(SELF_DB, f"SELECT entry_index, reading_id FROM server_id_{a.node_id}"))
        self.assertEqual({i: held.get(i) for i, _ in stored}, dict(stored))
        no_tracebacks(self, a, b)
