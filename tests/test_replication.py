"""
Tests for replication (p2pstore.replication): the Replicator on its own,
against an in-memory store (tests.replication_fakes) and fake links on a
task.Clock. Nodes joined in memory are in tests.test_replication_memory,
nodes on SQLite stores in tests.test_replication_sqlite.
"""

from __future__ import annotations

import sqlite3
from typing import Optional

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from p2pstore.interfaces import ILink
from p2pstore.replication import HAVE_DELAY, Replicator
from p2pstore.sending import READ_BATCHES, RETRY_DELAY
from p2pstore.wire import (
    MAX_RECORDS, Ack, BadMessage, Exported, Have, Links, Ping, Pong, Records, Repair, Want, decode,
    encode,
)

from .replication_fakes import (
    A,
    B,
    C,
    D,
    EPOCH_A,
    EPOCH_B,
    EPOCH_C,
    FORGER,
    OLD_EPOCH_A,
    SIGNER,
    FakeStore,
    record,
    records,
)


def indexes(message: Records) -> list[int]:
    return [entry[0] for entry in message.entries]


class FakeConnection:
    def __init__(self):
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


@implementer(ILink)
class FakeLink:
    """
    An authenticated link to a peer, recording what is sent on it.
    """

    dial_address = None

    def __init__(self, peer_id: str, address: str = "192.0.2.7:41000"):
        self.peer_id = peer_id
        self.authenticated = True
        self.address = address
        self.transport = FakeConnection()
        self.messages: list = []

    def send(self, message) -> None:
        # As the peer would read it.
        self.messages.append(decode(encode(message)))

    def drop(self, reason: str) -> None:
        self.transport.loseConnection()

    def close(self) -> None:
        self.transport.loseConnection()

    def of(self, kind) -> list:
        return [m for m in self.messages if isinstance(m, kind)]

    def take(self, kind=object) -> list:
        """
        The messages of a kind sent since the last take, forgetting them.
        """
        taken = [m for m in self.messages if isinstance(m, kind)]
        self.messages = [m for m in self.messages if not isinstance(m, kind)]
        return taken


class ReplicatorTestCase(SynchronousTestCase):
    """
    Node A's Replicator on a fake store, with small batches and window.
    """

    batch_size = 10
    window = 2

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FakeStore(A, EPOCH_A)
        self.replicator = Replicator(
            A, self.store, SIGNER, self.clock, batch_size=self.batch_size, window=self.window
        )

    def open(self, recovering: bool = False) -> None:
        self.replicator.opened(self.store.positions(), recovering)

    def link(self, peer: str = B, **kwargs) -> FakeLink:
        link = FakeLink(peer, **kwargs)
        self.replicator.link_up(link)
        return link

    def ingest(self, count: int) -> list[tuple]:
        added = self.store.append_own(count)
        self.replicator.committed(A, EPOCH_A, added)
        return added

    def have(self, link: FakeLink, positions: dict) -> None:
        self.replicator.received(link, Have(positions))

    def ack(self, link: FakeLink, last_index: int, origin: str = A, epoch: str = EPOCH_A) -> None:
        self.replicator.received(link, Ack(origin, epoch, last_index))

    def peer_status(self, peer: str = B) -> dict:
        peers, _ = self.replicator.status()
        [entry] = [p for p in peers if p["node_id"] == peer]
        return entry


class LinkUpTests(ReplicatorTestCase):
    """
    What a node says when a link comes up, and what it waits for.
    """

    def test_have_lists_every_log(self):
        """
        On a new link the node at once sends HAVE with how far it holds every
        log: its own and every other origin's, each epoch apart; then LINKS,
        the nodes it is linked to.
        """
        self.store.preload(A, OLD_EPOCH_A, 1, 4)
        self.store.preload(A, EPOCH_A, 1, 3)
        self.store.preload(C, EPOCH_C, 1, 5)
        self.open()
        link = self.link()
        self.assertEqual(
            link.messages,
            [Have({A: {OLD_EPOCH_A: 4, EPOCH_A: 3}, C: {EPOCH_C: 5}}), Links(frozenset({B}))],
        )

    def test_own_records_always_sent(self):
        """
        LINKS never stops a node sending its own records, nor a peer's own
        older epochs back to it (recovery).
        """
        self.store.preload(A, EPOCH_A, 1, 3)
        self.store.preload(C, EPOCH_C, 1, 2)
        self.open()
        link = self.link(C)
        self.replicator.received(link, Links(frozenset({A, C})))
        self.have(link, {})
        sent = {(m.origin, m.epoch) for m in link.of(Records)}
        self.assertEqual(sent, {(A, EPOCH_A), (C, EPOCH_C)})

    def test_links_announced(self):
        """
        Each peer hears which nodes this node is linked to when a link comes
        up and when a peer's last link goes.
        """
        first = self.link(C)
        first.take()
        second = self.link(D)
        self.assertEqual(first.take(Links), [Links(frozenset({C, D}))])
        self.replicator.link_down(second)
        self.assertEqual(first.take(Links), [Links(frozenset({C}))])

    def test_nothing_before_have(self):
        """
        Until the peer says what it holds, the node sends it no record: not
        what it held already, nor what it takes in meanwhile.
        """
        self.store.preload(A, EPOCH_A, 1, 25)
        self.open()
        link = self.link()
        self.ingest(3)
        self.clock.advance(RETRY_DELAY * 5)
        self.assertEqual(link.of(Records), [])
        self.assertEqual(self.store.read_calls, [])

    def test_changed_positions_announced(self):
        """
        When the node's positions change it tells every linked peer with one
        HAVE, coalesced over HAVE_DELAY.
        """
        self.open()
        link = self.link()
        link.take()
        self.ingest(2)
        self.ingest(3)
        self.assertEqual(link.of(Have), [])
        self.clock.advance(HAVE_DELAY)
        self.assertEqual(link.of(Have), [Have({A: {EPOCH_A: 5}})])


