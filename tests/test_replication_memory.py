"""
Tests for replication (p2pstore.replication) between nodes joined in
memory: two or three nodes, each a Replicator on an in-memory store, linked
by real peer protocols over twisted.test.iosim on one task.Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.peer import PING_INTERVAL
from p2pstore.sending import RETRY_DELAY

from .replication_fakes import A, B, C, EPOCH_A, EPOCHS, SIGNER, Cluster, FakeStore, MemoryNode


def holds(node: MemoryNode, origin: MemoryNode) -> bool:
    """
    Does ``node`` hold every record of ``origin``'s own log, identical?
    """
    log = origin.store.log(origin.node_id, EPOCHS[origin.node_id])
    return node.store.log(origin.node_id, EPOCHS[origin.node_id]) == log


class InMemoryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.cluster = Cluster(self.clock)

    def node(self, node_id: str, readings: int) -> MemoryNode:
        node = MemoryNode(node_id, self.clock, FakeStore(node_id, EPOCHS[node_id]))
        if readings:
            node.store.append_own(readings)
        node.replicator.opened(node.store.positions(), False)
        return node

    def ingest(self, node: MemoryNode, count: int) -> list[tuple]:
        added = node.store.append_own(count)
        node.replicator.committed(node.node_id, EPOCHS[node.node_id], added)
        return added

    def assertHoldsChecked(self, node: MemoryNode, origin: MemoryNode) -> None:
        """
        ``node`` holds ``origin``'s whole log, each record checking against
        the cluster key and identical to the origin's, checksum included.
        """
        held = node.store.log(origin.node_id, EPOCHS[origin.node_id])
        self.assertEqual(SIGNER.valid_prefix(origin.node_id, EPOCHS[origin.node_id], held), len(held))
        self.assertEqual(held, origin.store.log(origin.node_id, EPOCHS[origin.node_id]))


class InMemoryTests(InMemoryTestCase):
    """
    Real peer protocols, dialled and accepted, joined in memory.
    """

    def test_two_nodes_converge(self):
        """
        Two linked nodes end up each holding the other's readings, every
        record checking; a reading taken afterwards reaches the other node
        at once, with no timer.
        """
        a, b = self.node(A, 45), self.node(B, 17)
        self.cluster.link(a, b)
        self.cluster.run_until(lambda: holds(a, b) and holds(b, a))
        self.assertHoldsChecked(a, b)
        self.assertHoldsChecked(b, a)
        self.ingest(a, 3)
        self.cluster.flush()
        self.assertHoldsChecked(b, a)
        self.assertEqual(b.peer(A)["received"], 48)
        self.assertEqual(a.peer(B)["sent"], 48)
        self.assertEqual(b.peer(A)["sent"], 17)
        self.assertEqual(a.peer(B)["lag"], {})
        self.assertEqual(b.peer(A)["rejected"], 0)

    def test_idle_link_keeps_peers_seen(self):
        """
        Over an idle link only PING and PONG pass, and each node's
        last_seen of the other keeps up with them, within a PING_INTERVAL.
        """
        a, b = self.node(A, 3), self.node(B, 0)
        self.cluster.link(a, b)
        self.cluster.run_until(lambda: holds(b, a))
        for _ in range(100):
            self.clock.advance(PING_INTERVAL)
            self.cluster.flush()
        now = self.clock.seconds()
        self.assertTrue(a.peer(B)["connected"])
        self.assertGreaterEqual(a.peer(B)["last_seen"], now - PING_INTERVAL)
        self.assertGreaterEqual(b.peer(A)["last_seen"], now - PING_INTERVAL)

    def test_catch_up_not_paced_by_retries(self):
        """
        Catching up goes as fast as acknowledgements come back, with
        several batches in flight: no batch waits for the retry delay, and
        none is sent twice.
        """
        a, b = self.node(A, 200), self.node(B, 0)
        self.cluster.link(a, b)
        self.cluster.run_until(lambda: holds(b, a))
        self.assertLess(self.clock.seconds(), RETRY_DELAY)
        self.assertEqual(a.peer(B)["sent"], 200)

    def test_reconnect_resumes(self):
        """
        After a link drops and a new one comes up, a node sends only what
        the other lacks.
        """
        a, b = self.node(A, 30), self.node(B, 0)
        client, server, _ = self.cluster.link(a, b)
        self.cluster.run_until(lambda: holds(b, a))
        client.transport.loseConnection()
        self.cluster.flush()
        self.assertFalse(b.peer(A)["connected"])
        self.ingest(a, 5)
        self.cluster.link(b, a)
        self.cluster.run_until(lambda: holds(b, a))
        self.assertEqual(b.peer(A)["received"], 35)
        self.assertEqual(a.peer(B)["sent"], 35)

    def test_chain_converges(self):
        """
        In a chain A—B—C where A and C never connect, A's readings reach C
        through B and C's reach A, checked against the origin's HMAC; new
        readings at A reach C at once.
        """
        a, b, c = self.node(A, 23), self.node(B, 5), self.node(C, 31)
        self.cluster.link(a, b)
        self.cluster.link(c, b)
        everyone = (a, b, c)
        self.cluster.run_until(lambda: all(holds(x, y) for x in everyone for y in everyone))
        for x in everyone:
            for y in everyone:
                self.assertHoldsChecked(x, y)
        self.assertNotIn(C, {p["node_id"] for p in a.replicator.status()[0]})
        self.ingest(a, 2)
        self.cluster.flush()
        self.assertHoldsChecked(c, a)

    def test_flipped_byte_heals(self):
        """
        A byte flipped on the wire inside a record fails its line's MAC, so
        the receiver drops the link; of that batch it stores the records
        before the flipped one, which fails its own HMAC and is counted as
        rejected. Over the next link it arrives intact.
        """
        a, b = self.node(A, 25), self.node(B, 0)
        client, server, _ = self.cluster.link(a, b)
        flipped = []
        target = b'"21.2C"'
        deliver = server.dataReceived

        def corrupt(data: bytes) -> None:
            if not flipped and target in data:
                at = data.index(target) + 4
                data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
                flipped.append(data[at - 4 : at + 3])
            deliver(data)

        server.dataReceived = corrupt
        self.cluster.flush()
        self.assertEqual(flipped, [b'"21.3C"'])
        self.assertEqual(b.peer(A)["rejected"], 1)
        self.assertEqual(b.peer(A)["link_errors"], 1)
        self.assertIn("bad MAC", server.close_reason)
        self.assertEqual(b.store.log(A, EPOCH_A), a.store.log(A, EPOCH_A)[:11])
        self.assertTrue(server.transport.disconnecting)
        self.cluster.link(a, b)
        self.cluster.run_until(lambda: holds(b, a))
        self.assertHoldsChecked(b, a)
        self.assertEqual(b.peer(A)["conflicts"], 0)
        self.assertEqual(b.peer(A)["rejected"], 1)
