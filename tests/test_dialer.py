"""
Tests for p2pstore.dialer: redialling one peer address with backoff, on a
task.Clock, through a fake endpoint whose connection attempts the test
settles by hand.
"""

from __future__ import annotations

from typing import Optional

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.dialer import (
    MAX_DELAY,
    MIN_DELAY,
    QUICK_DELAY,
    QUICK_FAILURES,
    RECENT,
    STABLE_AFTER,
    Dialer,
    backoff,
)

ADDRESS = "peer.example:12346"


def middle() -> float:
    """
    Jitter that leaves every delay as it is.
    """
    return 0.5


@define(slots=False)
class FakeLink:
    """
    What the dialler needs of a PeerProtocol: whether and when it
    authenticated, why it closed, and its on_close hook.
    """

    authenticated: bool = False
    authenticated_at: Optional[float] = None
    carried: int = 0
    itself: bool = False
    close_reason: Optional[str] = None
    on_close: Optional[object] = None
    dial_address: Optional[str] = None
    transport: StringTransport = field(factory=StringTransport)

    def authenticate(self, now: float) -> None:
        self.authenticated = True
        self.authenticated_at = now

    def close(self, reason: str = "connection lost", itself: bool = False) -> None:
        self.close_reason = reason
        self.itself = itself
        self.on_close(self)


@define
class FakeEndpoint:
    """
    An endpoint whose connect() hands back a Deferred the test fires.
    """

    attempts: list = field(factory=list)
    cancelled: list = field(factory=list)

    def connect(self, factory) -> Deferred:
        d = Deferred(self.cancelled.append)
        self.attempts.append((factory, d))
        return d

    @property
    def pending(self) -> Deferred:
        factory, d = self.attempts[-1]
        assert not d.called
        return d

    def refuse(self) -> None:
        self.pending.errback(ConnectionRefusedError("refused"))

    def accept(self) -> FakeLink:
        link = FakeLink()
        self.pending.callback(link)
        return link


class BackoffTests(SynchronousTestCase):
    """
    The delay before each redial.
    """

    def test_doubles_then_caps(self):
        """
        Without jitter the delay doubles from MIN_DELAY and stops at
        MAX_DELAY (about 30 s) however many attempts failed.
        """
        delays = [backoff(n, middle) for n in range(12)]
        self.assertEqual(delays[:7], [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0])
        self.assertEqual(set(delays[6:]), {MAX_DELAY})
        self.assertEqual(backoff(10**6, middle), MAX_DELAY)
        self.assertEqual(MAX_DELAY, 30.0)

    def test_jitter(self):
        """
        Jitter moves a delay by at most a quarter either way, so even the
        capped delay stays near 30 s.
        """
        for attempt in [0, 3, 100]:
            plain = backoff(attempt, middle)
            self.assertEqual(backoff(attempt, lambda: 0.0), plain * 0.75)
            self.assertEqual(backoff(attempt, lambda: 1.0), plain * 1.25)
        self.assertLessEqual(backoff(100, lambda: 1.0), 1.25 * MAX_DELAY)

    def test_jitter_spreads(self):
        """
        The default jitter is random: nodes that lost each other together do
        not redial in step.
        """
        self.assertGreater(len({backoff(5) for _ in range(20)}), 1)


