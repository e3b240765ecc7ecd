"""
Tests for p2pstore.refused: RefusedLines holding refused sensor lines whose
commit failed, bounded, and retried at most every retry_interval, on a
task.Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.lines import Rejected
from p2pstore.refused import RefusedLines


def line(n: int, size: int = 10) -> Rejected:
    return Rejected("2020-04-20 23:20:18.231325", 1, "bad line", b"%d" % n + b"x" * (size - len(b"%d" % n)))


class BoundsTests(SynchronousTestCase):
    """
    Held lines are bounded in number and in bytes; the oldest go first.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_bounded_in_lines(self) -> None:
        """
        Beyond max_lines the oldest held lines are dropped, with a warning
        naming how many.
        """
        refused = RefusedLines(self.clock, max_lines=5, max_bytes=10**6)
        refused.failed([line(n) for n in range(3)])
        with capturedLogs() as events:
            refused.failed([line(n) for n in range(3, 8)])
        self.assertEqual(refused.held, 5)
        self.assertEqual(refused.dropped, 3)
        self.assertEqual([r.raw[:1] for r in refused.take_held()], [b"3", b"4", b"5", b"6", b"7"])
        [warning] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertTrue(formatEvent(warning).startswith("3 refused lines are lost"), formatEvent(warning))

    def test_bounded_in_bytes(self) -> None:
        """
        Beyond max_bytes the oldest held lines are dropped, with a warning
        naming how many.
        """
        refused = RefusedLines(self.clock, max_lines=1000, max_bytes=35)
        with capturedLogs() as events:
            refused.failed([line(n, size=10) for n in range(5)])
        self.assertEqual(refused.held, 3)
        self.assertEqual(refused.dropped, 2)
        self.assertEqual([r.raw[:1] for r in refused.take_held()], [b"2", b"3", b"4"])
        messages = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(messages), 1)
        self.assertIn("2 refused lines are lost", messages[0])

    def test_within_bounds(self) -> None:
        """
        Lines within the bounds are all held, without a warning.
        """
        refused = RefusedLines(self.clock, max_lines=5, max_bytes=50)
        with capturedLogs() as events:
            refused.failed([line(n) for n in range(5)])
        self.assertEqual(refused.held, 5)
        self.assertEqual(refused.dropped, 0)
        self.assertEqual([e for e in events if e["log_level"] == LogLevel.warn], [])


class RetryTests(SynchronousTestCase):
    """
    Held lines are due after a successful commit, at most every
    retry_interval.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.refused = RefusedLines(self.clock, retry_interval=10.0)

    def test_nothing_held(self) -> None:
        """
        With nothing held, a commit makes nothing due.
        """
        self.refused.committed()
        self.assertFalse(self.refused.retry_due)

    def test_due_once_per_interval(self) -> None:
        """
        Held lines are due after the first successful commit; once tried,
        not again before retry_interval has passed.
        """
        self.refused.failed([line(1)])
        self.refused.committed()
        self.assertTrue(self.refused.retry_due)
        lines = self.refused.take_held()
        self.assertFalse(self.refused.retry_due)
        self.refused.failed(lines)
        self.clock.advance(9.9)
        self.refused.committed()
        self.assertFalse(self.refused.retry_due)
        self.clock.advance(0.1)
        self.refused.committed()
        self.assertTrue(self.refused.retry_due)

    def test_clock_set_back(self) -> None:
        """
        A clock set back since the last try counts as past the interval.
        """
        self.refused.failed([line(1)])
        self.refused.failed(self.refused.take_held())
        self.clock.rightNow -= 60
        self.refused.committed()
        self.assertTrue(self.refused.retry_due)

    def test_stopping(self) -> None:
        """
        A stopping node tries held lines once more, whenever they were last
        tried.
        """
        self.refused.failed([line(1)])
        self.refused.failed(self.refused.take_held())
        self.refused.stopping()
        self.assertTrue(self.refused.retry_due)

    def test_take_held_order(self) -> None:
        """
        take_held() returns the held lines, then those refused since, in the
        order they came, and leaves nothing behind.
        """
        self.refused.add(line(1))
        self.refused.add(line(2))
        self.refused.failed(self.refused.take())
        self.refused.add(line(3))
        self.refused.add(line(4))
        self.assertTrue(self.refused.waiting)
        self.assertEqual([r.raw[:1] for r in self.refused.take_held()], [b"1", b"2", b"3", b"4"])
        self.assertEqual(self.refused.held, 0)
        self.assertFalse(self.refused.waiting)
        self.assertEqual(self.refused.take_held(), [])
        self.assertEqual(self.refused.count, 4)


class ReasonTests(SynchronousTestCase):
    """
    Refused lines are counted by the reason they were answered.
    """

    def test_counted(self) -> None:
        """
        Each line counts once under its reason, stored or not.
        """
        refused = RefusedLines(Clock())
        for reason in ["bad timestamp", "empty line", "bad timestamp"]:
            refused.add(Rejected("2020-04-20 23:20:18.231325", 1, reason, b"x"))
        refused.failed(refused.take())
        self.assertEqual(refused.reasons, {"bad timestamp": 2, "empty line": 1})
        self.assertEqual(refused.count, 3)
