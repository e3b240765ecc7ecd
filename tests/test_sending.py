"""
Tests for p2pstore.sending: a LogSender shipping a LogSource's logs to one
destination, on a task.Clock, over a store whose reads wait for the test
(tests.replication_fakes.FakeStore with hold_reads).
"""

from __future__ import annotations

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.gaps import Gap
from p2pstore.records import ENTRY_INDEX
from p2pstore.storage import BadEntry
from p2pstore.sending import READ_BATCHES, RETRY_DELAY, HeldTimes, LogSender, LogSource

from .replication_fakes import A, B, EPOCH_A, EPOCH_B, OLD_EPOCH_A, FakeStore, records

LOG = (A, EPOCH_A)
OLD_LOG = (A, OLD_EPOCH_A)
LOG_B = (B, EPOCH_B)


class SenderTestCase(SynchronousTestCase):
    """
    A sender with batches of 10 and a window of 2 over a LogSource on a
    FakeStore whose reads the test releases.
    """

    batch_size = 10
    window = 2

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = FakeStore(B, EPOCH_B)
        self.store.hold_reads = True
        self.source = LogSource(self.store)
        self.sent: list = []
        self.sender = self.make_sender()

    def make_sender(self, **kwargs) -> LogSender:
        return LogSender(
            "peer", self.source, self.clock, self.transmit, self.batch_size, self.window, **kwargs
        )

    def transmit(self, channel, log, entries) -> None:
        self.sent.append((channel, log, entries[0][ENTRY_INDEX], entries[-1][ENTRY_INDEX]))

    def live(self, log, first: int, last: int) -> None:
        """
        The log grew by records first..last, kept in its tail.
        """
        self.source.added(log, last, lambda: records(log[0], log[1], first, last), keep=True)

    def on_disk(self, log, last: int) -> None:
        """
        The log holds 1..last, only on disk.
        """
        self.store.preload(log[0], log[1], 1, last)
        self.source.added(log, last, lambda: [], keep=False)

    def take(self) -> list:
        sent, self.sent = self.sent, []
        return sent


class BadEntryTests(SenderTestCase):
    """
    A read for the destination that starts at a missing or bad row.
    """

    def test_waits_and_tells(self) -> None:
        """
        The sender logs once what it cannot send and why, hands the position
        to the refused hook each time it tries, sends nothing, and retries
        after RETRY_DELAY until the read succeeds.
        """
        refused = []
        self.sender = self.make_sender(refused=lambda log, index: refused.append((log, index)))
        self.on_disk(LOG, 30)
        self.store.hold_reads = False
        bad = BadEntry("entry 1 of log is missing or not a valid record", A, EPOCH_A, 1)
        self.patch(self.store, "read_entries", lambda *args: fail(bad))
        with capturedLogs() as events:
            self.sender.switch("link")
            self.clock.advance(RETRY_DELAY)
        self.assertEqual(refused, [(LOG, 1), (LOG, 1)])
        self.assertEqual(self.sent, [])
        [line] = [formatEvent(e) for e in events]
        self.assertIn("cannot send peer log", line)
        self.assertIn("missing or not a valid record", line)
        del self.store.read_entries
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.take(), [("link", LOG, 1, 10), ("link", LOG, 11, 20)])

    def test_refused_record(self) -> None:
        """
        A record of a batch the destination refused goes to the hook.
        """
        refused = []
        self.sender = self.make_sender(refused=lambda log, index: refused.append((log, index)))
        self.live(LOG, 1, 20)
        self.sender.switch("link")
        self.sender.acked(LOG, 4)
        self.assertEqual(refused, [(LOG, 5)])


