"""
Tests for the ingestor (p2pstore.ingest), the group-commit queue behind the
sensor protocol: numbering, opening, backpressure, failed commits, refused
lines held after a failure, and draining, with sensors on StringTransports,
a task.Clock and an in-memory store whose commits the test fires by hand
(tests.fakes).
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent

from p2pstore import ingest
from p2pstore.ingest import Ingestor
from p2pstore.refused import RETRY_INTERVAL as UNSAVED_RETRY_INTERVAL
from p2pstore.rows import OwnRows
from p2pstore.sensor import SensorFactory
from p2pstore.opening import Opened

from .fakes import EPOCH, GOOD, MAX_LINE, NODE_ID, SIGNER, OpenedTestCase, SensorTestCase


class NumberingTests(OpenedTestCase):
    """
    Readings are numbered and signed as they arrive, while the batch before
    them commits; when that batch ends at another index than expected, the
    waiting readings are numbered again, so the store need not.
    """

    def test_resent_while_committing(self) -> None:
        """
        A resent reading answered with its stored index frees the number it
        was given: the reading behind it takes that number.
        """
        self.protocol.dataReceived(b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n")
        self.turn()
        self.protocol.dataReceived(b"Humidity,15% RH,2020-04-20 23:20:18,sim-7\n")
        self.store.commit()
        self.turn()
        self.protocol.dataReceived(b"Humidity,16% RH,2020-04-20 23:20:19,sim-8\n")
        self.commit_all()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 1", b"OK 2"])
        self.assertEqual([row[0] for call in self.store.calls for row in call.rows], [1, 2, 2])
        self.assertEqual(self.store.renumbered, 0)

    def test_readings_before_open(self) -> None:
        """
        Readings read before the store opened are numbered once it has,
        from its last index on.
        """
        ingestor = Ingestor(self.store, OwnRows(NODE_ID, SIGNER), self.clock)
        protocol = SensorFactory(ingestor, MAX_LINE, self.now).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(GOOD + b"\n")
        self.store.rows.extend([None] * 4)
        ingestor.opened(Opened(epoch=EPOCH, count=4, last_index=4, last_sensor_index=0, rejected=0))
        self.turn()
        self.store.commit()
        self.assertEqual(self.answers(transport), [b"OK 5"])
        self.assertEqual(self.store.renumbered, 0)


class OpeningTests(SensorTestCase):
    """
    Sensors that connect while the store is opening wait for it.
    """

    def test_paused_until_open(self) -> None:
        """
        A sensor connecting before the store is open is not read until it
        opens; then it gets a sensor_index after every one the store has
        seen, never reusing one across restarts.
        """
        first, first_transport = self.connect()
        second, second_transport = self.connect()
        self.assertEqual(first_transport.producerState, "paused")
        self.assertEqual(second_transport.producerState, "paused")
        self.assertEqual(self.store.calls, [])

        self.open_store(last_sensor_index=41)
        self.assertEqual(first_transport.producerState, "producing")
        self.assertEqual(second_transport.producerState, "producing")
        self.assertEqual(sorted([first.sensor_index, second.sensor_index]), [42, 43])
        third, third_transport = self.connect()
        self.assertEqual(third_transport.producerState, "producing")
        self.assertEqual(third.sensor_index, 44)

        for protocol in (first, second, third):
            protocol.dataReceived(GOOD + b"\n")
        self.turn()
        (call,) = self.store.calls
        self.assertEqual(
            [i for _, i in call.readings],
            [first.sensor_index, second.sensor_index, 44],
        )
        self.assertEqual(call.last_sensor_index, 44)

    def test_lines_read_before_open_are_kept(self) -> None:
        """
        Lines already read when the sensor was paused for the opening store
        are stored and answered once it opens.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(self.store.calls, [])
        drained = self.ingestor.drain()
        self.open_store(last_sensor_index=3)
        self.commit_all()
        self.assertEqual(self.answers(transport), [b"OK 1"])
        self.assertEqual(self.store.calls[0].readings[0][1], 4)
        self.successResultOf(drained)


