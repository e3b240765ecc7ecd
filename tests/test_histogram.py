"""
Tests for p2pstore.histogram: cumulative bucket counts as Prometheus reads them.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.histogram import COMMIT_READINGS, COMMIT_SECONDS, Histogram


class HistogramTests(SynchronousTestCase):
    def test_buckets(self) -> None:
        """
        Each bucket counts the observations at or below its bound, the ones
        before it included; above the last bound, only the count has them.
        """
        histogram = Histogram((1, 5, 10))
        for value in (0.5, 1, 3, 5, 7, 100):
            histogram.observe(value)
        self.assertEqual(
            histogram.status(),
            {"buckets": [[1.0, 2], [5.0, 4], [10.0, 5]], "count": 6, "sum": 116.5},
        )

    def test_empty(self) -> None:
        """
        With no observation every bucket is 0.
        """
        self.assertEqual(
            Histogram((0.5,)).status(), {"buckets": [[0.5, 0]], "count": 0, "sum": 0.0}
        )

    def test_bad_bounds(self) -> None:
        """
        Bounds must be given, increasing and distinct.
        """
        for bounds in [(), (2, 1), (1, 1)]:
            self.assertRaises(ValueError, Histogram, bounds)

    def test_commit_bounds(self) -> None:
        """
        The commit histograms' bounds are valid, and the readings' reach the
        ingestor's largest batch.
        """
        Histogram(COMMIT_SECONDS)
        self.assertEqual(Histogram(COMMIT_READINGS).bounds[-1], 5000.0)
