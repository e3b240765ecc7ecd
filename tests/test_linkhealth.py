"""
Tests for L{p2pstore.linkhealth}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from p2pstore.linkhealth import KEEP, LinkHealth


class LinkHealthTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.health = LinkHealth(self.clock.seconds)

    def test_fine(self):
        self.assertIsNone(self.health.trouble(500, 500))

    def test_recent_drops(self):
        self.health.dropped("malformed", "malformed message: bad line")
        self.clock.advance(10)
        self.health.dropped("mac", "MAC mismatch")
        trouble = self.health.trouble(500, 500)
        self.assertIn("2 links dropped in the last 5 min", trouble)
        self.assertIn("MAC mismatch", trouble)
        self.assertEqual(self.health.counts, {"malformed": 1, "mac": 1})

    def test_old_drops_fine(self):
        self.health.dropped("timeout", "no answer")
        self.clock.advance(301)
        self.assertIsNone(self.health.trouble(500, 500))
        self.assertEqual(len(self.health.events()), 1)

    def test_refused_and_batch(self):
        self.health.refused("checksum mismatch")
        trouble = self.health.trouble(4, 500)
        self.assertIn("1 record refused", trouble)
        self.assertIn("batches cut to 4 records", trouble)
        self.assertEqual(self.health.counts, {"refused record": 1})

    def test_keeps_last(self):
        for i in range(KEEP + 5):
            self.health.dropped("tls", f"tls {i}")
        events = self.health.events()
        self.assertEqual(len(events), KEEP)
        self.assertEqual(events[-1]["reason"], f"tls {KEEP + 4}")
        self.assertEqual(events[0]["time"], "1970-01-12T13:46:40Z")