class BackpressureTests(SensorTestCase):
    """
    When the store falls behind, sensors stop being read until it catches
    up, so nothing queues without bound.
    """

    ingestor_options = dict(max_batch=3, high_water=10, low_water=4)

    def setUp(self) -> None:
        super().setUp()
        self.open_store()

    def test_pause_and_resume(self) -> None:
        """
        Past the high-water mark every sensor connection is paused, also one
        that sent nothing and one that connects meanwhile; all are resumed
        once the queue is back to the low-water mark.
        """
        busy, busy_transport = self.connect()
        quiet, quiet_transport = self.connect()
        # One line per read, so that each is a batch of its own: the lines
        # of one read are committed together.
        for _ in range(9):
            busy.dataReceived(GOOD + b"\n")
        self.assertEqual(busy_transport.producerState, "producing")
        busy.dataReceived(GOOD + b"\n")
        self.assertEqual(busy_transport.producerState, "paused")
        self.assertEqual(quiet_transport.producerState, "paused")
        late, late_transport = self.connect()
        self.assertEqual(late_transport.producerState, "paused")

        transports = [busy_transport, quiet_transport, late_transport]
        self.turn()
        # Batches of 3: after the first commit 7 wait (3 of them already in
        # the next batch), still above the low-water mark of 4...
        self.store.commit()
        self.assertEqual(self.ingestor.queued, 4)
        self.assertEqual({t.producerState for t in transports}, {"paused"})
        # ...after the second only 4 waited: back to the mark, so resumed.
        self.store.commit()
        self.assertEqual({t.producerState for t in transports}, {"producing"})
        self.commit_all()
        self.assertEqual(len(self.answers(busy_transport)), 10)

    def test_sensor_not_reading_answers(self) -> None:
        """
        A sensor whose answers back up (its transport pauses us as their
        producer) is not read until it takes them again, and stays paused
        while the store is also behind.
        """
        protocol, transport = self.connect()
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

        protocol.pauseProducing()
        protocol.dataReceived(b"".join(GOOD + b"\n" for _ in range(10)))
        self.commit_all()  # the store catches up...
        self.assertEqual(transport.producerState, "paused")  # ...the sensor does not
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(self.answers(transport)), 10)

    def test_store_catches_up_while_answers_back_up(self) -> None:
        """
        A sensor paused both for the store and for its answers is resumed
        only when both are over.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(GOOD + b"\n" for _ in range(10)))
        protocol.pauseProducing()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "paused", "the store is still behind")
        protocol.pauseProducing()
        self.commit_all()
        self.assertEqual(transport.producerState, "paused", "answers still back up")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")


class FailureTests(OpenedTestCase):
    """
    A failed commit is answered, and the node keeps storing.
    """

    def test_failed_commit(self) -> None:
        """
        When a commit fails, each line of that batch is answered C{ERR} (so
        the sensor may resend it), lines waiting behind it keep their order,
        and the next batch is stored as usual.
        """
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(b"Humidity,15% RH\n")
        self.store.fail(OSError(28, "No space left on device"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(
            self.answers(self.transport), [b"ERR retry: storage failure"] * 2
        )
        self.assertStillServing(self.transport)
        self.turn()
        self.store.commit()
        self.assertEqual(self.answers(self.transport)[2:], [b"OK 1"])
        self.assertEqual(self.store.rows[0].sensor_type, "Humidity")
        # The line behind the failed batch was numbered again, from the
        # numbers that batch did not use.
        self.assertEqual(self.store.renumbered, 0)
        self.assertEqual(self.ingestor.not_stored, 2)


class CommitStatsTests(OpenedTestCase):
    """
    Each commit of readings is counted in the two commit histograms.
    """

    def test_observed(self) -> None:
        """
        A commit's readings, and its time from its start to its outcome, go
        to the histograms; a failed commit and one of refused lines only
        do not.
        """
        self.protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n" + GOOD + b"\n")
        self.turn()
        self.clock.advance(0.02)
        self.store.commit()
        self.protocol.dataReceived(b"no comma\n")
        self.commit_all()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.fail(OSError(5, "I/O error"))
        self.flushLoggedErrors(OSError)
        seconds = self.ingestor.commit_seconds.status()
        self.assertEqual(seconds["count"], 1)
        self.assertAlmostEqual(seconds["sum"], 0.02, places=5)
        self.assertIn([0.025, 1], seconds["buckets"])
        self.assertIn([0.01, 0], seconds["buckets"])
        readings = self.ingestor.commit_readings.status()
        self.assertEqual((readings["count"], readings["sum"]), (1, 3))
        self.assertEqual(readings["buckets"][:3], [[1.0, 0], [2.0, 0], [5.0, 1]])


class UnsavedRejectedTests(OpenedTestCase):
    """
    Refused lines whose commit failed are held and stored later in a
    transaction of their own, within a bound, without a loop of failing
    transactions and without holding up readings.
    """

    ingestor_options = {"max_unsaved_rejected": 3, "max_unsaved_bytes": 100}

    def fail_commit(self) -> None:
        self.turn()
        self.store.fail(OSError(5, "Input/output error"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_stored_after_next_good_commit(self) -> None:
        """
        A refused line of a failed commit is stored once a commit of new
        readings succeeds, in a transaction of its own after it; with
        nothing new arriving, nothing is retried.
        """
        self.protocol.dataReceived(b"bad\n" + GOOD + b"\n")
        self.fail_commit()
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        [readings] = self.store.waiting
        self.assertEqual((len(readings.rows), readings.rejected), (1, []))
        self.store.commit()
        [held] = self.store.waiting
        self.assertEqual((held.rows, [r.raw for r in held.rejected]), ([], [b"bad"]))
        self.store.commit()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(self.ingestor.unsaved_rejected, 0)

    def test_held_lines_do_not_block_readings(self) -> None:
        """
        When the held lines still cannot be stored, readings are stored all
        the same, and the held lines are tried again only after
        UNSAVED_RETRY_INTERVAL.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.fail_commit()  # the held line's own transaction
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.assertEqual(len(self.store.rows), 2)
        self.clock.advance(UNSAVED_RETRY_INTERVAL)
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(self.answers(self.transport)[-3:], [b"OK 1", b"OK 2", b"OK 3"])

    def test_bounded_in_lines(self) -> None:
        """
        While commits keep failing, only the newest refused lines are held,
        and the log says how many were lost.
        """
        for n in range(2):
            self.protocol.dataReceived(b"".join(b"bad%d-%d\n" % (n, i) for i in range(2)))
            with capturedLogs() as events:
                self.fail_commit()
        self.assertEqual(self.ingestor.unsaved_rejected, 3)
        self.assertEqual(self.ingestor.dropped_rejected, 1)
        [warning] = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("1 refused lines are lost", formatEvent(warning))
        self.assertIn("Check the disk", formatEvent(warning))
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad0-1", b"bad1-0", b"bad1-1"])

    def test_bounded_in_bytes(self) -> None:
        """
        Long refused lines are bounded by their bytes too.
        """
        self.protocol.dataReceived(b"x" * 60 + b"\n" + b"y" * 60 + b"\n")
        self.fail_commit()
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.assertEqual(self.ingestor.dropped_rejected, 1)
        self.protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"y" * 60])

    def test_drain_tries_once_more(self) -> None:
        """
        drain() tries the held lines once more; if that commit fails too,
        it still fires, and they are counted.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        drained = self.ingestor.drain()
        self.turn()
        self.assertNoResult(drained)
        [held] = self.store.waiting
        self.assertEqual([r.raw for r in held.rejected], [b"bad"])
        self.fail_commit()
        self.successResultOf(drained)
        self.assertEqual(self.ingestor.unsaved_rejected, 1)
        self.turn()
        self.assertEqual(self.store.waiting, [])

    def test_order_kept(self) -> None:
        """
        Held lines are stored before lines refused after them.
        """
        self.protocol.dataReceived(b"bad1\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(b"bad2\n")
        self.commit_all()
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad1", b"bad2"])

    def test_drain_during_commit(self) -> None:
        """
        drain() called while a commit is under way tries the held lines
        once that commit is done (though they were tried a moment ago), and
        fires after that try.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.fail_commit()  # their own try, after that commit
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        [readings] = self.store.waiting
        drained = self.ingestor.drain()
        self.store.commit()
        self.assertNoResult(drained)
        [held] = self.store.waiting
        self.assertEqual([r.raw for r in held.rejected], [b"bad"])
        self.fail_commit()
        self.successResultOf(drained)

    def test_drain_with_commit_scheduled(self) -> None:
        """
        drain() called with a commit of readings scheduled for the end of
        the reactor turn stores both, and fires only then.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        self.protocol.dataReceived(GOOD + b"\n")
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])
        self.assertEqual(len(self.store.rows), 1)

    def test_drain_stores_them(self) -> None:
        """
        When the disk is back, drain() stores them before firing.
        """
        self.protocol.dataReceived(b"bad\n")
        self.fail_commit()
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual([r.raw for r in self.store.rejected], [b"bad"])


class DrainTests(OpenedTestCase):
    """
    Stopping the node waits on drain(): every reading received is committed
    and answered first.
    """

    def test_idle(self) -> None:
        """
        With nothing queued, drain() fires at once.
        """
        self.successResultOf(self.ingestor.drain())

    def test_waits_for_every_batch(self) -> None:
        """
        drain() fires only once every batch, including lines received
        while waiting, is committed and every answer written.
        """
        self.protocol.dataReceived(GOOD + b"\n" + b"bad\n")
        drained = self.ingestor.drain()
        self.turn()
        self.assertNoResult(drained)
        self.protocol.dataReceived(GOOD + b"\n")
        self.store.commit()
        self.assertNoResult(drained)
        self.turn()
        self.store.commit()
        self.successResultOf(drained)
        self.assertEqual(
            self.answers(self.transport), [b"OK 1", b"ERR missing value", b"OK 2"]
        )

    def test_rejected_only(self) -> None:
        """
        drain() also waits for rejected lines to be kept.
        """
        self.protocol.dataReceived(b"bad\n")
        drained = self.ingestor.drain()
        self.assertNoResult(drained)
        self.turn()
        self.store.commit()
        self.successResultOf(drained)
        self.assertEqual(len(self.store.rejected), 1)

    def test_disconnected_sensor(self) -> None:
        """
        Readings of a sensor that went away before its answers are still
        stored, and drain() still fires.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.protocol.connectionLost(None)
        self.assertEqual(self.ingestor.connected, 0)
        drained = self.ingestor.drain()
        self.commit_all()
        self.successResultOf(drained)
        self.assertEqual(len(self.store.rows), 1)
        self.assertEqual(self.transport.value(), b"")