class SendingTests(ReplicatorTestCase):
    """
    What a node sends a peer once it knows what the peer holds.
    """

    def test_batch_size_at_most_max_records(self):
        """
        Batches longer than a peer takes (MAX_RECORDS) are refused when the
        replicator is made, rather than every link dropping at its first
        catch-up.
        """
        for size in (0, MAX_RECORDS + 1):
            with self.subTest(batch_size=size):
                error = self.assertRaises(
                    ValueError, Replicator, A, self.store, SIGNER, Clock(), batch_size=size
                )
                self.assertIn(f"from 1 to {MAX_RECORDS}, not {size}", str(error))

    def test_resume_from_peer_position(self):
        """
        A peer that holds a log up to 7 gets records from 8 on, not from 1:
        a restart or a dropped link never re-sends everything.
        """
        self.store.preload(A, EPOCH_A, 1, 15)
        self.open()
        link = self.link()
        self.have(link, {A: {EPOCH_A: 7}})
        [sent] = link.of(Records)
        self.assertEqual(indexes(sent), list(range(8, 16)))
        self.assertEqual(self.store.read_calls, [(A, EPOCH_A, 7, 8)])

    def test_tail_with_gap_not_used(self):
        """
        Records that never reached the in-memory tail (a commit whose
        records could not be built) leave a gap in it: the records around
        the gap are read from disk, not taken from the wrong place in the
        tail.
        """
        self.open()
        link = self.link()
        self.have(link, {A: {EPOCH_A: 0}})
        self.ingest(3)
        self.ack(link, 3)
        self.store.append_own(3)
        self.ingest(3)
        self.ack(link, 3)
        sent = [index for message in link.of(Records) for index in indexes(message)]
        self.assertEqual(sent[-6:], [4, 5, 6, 7, 8, 9])
        self.assertEqual(self.store.read_calls, [(A, EPOCH_A, 3, 6)])

    def test_every_log_sent(self):
        """
        A peer that lacks logs gets all of them: this node's own and the
        third parties' it holds (transitive replication), each exactly as
        the origin stored it.
        """
        self.store.preload(A, EPOCH_A, 1, 3)
        self.store.preload(C, EPOCH_C, 1, 4)
        self.open()
        link = self.link()
        self.have(link, {B: {EPOCH_B: 9}})
        sent = {(m.origin, m.epoch): m.entries for m in link.of(Records)}
        self.assertEqual(sent, {(A, EPOCH_A): records(A, EPOCH_A, 1, 3), (C, EPOCH_C): records(C, EPOCH_C, 1, 4)})

    def test_held_logs_not_sent(self):
        """
        A peer that holds everything this node holds gets nothing.
        """
        self.store.preload(A, EPOCH_A, 1, 5)
        self.store.preload(C, EPOCH_C, 1, 4)
        self.open()
        link = self.link()
        self.have(link, {A: {EPOCH_A: 5}, C: {EPOCH_C: 6}})
        self.assertEqual(link.of(Records), [])

    def test_batches_and_window(self):
        """
        Records go in batches of batch_size, with at most ``window``
        batches unacknowledged; each ACK lets one more batch go, until the
        peer holds every record exactly once.
        """
        self.store.preload(A, EPOCH_A, 1, 55)
        self.open()
        link = self.link()
        self.have(link, {})
        first = link.take(Records)
        self.assertEqual([indexes(m) for m in first], [list(range(1, 11)), list(range(11, 21))])
        received: list[int] = []
        acked = 0
        for _ in range(20):
            if not first:
                break
            message = first.pop(0)
            received.extend(indexes(message))
            acked = message.entries[-1][0]
            self.ack(link, acked)
            sent = link.take(Records)
            self.assertLessEqual(len(sent), 1)
            first.extend(sent)
            self.assertLessEqual(len(first), self.window)
        self.assertEqual(received, list(range(1, 56)))
        self.assertEqual(acked, 55)
        self.assertEqual(self.peer_status()["lag"], {})

    def test_reads_several_batches(self):
        """
        Records not in memory are read from disk several batches at once,
        as many as the window has room for up to READ_BATCHES, and sent
        in batches of batch_size: each read can wait for a commit while
        sensors keep the database busy.
        """
        self.store.preload(A, EPOCH_A, 1, 100)
        self.open()
        self.replicator.window = READ_BATCHES + 2
        link = self.link()
        self.have(link, {})
        batches = READ_BATCHES * self.batch_size
        self.assertEqual(self.store.read_calls[0], (A, EPOCH_A, 0, batches))
        self.assertEqual(
            [indexes(m) for m in link.take(Records)][:READ_BATCHES],
            [list(range(n + 1, n + 11)) for n in range(0, batches, self.batch_size)],
        )
        # The window has room for two more batches, not READ_BATCHES.
        self.assertEqual(self.store.read_calls[1], (A, EPOCH_A, batches, 2 * self.batch_size))

    def test_live_push_from_tail(self):
        """
        A reading committed while a peer is caught up is pushed to it at
        once (no timer, no database read).
        """
        self.store.preload(A, EPOCH_A, 1, 3)
        self.open()
        link = self.link()
        self.have(link, {A: {EPOCH_A: 3}})
        self.assertEqual(link.of(Records), [])
        added = self.ingest(2)
        self.assertEqual(link.of(Records), [Records(A, EPOCH_A, added)])
        self.assertEqual(self.store.read_calls, [])

    def test_live_push_to_lagging_peer(self):
        """
        A peer that lags behind the records kept in memory is served from
        the store, from its own position, the new records included.
        """
        self.store.preload(A, EPOCH_A, 1, 3)
        self.open()
        self.ingest(2)
        link = self.link()
        self.have(link, {A: {EPOCH_A: 1}})
        [sent] = link.of(Records)
        self.assertEqual(indexes(sent), [2, 3, 4, 5])
        self.assertEqual(self.store.read_calls, [(A, EPOCH_A, 1, 4)])

    def test_refused_sent_again_after_delay(self):
        """
        An ACK below what was sent (the peer refused a record, corrupted on
        the way) makes the node send again from the peer's position, after
        RETRY_DELAY, not at once: a link that corrupts everything does not
        spin. The batch with the refused record halves the batch size; the
        batch after it, refused only because of the gap, does not.
        """
        self.store.preload(A, EPOCH_A, 1, 20)
        self.open()
        link = self.link()
        self.have(link, {})
        self.assertEqual(len(link.take(Records)), 2)
        self.ack(link, 4)
        self.ack(link, 4)
        self.assertEqual(link.of(Records), [])
        self.clock.advance(RETRY_DELAY * 0.99)
        self.assertEqual(link.of(Records), [])
        self.clock.advance(RETRY_DELAY * 0.02)
        self.assertEqual([indexes(m) for m in link.of(Records)], [list(range(5, 10)), list(range(10, 15))])

    def test_read_failure_retried(self):
        """
        When the store cannot read a log to send, the node tries again after
        RETRY_DELAY instead of giving up on that peer.
        """
        self.store.preload(A, EPOCH_A, 1, 5)
        self.open()
        self.store.hold_reads = True
        link = self.link()
        self.have(link, {})
        *_, d = self.store._held_reads.pop(0)
        d.errback(sqlite3.OperationalError("disk I/O error"))
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(link.of(Records), [])
        self.store.hold_reads = False
        self.clock.advance(RETRY_DELAY)
        self.assertEqual([indexes(m) for m in link.of(Records)], [[1, 2, 3, 4, 5]])


