"""
Tests for p2pstore.inbound: plan_apply, the policy for what of a received
batch is stored, as a pure function; and Inbound, checking and storing the
batches peers send, over tests.replication_fakes.FakeStore.
"""

from __future__ import annotations

import sqlite3

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.inbound import Inbound, plan_apply
from p2pstore.linkhealth import LinkHealth
from p2pstore.records import CHECKSUM, ENTRY_INDEX
from p2pstore.wire import BadMessage, Records

from .replication_fakes import A, B, C, EPOCH_A, EPOCH_B, EPOCH_C, FORGER, SIGNER, FakeStore, record, records

OWN = (B, EPOCH_B)
LOG = (A, EPOCH_A)


def stored_of(entries: list) -> dict:
    return {e[ENTRY_INDEX]: e[CHECKSUM] for e in entries}


class PlanApplyTests(SynchronousTestCase):
    """
    plan_apply() stores only what continues a log, and counts conflicts
    with what is held.
    """

    def test_continues(self) -> None:
        """
        A batch starting right after the position is stored whole.
        """
        batch = records(A, EPOCH_A, 11, 20)
        self.assertEqual(plan_apply(OWN, LOG, 10, batch, {}), (batch, 0))

    def test_after_gap(self) -> None:
        """
        A batch starting beyond the position + 1 is not stored, and is no
        conflict.
        """
        self.assertEqual(plan_apply(OWN, LOG, 10, records(A, EPOCH_A, 12, 20), {}), ([], 0))

    def test_repeats_same(self) -> None:
        """
        Positions repeated with the checksum held are not conflicts; what
        follows them is stored.
        """
        held = records(A, EPOCH_A, 1, 10)
        batch = records(A, EPOCH_A, 6, 15)
        self.assertEqual(plan_apply(OWN, LOG, 10, batch, stored_of(held[5:])), (batch[5:], 0))

    def test_repeats_different(self) -> None:
        """
        Positions repeated with another checksum are conflicts (the stored
        records kept); what follows is still stored.
        """
        held = records(A, EPOCH_A, 1, 10)
        batch = records(A, EPOCH_A, 9, 9) + [record(A, EPOCH_A, 10, data="99C")] + records(A, EPOCH_A, 11, 12)
        added, conflicts = plan_apply(OWN, LOG, 10, batch, stored_of(held[8:]))
        self.assertEqual(conflicts, 1)
        self.assertEqual(added, batch[2:])

    def test_all_held(self) -> None:
        """
        A batch wholly within what is held stores nothing.
        """
        held = records(A, EPOCH_A, 1, 10)
        self.assertEqual(plan_apply(OWN, LOG, 10, held[2:5], stored_of(held)), ([], 0))

    def test_own_log(self) -> None:
        """
        The node's own current log is never taken: what a peer offers
        beyond the position counts as conflicts, besides those repeated
        differently.
        """
        held = records(B, EPOCH_B, 1, 5)
        batch = [record(B, EPOCH_B, 5, data="0C")] + records(B, EPOCH_B, 6, 8)
        self.assertEqual(plan_apply(OWN, OWN, 5, batch, stored_of(held)), ([], 4))
        self.assertEqual(plan_apply(OWN, OWN, 5, records(B, EPOCH_B, 4, 5), stored_of(held)), ([], 0))

    def test_own_old_epoch(self) -> None:
        """
        An older epoch of the node's own is taken like any log (a recovering
        node gets its earlier readings back this way).
        """
        batch = records(B, EPOCH_C, 1, 3)
        self.assertEqual(plan_apply(OWN, (B, EPOCH_C), 0, batch, {}), (batch, 0))

    def test_empty(self) -> None:
        """
        An empty batch stores nothing and conflicts with nothing.
        """
        self.assertEqual(plan_apply(OWN, LOG, 10, [], {}), ([], 0))
        self.assertEqual(plan_apply(OWN, OWN, 10, [], {}), ([], 0))


@define
class FakePeer:
    node_id: str
    rejected: int = 0
    health: LinkHealth = field(factory=lambda: LinkHealth(lambda: 0.0))


