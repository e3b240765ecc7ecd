"""
Tests for peers that are gone (p2pstore.departed) and what the replicator
does with them: shown as gone, their copies no longer counted, their
entries removed, on a task.Clock.
"""

from __future__ import annotations

from p2pstore.departed import EXPIRE_AFTER, GONE_AFTER, SWEEP_INTERVAL
from p2pstore.peer import PING_INTERVAL
from p2pstore.wire import Held, Ping

from .replication_fakes import A, B, C, D, EPOCH_A
from .test_replication import FakeLink, ReplicatorTestCase

OWN = (A, EPOCH_A)
B_ADDRESS = "b.example:22345"


class GoneTests(ReplicatorTestCase):
    """
    A peer with no link for GONE_AFTER that no dialled address leads to is
    gone; its entry goes after EXPIRE_AFTER. A dialled peer that is down
    stays.
    """

    def setUp(self) -> None:
        super().setUp()
        self.dialled: set = set()
        self.replicator.dialled_addresses = lambda: self.dialled
        self.open()
        self.ingest(5)

    def dial(self, peer: str, address: str = B_ADDRESS) -> FakeLink:
        """A link this node dialled at C{address} that leads to C{peer}."""
        self.dialled.add(address)
        link = FakeLink(peer)
        link.dial_address = address
        self.replicator.link_up(link)
        return link

    def peer_ids(self) -> list:
        peers, _ = self.replicator.status()
        return sorted(p["node_id"] for p in peers if p["node_id"])

    def test_replaced_at_its_address(self) -> None:
        """
        B's address now leads to C (B lost its data directory and came back
        as C): B is shown as not gone for GONE_AFTER, then gone, while still
        listed; after EXPIRE_AFTER without a link only C is listed.
        """
        old = self.dial(B)
        self.ack(old, 5)
        self.replicator.link_down(old)
        self.dial(C)
        self.clock.advance(GONE_AFTER - 1)
        self.assertEqual(self.peer_status(B)["gone"], False)
        self.clock.advance(1)
        entry = self.peer_status(B)
        self.assertEqual((entry["gone"], entry["connected"]), (True, False))
        self.assertEqual(self.peer_status(C)["gone"], False)
        self.clock.advance(EXPIRE_AFTER - GONE_AFTER)
        self.assertEqual(self.peer_ids(), [C])

    def test_dialled_peer_down_stays(self) -> None:
        """A dialled peer that is down, however long, is a failing link: listed, not gone."""
        link = self.dial(B)
        self.ack(link, 5)
        self.replicator.link_down(link)
        self.clock.advance(EXPIRE_AFTER * 24)
        entry = self.peer_status(B)
        self.assertEqual((entry["gone"], entry["connected"]), (False, False))
        # Its copies still count: it comes back with its disk.
        self.assertEqual(self.replicator.holdings.holders(OWN), {B: 5})

    def test_undialled_peer_goes(self) -> None:
        """
        A peer that dialled this node and is not dialled by it goes by the
        same clock; the sweep runs by itself, without a status read.
        """
        link = self.link(B)
        self.ack(link, 5)
        self.replicator.link_down(link)
        self.clock.advance(GONE_AFTER + SWEEP_INTERVAL)
        self.assertEqual(self.replicator.peers[B].gone_since is not None, True)
        self.assertEqual(self.replicator.holdings.holders(OWN), {})
        self.clock.advance(EXPIRE_AFTER)
        self.assertNotIn(B, self.replicator.peers)

    def test_idle_link_counts_as_seen(self) -> None:
        """
        A peer that dialled this node and whose link carried only PING and
        PONG for hours is not gone as soon as that link drops: its
        keepalives kept it seen, so it goes GONE_AFTER after the drop.
        """
        link = self.link(B)
        for _ in range(int(2 * EXPIRE_AFTER / PING_INTERVAL)):
            self.clock.advance(PING_INTERVAL)
            self.replicator.received(link, Ping())
        self.replicator.link_down(link)
        self.clock.advance(GONE_AFTER - 1)
        self.assertEqual(self.peer_status(B)["gone"], False)
        self.clock.advance(1)
        self.assertEqual(self.peer_status(B)["gone"], True)

    def test_linked_peer_never_gone(self) -> None:
        """A peer with a link is never gone, however long it has been quiet."""
        self.link(B)
        self.clock.advance(EXPIRE_AFTER * 2)
        self.assertEqual(self.peer_status(B)["gone"], False)

    def test_gone_copies_do_not_count(self) -> None:
        """
        What a gone peer held counts for no copies (so retention prunes
        nothing on its strength), nor what another node relays of it; once
        it links again, its HAVE counts.
        """
        old = self.link(B)
        self.ack(old, 5)
        relay = self.link(D)
        self.replicator.link_down(old)
        self.clock.advance(GONE_AFTER)
        self.replicator.sweep_peers()
        self.assertEqual(self.replicator.holdings.holders(OWN), {})
        self.assertEqual(self.replicator.holdings.held_from(OWN, 1, 1), 0)
        self.replicator.received(relay, Held(A, EPOCH_A, {B: 5}))
        self.assertEqual(self.replicator.holdings.holders(OWN), {})

        back = self.link(B)
        self.assertEqual(self.peer_status(B)["gone"], False)
        self.have(back, {A: {EPOCH_A: 4}})
        self.assertEqual(self.replicator.holdings.holders(OWN), {B: 4})

    def test_comes_back_after_expiry(self) -> None:
        """A peer whose entry was removed gets a new one when it links again."""
        link = self.link(B)
        self.replicator.link_down(link)
        self.clock.advance(EXPIRE_AFTER)
        self.assertEqual(self.peer_ids(), [])
        self.link(B)
        self.assertEqual(self.peer_ids(), [B])
        self.assertEqual(self.peer_status(B)["gone"], False)

    def test_stop_cancels_the_sweep(self) -> None:
        """After stop no sweep is left on the clock."""
        self.successResultOf(self.replicator.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