class CommitIntervalTests(OpenedTestCase):
    """
    With a commit interval, a commit starts no sooner than that long after
    the one before began: readings arriving meanwhile share the next
    commit (one fsync), and a reading after a quiet spell commits at once.
    """

    ingestor_options = dict(commit_interval=0.04, max_batch=5)

    def setUp(self) -> None:
        super().setUp()
        # A sensor that sends nothing meanwhile: the others' readings could
        # be joined by its, so they wait.
        self.idle, _ = self.connect()

    def test_one_sensor_at_a_time(self) -> None:
        """
        When every connected sensor has readings waiting, none can add to
        the commit by waiting (each waits for its answers): a sensor that
        sends one reading at a time is answered without the interval.
        """
        self.idle.connectionLost(None)
        for n in range(1, 4):
            self.protocol.dataReceived(GOOD + b"\n")
            self.turn()
            self.store.commit()
            self.assertEqual(len(self.answers(self.transport)), n)

    def test_first_at_once(self) -> None:
        """
        A reading when no commit was made for the interval commits in the
        same reactor turn's end, as without an interval.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(len(self.store.waiting), 1)
        self.store.commit()
        self.assertEqual(self.answers(self.transport), [b"OK 1"])

    def test_later_readings_share_a_commit(self) -> None:
        """
        Readings that arrive while the interval runs wait for its end and
        are committed together; their answers wait with them.
        """
        other, other_transport = self.connect()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.clock.advance(0.01)
        self.protocol.dataReceived(GOOD + b"\n")
        self.clock.advance(0.01)
        other.dataReceived(GOOD + b"\n")
        self.clock.advance(0.019)
        self.assertEqual(self.store.waiting, [], "the interval has not run out")
        self.assertEqual(self.answers(self.transport), [b"OK 1"])
        self.clock.advance(0.001)
        [call] = self.store.waiting
        self.assertEqual(len(call.rows), 2)
        self.store.commit()
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2"])
        self.assertEqual(self.answers(other_transport), [b"OK 3"])

    def test_slow_commit(self) -> None:
        """
        A commit that took longer than the interval is followed at once by
        the next.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.protocol.dataReceived(GOOD + b"\n")
        self.clock.advance(0.05)
        self.store.commit()
        self.assertEqual(len(self.store.waiting), 1)

    def test_whole_batch_does_not_wait(self) -> None:
        """
        Once a whole batch (max_batch readings, or ENOUGH_TO_COMMIT) waits,
        it commits without waiting out the interval.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.protocol.dataReceived(GOOD + b"\n" * 1)
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.protocol.dataReceived((GOOD + b"\n") * 4)
        self.turn()
        [call] = self.store.waiting
        self.assertEqual(len(call.rows), 5)

    def test_drain_does_not_wait(self) -> None:
        """
        Stopping commits what waits for the interval at once.
        """
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.assertEqual(self.store.waiting, [])
        drained = self.ingestor.drain()
        self.turn()
        self.store.commit()
        self.successResultOf(drained)
        self.assertEqual(self.answers(self.transport), [b"OK 1", b"OK 2"])

    def test_enough_does_not_wait(self) -> None:
        """
        Once ENOUGH_TO_COMMIT readings wait, fewer than a batch, they commit
        without waiting out the interval: senders with many lines unanswered
        are not slowed to one commit an interval.
        """
        self.patch(ingest, "ENOUGH_TO_COMMIT", 3)
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        self.store.commit()
        self.protocol.dataReceived((GOOD + b"\n") * 2)
        self.turn()
        self.assertEqual(self.store.waiting, [])
        self.protocol.dataReceived(GOOD + b"\n")
        self.turn()
        [call] = self.store.waiting
        self.assertEqual(len(call.rows), 3)