class ReceivingTests(ReplicatorTestCase):
    """
    What a node does with the records a peer sends it.
    """

    def setUp(self) -> None:
        super().setUp()
        self.open()
        self.peer = self.link()
        self.peer.take()

    def send(self, origin: str, epoch: str, batch: list[tuple], link: Optional[FakeLink] = None) -> None:
        self.replicator.received(link or self.peer, Records(origin, epoch, batch))

    def test_stored_and_acknowledged(self):
        """
        Records that check are stored, and the ACK tells how far the log is
        held now.
        """
        batch = records(B, EPOCH_B, 1, 5)
        self.send(B, EPOCH_B, batch)
        self.assertEqual(self.store.log(B, EPOCH_B), batch)
        self.assertEqual(self.peer.of(Ack), [Ack(B, EPOCH_B, 5)])
        self.assertEqual(self.peer_status()["received"], 5)

    def test_bad_hmac_not_stored(self):
        """
        A record whose HMAC does not check never reaches the store, nor does
        anything after it in the batch; it is counted as rejected, and the
        ACK reports the position unchanged so the sender sends it again.
        """
        self.send(B, EPOCH_B, records(B, EPOCH_B, 1, 2))
        tampered = records(B, EPOCH_B, 3, 6)
        tampered[1] = tampered[1][:3] + ("99.9C",) + tampered[1][4:]
        with capturedLogs() as events:
            self.send(B, EPOCH_B, tampered)
        [warning] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn(f"from peer {B}: checksum mismatch for {B} {EPOCH_B}:4 ", warning)
        stored = [r for _, _, batch in self.store.apply_calls[-1] for r in batch]
        self.assertEqual(stored, tampered[:1])
        self.assertEqual(self.store.log(B, EPOCH_B), records(B, EPOCH_B, 1, 3))
        self.assertEqual(self.peer.of(Ack)[-1], Ack(B, EPOCH_B, 3))
        self.assertEqual(self.peer_status()["rejected"], 1)

    def test_forged_first_record(self):
        """
        A batch whose first record is signed with another key stores
        nothing; the ACK reports the unchanged position.
        """
        self.send(B, EPOCH_B, records(B, EPOCH_B, 1, 2))
        forged = [record(B, EPOCH_B, 3, signer=FORGER), record(B, EPOCH_B, 4)]
        self.send(B, EPOCH_B, forged)
        self.assertEqual([r for _, _, batch in self.store.apply_calls[-1] for r in batch], [])
        self.assertEqual(self.store.log(B, EPOCH_B), records(B, EPOCH_B, 1, 2))
        self.assertEqual(self.peer.of(Ack)[-1], Ack(B, EPOCH_B, 2))
        self.assertEqual(self.peer_status()["rejected"], 1)
        self.assertEqual(self.peer_status()["received"], 2)

    def test_conflict_keeps_stored(self):
        """
        A record that checks but differs from the one stored at its
        position is a conflict: counted, and the stored one kept.
        """
        original = records(B, EPOCH_B, 1, 3)
        self.send(B, EPOCH_B, original)
        other = [original[0], record(B, EPOCH_B, 2, data="-5.0C"), original[2]]
        self.assertEqual(SIGNER.valid_prefix(B, EPOCH_B, other), 3)
        self.send(B, EPOCH_B, other)
        self.assertEqual(self.store.log(B, EPOCH_B), original)
        self.assertEqual(self.peer_status()["conflicts"], 1)
        self.assertEqual(self.peer.of(Ack)[-1], Ack(B, EPOCH_B, 3))

    def test_own_current_epoch_never_written(self):
        """
        A peer offering positions of this node's own current epoch beyond
        what it holds (only this node assigns them) gets a conflict, and
        nothing is written.
        """
        own = self.ingest(2)
        self.send(A, EPOCH_A, records(A, EPOCH_A, 1, 4))
        self.assertEqual(self.store.log(A, EPOCH_A), own)
        self.assertEqual(self.peer_status()["conflicts"], 2)
        self.assertEqual(self.peer.of(Ack)[-1], Ack(A, EPOCH_A, 2))

    def test_gap_not_stored(self):
        """
        A batch that does not continue the log (it starts past the position)
        is not stored: the ACK sends the sender back to the position.
        """
        self.send(B, EPOCH_B, records(B, EPOCH_B, 1, 2))
        self.send(B, EPOCH_B, records(B, EPOCH_B, 5, 6))
        self.assertEqual(len(self.store.log(B, EPOCH_B)), 2)
        self.assertEqual(self.peer.of(Ack)[-1], Ack(B, EPOCH_B, 2))

    def test_too_many_unacknowledged(self):
        """
        A peer may have ``window`` batches unacknowledged; one more breaks
        the protocol (BadMessage: the link is dropped), since it would make
        this node buffer without bound.
        """
        self.store.hold_applies = True
        for n in range(self.window):
            self.send(B, EPOCH_B, records(B, EPOCH_B, 1 + 10 * n, 10 + 10 * n))
        self.assertRaises(BadMessage, self.send, B, EPOCH_B, records(B, EPOCH_B, 100, 101))

    def test_acknowledged_batches_free_the_window(self):
        """
        Once a batch is stored and acknowledged it no longer counts against
        the peer's window.
        """
        self.store.hold_applies = True
        for n in range(self.window):
            self.send(B, EPOCH_B, records(B, EPOCH_B, 1 + 10 * n, 10 + 10 * n))
        while self.store._held_applies:
            self.store.release_apply()
        for n in range(self.window, 2 * self.window):
            self.send(B, EPOCH_B, records(B, EPOCH_B, 1 + 10 * n, 10 + 10 * n))
        while self.store._held_applies:
            self.store.release_apply()
        self.assertEqual(len(self.store.log(B, EPOCH_B)), 10 * 2 * self.window)

    def test_window_is_per_link(self):
        """
        Two links from peers each have their own window.
        """
        other = self.link(C)
        self.store.hold_applies = True
        for n in range(self.window):
            self.send(B, EPOCH_B, records(B, EPOCH_B, 1 + 10 * n, 10 + 10 * n))
            self.send(C, EPOCH_C, records(C, EPOCH_C, 1 + 10 * n, 10 + 10 * n), link=other)
        while self.store._held_applies:
            self.store.release_apply()
        self.assertEqual(len(self.store.log(B, EPOCH_B)), 10 * self.window)
        self.assertEqual(len(self.store.log(C, EPOCH_C)), 10 * self.window)

    def test_store_failure_acknowledged(self):
        """
        When the store cannot write a batch, the sender is still answered
        (with the unchanged position), so it sends the records again rather
        than waiting for ever with its window full.
        """
        self.store.fail_applies = True
        self.send(B, EPOCH_B, records(B, EPOCH_B, 1, 3))
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(self.peer.of(Ack), [Ack(B, EPOCH_B, 0)])
        self.store.fail_applies = False
        self.send(B, EPOCH_B, records(B, EPOCH_B, 1, 3))
        self.assertEqual(len(self.store.log(B, EPOCH_B)), 3)

    def test_received_records_forwarded(self):
        """
        Records received from one peer are pushed on at once to another
        caught-up peer, from memory (transitive and live).
        """
        onward = self.link(C)
        self.have(onward, {B: {EPOCH_B: 0}})
        batch = records(B, EPOCH_B, 1, 4)
        self.send(B, EPOCH_B, batch)
        self.assertEqual(onward.of(Records), [Records(B, EPOCH_B, batch)])
        self.assertEqual(self.store.read_calls, [])

    def test_not_forwarded_to_a_peer_linked_to_the_origin(self):
        """
        A peer that says (LINKS) it is linked to the origin gets that
        origin's records from the origin itself: they are not forwarded to it
        too, so a full mesh does not carry every record once per node. Once
        it reports the link gone, what it lacks is forwarded.
        """
        onward = self.link(C)
        self.have(onward, {B: {EPOCH_B: 0}})
        self.replicator.received(onward, Links(frozenset({A, B})))
        batch = records(B, EPOCH_B, 1, 4)
        self.send(B, EPOCH_B, batch)
        self.assertEqual(onward.of(Records), [])
        self.replicator.received(onward, Links(frozenset({A})))
        self.assertEqual(onward.of(Records), [Records(B, EPOCH_B, batch)])