class TailAndDiskTests(SenderTestCase):
    """
    Records go out from the tail when it holds them, else from disk.
    """

    def test_from_tail(self) -> None:
        """
        A tail holding the range is sent without reading the store.
        """
        self.live(LOG, 1, 20)
        self.sender.switch("link")
        self.assertEqual(self.take(), [("link", LOG, 1, 10), ("link", LOG, 11, 20)])
        self.assertEqual(self.store.read_calls, [])

    def test_from_disk(self) -> None:
        """
        Records not in the tail are read from the store, as many batches at
        once as the window has room for, and sent once the read returns.
        """
        self.on_disk(LOG, 30)
        self.sender.switch("link")
        self.assertEqual(self.store.read_calls, [(A, EPOCH_A, 0, 2 * self.batch_size)])
        self.assertEqual(self.sent, [])
        self.store.release_read()
        self.assertEqual(self.take(), [("link", LOG, 1, 10), ("link", LOG, 11, 20)])
        self.sender.acked(LOG, 10)
        self.assertEqual(self.store.read_calls[-1], (A, EPOCH_A, 20, 10))
        self.store.release_read()
        self.assertEqual(self.take(), [("link", LOG, 21, 30)])

    def test_read_batches_bound(self) -> None:
        """
        One read asks for at most READ_BATCHES batches, however wide the
        window.
        """
        self.window = READ_BATCHES + 3
        sender = self.make_sender()
        self.on_disk(LOG, 200)
        sender.switch("link")
        self.assertEqual(self.store.read_calls, [(A, EPOCH_A, 0, READ_BATCHES * self.batch_size)])

    def test_gap_in_tail(self) -> None:
        """
        A tail with a gap (records that never reached it) is not used for
        the range across the gap: those records come from the store.
        """
        self.store.preload(A, EPOCH_A, 1, 20)
        self.live(LOG, 1, 5)
        self.source.added(LOG, 20, lambda: records(A, EPOCH_A, 8, 20), keep=True)
        self.sender.switch("link")
        self.assertEqual(len(self.store.read_calls), 1)
        self.assertEqual(self.store.read_calls[0][2], 0)
        self.store.release_read()
        self.assertEqual(self.take(), [("link", LOG, 1, 10), ("link", LOG, 11, 20)])


class WindowAndAckTests(SenderTestCase):
    """
    Acknowledgements move the window; refusals are sent again after a pause.
    """

    def test_window(self) -> None:
        """
        Never more than ``window`` batches are unacknowledged; each ack lets
        one more go.
        """
        self.live(LOG, 1, 100)
        self.sender.switch("link")
        self.assertEqual(len(self.take()), 2)
        for end in range(10, 81, 10):
            self.sender.acked(LOG, end)
            self.assertLessEqual(self.sender.inflight, self.window)
            self.assertEqual([s[2] for s in self.take()], [end + 11])
        self.sender.acked(LOG, 90)
        self.sender.acked(LOG, 100)
        self.assertEqual(self.take(), [])
        self.assertEqual(self.sender.inflight, 0)

    def test_partial_ack_retries_later(self) -> None:
        """
        An ack below the batch's end means the rest was refused: it is sent
        again from the acked position, but only after RETRY_DELAY.
        """
        self.live(LOG, 1, 20)
        self.sender.switch("link")
        self.take()
        self.sender.acked(LOG, 5)
        self.assertEqual(self.take(), [])
        self.clock.advance(RETRY_DELAY * 0.99)
        self.assertEqual(self.take(), [])
        self.clock.advance(RETRY_DELAY * 0.02)
        # In batches of half the size, the refused record's batch having
        # come back refused.
        self.assertEqual(self.take(), [("link", LOG, 6, 10)])

    def test_ack_of_another_log(self) -> None:
        """
        An ack naming another log than the batch sent (its name corrupted
        in transit) means none of it was stored: the batch is sent again,
        after RETRY_DELAY.
        """
        self.live(LOG, 1, 10)
        self.sender.switch("link")
        self.take()
        self.sender.acked(OLD_LOG, 10)
        self.assertEqual(self.take(), [])
        self.clock.advance(RETRY_DELAY)
        # Damaged on the way: sent again in batches of half the size.
        self.assertEqual(self.take(), [("link", LOG, 1, 5), ("link", LOG, 6, 10)])

    def test_stop_cancels_retry(self) -> None:
        """
        stop() cancels a pending retry: nothing more is sent.
        """
        self.live(LOG, 1, 20)
        self.sender.switch("link")
        self.take()
        self.sender.acked(LOG, 5)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.sender.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(RETRY_DELAY * 10)
        self.assertEqual(self.take(), [])


