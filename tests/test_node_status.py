"""
Tests for L{Node.status_snapshot}'s account of the logs: what C{origins}
and C{logs} say of an origin with two epochs, on its own node and on a peer.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.ingest import Ingestor
from p2pstore.node import Node
from p2pstore.replication import Replicator
from p2pstore.rows import OwnRows

from . import fakes
from .replication_fakes import A, B, EPOCH_A, EPOCH_B, OLD_EPOCH_A, SIGNER, FakeStore

# A after it got its lost database back: 26 readings of its old epoch and 10 of its new one.
RECOVERED = {(A, OLD_EPOCH_A): 26, (A, EPOCH_A): 10}


def open_node(node_id: str, epoch: str, positions: dict) -> Node:
    """A node that opened its store holding C{positions}, numbering in C{epoch}."""
    clock = Clock()
    store = FakeStore(node_id, epoch)
    replicator = Replicator(node_id, store, SIGNER, clock)
    ingestor = Ingestor(fakes.FakeStore(), OwnRows(node_id, SIGNER), clock)
    node = Node(node_id, store, ingestor, clock, replicator)
    node.opened = True
    replicator.opened(dict(positions), False)
    return node


class OriginsTests(SynchronousTestCase):
    """An origin's C{last_index} means the same on its own node and on its peers."""

    def test_two_epochs_agree(self) -> None:
        """
        The origin's own node and a peer that holds the same give it the same
        count and last_index: the highest position over its epochs, though the
        node numbers on in its new epoch at 10.
        """
        own = open_node(A, EPOCH_A, RECOVERED).status_snapshot()
        peer = open_node(B, EPOCH_B, RECOVERED).status_snapshot()
        self.assertEqual(own["origins"][A], {"count": 36, "last_index": 26, "self": True})
        self.assertEqual(peer["origins"][A], {"count": 36, "last_index": 26, "self": False})

    def test_logs_show_both_epochs(self) -> None:
        """
        Both list the two epochs under logs; the own node marks the one it
        numbers new readings in as current, a peer (which cannot know it) none.
        """
        own = open_node(A, EPOCH_A, RECOVERED).status_snapshot()
        peer = open_node(B, EPOCH_B, RECOVERED).status_snapshot()
        expected = [
            {"origin": A, "epoch": OLD_EPOCH_A, "first": 1, "last": 26, "held": 26},
            {"origin": A, "epoch": EPOCH_A, "first": 1, "last": 10, "held": 10},
        ]
        self.assertEqual(peer["logs"], expected)
        expected[1]["current"] = True
        self.assertEqual(own["logs"], expected)

    def test_new_epoch_overtakes(self) -> None:
        """Once the new epoch passes the old one's end, last_index follows it."""
        node = open_node(A, EPOCH_A, {(A, OLD_EPOCH_A): 26, (A, EPOCH_A): 30})
        self.assertEqual(node.status_snapshot()["origins"][A]["last_index"], 30)