class LinkDownTests(ReplicatorTestCase):
    """
    Links that go away while records are on the way.
    """

    def test_resumes_on_next_link(self):
        """
        When the link that carried the sends goes down, sending resumes on
        the peer's other link from the last position the peer acknowledged:
        nothing it may lack is skipped. The link broke with batches in
        flight, so they go in batches of half the size, and the size doubles
        back with each batch acknowledged whole.
        """
        self.store.preload(A, EPOCH_A, 1, 40)
        self.open()
        first = self.link()
        second = self.link(address="192.0.2.7:41001")
        self.have(second, {})
        self.have(first, {})
        self.assertEqual([indexes(m)[0] for m in first.take(Records)], [1, 11])
        self.ack(first, 10)
        self.assertEqual([indexes(m)[0] for m in first.take(Records)], [21])
        self.replicator.link_down(first)
        self.assertEqual([indexes(m)[0] for m in second.of(Records)], [11, 16])
        self.ack(second, 15)
        self.assertEqual([indexes(m)[0] for m in second.take(Records)], [11, 16, 21])
        self.ack(second, 20)
        self.ack(second, 30)
        self.assertEqual([indexes(m) for m in second.take(Records)], [list(range(31, 41))])

    def test_last_link_down(self):
        """
        With its last link gone a peer is sent nothing; on its next link the
        node waits for the peer's HAVE again and resumes from there.
        """
        self.store.preload(A, EPOCH_A, 1, 15)
        self.open()
        first = self.link()
        self.have(first, {})
        self.replicator.link_down(first)
        first.take()
        self.ingest(1)
        self.assertEqual(first.of(Records), [])
        second = self.link()
        self.assertEqual(second.of(Records), [])
        self.have(second, {A: {EPOCH_A: 12}})
        self.assertEqual([indexes(m) for m in second.of(Records)], [[13, 14, 15, 16]])

    def test_ack_on_dead_link_ignored(self):
        """
        Sends are counted against the link that carries them: a late ACK on
        another link does not open the window.
        """
        self.store.preload(A, EPOCH_A, 1, 50)
        self.open()
        first = self.link()
        second = self.link()
        self.have(first, {})
        self.assertEqual(len(first.take(Records)), 2)
        self.ack(second, 10)
        self.assertEqual(first.of(Records), [])