class ChannelTests(SenderTestCase):
    """
    A new channel starts from what the destination holds; what was meant
    for an old channel stays off the new one.
    """

    def test_switch(self) -> None:
        """
        With no channel nothing is sent; a new channel gets everything from
        what the destination is known to hold, in-flight batches counting
        as lost.
        """
        self.live(LOG, 1, 30)
        self.sender.switch("first")
        self.take()
        self.sender.acked(LOG, 10)
        self.take()
        self.sender.switch(None)
        self.live(LOG, 31, 40)
        self.assertEqual(self.take(), [])
        self.sender.switch("second")
        # The first channel broke with batches in flight: half the size.
        self.assertEqual(self.take(), [("second", LOG, 11, 15), ("second", LOG, 16, 20)])

    def test_read_after_channel_changed(self) -> None:
        """
        Records read for one channel that return after it was replaced are
        not sent on the new one; the new channel reads its own.
        """
        self.on_disk(LOG, 10)
        self.sender.switch("first")
        self.sender.switch("second")
        self.store.release_read()
        self.assertEqual(self.sent, [])
        self.assertEqual(len(self.store.read_calls), 2)
        self.store.release_read()
        self.assertEqual(self.take(), [("second", LOG, 1, 10)])

    def test_skip(self) -> None:
        """
        Logs the destination gets from elsewhere are never sent.
        """
        sender = self.make_sender(skip=lambda log: log[0] == B)
        self.live(LOG_B, 1, 10)
        self.live(LOG, 1, 5)
        sender.switch("link")
        self.assertEqual(self.take(), [("link", LOG, 1, 5)])
        sender.acked(LOG, 5)
        self.assertEqual(self.take(), [])
        self.assertEqual(sender.inflight, 0)

    def test_lag(self) -> None:
        """
        lag() counts, per origin, the records the destination is known to
        lack, over every log of that origin.
        """
        self.live(LOG, 1, 30)
        self.live(OLD_LOG, 1, 5)
        self.live(LOG_B, 1, 10)
        self.assertEqual(self.sender.lag(), {A: 35, B: 10})
        self.sender.told({LOG: 10, LOG_B: 10}, on_channel=False)
        self.assertEqual(self.sender.lag(), {A: 25})
        self.assertEqual(self.sent, [])


class LagSecondsTests(SenderTestCase):
    """
    lag_seconds(): how long the oldest record a destination lacks has been
    held here, per origin, over a LogSource with a clock.
    """

    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(1000)
        self.source = LogSource(self.store, clock=self.clock)
        self.sender = self.make_sender()

    def test_oldest_lacking(self) -> None:
        """
        The age of the oldest record lacked, the oldest over an origin's
        logs; none for an origin the destination lacks nothing of.
        """
        self.source.opened({OLD_LOG: 5})
        self.clock.advance(10)
        self.live(LOG, 1, 30)
        self.clock.advance(5)
        self.live(LOG, 31, 40)
        self.live(LOG_B, 1, 10)
        self.clock.advance(2)
        self.assertEqual(self.sender.lag_seconds(), {A: 17.0, B: 2.0})
        self.sender.told({OLD_LOG: 5, LOG: 30, LOG_B: 10}, on_channel=False)
        self.assertEqual(self.sender.lag_seconds(), {A: 2.0})
        self.assertEqual(self.sender.lag(), {A: 10})
        self.sender.told({OLD_LOG: 5, LOG: 40, LOG_B: 10}, on_channel=False)
        self.assertEqual(self.sender.lag_seconds(), {})

    def test_no_clock(self) -> None:
        """
        A LogSource without a clock keeps no times: no lag in seconds.
        """
        self.source = LogSource(self.store)
        self.sender = self.make_sender()
        self.live(LOG, 1, 30)
        self.assertEqual(self.sender.lag_seconds(), {})


class HeldTimesTests(SynchronousTestCase):
    """
    HeldTimes: when each record came to be held, one mark a second.
    """

    def test_marks(self) -> None:
        """
        A record is held since the first mark at or past its index; commits
        within the spacing share a mark (the earlier time); an index past the
        marks or before them counts from the nearest; an unknown log has none.
        """
        clock = Clock()
        held = HeldTimes(clock, spacing=1.0)
        self.assertIsNone(held.since(LOG, 1))
        held.held(LOG, 10)
        clock.advance(0.5)
        held.held(LOG, 20)
        clock.advance(0.5)
        held.held(LOG, 30)
        clock.advance(3)
        held.held(LOG, 40)
        self.assertEqual([held.since(LOG, i) for i in (1, 15, 20, 21, 30, 31, 40)],
                         [0, 0, 0, 1.0, 1.0, 4.0, 4.0])

    def test_kept(self) -> None:
        """
        Only the newest marks are kept (trimmed in bulk): older records count
        from the oldest kept.
        """
        clock = Clock()
        held = HeldTimes(clock, spacing=1.0, kept=2)
        for index in range(1, 6):
            held.held(LOG, index)
            clock.advance(1)
        self.assertEqual([held.since(LOG, i) for i in range(1, 6)], [2.0, 2.0, 2.0, 3.0, 4.0])