class DialerTests(SynchronousTestCase):
    """
    One Dialer on a Clock with a fake endpoint.
    """

    def setUp(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.factory = object()
        self.dialer = Dialer(ADDRESS, self.endpoint, self.factory, self.clock, jitter=middle)

    def advance_to_next_dial(self) -> float:
        """
        Advance the clock to the next scheduled dial, checking that nothing
        is dialled a moment earlier; return the delay.
        """
        before = len(self.endpoint.attempts)
        [call] = self.clock.getDelayedCalls()
        delay = call.getTime() - self.clock.seconds()
        self.clock.advance(delay - 0.001)
        self.assertEqual(len(self.endpoint.attempts), before)
        self.clock.advance(call.getTime() - self.clock.seconds())
        self.assertEqual(len(self.endpoint.attempts), before + 1)
        return delay

    def fail_run(self, count: int) -> list:
        """
        Refuse ``count`` dials in a row; return the delays between them.
        """
        delays = []
        for _ in range(count):
            self.endpoint.refuse()
            delays.append(self.advance_to_next_dial())
        return delays

    def warnings(self, events) -> list:
        return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]

    def test_dials_at_once(self):
        """
        start() dials right away, through the given factory.
        """
        self.dialer.start()
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertIs(self.endpoint.attempts[0][0], self.factory)

    def test_retries_with_growing_delays(self):
        """
        Each failed dial is retried after a delay that doubles and is capped
        near 30 s.
        """
        self.dialer.start()
        delays = self.fail_run(10)
        self.assertEqual([round(d, 6) for d in delays], [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30])

    def test_one_warning_per_run(self):
        """
        A run of failed dials logs one warning naming the address, not one
        per attempt; a new run after a working link warns again.
        """
        with capturedLogs() as events:
            self.dialer.start()
            self.fail_run(5)
        [warning] = self.warnings(events)
        self.assertIn(ADDRESS, warning)
        self.assertIn("30 s", warning)

        link = self.endpoint.accept()
        link.authenticate(self.clock.seconds())
        self.clock.advance(1)
        with capturedLogs() as events:
            link.close()
            self.advance_to_next_dial()
            self.fail_run(3)
        self.assertEqual(len(self.warnings(events)), 1)

    def test_no_warning_for_handshake_failures(self):
        """
        Links that connect but fail to authenticate are not reported again by
        the dialer (the protocol logs why each one dropped), and they do not
        end a run of failures.
        """
        with capturedLogs() as events:
            self.dialer.start()
            self.fail_run(1)
            for _ in range(3):
                self.endpoint.accept().close("cluster keys differ")
                self.advance_to_next_dial()
            self.fail_run(2)
        self.assertEqual(len(self.warnings(events)), 1)

    def test_link_attached(self):
        """
        A connected link knows the address it was dialled at, and its closing
        is reported back to the dialer, which schedules a redial.
        """
        self.dialer.start()
        link = self.endpoint.accept()
        self.assertIs(self.dialer.protocol, link)
        self.assertEqual(link.dial_address, ADDRESS)
        link.close()
        self.assertIsNone(self.dialer.protocol)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_unauthenticated_links_keep_backing_off(self):
        """
        A peer that accepts TCP but always fails authentication is redialled
        with growing delays, not every MIN_DELAY for ever.
        """
        self.dialer.start()
        delays = []
        for _ in range(8):
            self.endpoint.accept().close("cluster keys differ")
            delays.append(self.advance_to_next_dial())
        self.assertEqual([round(d, 6) for d in delays], [0.5, 1, 2, 4, 8, 16, 30, 30])

    def short_link(self, carried: int = 0) -> None:
        """
        Accept the pending dial, authenticate it, and drop it a second later
        after the peer's side delivered ``carried`` sealed lines.
        """
        link = self.endpoint.accept()
        link.authenticate(self.clock.seconds())
        link.carried = carried
        self.clock.advance(1)
        link.close("bad MAC: line 3 after the handshake was altered or injected on the link")

    def test_short_link_caps_backoff(self):
        """
        A link that authenticates but drops before STABLE_AFTER, carrying
        nothing, is redialled after 2 * MIN_DELAY at most, however often it
        drops; refused dials after it stay within that for RECENT seconds,
        then back off again.
        """
        self.dialer.start()
        self.fail_run(4)
        for _ in range(5):
            self.short_link()
            self.assertEqual(self.advance_to_next_dial(), 2 * MIN_DELAY)
        self.clock.advance(RECENT)
        self.assertEqual(self.fail_run(3), [4 * MIN_DELAY, 8 * MIN_DELAY, 16 * MIN_DELAY])

    def test_link_that_carried_redials_at_once(self):
        """
        A short link that delivered sealed lines before it broke (a path
        that damages a line now and then) is redialled after about
        QUICK_DELAY, every time.
        """
        self.dialer.start()
        self.fail_run(4)
        for _ in range(20):
            self.short_link(carried=5)
            self.assertAlmostEqual(self.advance_to_next_dial(), QUICK_DELAY)

    def test_failed_handshakes_after_a_link(self):
        """
        Right after a link, up to QUICK_FAILURES dials in a row that fail
        (a handshake damaged on the path, say) are retried at once; more
        than that go back to about a second, not the long backoff, until
        RECENT has passed.
        """
        self.dialer.start()
        self.short_link(carried=5)
        self.assertAlmostEqual(self.advance_to_next_dial(), QUICK_DELAY)
        delays = []
        for _ in range(QUICK_FAILURES + 2):
            self.endpoint.accept().close("malformed message: HELLO payload is not JSON")
            delays.append(self.advance_to_next_dial())
        self.assertEqual(
            [round(d, 6) for d in delays], [QUICK_DELAY] * QUICK_FAILURES + [MIN_DELAY, 2 * MIN_DELAY]
        )
        # Another link that carried lines makes failures quick again.
        self.short_link(carried=1)
        self.assertAlmostEqual(self.advance_to_next_dial(), QUICK_DELAY)
        self.endpoint.refuse()
        self.assertAlmostEqual(self.advance_to_next_dial(), QUICK_DELAY)

    def test_stable_link_resets_backoff(self):
        """
        A link that stayed authenticated at least STABLE_AFTER resets the
        backoff: the next redial comes after MIN_DELAY.
        """
        self.dialer.start()
        self.fail_run(6)
        link = self.endpoint.accept()
        link.authenticate(self.clock.seconds())
        self.clock.advance(STABLE_AFTER)
        link.close()
        self.assertEqual(self.advance_to_next_dial(), MIN_DELAY)
        self.endpoint.refuse()
        self.assertEqual(self.advance_to_next_dial(), 2 * MIN_DELAY)

    def test_connected_long_but_unauthenticated(self):
        """
        Time connected without authenticating does not count as stable.
        """
        self.dialer.start()
        self.fail_run(4)
        link = self.endpoint.accept()
        self.clock.advance(STABLE_AFTER * 2)
        link.close("did not authenticate within 10 s")
        self.assertEqual(self.advance_to_next_dial(), 8.0)

    def test_itself_not_redialled(self):
        """
        A link closed because the peer is this node itself is not redialled,
        and the dialer says why it gave up, once, as an error.
        """
        with capturedLogs() as events:
            self.dialer.start()
            self.endpoint.accept().close("is this node itself", itself=True)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10 * MAX_DELAY)
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertEqual(self.dialer.gave_up, "is this node itself")
        errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn(ADDRESS, errors[0])

    def test_stop_cancels_redial(self):
        """
        stop() cancels a pending redial: nothing is dialled afterwards.
        """
        self.dialer.start()
        self.endpoint.refuse()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.dialer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10 * MAX_DELAY)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stop_cancels_connect(self):
        """
        stop() cancels a connection attempt in progress, without a warning
        and without scheduling a redial.
        """
        with capturedLogs() as events:
            self.dialer.start()
            d = self.endpoint.pending
            self.dialer.stop()
        self.assertEqual(len(self.endpoint.cancelled), 1)
        self.assertTrue(d.called)
        self.assertEqual(self.warnings(events), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10 * MAX_DELAY)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stop_closes_link(self):
        """
        stop() closes a connected link, and its closing is not redialled.
        """
        self.dialer.start()
        link = self.endpoint.accept()
        link.authenticate(self.clock.seconds())
        self.dialer.stop()
        self.assertTrue(link.transport.disconnecting)
        link.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10 * MAX_DELAY)
        self.assertEqual(len(self.endpoint.attempts), 1)