class RecoveryTests(ReplicatorTestCase):
    """
    A node that lost its own database gets its earlier epochs back.
    """

    def test_recovers_old_epoch(self):
        """
        A recovering node stays recovering (and keeps ingesting in its new
        epoch) until a peer has said which of its older epochs it holds and
        those records are stored; then it records the end of recovery once.
        """
        self.open(recovering=True)
        link = self.link()
        self.ingest(3)
        self.assertTrue(self.replicator.recovering)
        self.have(link, {A: {OLD_EPOCH_A: 25, EPOCH_A: 3}, B: {EPOCH_B: 1}})
        self.assertTrue(self.replicator.recovering)
        self.assertEqual(
            self.replicator.recovery_progress(),
            {f"{A}/{OLD_EPOCH_A}": {"have": 0, "target": 25}, f"{A}/{EPOCH_A}": {"have": 3, "target": 3}},
        )
        self.replicator.received(link, Records(A, OLD_EPOCH_A, records(A, OLD_EPOCH_A, 1, 20)))
        self.assertTrue(self.replicator.recovering)
        self.assertEqual(self.store.finished, 0)
        self.replicator.received(link, Records(A, OLD_EPOCH_A, records(A, OLD_EPOCH_A, 21, 25)))
        self.assertFalse(self.replicator.recovering)
        self.assertEqual(self.store.finished, 1)
        self.assertEqual(self.store.log(A, OLD_EPOCH_A), records(A, OLD_EPOCH_A, 1, 25))
        self.have(link, {A: {OLD_EPOCH_A: 30}})
        self.replicator.received(link, Records(A, OLD_EPOCH_A, records(A, OLD_EPOCH_A, 26, 30)))
        self.assertEqual(self.store.finished, 1)
        self.assertEqual(len(self.store.log(A, OLD_EPOCH_A)), 30)

    def test_waits_for_a_peer(self):
        """
        With no peer heard from, a recovering node stays recovering however
        long it runs.
        """
        self.open(recovering=True)
        self.link()
        self.ingest(3)
        self.clock.advance(3600)
        self.assertTrue(self.replicator.recovering)
        self.assertEqual(self.store.finished, 0)

    def test_nothing_to_recover(self):
        """
        As docs/recovery.md says, a node that has heard from a peer and holds
        every older epoch as far as any peer reported (here: none) is done.
        """
        self.open(recovering=True)
        link = self.link()
        self.have(link, {B: {EPOCH_B: 4}})
        self.assertFalse(self.replicator.recovering)
        self.assertEqual(self.store.finished, 1)

    def test_rejected_does_not_finish(self):
        """
        Older records that fail their check do not count towards recovery.
        """
        self.open(recovering=True)
        link = self.link()
        self.have(link, {A: {OLD_EPOCH_A: 2}})
        self.replicator.received(
            link, Records(A, OLD_EPOCH_A, [record(A, OLD_EPOCH_A, 1, signer=FORGER), record(A, OLD_EPOCH_A, 2)])
        )
        self.assertTrue(self.replicator.recovering)
        self.assertEqual(self.store.log(A, OLD_EPOCH_A), [])


