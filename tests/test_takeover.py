"""
Tests for p2pstore.takeover on a task.Clock: an origin unreachable for
--export-takeover is exported here from the cursor it announced and given
back once reachable; cursors heard move only forward, are saved at most
every HEARD_SAVE_S, and set how far retention may prune a peer's log.
(With a real store and HTTP destination: tests/test_export.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.takeover import HEARD_SAVE_S, Takeover
from p2pstore.wire import Exported

ME, PEER = "a" * 32, "b" * 32
OWN, THEIRS = (ME, "1" * 32), (PEER, "2" * 32)
NAME = "http://influx:8086/write?db=s"


class Store:
    """
    Records the cursors saved; each save fails while C{failing}.
    """

    def __init__(self):
        self.saves = []
        self.failing = False

    def heard_exported(self, destination, positions):
        if self.failing:
            return fail(OSError("disk I/O error"))
        self.saves.append((destination, dict(positions)))
        return succeed(None)


class TakeoverTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = Store()
        self.up = {PEER: True}
        self.source = SimpleNamespace(positions={OWN: 10, THEIRS: 8})
        self.takeover = Takeover(
            NAME, ME, self.source, self.store, self.clock, 30.0, lambda node: self.up.get(node, False)
        )

    def test_takes_over_then_gives_back(self):
        """
        Unreachable for the takeover time, an origin's logs are taken over
        from the furthest cursor known; reachable again, given back.
        """
        saved = {}
        self.takeover.heard_exported(Exported(NAME, {THEIRS: 3}), saved)
        self.assertEqual(self.takeover.check(saved), [])
        self.up[PEER] = False
        self.clock.advance(29)
        self.assertEqual(self.takeover.check(saved), [])
        self.clock.advance(1)
        self.assertEqual(self.takeover.check(saved), [(THEIRS, 3)])
        self.assertTrue(self.takeover.exports(THEIRS))
        self.assertEqual(self.takeover.check(saved), [])
        self.up[PEER] = True
        self.takeover.check(saved)
        self.assertFalse(self.takeover.exports(THEIRS))
        self.assertTrue(self.takeover.exports(OWN))

    def test_heard_moves_forward(self):
        """
        A cursor heard lower than one heard before is ignored; one for a
        log this node exports, past its saved cursor, is returned for the
        exporter to go on from.
        """
        saved = {OWN: 4}
        self.assertEqual(self.takeover.heard_exported(Exported(NAME, {OWN: 6, THEIRS: 5}), saved), [(OWN, 6)])
        self.assertEqual(self.takeover.heard_exported(Exported(NAME, {OWN: 5, THEIRS: 2}), saved), [])
        self.assertEqual(self.takeover.heard, {OWN: 6, THEIRS: 5})

    def test_saved_at_most_every_period(self):
        """
        Cursors of peers' logs are saved at once the first time, then at
        most every HEARD_SAVE_S; a failed save is tried again with the next.
        """
        saved = {}
        self.takeover.heard_exported(Exported(NAME, {THEIRS: 0}), saved)
        self.takeover.save_heard(saved)
        self.assertEqual(self.store.saves, [(NAME, {THEIRS: 0})])
        self.assertEqual(saved, {THEIRS: 0})
        self.takeover.heard_exported(Exported(NAME, {THEIRS: 4}), saved)
        self.takeover.save_heard(saved)
        self.assertEqual(len(self.store.saves), 1)
        self.store.failing = True
        self.clock.advance(HEARD_SAVE_S)
        self.takeover.save_heard(saved)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.store.failing = False
        self.clock.advance(HEARD_SAVE_S)
        self.takeover.save_heard(saved)
        self.assertEqual(self.store.saves[-1], (NAME, {THEIRS: 4}))
        self.assertEqual(saved, {THEIRS: 4})

    def test_retention_limit(self):
        """
        No limit for an origin that never announced this destination; once
        it did (at 0 too), the furthest cursor known; a cursor saved before
        (a restart) counts while the origin cannot be reached, and not once
        it is reachable without announcing this destination.
        """
        self.assertIsNone(self.takeover.retention_limit(THEIRS, {}))
        # Saved before (a restart), while the origin is down: still limited.
        self.up[PEER] = False
        self.assertEqual(self.takeover.retention_limit(THEIRS, {(PEER, "3" * 32): 0}), 0)
        # Reachable and silent about this destination: it no longer exports
        # here, and its copies go by age again.
        self.up[PEER] = True
        self.assertIsNone(self.takeover.retention_limit(THEIRS, {(PEER, "3" * 32): 0}))
        self.takeover.heard_exported(Exported(NAME, {THEIRS: 0}), {})
        self.assertEqual(self.takeover.retention_limit(THEIRS, {}), 0)
        self.takeover.heard_exported(Exported(NAME, {THEIRS: 7}), {})
        self.assertEqual(self.takeover.retention_limit(THEIRS, {THEIRS: 9}), 9)
