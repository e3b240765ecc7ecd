"""
Cumulative bucket counts, as a Prometheus histogram holds them, kept where
the events happen (each group commit) and read through the status snapshot.

One observation is one bisect into fixed bounds and two additions, so it can
sit on the commit path; the snapshot form is plain JSON.
"""

from __future__ import annotations

from bisect import bisect_left

import attrs

# How long a commit of readings takes, from its start in the reactor thread to
# its outcome there (seconds): an SD card's fsync is tens of milliseconds.
COMMIT_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Readings in one commit: up to the ingestor's batch of 5,000.
COMMIT_READINGS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def _bounds(value) -> tuple:
    bounds = tuple(float(bound) for bound in value)
    if not bounds or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"bucket bounds must be increasing and not empty, not {value!r}")
    return bounds


@attrs.define
class Histogram:
    """
    Observations counted into buckets with upper bounds ``bounds`` (a value
    equal to a bound counts in its bucket), and one more bucket above the
    last bound.
    """

    bounds: tuple = attrs.field(converter=_bounds)
    _counts: list = attrs.field(init=False)
    count: int = attrs.field(init=False, default=0)
    sum: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self._counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def status(self) -> dict:
        """
        ``{"buckets": [[upper bound, observations at or below it], ...],
        "count": n, "sum": s}``; ``count`` is the bucket above the last bound
        (Prometheus's ``+Inf``), which JSON cannot name.
        """
        buckets = []
        total = 0
        for bound, count in zip(self.bounds, self._counts):
            total += count
            buckets.append([bound, total])
        return {"buckets": buckets, "count": self.count, "sum": self.sum}