class StatusTests(ReplicatorTestCase):
    """
    The ``peers`` entries and ``replication`` totals of /status.
    """

    def test_last_seen_moves_on_every_message(self):
        """
        A peer's last_seen is when its latest message arrived, whatever the
        message: the PING and PONG of an idle link move it as a HAVE does.
        """
        self.open()
        self.clock.advance(100)
        link = self.link()
        self.assertEqual(self.peer_status()["last_seen"], 100.0)
        for message in [Ping(), Pong(), Have({}), Ack(A, EPOCH_A, 0), Links(frozenset())]:
            self.clock.advance(10)
            self.replicator.received(link, message)
            self.assertEqual(self.peer_status()["last_seen"], self.clock.seconds(), message)

    def test_peer_entry(self):
        """
        Each peer has its address, id, link state, when it was last heard
        from, the records sent to and received from it, the rejected and
        conflicting ones, and per origin how many records it is known to
        lack and how long the oldest of them has been held here.
        """
        self.store.preload(A, EPOCH_A, 1, 10)
        self.store.preload(C, EPOCH_C, 1, 5)
        self.open()
        self.clock.advance(100)
        link = self.link(address="192.0.2.9:5000")
        self.clock.advance(5)
        self.have(link, {A: {EPOCH_A: 4}})
        self.ack(link, 10)
        self.ack(link, 5, origin=C, epoch=EPOCH_C)
        self.replicator.received(link, Records(B, EPOCH_B, records(B, EPOCH_B, 1, 3)))
        bad = [record(B, EPOCH_B, 4, signer=FORGER)]
        self.replicator.received(link, Records(B, EPOCH_B, bad))
        self.replicator.received(link, Records(B, EPOCH_B, [record(B, EPOCH_B, 1, data="0C")]))
        self.ingest(7)
        self.clock.advance(3)
        entry = self.peer_status()
        troubles = entry.pop("troubles")
        self.assertEqual([t["kind"] for t in troubles], ["refused record"])
        self.assertEqual(entry.pop("trouble_counts"), {"refused record": 1})
        self.assertIn("1 record refused", entry.pop("trouble"))
        self.assertEqual(entry.pop("max_batch_size"), 10)
        self.assertEqual(
            entry,
            {
                "address": "192.0.2.9:5000",
                "node_id": B,
                "connected": True,
                "authenticated": True,
                "last_seen": 105.0,
                "gone": False,
                "sent": 6 + 5 + 7,
                "received": 3,
                "rejected": 1,
                "conflicts": 1,
                "link_errors": 0,
                "links_opened": 1,
                "lag": {A: 7},
                "lag_s": {A: 3.0},
                "batch_size": 10,
                "full": None,
                "full_since": None,
            },
        )

    def test_dialled_addresses(self):
        """
        An address this node dials but has never authenticated is listed
        with no node id, connected while a handshake is under way, never
        authenticated; an address whose peer is known is not listed twice.
        """
        self.open()
        self.link(B, address="127.0.0.1:22346")
        peers, _ = self.replicator.status({"127.0.0.1:22346": True, "10.0.0.9:12346": True, "h:1": False})
        by_address = {p["address"]: p for p in peers}
        self.assertEqual(len(peers), 3)
        self.assertEqual(by_address["127.0.0.1:22346"]["node_id"], B)
        self.assertEqual(
            [(by_address[a]["node_id"], by_address[a]["connected"], by_address[a]["authenticated"])
             for a in ("10.0.0.9:12346", "h:1")],
            [(None, True, False), (None, False, False)],
        )
        self.assertEqual(by_address["h:1"]["lag"], {})

    def test_lag_per_origin(self):
        """
        Lag adds up, per origin, the records of every epoch the peer is known
        to lack.
        """
        self.store.preload(A, OLD_EPOCH_A, 1, 6)
        self.store.preload(A, EPOCH_A, 1, 4)
        self.store.preload(C, EPOCH_C, 1, 5)
        self.open()
        self.store.hold_reads = True
        link = self.link()
        self.have(link, {A: {OLD_EPOCH_A: 1}, C: {EPOCH_C: 5}})
        self.assertEqual(self.peer_status()["lag"], {A: 5 + 4})

    def test_disconnected_and_totals(self):
        """
        A peer whose links are gone stays listed, not connected; the totals
        add up every peer's counters.
        """
        self.open()
        b = self.link(B)
        c = self.link(C)
        self.replicator.received(b, Records(B, EPOCH_B, records(B, EPOCH_B, 1, 3)))
        self.replicator.received(c, Records(C, EPOCH_C, records(C, EPOCH_C, 1, 2)))
        self.replicator.received(c, Records(C, EPOCH_C, [record(C, EPOCH_C, 3, signer=FORGER)]))
        self.replicator.link_down(b)
        self.replicator.link_failed(FakeLink(B), "malformed message")
        stranger = FakeLink(B)
        stranger.authenticated = False
        self.replicator.link_failed(stranger, "cluster keys differ")
        self.assertEqual(
            (self.peer_status(B)["connected"], self.peer_status(B)["authenticated"]), (False, False)
        )
        self.assertTrue(self.peer_status(C)["connected"])
        _, totals = self.replicator.status()
        self.assertEqual(
            totals,
            {"sent": 0, "received": 5, "rejected": 1, "conflicts": 0, "link_errors": 1, "refused_links": 1,
             "refused_reasons": {"cluster keys differ": 1}},
        )