class BatchSizeTests(SenderTestCase):
    """
    Batches shrink on a link that damages them and grow back on one that
    delivers them.
    """

    def refuse_first(self) -> None:
        # The destination refuses the first record of the oldest batch.
        _, start, _ = self.sender.unacked[0]
        self.sender.acked(LOG, start - 1)
        self.clock.advance(RETRY_DELAY)

    def test_halves_to_one_and_doubles_back(self) -> None:
        """
        Each refused batch halves the batch size, down to one record; each
        batch acknowledged whole doubles it, up to the size it was made with.
        """
        self.live(LOG, 1, 1000)
        self.sender.switch("link")
        sizes = []
        for _ in range(5):
            self.refuse_first()
            sizes.append(self.sender.batch_size)
        self.assertEqual(sizes, [5, 2, 1, 1, 1])
        self.take()
        grown = []
        while self.sender.unacked and len(grown) < 5:
            _, _, end = self.sender.unacked[0]
            self.sender.acked(LOG, end)
            grown.append(self.sender.batch_size)
        self.assertEqual(grown, [2, 4, 8, 10, 10])
        self.assertEqual(self.sender.max_batch_size, 10)

    def test_pipeline_refusal_counts_once(self) -> None:
        """
        The batch sent after a refused one comes back refused too, only
        because of the gap: that halves nothing more.
        """
        self.live(LOG, 1, 100)
        self.sender.switch("link")
        self.assertEqual(self.sender.inflight, 2)
        self.sender.acked(LOG, 4)
        self.sender.acked(LOG, 4)
        self.assertEqual(self.sender.batch_size, 5)

    def test_channel_lost_with_batches_in_flight(self) -> None:
        """
        A channel lost with batches in flight halves the size; one lost with
        none in flight (an idle link that closed) does not.
        """
        self.live(LOG, 1, 100)
        self.sender.switch("first")
        self.sender.switch(None)
        self.assertEqual(self.sender.batch_size, 5)
        self.sender.switch("second")
        while self.sender.unacked:
            _, _, end = self.sender.unacked[0]
            self.sender.acked(LOG, end)
        self.assertEqual(self.sender.batch_size, 10)
        self.sender.switch(None)
        self.assertEqual(self.sender.batch_size, 10)


class GapTests(SenderTestCase):
    """
    A range this node no longer holds goes to a destination that lacks it
    as a Gap, in order with the batches, and is answered like one.
    """

    def transmit(self, channel, log, entries) -> None:
        if isinstance(entries, Gap):
            self.sent.append((channel, log, "gap", entries.first, entries.last))
        else:
            super().transmit(channel, log, entries)

    def test_gap_then_records(self) -> None:
        """
        A log pruned to 30 goes to a destination that holds none of it as
        the gap 1..30, then records from 31; the gap is not counted as lag
        once acknowledged, and what was pruned is never lag of its own.
        """
        self.live(LOG, 31, 45)
        self.source.lost(LOG, 1, 30, "retention")
        self.assertEqual(self.source.firsts, {LOG: 31})
        self.assertEqual(self.sender.lag(), {A: 15})
        self.sender.switch("link")
        self.assertEqual(
            self.take(), [("link", LOG, "gap", 1, 30), ("link", LOG, 31, 40)]
        )
        self.sender.acked(LOG, 30)
        self.assertEqual(self.take(), [("link", LOG, 41, 45)])
        self.sender.acked(LOG, 40)
        self.sender.acked(LOG, 45)
        self.assertEqual(self.sender.lag(), {})

    def test_no_gap_for_a_destination_past_it(self) -> None:
        """
        A destination that holds past the range gets only what it lacks.
        """
        self.live(LOG, 31, 45)
        self.source.lost(LOG, 1, 30, "retention")
        self.sender.told({LOG: 35}, on_channel=False)
        self.sender.switch("link")
        self.assertEqual(self.take(), [("link", LOG, 36, 45)])

    def test_ranges_merge(self) -> None:
        """
        Batches pruned one after another are one range; another reason is
        a range of its own; gap_at finds the one that holds an index.
        """
        self.source.lost(LOG, 1, 10, "retention")
        self.source.lost(LOG, 11, 20, "retention")
        self.source.lost(LOG, 21, 25, "evicted")
        self.assertEqual(
            [(g.first, g.last, g.reason) for g in self.source.gaps[LOG]],
            [(1, 20, "retention"), (21, 25, "evicted")],
        )
        self.assertEqual(self.source.gap_at(LOG, 22).reason, "evicted")
        self.assertIsNone(self.source.gap_at(LOG, 26))
        self.assertEqual(self.source.firsts, {LOG: 26})
