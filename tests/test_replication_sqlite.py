"""
Tests for replication (p2pstore.replication) between nodes on real SQLite
stores (p2pstore.storage, files in temporary directories, through the real
reactor's thread pool), linked in memory by real peer protocols.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from p2pstore.lines import Reading
from p2pstore.replication import HAVE_DELAY
from p2pstore.rows import OwnRows
from p2pstore.storage import Store

from .replication_fakes import A, B, C, SIGNER, Cluster, MemoryNode


class TrackedStore:
    """
    A real Store whose pending Deferreds a test can wait for.
    """

    def __init__(self, store: Store):
        self.store = store
        self.pending: list[Deferred] = []

    def _track(self, d: Deferred) -> Deferred:
        self.pending.append(d)
        return d

    def apply(self, batches, policy) -> Deferred:
        return self._track(self.store.apply(batches, policy))

    def read_entries(self, *args) -> Deferred:
        return self._track(self.store.read_entries(*args))

    def finish_recovery(self) -> Deferred:
        return self._track(self.store.finish_recovery())


class SQLiteNodesTests(TestCase):
    """
    Nodes on real stores (SQLite files in temporary directories, through the
    real reactor's thread pool), linked in memory.
    """

    async def node(self, node_id: str, readings: int) -> MemoryNode:
        directory = Path(self.mktemp())
        directory.mkdir()
        store = Store(path=directory / "self_sensor_data.db", node_id=node_id)
        self.addCleanup(store.close)
        opened = await store.open()
        node = MemoryNode(node_id, self.clock, TrackedStore(store), batch_size=7, window=2)
        node.replicator.opened(opened.positions, opened.recovering)
        await self.ingest(node, readings)
        return node

    async def ingest(self, node: MemoryNode, count: int) -> None:
        if not count:
            return
        first = len(node.ingested) + 1
        node.ingested.extend(range(first, first + count))
        store = node.store.store
        rows = [
            row
            for i in range(first, first + count)
            for row in OwnRows(node.node_id, SIGNER, store.epoch).prepare(
                [Reading("Pressure", f"1.{i:03d} atm", f"2021-01-01 00:00:{i % 60:02d}", f"{node.node_id[:4]}-{i}")],
                i,
                i,
            )
        ]
        appended = await store.append(
            rows, [], first + count - 1, OwnRows(node.node_id, SIGNER, store.epoch).renumber
        )
        self.assertEqual(appended.indexes, list(range(first, first + count)))
        node.replicator.appended(store.epoch, appended.last_index, appended.entries)

    async def settle(self, nodes, done: Callable[[], bool], steps: int = 400) -> None:
        """
        Move bytes, wait for the stores, move time, until ``done()``.
        """
        for _ in range(steps):
            moved = self.cluster.flush()
            pending = [d for node in nodes for d in node.store.pending]
            for node in nodes:
                node.store.pending = []
            for d in pending:
                await d
            if not moved and not pending:
                if done():
                    return
                self.clock.advance(HAVE_DELAY)
        raise AssertionError(f"not done after {steps} steps")

    def rows(self, path: Path, origin: str) -> list:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute(f"SELECT * FROM server_id_{origin} ORDER BY epoch, entry_index").fetchall()
        finally:
            conn.close()

    def same_tables(self, x: MemoryNode, y: MemoryNode) -> bool:
        """
        Does ``x`` hold in its peer database every row of ``y``'s own
        table, column for column?
        """
        try:
            return self.rows(x.store.store.peer_path, y.node_id) == self.rows(y.store.store.path, y.node_id)
        except sqlite3.OperationalError:
            return False

    async def test_two_nodes_converge(self):
        """
        Two nodes on real stores end with identical tables: each node's own
        rows, checksums included, in the other's peer_sensor_data.db.
        """
        self.clock = Clock()
        self.cluster = Cluster(self.clock)
        a, b = await self.node(A, 40), await self.node(B, 9)
        self.cluster.link(a, b)
        await self.settle((a, b), lambda: self.same_tables(a, b) and self.same_tables(b, a))
        await self.ingest(a, 3)
        await self.settle((a, b), lambda: self.same_tables(b, a))
        rows = self.rows(b.store.store.peer_path, A)
        self.assertEqual(len(rows), 43)
        for r in await b.store.store.readings(A, None, 100):
            SIGNER.verify(r)
        self.assertEqual(b.peer(A)["received"], 43)

    async def test_chain_converges(self):
        """
        A chain A—B—C on real stores converges transitively: C's peer
        database holds A's rows exactly as A stored them, and A holds C's.
        """
        self.clock = Clock()
        self.cluster = Cluster(self.clock)
        a, b, c = await self.node(A, 12), await self.node(B, 3), await self.node(C, 20)
        self.cluster.link(a, b)
        self.cluster.link(b, c)
        nodes = (a, b, c)
        await self.settle(
            nodes, lambda: all(self.same_tables(x, y) for x in nodes for y in nodes if x is not y)
        )
        self.assertEqual(len(self.rows(c.store.store.peer_path, A)), 12)