class FakeScrub:
    """
    What replication tells the scrub: records to check, repairs.
    """

    def __init__(self):
        self.pending: dict = {}
        self.checked: list = []
        self.repairs: list = []
        self.asked = 0

    def check_now(self, origin, epoch, index):
        self.checked.append((origin, epoch, index))
        return succeed(None)

    def repair(self, origin, epoch, entries, peer):
        self.repairs.append((origin, epoch, entries, peer))
        return succeed([entry[0] for entry in entries])

    def ask(self):
        self.asked += 1


class RepairTests(ReplicatorTestCase):
    """
    WANT and REPAIR between A and its peers, and what A's senders tell
    the scrub.
    """

    def setUp(self) -> None:
        super().setUp()
        self.scrub = self.replicator.scrub = FakeScrub()

    def test_want_answered(self):
        """
        A WANT for records A holds is answered with a REPAIR of those it
        holds; one for records it lacks gets no answer.
        """
        self.store.preload(C, EPOCH_C, 1, 5)
        self.open()
        link = self.link()
        link.take()
        self.replicator.received(link, Want(C, EPOCH_C, (2, 4, 9)))
        [repair] = link.take(Repair)
        self.assertEqual((repair.origin, repair.epoch), (C, EPOCH_C))
        self.assertEqual([e[0] for e in repair.entries], [2, 4])
        self.replicator.received(link, Want(C, EPOCH_C, (9,)))
        self.assertEqual(link.take(Repair), [])

    def test_want_sent_to_every_peer(self):
        """
        Replication asks one link of every linked peer.
        """
        self.open()
        b, c = self.link(B), self.link(C)
        b.take(), c.take()
        self.replicator.want(A, EPOCH_A, [3])
        self.assertEqual(b.take(Want), [Want(A, EPOCH_A, (3,))])
        self.assertEqual(c.take(Want), [Want(A, EPOCH_A, (3,))])

    def test_forged_repair(self):
        """
        Only the records of a REPAIR whose HMAC checks reach the scrub; a
        forged one is counted as rejected and named in the peer's trouble.
        """
        self.open()
        link = self.link()
        good = record(A, EPOCH_A, 3)
        forged = record(A, EPOCH_A, 4, signer=FORGER)
        self.replicator.received(link, Repair(A, EPOCH_A, [good, forged]))
        self.assertEqual(self.scrub.repairs, [(A, EPOCH_A, [good], B)])
        entry = self.peer_status()
        self.assertEqual(entry["rejected"], 1)
        self.assertIn("repair", entry["troubles"][-1]["reason"])
        self.replicator.received(link, Repair(A, EPOCH_A, [forged]))
        self.assertEqual(len(self.scrub.repairs), 1)

    def test_refused_record_checked(self):
        """
        A record the peer refuses is handed to the scrub to check at once.
        """
        self.store.preload(A, EPOCH_A, 1, 5)
        self.open()
        link = self.link()
        self.have(link, {})
        self.ack(link, 2)
        self.assertEqual(self.scrub.checked, [(A, EPOCH_A, 3)])

    def test_link_up_asks(self):
        """
        A new link asks for what is in quarantine.
        """
        self.open()
        self.link()
        self.assertEqual(self.scrub.asked, 0)
        self.scrub.pending[(A, EPOCH_A, 3)] = None
        self.link(C)
        self.assertEqual(self.scrub.asked, 1)


