"""
Tests for --ack-copies (p2pstore.copies and its hooks in p2pstore.ingest,
p2pstore.sensor, p2pstore.replication and p2pstore.node): who holds how much
of each log, the answers that wait for copies, the HELD relay, the sensor's
``ACK <k>`` line; on a task.Clock with StringTransports and the in-memory
fakes (tests.fakes, tests.replication_fakes), and one real Store.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore.copies import MAX_MARKS, CopyWait, HeldRelay, Holdings
from p2pstore.lines import AckCopies, parse_ack_line
from p2pstore.ingest import Ingestor, Pending
from p2pstore.lines import Reading
from p2pstore.node import Node
from p2pstore.replication import Replicator
from p2pstore.rows import OwnRows
from p2pstore.sensor import UNTERMINATED_PAUSE, SensorFactory
from p2pstore.storage import Store
from p2pstore.wire import Ack, Held, Records

from . import fakes
from .fakes import GOOD, SensorTestCase
from .replication_fakes import (
    A,
    B,
    C,
    D,
    EPOCH_A,
    EPOCH_B,
    EPOCH_C,
    OLD_EPOCH_A,
    SIGNER,
    FakeStore,
    records,
)
from .test_replication import FakeLink, ReplicatorTestCase

# Node A's current log, the "own log" of most tests here.
OWN = (A, EPOCH_A)
READING = Reading("Temperature", "39C", "2020-04-20 23:20:18.231325")
TIMEOUT = 10.0
NO_PEER = "no peer connected"


class FakeSensor:
    """
    What CopyWait calls on a sensor: answers_ready, counted; pause and
    resume, the reasons kept.
    """

    def __init__(self):
        self.ready = 0
        self.pauses: set = set()

    def answers_ready(self) -> None:
        self.ready += 1

    def pause(self, reason: str) -> None:
        self.pauses.add(reason)

    def resume(self, reason: str) -> None:
        self.pauses.discard(reason)


def pending(sensor: FakeSensor, count: int = 1, copies: int = 2) -> Pending:
    return Pending(sensor, [READING] * count, copies=copies)


class HoldingsTests(SynchronousTestCase):
    """
    L{Holdings}: how far each other node holds each log, as heard.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.holdings = Holdings(A, self.clock)
        self.rises: list = []
        self.holdings.listeners.append(lambda *rise: self.rises.append(rise))
        self.log = (B, EPOCH_B)

    def test_heard_only_rises(self) -> None:
        """
        Hearing that a node holds a log up to an index never lowers what is
        known of it (messages may arrive late, out of order); every rise, and
        only a rise, is told to the listeners.
        """
        self.holdings.heard(self.log, C, 5)
        self.holdings.heard(self.log, C, 3)
        self.holdings.heard(self.log, C, 5)
        self.assertEqual(self.holdings.holders(self.log), {C: 5})
        self.holdings.heard(self.log, C, 7)
        self.assertEqual(self.holdings.holders(self.log), {C: 7})
        self.assertEqual(self.rises, [(self.log, C, 5), (self.log, C, 7)])

    def test_heard_ignores_this_node(self) -> None:
        """
        This node is never counted among the other nodes holding a log, so
        it cannot confirm its own copies.
        """
        self.holdings.heard(OWN, A, 9)
        self.assertEqual(self.holdings.holders(OWN), {})
        self.assertEqual(self.holdings.others(OWN, 1), 0)
        self.assertEqual(self.holdings.nodes(), set())
        self.assertEqual(self.rises, [])

    def test_forget(self) -> None:
        """
        Forgetting a node (it linked again after all its links were down,
        and may have lost a file) drops what it was heard to hold of every
        log, and only its own; what it is heard to hold afterwards counts
        from scratch, however low.
        """
        other = (C, EPOCH_C)
        self.holdings.heard(self.log, C, 8)
        self.holdings.heard(other, C, 4)
        self.holdings.heard(self.log, D, 8)
        self.holdings.forget(C)
        self.assertEqual(self.holdings.holders(self.log), {D: 8})
        self.assertEqual(self.holdings.holders(other), {})
        self.assertEqual(self.holdings.others(self.log, 8), 1)
        self.assertEqual(self.holdings.others(other, 1), 0)
        self.holdings.heard(self.log, C, 2)
        self.assertEqual(self.holdings.holders(self.log), {C: 2, D: 8})
        self.assertEqual(self.rises[-1], (self.log, C, 2))

    def test_others(self) -> None:
        """
        others() counts the other nodes known to hold the record at an
        index (holding a log up to n, a node holds every index up to n).
        """
        self.holdings.heard(self.log, C, 5)
        self.holdings.heard(self.log, D, 3)
        self.assertEqual(
            [self.holdings.others(self.log, i) for i in (1, 3, 4, 5, 6)], [2, 2, 1, 1, 0]
        )
        self.assertEqual(self.holdings.others((D, EPOCH_C), 1), 0)

    def test_copied_to(self) -> None:
        """
        copied_to() is the highest index held by at least that many other
        nodes: 0 when too few hold anything, no limit when none is needed.
        """
        self.holdings.heard(self.log, C, 5)
        self.holdings.heard(self.log, D, 3)
        self.assertEqual(self.holdings.copied_to(self.log, 1), 5)
        self.assertEqual(self.holdings.copied_to(self.log, 2), 3)
        self.assertEqual(self.holdings.copied_to(self.log, 3), 0)
        self.assertEqual(self.holdings.copied_to((D, EPOCH_C), 1), 0)
        self.assertGreaterEqual(self.holdings.copied_to(self.log, 0), 2**62)

    def test_under_copied(self) -> None:
        """
        /status lists the ranges this node holds that fewer than the wanted
        copies hold, with how many do and "since": the clock time the first
        index of the range was stored here. A range fully copied is gone.
        """
        self.holdings.stored(OWN, 3)
        self.clock.advance(5)
        self.holdings.stored(OWN, 7)
        self.clock.advance(5)
        range_of = {"origin": A, "epoch": EPOCH_A, "last": 7}
        self.assertEqual(
            self.holdings.under_copied({OWN: 7}, 2),
            [{**range_of, "first": 1, "copies": 1, "since": 100}],
        )
        self.holdings.heard(OWN, B, 3)
        self.assertEqual(
            self.holdings.under_copied({OWN: 7}, 2),
            [{**range_of, "first": 4, "copies": 1, "since": 105}],
        )
        self.holdings.heard(OWN, B, 7)
        self.assertEqual(self.holdings.under_copied({OWN: 7}, 2), [])

    def test_under_copied_counts_copies(self) -> None:
        """
        With three copies wanted, a range one peer holds is listed with two
        copies (this node and that peer).
        """
        self.holdings.stored(OWN, 4)
        self.holdings.heard(OWN, B, 4)
        self.assertEqual(
            self.holdings.under_copied({OWN: 4}, 3),
            [{"origin": A, "epoch": EPOCH_A, "first": 1, "last": 4, "copies": 2, "since": 100}],
        )
        self.holdings.heard(OWN, C, 2)
        [entry] = self.holdings.under_copied({OWN: 4}, 3)
        self.assertEqual((entry["first"], entry["copies"]), (3, 2))

    def test_since_after_a_holder_lost_its_copy(self) -> None:
        """
        When a peer that held a range is forgotten (it linked again after
        all its links were down, and may have lost it), the range is
        under-copied again, "since" the time it was first stored
        here: reading /status in between does not change the answer.
        """
        self.holdings.stored(OWN, 5)
        self.clock.advance(10)
        self.holdings.heard(OWN, B, 5)
        self.holdings.under_copied({OWN: 5}, 2)
        self.holdings.forget(B)
        [entry] = self.holdings.under_copied({OWN: 5}, 2)
        self.assertEqual((entry["first"], entry["since"]), (1, 100))

    def test_since_never_later_than_stored(self) -> None:
        """
        However many ranges a log was stored in (past MAX_MARKS, where the
        marks are thinned), "since" is never later than the time the first
        under-copied index was really stored: /status does not make readings
        look under-copied for less time than they are.
        """
        for index in range(1, MAX_MARKS + 2):
            self.holdings.stored(OWN, index)
            self.clock.advance(1)
        stored_at = {index: 100 + index - 1 for index in range(1, MAX_MARKS + 2)}
        for held in (1, 2, 501):
            self.holdings.heard(OWN, B, held)
            [entry] = self.holdings.under_copied({OWN: MAX_MARKS + 1}, 2)
            self.assertEqual(entry["first"], held + 1)
            self.assertLessEqual(entry["since"], stored_at[held + 1], f"B holds {held}")


