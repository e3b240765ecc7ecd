"""
Tests for p2pstore.pruning on a real store (SQLite files) and a
task.Clock: retention prunes peers' copies by age and this node's own
readings only once --min-copies other nodes hold them; evict-safe removes
only such readings, and says so when there are none.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock

from p2pstore.disk import Disk
from p2pstore.inbound import plan_apply
from p2pstore.pruning import Pruner, mark_interval
from p2pstore.replication import Replicator

from . import test_storage
from .test_storage import NODE_ID, TABLE, StoreTestCase, reading

PEER = test_storage.ApplyTests.OTHER
PEER_EPOCH = test_storage.ApplyTests.EPOCH


class PrunerTests(StoreTestCase):
    entries = test_storage.ApplyTests.entries

    async def setup_node(self, own: int = 10, peer: int = 0, **kwargs):
        self.clock = Clock()
        self.clock.advance(1000)
        store = self.make_store()
        store.now, store.mark_interval = self.clock.seconds, 1.0
        opened = await store.open()
        await self.append(store, [(reading(n), 1) for n in range(1, own + 1)])
        if peer:
            await store.apply([(PEER, PEER_EPOCH, self.entries(PEER, PEER_EPOCH, 1, peer))], plan_apply)
        replicator = Replicator(NODE_ID, store, self.signer, self.clock)
        replicator.opened({(NODE_ID, opened.epoch): own, **({(PEER, PEER_EPOCH): peer} if peer else {})}, False)
        self.node = SimpleNamespace(
            opened=True, store=store, replicator=replicator, disk=None, node_id=NODE_ID,
            exporters=[],
        )
        self.log = (NODE_ID, store.epoch)
        self.pruner = Pruner(self.node, self.clock, **kwargs)
        return store

    def own_rows(self) -> int:
        return self.query(f"SELECT count(*) FROM {TABLE}")[0][0]

    async def test_own_kept_until_held_elsewhere(self) -> None:
        """
        Own readings past the retention stay while no other node holds
        them, go up to what one holds once it does, and the range is in
        the status and told to peers (the source's first index).
        """
        await self.setup_node(retain=5.0)
        self.clock.advance(10)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 10)
        self.node.replicator.holdings.heard(self.log, PEER, 6)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 4)
        self.assertEqual(self.node.replicator.source.firsts, {self.log: 7})
        status = self.pruner.status()
        self.assertEqual(status["records"], {"retention": 6})
        self.assertEqual(
            [(r["first"], r["last"], r["reason"]) for r in status["ranges"]], [(1, 6, "retention")]
        )

    async def test_not_before_retention(self) -> None:
        """
        Nothing stored less than --retain ago goes, held elsewhere or not.
        """
        await self.setup_node(retain=5.0, min_copies=0)
        self.clock.advance(4)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 10)
        self.clock.advance(2)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 0)

    async def test_peer_copies_by_age(self) -> None:
        """
        A peer's copies go by age alone: they are the peer's to keep.
        """
        await self.setup_node(peer=8, retain=5.0)
        self.clock.advance(6)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 10)
        self.assertEqual(self.node.replicator.source.firsts, {(PEER, PEER_EPOCH): 9})

    async def test_peer_copies_wait_for_export(self) -> None:
        """
        A peer's copies past the retention stay while an export
        destination does not hold them yet (this node may have to export
        them in the peer's place), and go as far as every destination does.
        """
        await self.setup_node(peer=8, retain=5.0)
        limits = {"a": 3, "b": None}
        self.node.exporters = [
            SimpleNamespace(retention_limit=lambda log, k=k: limits[k], exported=lambda log: 10**9)
            for k in limits
        ]
        self.clock.advance(6)
        await self.pruner.step()
        self.assertEqual(self.node.replicator.source.firsts, {(PEER, PEER_EPOCH): 4})
        limits["a"] = 8
        await self.pruner.step()
        self.assertEqual(self.node.replicator.source.firsts, {(PEER, PEER_EPOCH): 9})

    async def test_holder_that_pruned(self) -> None:
        """
        A holder whose HAVE says it holds the log only from 5 on, having
        held it to 10: for retention the readings were copied and are past
        the age the cluster keeps, so they go; to evict, 1 to 4 are not
        safe, since no copy of them is held now.
        """
        await self.setup_node(retain=5.0)
        self.node.replicator.holdings.heard(self.log, PEER, 10, first=5)
        self.assertEqual(self.pruner._safe(self.log, "evicted"), 0)
        self.clock.advance(10)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 0)

    async def test_evict_safe(self) -> None:
        """
        At the budget, evict-safe removes the own readings other nodes
        hold, and only those; with none left it says so, and ERR full
        names why.
        """
        store = await self.setup_node(own=200, on_full="evict-safe")
        disk = Disk(self.path, store.peer_path, self.clock)
        disk.budget = disk.used_bytes()
        self.node.disk = disk
        self.node.replicator.holdings.heard(self.log, PEER, 50)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 150)
        self.assertEqual(self.pruner.status()["records"], {"evicted": 50})
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 150)
        self.assertIn("found nothing safe to remove", self.pruner.status()["nothing_safe"])
        self.assertIn("found nothing safe to remove", disk.refusing())

    def test_mark_interval(self) -> None:
        """
        Marks every hundredth of the retention, from 1 s to 10 min.
        """
        self.assertEqual(
            [mark_interval(r) for r in (None, 5.0, 3600.0, 30 * 86400.0)], [60.0, 1.0, 36.0, 600.0]
        )

    async def test_burst_then_idle(self) -> None:
        """
        A burst of commits within one mark interval, then nothing: the
        whole burst is pruned once past the retention, not only the part
        the first commit's mark covered.
        """
        store = await self.setup_node(own=5, retain=5.0, min_copies=0)
        await self.append(store, [(reading(n), 1) for n in range(6, 11)])
        self.clock.advance(1)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 10)
        self.clock.advance(5)
        await self.pruner.step()
        self.assertEqual(self.own_rows(), 0)