class StopTests(ReplicatorTestCase):
    """
    Stopping, so the store can be closed.
    """

    def test_waits_for_apply(self):
        """
        stop() fires only once the records being stored are committed, and
        leaves nothing scheduled on the clock.
        """
        self.open()
        link = self.link()
        self.store.hold_applies = True
        self.replicator.received(link, Records(B, EPOCH_B, records(B, EPOCH_B, 1, 3)))
        stopped = self.replicator.stop()
        self.assertNoResult(stopped)
        self.store.release_apply()
        self.successResultOf(stopped)
        self.assertEqual(len(self.store.log(B, EPOCH_B)), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waits_for_read(self):
        """
        stop() waits for a read under way, and nothing is sent after it.
        """
        self.store.preload(A, EPOCH_A, 1, 5)
        self.open()
        link = self.link()
        self.store.hold_reads = True
        self.have(link, {})
        stopped = self.replicator.stop()
        self.assertNoResult(stopped)
        self.store.release_read()
        self.successResultOf(stopped)
        self.assertEqual(link.of(Records), [])

    def test_idle(self):
        """
        stop() with nothing under way fires at once and cancels the pending
        announcement and retries.
        """
        self.store.preload(A, EPOCH_A, 1, 20)
        self.open()
        link = self.link()
        self.have(link, {})
        self.ack(link, 0)
        self.ingest(1)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(self.replicator.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ExportCursorTests(ReplicatorTestCase):
    """
    EXPORTED: the export cursors go to each peer on a new link and with
    the HAVE rounds that follow a change; a peer's reach the listeners.
    """

    def test_sent_on_link_and_when_moved(self):
        """
        A new link gets the cursors after HAVE; later HAVE rounds carry
        them again only once they moved.
        """
        self.open()
        cursors = [Exported("http://h/write", {(A, EPOCH_A): 3})]
        self.replicator.export_positions = lambda: list(cursors)
        link = self.link()
        self.assertEqual(link.of(Exported), cursors)
        link.take()
        self.ingest(1)
        self.clock.advance(HAVE_DELAY)
        self.assertEqual(link.take(Exported), cursors)
        self.ingest(1)
        self.clock.advance(HAVE_DELAY)
        self.assertEqual(link.take(Exported), [])
        cursors[0] = Exported("http://h/write", {(A, EPOCH_A): 5})
        self.replicator.announce()
        self.clock.advance(HAVE_DELAY)
        self.assertEqual(link.take(Exported), cursors)

    def test_heard(self):
        """
        A peer's EXPORTED goes to every listener.
        """
        self.open()
        heard = []
        self.replicator.export_listeners.append(heard.append)
        link = self.link()
        message = Exported("http://h/write", {(B, EPOCH_A): 9})
        self.replicator.received(link, message)
        self.assertEqual(heard, [message])

    def test_reachable(self):
        """
        A node is reachable when linked, or when a linked peer lists it in
        LINKS.
        """
        self.open()
        self.assertFalse(self.replicator.reachable(B))
        link = self.link(B)
        self.assertTrue(self.replicator.reachable(B))
        self.assertFalse(self.replicator.reachable(C))
        self.replicator.received(link, Links(frozenset({C})))
        self.assertTrue(self.replicator.reachable(C))