class InboundTests(SynchronousTestCase):
    """
    Inbound on node B's FakeStore, window 2.
    """

    def setUp(self) -> None:
        self.store = FakeStore(B, EPOCH_B)
        self.applied: list = []
        self.failed: list = []
        self.done = 0
        self.inbound = Inbound(
            self.store, SIGNER, 2,
            applied=lambda *args: self.applied.append(args),
            failed=lambda *args: self.failed.append(args),
            done=self.count_done,
        )
        self.peer = FakePeer(A)

    def count_done(self) -> None:
        self.done += 1

    def test_stored(self) -> None:
        """
        A good batch is stored and its result handed to ``applied``.
        """
        message = Records(A, EPOCH_A, records(A, EPOCH_A, 1, 5))
        self.inbound.received("link", self.peer, message)
        self.assertEqual(self.store.log(A, EPOCH_A), message.entries)
        [(link, peer, got, good, result)] = self.applied
        self.assertEqual((link, peer, got, good), ("link", self.peer, message, message.entries))
        self.assertEqual(result.last_index, 5)
        self.assertEqual(self.done, 1)

    def test_window(self) -> None:
        """
        More than ``window`` unacknowledged batches from one link, those
        being stored included, is a BadMessage; another link is not held to
        the first one's count.
        """
        self.store.hold_applies = True
        self.inbound.received("link", self.peer, Records(A, EPOCH_A, records(A, EPOCH_A, 1, 5)))
        self.inbound.received("link", self.peer, Records(A, EPOCH_A, records(A, EPOCH_A, 6, 10)))
        self.assertRaises(
            BadMessage, self.inbound.received, "link", self.peer,
            Records(A, EPOCH_A, records(A, EPOCH_A, 11, 15)),
        )
        self.inbound.received("other", FakePeer(C), Records(C, EPOCH_C, records(C, EPOCH_C, 1, 5)))
        self.store.release_apply()
        self.store.release_apply()
        self.assertEqual(len(self.store.log(A, EPOCH_A)), 10)
        self.assertEqual(len(self.store.log(C, EPOCH_C)), 5)
        # Acknowledged now: the link may send again.
        self.store.hold_applies = False
        self.inbound.received("link", self.peer, Records(A, EPOCH_A, records(A, EPOCH_A, 11, 15)))
        self.assertEqual(len(self.store.log(A, EPOCH_A)), 15)

    def test_bad_hmac_in_middle(self) -> None:
        """
        A batch whose third record fails its HMAC stores only the two before
        it, and counts one rejection on the peer.
        """
        entries = records(A, EPOCH_A, 1, 2) + [record(A, EPOCH_A, 3, signer=FORGER)] + records(A, EPOCH_A, 4, 5)
        self.inbound.received("link", self.peer, Records(A, EPOCH_A, entries))
        self.assertEqual(self.store.log(A, EPOCH_A), entries[:2])
        self.assertEqual(self.peer.rejected, 1)
        [(_, _, _, good, result)] = self.applied
        self.assertEqual(good, entries[:2])
        self.assertEqual(result.last_index, 2)

    def test_failed_transaction(self) -> None:
        """
        When the store's apply fails, every batch of that transaction gets
        ``failed`` and none ``applied``.
        """
        self.store.hold_applies = True
        self.store.fail_applies = True
        first = Records(A, EPOCH_A, records(A, EPOCH_A, 1, 5))
        second = Records(A, EPOCH_A, records(A, EPOCH_A, 6, 10))
        third = Records(C, EPOCH_C, records(C, EPOCH_C, 1, 5))
        other = FakePeer(C)
        self.inbound.received("link", self.peer, first)
        self.inbound.received("link", self.peer, second)
        self.inbound.received("other", other, third)
        self.store.release_apply()
        self.assertEqual(self.failed, [("link", self.peer, first)])
        # The two queued meanwhile go in one transaction.
        self.assertEqual(len(self.store.apply_calls[-1]), 2)
        self.store.release_apply()
        self.assertEqual(
            self.failed,
            [("link", self.peer, first), ("link", self.peer, second), ("other", other, third)],
        )
        self.assertEqual(self.applied, [])
        self.assertEqual(self.done, 2)
        self.assertFalse(self.inbound.applying)
        # Each failed transaction is logged, once.
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 2)
