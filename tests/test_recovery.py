"""
Tests for p2pstore.recovery: Recovery deciding when a node that lost its
own database has its earlier readings back, over
tests.replication_fakes.FakeStore.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .replication_fakes import A, B, EPOCH_A, EPOCH_B, OLD_EPOCH_A, FakeStore

from p2pstore.recovery import Recovery

LOG = (A, EPOCH_A)
OLD_LOG = (A, OLD_EPOCH_A)
LOG_B = (B, EPOCH_B)


class RecoveryTests(SynchronousTestCase):
    """
    Node A recovering its own logs.
    """

    def setUp(self) -> None:
        self.store = FakeStore(A, EPOCH_A)
        self.recovery = Recovery(A, self.store)
        self.recovery.active = True

    def test_not_before_any_peer(self) -> None:
        """
        Holding nothing is not recovered before any peer said what it holds.
        """
        self.recovery.check({})
        self.recovery.check({LOG: 10})
        self.assertTrue(self.recovery.active)
        self.assertEqual(self.store.finished, 0)

    def test_until_every_log_held(self) -> None:
        """
        Recovery stays active until every own log a peer reported is held
        as far as the peer holds it; other origins' logs do not count.
        """
        self.recovery.heard({LOG: 10, OLD_LOG: 5, LOG_B: 100}, {})
        self.assertTrue(self.recovery.active)
        self.recovery.check({LOG: 10, OLD_LOG: 4})
        self.assertTrue(self.recovery.active)
        self.assertEqual(self.store.finished, 0)
        self.recovery.check({LOG: 10, OLD_LOG: 5})
        self.assertFalse(self.recovery.active)
        self.assertEqual(self.store.finished, 1)

    def test_furthest_peer(self) -> None:
        """
        With several peers, the furthest any of them holds a log is the
        target: a peer holding less later does not lower it.
        """
        self.recovery.heard({LOG: 10}, {})
        self.recovery.heard({LOG: 4}, {LOG: 4})
        self.assertTrue(self.recovery.active)
        self.recovery.heard({LOG: 20}, {LOG: 10})
        self.assertTrue(self.recovery.active)
        self.recovery.check({LOG: 20})
        self.assertFalse(self.recovery.active)

    def test_finished_once(self) -> None:
        """
        store.finish_recovery() is called exactly once, however often peers
        are heard from or positions checked afterwards.
        """
        self.recovery.heard({LOG: 3}, {LOG: 3})
        self.recovery.heard({LOG: 3}, {LOG: 3})
        self.recovery.check({LOG: 3})
        self.recovery.heard({OLD_LOG: 1}, {LOG: 3})
        self.assertEqual(self.store.finished, 1)

    def test_peer_holding_nothing_of_ours(self) -> None:
        """
        A peer that holds none of this node's logs has nothing to give
        back: hearing from it ends recovery.
        """
        self.recovery.heard({LOG_B: 7}, {})
        self.assertFalse(self.recovery.active)
        self.assertEqual(self.store.finished, 1)

    def test_not_recovering(self) -> None:
        """
        A node that is not recovering never calls finish_recovery().
        """
        self.recovery.active = False
        self.recovery.heard({LOG: 1}, {LOG: 1})
        self.assertEqual(self.store.finished, 0)

    def test_progress(self) -> None:
        """
        progress() gives, per own log a peer reported, how far this node
        holds it and how far a peer does.
        """
        self.assertEqual(self.recovery.progress({}), {})
        self.recovery.heard({LOG: 10, OLD_LOG: 5, LOG_B: 100}, {LOG: 2})
        self.assertEqual(
            self.recovery.progress({LOG: 7}),
            {
                f"{A}/{EPOCH_A}": {"have": 7, "target": 10},
                f"{A}/{OLD_EPOCH_A}": {"have": 0, "target": 5},
            },
        )
