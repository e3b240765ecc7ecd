"""
Fakes shared by the replication tests (tests.test_replication,
tests.test_replication_memory, tests.test_replication_sqlite): the cluster
key, node ids and epochs, signed records, an in-memory store with the real
store's semantics, and nodes joined in memory by real peer protocols.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport, connect

from p2pstore.peer import PeerFactory
from p2pstore.records import CHECKSUM, ENTRY_INDEX, Record, Signer, entry_of
from p2pstore.replication import HAVE_DELAY, Replicator
from p2pstore.storage import Applied

KEY = b"cluster key of the replication tests"
SIGNER = Signer.from_key(KEY)
FORGER = Signer.from_key(b"not the cluster key")

A = "a" * 32
B = "b" * 32
C = "c" * 32
D = "d" * 32
EPOCH_A = "1a" * 16
OLD_EPOCH_A = "0a" * 16
EPOCH_B = "1b" * 16
EPOCH_C = "1c" * 16
EPOCHS = {A: EPOCH_A, B: EPOCH_B, C: EPOCH_C}


def record(origin: str, epoch: str, index: int, data: Optional[str] = None, signer: Signer = SIGNER) -> tuple:
    """
    Reading number ``index`` of a log, signed, as a RECORDS entry.
    """
    return entry_of(signer.sign(
        Record(
            origin=origin,
            epoch=epoch,
            entry_index=index,
            sensor_index=index,
            sensor_type="Temperature",
            sensor_data=data if data is not None else f"{20 + index / 10:.1f}C",
            timestamp=f"2020-04-20 23:{index // 60 % 60:02d}:{index % 60:02d}.000001",
            reading_id=f"r-{origin[:4]}-{epoch[:4]}-{index}",
        )
    ))


def records(origin: str, epoch: str, first: int, last: int) -> list[tuple]:
    return [record(origin, epoch, i) for i in range(first, last + 1)]


class FakeStore:
    """
    L{Store.apply}, L{Store.read_entries} and L{Store.finish_recovery} over
    lists in memory, with the real store's semantics: a batch is stored only
    where it continues its log; records at positions already held are
    compared with the stored ones (a difference is a conflict, the stored
    one kept); the node's own current epoch is never written by apply.

    Deferreds fire at once, unless C{hold_applies} / C{hold_reads} is set:
    then they wait for L{release_apply} / L{release_read}, and the work is
    done when released, as the real store does it inside its transaction.
    """

    def __init__(self, node_id: str, epoch: str):
        self.node_id = node_id
        self.epoch = epoch
        self.logs: dict[tuple, list[tuple]] = {}
        self.apply_calls: list = []
        self.read_calls: list = []
        self.finished = 0
        self.hold_applies = False
        self.hold_reads = False
        self.fail_applies = False
        self._held_applies: list = []
        self._held_reads: list = []

    def positions(self) -> dict:
        return {log: len(held) for log, held in self.logs.items()}

    def log(self, origin: str, epoch: str) -> list[tuple]:
        return self.logs.get((origin, epoch), [])

    def preload(self, origin: str, epoch: str, first: int, last: int) -> None:
        """
        Records already stored when the node starts.
        """
        held = self.logs.setdefault((origin, epoch), [])
        assert first == len(held) + 1
        held.extend(records(origin, epoch, first, last))

    def append_own(self, count: int) -> list[tuple]:
        """
        Ingest ``count`` readings into the node's own current epoch, as
        L{Store.append} does; the records it added.
        """
        held = self.logs.setdefault((self.node_id, self.epoch), [])
        added = records(self.node_id, self.epoch, len(held) + 1, len(held) + count)
        held.extend(added)
        return added

    def apply(self, batches, policy) -> Deferred:
        self.apply_calls.append([(o, e, list(rs)) for o, e, rs in batches])
        d: Deferred = Deferred()
        if self.hold_applies:
            self._held_applies.append((batches, policy, d))
        else:
            self._finish_apply(batches, policy, d)
        return d

    def release_apply(self) -> None:
        self._finish_apply(*self._held_applies.pop(0))

    def _finish_apply(self, batches, policy, d: Deferred) -> None:
        if self.fail_applies:
            d.errback(sqlite3.OperationalError("disk I/O error"))
            return
        results = []
        for origin, epoch, batch in batches:
            held = self.logs.setdefault((origin, epoch), [])
            position = len(held)
            # What the real store fetches: the checksums the batch repeats.
            stored = {e[ENTRY_INDEX]: e[CHECKSUM] for e in held}
            added, conflicts = policy(
                (self.node_id, self.epoch), (origin, epoch), position, batch, stored
            )
            held.extend(added)
            results.append(Applied(added=added, conflicts=conflicts, last_index=len(held)))
        d.callback(results)

    def read_entries(self, origin: str, epoch: str, after: int, limit: int) -> Deferred:
        self.read_calls.append((origin, epoch, after, limit))
        d: Deferred = Deferred()
        if self.hold_reads:
            self._held_reads.append((origin, epoch, after, limit, d))
        else:
            d.callback(self._entries(origin, epoch, after, limit))
        return d

    def release_read(self) -> None:
        origin, epoch, after, limit, d = self._held_reads.pop(0)
        d.callback(self._entries(origin, epoch, after, limit))

    def _entries(self, origin: str, epoch: str, after: int, limit: int) -> list:
        return self.log(origin, epoch)[after : after + limit]

    def entries_at(self, origin: str, epoch: str, indexes) -> Deferred:
        wanted = set(indexes)
        return succeed([entry for entry in self.log(origin, epoch) if entry[0] in wanted])

    def finish_recovery(self) -> Deferred:
        self.finished += 1
        return succeed(None)


class MemoryNode:
    """
    One node: a store, a Replicator, and its dialling and accepting peer
    factories.
    """

    def __init__(self, node_id: str, clock: Clock, store, batch_size: int = 10, window: int = 2):
        self.node_id = node_id
        self.store = store
        self.replicator = Replicator(node_id, store, SIGNER, clock, batch_size=batch_size, window=window)
        self.dialling = PeerFactory(node_id, KEY, self.replicator, clock, dialled=True)
        self.accepting = PeerFactory(node_id, KEY, self.replicator, clock, dialled=False)
        self.accepting.ready = True
        # Reading numbers taken so far (real stores only).
        self.ingested: list[int] = []

    def peer(self, node_id: str) -> dict:
        peers, _ = self.replicator.status()
        [entry] = [p for p in peers if p["node_id"] == node_id]
        return entry


class Cluster:
    """
    Nodes on one clock, linked pairwise by real PeerProtocols over iosim.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self.pumps: list = []

    def link(self, dialler: MemoryNode, acceptor: MemoryNode):
        """
        Connect ``dialler`` to ``acceptor``; no byte moves until a flush.
        """
        client = dialler.dialling.buildProtocol(None)
        server = acceptor.accepting.buildProtocol(None)
        pump = connect(
            server,
            FakeTransport(server, isServer=True),
            client,
            FakeTransport(client, isServer=False),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return client, server, pump

    def flush(self) -> bool:
        moved = False
        for pump in self.pumps:
            moved = pump.flush() or moved
        return moved

    def run_until(self, done: Callable[[], bool], steps: int = 400) -> None:
        """
        Move bytes and time (HAVE_DELAY a step) until ``done()``.
        """
        for _ in range(steps):
            self.flush()
            if done():
                return
            self.clock.advance(HAVE_DELAY)
        raise AssertionError(f"not done after {steps} steps")