class CopyWaitTestCase(SynchronousTestCase):
    """
    A L{CopyWait} for node A's own log, with a timeout of TIMEOUT seconds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.holdings = Holdings(A, self.clock)
        self.why = NO_PEER
        self.copy_wait = CopyWait(self.holdings, self.clock, TIMEOUT, lambda: OWN, lambda: self.why)
        self.sensor = FakeSensor()

    def assertWaiting(self, *pendings: Pending) -> None:
        for p in pendings:
            self.assertFalse(p.answered)
            self.assertIsNone(p.indexes)


class CopyWaitTests(CopyWaitTestCase):
    """
    Readings asked for with k copies are answered OK once k - 1 other nodes
    hold them, or ERR copies after the timeout.
    """

    def test_already_held(self) -> None:
        """
        Readings that enough other nodes already hold get their indexes at
        once, and start no timer.
        """
        self.holdings.heard(OWN, B, 5)
        p = pending(self.sensor, 2)
        self.copy_wait.wait(p, [4, 5], 2)
        self.assertEqual(p.indexes, [4, 5])
        self.assertEqual((self.copy_wait.waiting, self.copy_wait.confirmed), (0, 2))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waits_until_held(self) -> None:
        """
        Readings not yet held by enough other nodes wait, their sensor not
        told; once a peer is heard to hold all of them, they get their
        indexes and the sensor is told its answers are ready.
        """
        p = pending(self.sensor, 2)
        self.copy_wait.wait(p, [1, 2], 2)
        self.assertWaiting(p)
        self.assertEqual(self.sensor.ready, 0)
        self.assertEqual(self.copy_wait.waiting, 2)
        self.holdings.heard(OWN, B, 1)
        self.assertWaiting(p)
        self.assertEqual(self.sensor.ready, 0)
        self.holdings.heard(OWN, B, 2)
        self.assertEqual(p.indexes, [1, 2])
        self.assertIsNone(p.error)
        self.assertEqual(self.sensor.ready, 1)
        self.assertEqual((self.copy_wait.waiting, self.copy_wait.confirmed), (0, 2))

    def test_confirmed_readings_not_kept(self) -> None:
        """
        Readings confirmed in the order they came are let go at once, not
        kept until their deadline: at 80,000 readings/s and a 10 s timeout
        that was half a gigabyte. One confirmed behind an older one still
        waiting holds no reference to its pending.
        """
        first, second, third = (pending(self.sensor, 1) for _ in range(3))
        self.copy_wait.wait(first, [1], 2)
        self.copy_wait.wait(second, [2], 2)
        self.holdings.heard(OWN, B, 2)
        self.assertEqual(sum(map(len, self.copy_wait._by_deadline.values())), 0)
        self.copy_wait.wait(third, [9], 2)
        resent = pending(self.sensor, 1)
        self.copy_wait.wait(resent, [3], 2)
        self.holdings.heard(OWN, B, 3)
        self.assertEqual(resent.indexes, [3])
        kept = [entry for queue in self.copy_wait._by_deadline.values() for entry in queue]
        self.assertEqual([entry.pending for entry in kept], [third, None])

    def test_each_sensor_told(self) -> None:
        """
        One rise that confirms the readings of several sensors tells each
        of them.
        """
        other = FakeSensor()
        first, second = pending(self.sensor), pending(other)
        self.copy_wait.wait(first, [1], 2)
        self.copy_wait.wait(second, [2], 2)
        self.holdings.heard(OWN, B, 2)
        self.assertEqual((first.indexes, second.indexes), ([1], [2]))
        self.assertEqual((self.sensor.ready, other.ready), (1, 1))

    def test_other_logs_do_not_count(self) -> None:
        """
        Only copies of this node's current log count: a peer holding an
        older epoch of it, or another node's log, up to the same index
        confirms nothing.
        """
        p = pending(self.sensor)
        self.copy_wait.wait(p, [1], 2)
        self.holdings.heard((A, OLD_EPOCH_A), B, 5)
        self.holdings.heard((B, EPOCH_B), C, 5)
        self.assertWaiting(p)
        self.assertEqual(self.sensor.ready, 0)

    def test_timeout(self) -> None:
        """
        After the timeout the readings are answered with exactly how many
        nodes hold them, how many were asked for, and why copies lack; a
        copy heard afterwards does not turn that answer into an OK.
        """
        p = pending(self.sensor)
        self.copy_wait.wait(p, [1], 2)
        self.clock.advance(TIMEOUT - 0.5)
        self.assertWaiting(p)
        with capturedLogs() as events:
            self.clock.advance(0.5)
        self.assertEqual(p.error, "copies: 1 of 2 (no peer connected); kept, send again to confirm")
        self.assertIsNone(p.indexes)
        self.assertEqual(self.sensor.ready, 1)
        self.assertEqual(
            (self.copy_wait.waiting, self.copy_wait.timeouts, self.copy_wait.confirmed), (0, 1, 0)
        )
        [warning] = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("1 readings were answered 'ERR copies' (no peer connected)", warning)
        self.holdings.heard(OWN, B, 1)
        self.assertIsNone(p.indexes)
        self.assertEqual(self.copy_wait.confirmed, 0)
        self.assertEqual(self.sensor.ready, 1)

    def test_timeout_counts_copies_held(self) -> None:
        """
        The ERR counts this node and the peers heard to hold the readings,
        and gives the reason of the moment.
        """
        self.why = "peers behind"
        self.holdings.heard(OWN, B, 3)
        p = pending(self.sensor, 2, copies=3)
        self.copy_wait.wait(p, [2, 3], 3)
        self.assertWaiting(p)
        self.clock.advance(TIMEOUT)
        self.assertEqual(p.error, "copies: 2 of 3 (peers behind); kept, send again to confirm")
        self.assertEqual(self.copy_wait.timeouts, 2)

    def test_copies_wait_apart(self) -> None:
        """
        Readings that want 3 copies do not hold up readings stored after
        them that want 2, and are confirmed only once 2 other nodes hold
        them.
        """
        three, two = pending(self.sensor, copies=3), pending(self.sensor)
        self.copy_wait.wait(three, [1], 3)
        self.copy_wait.wait(two, [2], 2)
        self.holdings.heard(OWN, B, 2)
        self.assertEqual(two.indexes, [2])
        self.assertWaiting(three)
        self.holdings.heard(OWN, C, 1)
        self.assertEqual(three.indexes, [1])
        self.assertEqual(self.copy_wait.confirmed, 2)

    def test_each_expires_at_its_deadline(self) -> None:
        """
        Readings stored at different times each wait the whole timeout,
        whichever copies they want: none is answered early with the first,
        none late.
        """
        first = pending(self.sensor)
        self.copy_wait.wait(first, [1], 2)
        self.clock.advance(3)
        second = pending(self.sensor, copies=3)
        self.copy_wait.wait(second, [2], 3)
        self.clock.advance(4)
        third = pending(self.sensor)
        self.copy_wait.wait(third, [3], 2)
        self.clock.advance(3)
        self.assertIsNotNone(first.error)
        self.assertWaiting(second, third)
        self.clock.advance(2.5)
        self.assertWaiting(second, third)
        self.clock.advance(0.5)
        self.assertIsNotNone(second.error)
        self.assertWaiting(third)
        self.clock.advance(3.5)
        self.assertWaiting(third)
        self.clock.advance(0.5)
        self.assertIsNotNone(third.error)
        self.assertEqual(self.copy_wait.timeouts, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_confirmed_then_later_expires(self) -> None:
        """
        The timer of readings confirmed in time does not cut short the wait
        of readings stored after them.
        """
        first = pending(self.sensor)
        self.copy_wait.wait(first, [1], 2)
        self.clock.advance(5)
        second = pending(self.sensor)
        self.copy_wait.wait(second, [2], 2)
        self.holdings.heard(OWN, B, 1)
        self.assertEqual(first.indexes, [1])
        self.clock.advance(5)
        self.assertWaiting(second)
        self.clock.advance(5)
        self.assertIsNotNone(second.error)

    def test_stop(self) -> None:
        """
        At a stop every reading still waiting is answered, saying the node
        is stopping, and no timer is left behind.
        """
        first, second = pending(self.sensor), pending(self.sensor, 2, copies=3)
        self.copy_wait.wait(first, [1], 2)
        self.copy_wait.wait(second, [2, 3], 3)
        self.copy_wait.stop()
        self.assertEqual(first.error, "copies: 1 of 2 (this node is stopping); kept, send again to confirm")
        self.assertEqual(second.error, "copies: 1 of 3 (this node is stopping); kept, send again to confirm")
        self.assertEqual((self.copy_wait.waiting, self.copy_wait.timeouts), (0, 3))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.sensor.ready, 1)

    def test_too_many_waiting_pause_sensors(self) -> None:
        """
        Past max_waiting readings waiting for copies, each sensor that sends
        more is no longer read; once half are answered, all are read again.
        """
        self.copy_wait.max_waiting = 4
        other = FakeSensor()
        self.copy_wait.wait(pending(self.sensor, 4), [1, 2, 3, 4], 2)
        self.assertEqual(self.sensor.pauses, set())
        self.copy_wait.wait(pending(other), [5], 2)
        self.assertEqual(other.pauses, {"copies"})
        self.copy_wait.wait(pending(self.sensor), [6], 2)
        self.assertEqual(self.sensor.pauses, {"copies"})
        self.holdings.heard(OWN, B, 3)
        self.assertEqual((self.sensor.pauses, other.pauses), ({"copies"}, {"copies"}))
        self.holdings.heard(OWN, B, 4)
        self.assertEqual((self.sensor.pauses, other.pauses), (set(), set()))

    def test_paused_sensors_read_after_timeout(self) -> None:
        """
        Sensors paused for copies are read again once the waiting readings
        time out.
        """
        self.copy_wait.max_waiting = 1
        self.copy_wait.wait(pending(self.sensor, 2), [1, 2], 2)
        self.assertEqual(self.sensor.pauses, {"copies"})
        self.clock.advance(TIMEOUT)
        self.assertEqual(self.sensor.pauses, set())

    def test_status(self) -> None:
        """
        The status tells the timeout and the counts of readings waiting,
        timed out and confirmed.
        """
        self.copy_wait.wait(pending(self.sensor, 2), [1, 2], 2)
        self.copy_wait.wait(pending(self.sensor), [3], 2)
        self.holdings.heard(OWN, B, 2)
        self.assertEqual(
            self.copy_wait.status(),
            {"ack_timeout_s": TIMEOUT, "waiting_for_copies": 1, "copies_timeouts": 0, "confirmed": 2},
        )
        self.clock.advance(TIMEOUT)
        self.assertEqual(self.copy_wait.status()["copies_timeouts"], 1)
        self.assertEqual(self.copy_wait.status()["waiting_for_copies"], 0)

    def test_resent_reading_not_held_up(self) -> None:
        """
        A resent reading is answered with the index it was stored at
        earlier, which may be below the readings waiting before it: once a
        peer holds that index it is answered OK, whatever newer readings of
        other sensors still wait.
        """
        newer, resent = pending(self.sensor), pending(FakeSensor())
        self.copy_wait.wait(newer, [5], 2)
        self.copy_wait.wait(resent, [1], 2)
        self.holdings.heard(OWN, B, 1)
        self.assertEqual(resent.indexes, [1])
        self.assertWaiting(newer)

    def test_no_err_when_copies_exist(self) -> None:
        """
        A reading is never answered 'ERR copies: 2 of 2': if the copies it
        asked for exist when its time is up, it is answered OK.
        """
        newer, resent = pending(self.sensor), pending(FakeSensor())
        self.copy_wait.wait(newer, [5], 2)
        self.copy_wait.wait(resent, [1], 2)
        self.holdings.heard(OWN, B, 1)
        self.clock.advance(TIMEOUT)
        self.assertNotEqual(resent.error, "copies: 2 of 2 (no peer connected); kept, send again to confirm")
        self.assertEqual(resent.indexes, [1])


class HeldRelayTests(SynchronousTestCase):
    """
    L{HeldRelay} at node B: what it hears of A's log held elsewhere goes
    towards A.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.holdings = Holdings(B, self.clock)
        self.sent: list = []
        self.linked: set = set()
        # (holder, origin) pairs whose LINKS say they are linked.
        self.reaching: set = set()
        self.relay = HeldRelay(
            B, self.holdings, self.clock, lambda peer, message: self.sent.append((peer, message)),
            lambda node: node in self.linked,
            lambda holder, origin: (holder, origin) in self.reaching,
        )
        self.log = (A, EPOCH_A)

    def test_to_the_origin(self) -> None:
        """
        When B hears that C holds A's log, and B is linked to A, it tells A
        with one HELD at the end of the reactor turn.
        """
        self.linked = {A, C}
        self.holdings.heard(self.log, C, 4)
        self.assertEqual(self.sent, [])
        self.clock.advance(0)
        self.assertEqual(self.sent, [(A, Held(A, EPOCH_A, {C: 4}))])

    def test_not_when_the_holder_reaches_the_origin(self) -> None:
        """
        A holder linked to the origin itself (its LINKS say so) is heard by
        the origin directly: in a full mesh nothing is relayed.
        """
        self.linked = {A, C}
        self.reaching = {(C, A)}
        self.holdings.heard(self.log, C, 4)
        self.clock.advance(0)
        self.assertEqual(self.sent, [])

    def test_to_the_way_it_came(self) -> None:
        """
        Not linked to the origin, B tells the peer A's log came to it from,
        the way back towards A.
        """
        self.linked = {C, D}
        self.relay.came_from(self.log, D)
        self.holdings.heard(self.log, C, 4)
        self.clock.advance(0)
        self.assertEqual(self.sent, [(D, Held(A, EPOCH_A, {C: 4}))])

    def test_no_way(self) -> None:
        """
        Not linked to the origin, and with no peer the log came from, B
        sends nothing.
        """
        self.linked = {C}
        self.holdings.heard(self.log, C, 4)
        self.clock.advance(0)
        self.assertEqual(self.sent, [])

    def test_never_to_the_holder(self) -> None:
        """
        A node is never told that it holds a log itself: not the origin
        about its own copy, nor the peer a log came from about its copy.
        """
        self.linked = {A, C}
        self.holdings.heard(self.log, A, 4)
        other = (C, EPOCH_C)
        self.relay.came_from(other, D)
        self.linked = {D}
        self.holdings.heard(other, D, 7)
        self.clock.advance(0)
        self.assertEqual(self.sent, [])

    def test_coalesced(self) -> None:
        """
        Rises within one reactor turn go out as one HELD per peer and log,
        with the highest index heard of each holder; a rise in a later turn
        goes out then.
        """
        self.linked = {A}
        older = (A, OLD_EPOCH_A)
        self.holdings.heard(self.log, C, 2)
        self.holdings.heard(self.log, C, 5)
        self.holdings.heard(self.log, D, 3)
        self.holdings.heard(older, C, 1)
        self.clock.advance(0)
        self.assertEqual(
            sorted(self.sent, key=lambda sent: sent[1].epoch),
            [(A, Held(A, OLD_EPOCH_A, {C: 1})), (A, Held(A, EPOCH_A, {C: 5, D: 3}))],
        )
        self.sent.clear()
        self.holdings.heard(self.log, D, 4)
        self.clock.advance(0)
        self.assertEqual(self.sent, [(A, Held(A, EPOCH_A, {D: 4}))])

    def test_own_log_not_relayed(self) -> None:
        """
        What B hears of its own log stays with B: it is the origin.
        """
        self.linked = {A, C}
        own = (B, EPOCH_B)
        self.relay.came_from(own, A)
        self.holdings.heard(own, C, 3)
        self.clock.advance(0)
        self.assertEqual(self.sent, [])

    def test_stopped(self) -> None:
        """
        After stop() nothing is sent: neither what was heard in the same
        turn nor anything later, and no call is left on the clock.
        """
        self.linked = {A}
        self.holdings.heard(self.log, C, 2)
        self.relay.stop()
        self.holdings.heard(self.log, C, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(0)
        self.assertEqual(self.sent, [])


class ParseAckLineTests(SynchronousTestCase):
    """
    A sensor's C{ACK <k>} line.
    """

    def test_accepted(self) -> None:
        """
        A number of copies from 1 to the cluster's size is taken, and
        answered C{OK ack <k>}.
        """
        self.assertEqual(parse_ack_line(b"ACK 2", 3), (2, b"OK ack 2\n"))
        self.assertEqual(parse_ack_line(b"ACK 3", 3), (3, b"OK ack 3\n"))
        self.assertEqual(parse_ack_line(b"ACK 1", 1), (1, b"OK ack 1\n"))

    def test_beyond_the_cluster(self) -> None:
        """
        More copies than the cluster has nodes are refused with an ERR that
        names the cluster's size.
        """
        for cluster, name in [(2, b"2 nodes"), (1, b"1 node")]:
            copies, answer = parse_ack_line(b"ACK 3", cluster)
            self.assertIsNone(copies)
            self.assertTrue(answer.startswith(b"ERR "), answer)
            self.assertTrue(answer.endswith(name + b"\n"), answer)
            self.assertEqual(answer.count(b"\n"), 1)

    def test_not_a_number_of_copies(self) -> None:
        """
        Zero, a negative number, text, a non-ASCII digit, a huge number, a
        fraction or nothing are refused with one ERR line.
        """
        for line in [b"ACK 0", b"ACK -1", b"ACK x", "ACK ²".encode(), b"ACK " + b"9" * 30,
                     b"ACK 1.5", b"ACK ", b"ACK 2 3", b"ACK +2"]:
            copies, answer = parse_ack_line(line, 5)
            self.assertIsNone(copies, line)
            self.assertTrue(answer.startswith(b"ERR "), (line, answer))
            self.assertTrue(answer.endswith(b"\n"), (line, answer))
            self.assertEqual(answer.count(b"\n"), 1, (line, answer))


class AckLineTests(SensorTestCase):
    """
    Sensor connections with --ack-copies (L{AckCopies}), over the fake store
    of tests.fakes, with a L{CopyWait} behind the ingestor.
    """

    default = 1
    cluster = 2

    def setUp(self) -> None:
        super().setUp()
        self.holdings = Holdings(fakes.NODE_ID, self.clock)
        self.copy_wait = CopyWait(
            self.holdings, self.clock, TIMEOUT, lambda: (fakes.NODE_ID, fakes.EPOCH), lambda: NO_PEER
        )
        self.ingestor.copy_wait = self.copy_wait
        self.factory = SensorFactory(
            self.ingestor, self.max_line, self.now, self.clock,
            acks=AckCopies(self.default, lambda: self.cluster),
        )
        self.submitted: list[Pending] = []
        submit = self.ingestor.submit

        def spy(p: Pending) -> None:
            self.submitted.append(p)
            submit(p)

        self.patch(self.ingestor, "submit", spy)
        self.open_store()
        self.protocol, self.transport = self.connect()

    def held(self, last: int) -> None:
        """
        A peer is heard to hold this node's log up to ``last``.
        """
        self.holdings.heard((fakes.NODE_ID, fakes.EPOCH), B, last)

    def test_ack_first(self) -> None:
        """
        C{ACK 2} before the first reading is answered C{OK ack 2} at once,
        and the readings after it wait for a second copy before their OK.
        """
        self.protocol.dataReceived(b"ACK 2\n" + GOOD + b"\n")
        self.assertEqual(self.answers(self.transport), [b"OK ack 2"])
        self.assertEqual([p.copies for p in self.submitted], [2])
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK ack 2"])
        self.held(1)
        self.assertEqual(self.answers(self.transport), [b"OK ack 2", b"OK 1"])

    def test_ack_alone_then_readings(self) -> None:
        """
        An C{ACK} line in a read of its own (with C{\\r\\n}) holds for the
        readings of later reads.
        """
        self.protocol.dataReceived(b"ACK 2\r\n")
        self.assertEqual(self.answers(self.transport), [b"OK ack 2"])
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.assertEqual([p.copies for p in self.submitted], [2])
        self.assertEqual(self.protocol.ack_copies, 2)

    def test_default(self) -> None:
        """
        Without an ACK line, readings get the node's --ack-copies; with
        the default of 1 they are answered OK at their commit.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.assertEqual([p.copies for p in self.submitted], [self.default])
        self.commit_all()
        if self.default == 1:
            self.assertEqual(self.answers(self.transport), [b"OK 1"])
        else:
            self.assertEqual(self.answers(self.transport), [])

    def test_ack_with_a_comma_is_a_reading(self) -> None:
        """
        C{ACK 2,5C} is a reading of type "ACK 2" (a line with a comma is
        never an ACK line), whichever way the chunk is parsed: alone, or
        beside a line that sends it down the line-by-line path.
        """
        self.protocol.dataReceived(b"ACK 2,5C\n")
        self.protocol.dataReceived(b"ACK 2,6C\nno comma here\n")
        self.commit_all()
        self.held(2)
        answers = self.answers(self.transport)
        self.assertEqual(answers[0], b"OK 1")
        self.assertEqual(answers[1], b"OK 2")
        self.assertTrue(answers[2].startswith(b"ERR "), answers)
        self.assertEqual(
            [r.sensor_type for p in self.submitted for r in p.readings], ["ACK 2", "ACK 2"]
        )

    def test_ack_after_a_reading(self) -> None:
        """
        An ACK line after the first reading is refused, in the same read or
        a later one, and changes nothing.
        """
        self.protocol.dataReceived(GOOD + b"\nACK 2\n")
        self.protocol.dataReceived(b"ACK 3\n" + GOOD + b"\n")
        self.commit_all()
        # Copies for the readings, with --ack-copies 2.
        self.held(2)
        self.assertEqual(
            self.answers(self.transport),
            [
                b"OK 1",
                b"ERR ACK <k> comes before the first reading",
                b"ERR ACK <k> comes before the first reading",
                b"OK 2",
            ],
        )
        self.assertEqual([p.copies for p in self.submitted], [self.default] * 2)
        self.assertEqual(
            [r.reason for r in self.store.rejected], ["ACK <k> comes before the first reading"] * 2
        )

    def test_ack_beyond_the_cluster(self) -> None:
        """
        C{ACK 9} in a cluster of 2 nodes is refused with an ERR naming the
        cluster's size, and the readings keep the default.
        """
        self.protocol.dataReceived(b"ACK 9\n")
        [answer] = self.answers(self.transport)
        self.assertTrue(answer.startswith(b"ERR "), answer)
        self.assertIn(b"2 nodes", answer)
        self.assertEqual(self.protocol.ack_copies, self.default)
        self.protocol.dataReceived(GOOD + b"\n")
        self.assertEqual([p.copies for p in self.submitted], [self.default])

    def test_refused_then_good_ack(self) -> None:
        """
        After a refused ACK line, a good one before the first reading still
        counts.
        """
        self.protocol.dataReceived(b"ACK x\nACK 2\n" + GOOD + b"\n")
        answers = self.answers(self.transport)
        self.assertEqual(len(answers), 2)
        self.assertTrue(answers[0].startswith(b"ERR "), answers)
        self.assertEqual(answers[1], b"OK ack 2")
        self.assertEqual([p.copies for p in self.submitted], [2])

    def test_answers_in_line_order(self) -> None:
        """
        The answers to ACK lines, refused lines and readings waiting for
        copies come back in the order of the lines.
        """
        self.protocol.dataReceived(b"bad\nACK 2\n" + GOOD + b"\nACK 3\nbad\n")
        self.assertEqual(self.answers(self.transport), [b"ERR missing value", b"OK ack 2"])
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"ERR missing value", b"OK ack 2"])
        self.held(1)
        self.assertEqual(
            self.answers(self.transport),
            [
                b"ERR missing value",
                b"OK ack 2",
                b"OK 1",
                b"ERR ACK <k> comes before the first reading",
                b"ERR missing value",
            ],
        )

    def test_not_read_while_too_many_wait(self) -> None:
        """
        A connection whose readings push the answers waiting for copies past
        the limit is not read until they are answered.
        """
        self.copy_wait.max_waiting = 1
        self.protocol.dataReceived(b"ACK 2\n" + GOOD + b"\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.transport.producerState, "paused")
        self.held(2)
        self.assertEqual(self.answers(self.transport), [b"OK ack 2", b"OK 1", b"OK 2"])
        self.assertStillServing(self.transport)

    def test_timed_out_then_sent_again(self) -> None:
        """
        A reading whose copies did not come in time is answered ERR copies
        but kept; sent again once a peer holds it, it is answered OK with
        the index it was stored at.
        """
        line = b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n"
        self.protocol.dataReceived(b"ACK 2\n" + line)
        self.commit_all()
        self.clock.advance(TIMEOUT)
        self.assertEqual(
            self.answers(self.transport),
            [b"OK ack 2", b"ERR copies: 1 of 2 (no peer connected); kept, send again to confirm"],
        )
        self.assertEqual(len(self.store.rows), 1)
        self.held(1)
        self.transport.clear()
        self.protocol.dataReceived(line)
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1"])
        self.assertEqual(len(self.store.rows), 1)


class AckLineDefaultTwoTests(AckLineTests):
    """
    The same with --ack-copies 2, and lines long enough for the fast path
    of plain lines (the sensor protocol parses whole chunks of them at once).
    """

    default = 2
    max_line = 1024

    def test_default_waits(self) -> None:
        """
        With --ack-copies 2 and no ACK line, a reading is answered OK only
        once a peer holds it.
        """
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.transport.value(), b"")
        self.held(2)
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2"])

    def test_ack_one(self) -> None:
        """
        C{ACK 1} asks for this node's disk alone: OK at the commit.
        """
        self.protocol.dataReceived(b"ACK 1\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK ack 1", b"OK 1"])


class WatchedStore:
    """
    A real Store whose appends a test can wait for.
    """

    def __init__(self, store: Store):
        self.store = store
        self.appends: list = []

    @property
    def path(self):
        return self.store.path

    def append(self, *args):
        d = self.store.append(*args)
        self.appends.append(d)
        return d


class RealStoreTests(TestCase):
    """
    An ingestor over a real Store (SQLite in a temporary directory, through
    the reactor's thread pool), on a task.Clock, with a L{CopyWait}.
    """

    async def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.store = Store(path=directory / "self_sensor_data.db", node_id=fakes.NODE_ID)
        self.addCleanup(self.store.close)
        opened = await self.store.open()
        self.clock = Clock()
        self.clock.advance(fakes.START)
        self.watched = WatchedStore(self.store)
        self.ingestor = Ingestor(self.watched, OwnRows(fakes.NODE_ID, fakes.SIGNER), self.clock)
        self.ingestor.opened(opened)
        self.holdings = Holdings(fakes.NODE_ID, self.clock)
        self.own = (fakes.NODE_ID, self.store.epoch)
        self.copy_wait = self.ingestor.copy_wait = CopyWait(
            self.holdings, self.clock, TIMEOUT, lambda: self.own, lambda: NO_PEER
        )
        self.factory = SensorFactory(
            self.ingestor, 1024, lambda: "2020-04-20 23:20:18", self.clock, acks=AckCopies(2, lambda: 3)
        )

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    async def committed(self) -> None:
        """
        End the reactor turn and wait for the commit it starts.
        """
        self.clock.advance(0)
        self.assertEqual(len(self.watched.appends), 1)
        await self.watched.appends.pop()

    async def test_ok_after_a_peer_holds_it(self) -> None:
        """
        With --ack-copies 2 a reading is committed to this node's database
        at once, but its OK is written only once a peer is heard to hold
        that index of this node's current log.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(GOOD + b"\n")
        await self.committed()
        entries = await self.store.read_entries(fakes.NODE_ID, self.store.epoch, 0, 10)
        self.assertEqual([(e[0], e[3]) for e in entries], [(1, "39C")])
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.copy_wait.waiting, 1)
        self.holdings.heard((fakes.NODE_ID, "0" * 32), B, 1)
        self.assertEqual(transport.value(), b"")
        self.holdings.heard(self.own, B, 1)
        self.assertEqual(transport.value(), b"OK 1\n")

    async def test_silent_sensor_never_waits(self) -> None:
        """
        A sensor that sends no line ends reads no answers: its readings are
        stored and never wait for copies, nor time out.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(GOOD)
        self.clock.advance(UNTERMINATED_PAUSE)
        await self.committed()
        entries = await self.store.read_entries(fakes.NODE_ID, self.store.epoch, 0, 10)
        self.assertEqual(len(entries), 1)
        self.assertEqual(self.copy_wait.waiting, 0)
        self.clock.advance(TIMEOUT * 2)
        self.assertEqual((self.copy_wait.timeouts, self.copy_wait.confirmed), (0, 0))
        self.assertEqual(transport.value(), b"")

    async def test_resent_after_err_copies(self) -> None:
        """
        A reading answered ERR copies is kept in the database; sent again
        (same reading_id) once a peer holds it, it is answered OK with its
        stored index and not stored twice.
        """
        line = b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n"
        protocol, transport = self.connect()
        protocol.dataReceived(line)
        await self.committed()
        self.clock.advance(TIMEOUT)
        self.assertEqual(
            transport.value(), b"ERR copies: 1 of 2 (no peer connected); kept, send again to confirm\n"
        )
        self.holdings.heard(self.own, B, 1)
        transport.clear()
        protocol.dataReceived(line)
        await self.committed()
        self.assertEqual(transport.value(), b"OK 1\n")
        entries = await self.store.read_entries(fakes.NODE_ID, self.store.epoch, 0, 10)
        self.assertEqual(len(entries), 1)


class ReplicatorHoldingsTests(ReplicatorTestCase):
    """
    What node A's Replicator feeds its Holdings from, and its HELD relay.
    """

    def setUp(self) -> None:
        super().setUp()
        self.open()
        self.peer = self.link(B)
        self.holdings = self.replicator.holdings

    def test_ack_raises(self) -> None:
        """
        A peer's ACK (sent after its commit) says it holds the log that far,
        on whichever of its links it comes; a lower ACK does not lower it.
        """
        self.ingest(5)
        self.ack(self.peer, 3)
        self.assertEqual(self.holdings.holders(OWN), {B: 3})
        second = self.link(B)
        self.ack(second, 5)
        self.assertEqual(self.holdings.holders(OWN), {B: 5})
        self.ack(self.peer, 2)
        self.assertEqual(self.holdings.holders(OWN), {B: 5})

    def test_have_raises(self) -> None:
        """
        A peer's HAVE tells how far it holds every log; a HAVE lower than
        what is known (it may have been sent on another link before a newer
        ACK) does not lower it.
        """
        self.have(self.peer, {A: {EPOCH_A: 2}, C: {EPOCH_C: 5}})
        self.assertEqual(self.holdings.holders(OWN), {B: 2})
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 5})
        self.have(self.peer, {C: {EPOCH_C: 3}})
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 5})
        self.assertEqual(self.holdings.holders(OWN), {B: 2})

    def test_forgotten_when_back(self) -> None:
        """
        A peer that links again after all its links were down may have
        lost files: what it held is forgotten until its new HAVE says; a
        second link while one is up forgets nothing.
        """
        self.have(self.peer, {A: {EPOCH_A: 2}, C: {EPOCH_C: 5}})
        self.link(B)
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 5})
        for link in list(self.replicator.peers[B].links):
            self.replicator.link_down(link)
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 5})
        back = self.link(B)
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {})
        self.assertEqual(self.holdings.others(OWN, 1), 0)
        self.have(back, {C: {EPOCH_C: 3}})
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 3})

    def test_held_tells_of_third_nodes(self) -> None:
        """
        A HELD from a peer tells of nodes beyond it holding a log.
        """
        self.replicator.received(self.peer, Held(A, EPOCH_A, {C: 4, D: 2}))
        self.assertEqual(self.holdings.holders(OWN), {C: 4, D: 2})
        self.assertEqual(self.holdings.others(OWN, 2), 2)

    def test_records_sent_are_held(self) -> None:
        """
        A peer holds the records it sends.
        """
        self.replicator.received(self.peer, Records(C, EPOCH_C, records(C, EPOCH_C, 1, 3)))
        self.assertEqual(self.holdings.holders((C, EPOCH_C)), {B: 3})

    def test_ack_after_apply(self) -> None:
        """
        The ACK of a received batch goes out only once the store has
        committed it.
        """
        self.peer.take()
        self.store.hold_applies = True
        self.replicator.received(self.peer, Records(B, EPOCH_B, records(B, EPOCH_B, 1, 4)))
        self.assertEqual(self.peer.of(Ack), [])
        self.assertEqual(self.store.log(B, EPOCH_B), [])
        self.store.release_apply()
        self.assertEqual(self.peer.of(Ack), [Ack(B, EPOCH_B, 4)])

    def test_relay_to_origin(self) -> None:
        """
        When a peer D acknowledges C's records that A forwarded to it, A
        tells C, to which it is linked, that D holds them; D hears nothing
        of it.
        """
        origin, onward = self.link(C), self.link(D)
        self.have(origin, {})
        self.have(onward, {})
        batch = records(C, EPOCH_C, 1, 3)
        self.replicator.received(origin, Records(C, EPOCH_C, batch))
        self.assertEqual(onward.of(Records), [Records(C, EPOCH_C, batch)])
        origin.take()
        self.replicator.received(onward, Ack(C, EPOCH_C, 3))
        self.clock.advance(0)
        self.assertEqual(origin.of(Held), [Held(C, EPOCH_C, {D: 3})])
        self.assertEqual(onward.of(Held), [])

    def test_relay_upstream(self) -> None:
        """
        Not linked to the origin C, A tells the peer C's log came from.
        """
        onward = self.link(D)
        self.replicator.received(self.peer, Records(C, EPOCH_C, records(C, EPOCH_C, 1, 3)))
        self.peer.take()
        self.replicator.received(onward, Ack(C, EPOCH_C, 3))
        self.clock.advance(0)
        self.assertEqual(self.peer.of(Held), [Held(C, EPOCH_C, {D: 3})])

    def test_no_relay_after_stop(self) -> None:
        """
        A stopped node sends no HELD.
        """
        origin = self.link(C)
        origin.take()
        self.replicator.stop()
        self.replicator.received(self.peer, Ack(C, EPOCH_C, 3))
        self.clock.advance(0)
        self.assertEqual(origin.of(Held), [])

    def test_copies_confirmed_by_have(self) -> None:
        """
        A CopyWait on the replicator's holdings is answered by a peer's
        HAVE of this node's log.
        """
        copy_wait = CopyWait(self.holdings, self.clock, TIMEOUT, lambda: OWN, lambda: NO_PEER)
        p = pending(FakeSensor())
        copy_wait.wait(p, [2], 2)
        self.have(self.peer, {A: {EPOCH_A: 2}})
        self.assertEqual(p.indexes, [2])


class FakeDialer:
    def __init__(self, address: str, gave_up=None):
        self.address = address
        self.gave_up = gave_up
        self.protocol = None


class NodeCopiesTests(SynchronousTestCase):
    """
    What L{Node} tells about copies: its log, the cluster's size, why
    copies lack, and the status.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FakeStore(A, EPOCH_A)
        self.replicator = Replicator(A, self.store, SIGNER, self.clock)
        ingestor = Ingestor(fakes.FakeStore(), OwnRows(A, SIGNER), self.clock)
        self.node = Node(A, self.store, ingestor, self.clock, self.replicator)

    def test_own_log(self) -> None:
        """
        The node's own log is its id and its store's current epoch.
        """
        self.assertEqual(self.node.own_log(), (A, EPOCH_A))
        self.store.epoch = OLD_EPOCH_A
        self.assertEqual(self.node.own_log(), (A, OLD_EPOCH_A))

    def test_why_no_copies(self) -> None:
        """
        ERR copies says "no peer connected" when no peer is linked, and
        "peers behind" when one is.
        """
        self.assertEqual(self.node.why_no_copies(), "no peer connected")
        link = FakeLink(B)
        self.replicator.link_up(link)
        self.assertEqual(self.node.why_no_copies(), "peers behind")
        self.replicator.link_down(link)
        self.assertEqual(self.node.why_no_copies(), "no peer connected")

    def test_cluster_size(self) -> None:
        """
        The cluster is this node, its peers, the nodes heard of through
        them, the origins of the logs it holds, and at least the addresses
        it dials that are not itself.
        """
        self.assertEqual(self.node.cluster_size(), 1)
        self.node.dialers = [FakeDialer("b:1"), FakeDialer("self:1", gave_up="it is this node")]
        self.assertEqual(self.node.cluster_size(), 2)
        self.replicator.link_up(FakeLink(B))
        self.assertEqual(self.node.cluster_size(), 2)
        self.replicator.holdings.heard(OWN, C, 1)
        self.assertEqual(self.node.cluster_size(), 3)
        self.replicator.opened({(D, EPOCH_C): 4}, False)
        self.assertEqual(self.node.cluster_size(), 4)

    def test_status(self) -> None:
        """
        With a CopyWait the status tells --ack-copies, the counts, and the
        under-copied ranges once the node is open; without one, nothing.
        """
        self.assertNotIn("copies", self.node.status_snapshot())
        self.node.copy_wait = CopyWait(
            self.replicator.holdings, self.clock, TIMEOUT, self.node.own_log, self.node.why_no_copies
        )
        self.node.ack_copies = 2
        self.node.opened = True
        self.replicator.opened({}, False)
        self.replicator.appended(EPOCH_A, 3, lambda: [])
        snapshot = self.node.status_snapshot()
        self.assertEqual(snapshot["ack_copies"], 2)
        self.assertEqual(snapshot["copies"]["waiting_for_copies"], 0)
        self.assertEqual(
            snapshot["copies"]["under_copied"],
            [{"origin": A, "epoch": EPOCH_A, "first": 1, "last": 3, "copies": 1, "since": 0}],
        )
