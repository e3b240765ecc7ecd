"""
Pruning: what keeps a node's databases within its retention (C{--retain})
and, with C{--on-full evict-safe}, within its disk budget.

Retention prunes every log's records stored longer ago than C{--retain}
(by the marks of L{p2pstore.gaps}: never early), but this node's own only
once at least C{--min-copies} other nodes are known to hold them or to have
held them (their authenticated messages, L{p2pstore.copies.Holdings}).
Eviction removes this node's own oldest records that other nodes hold now,
and only those, when its data
comes near the budget or the filesystem is full: peers' copies are the
other nodes' safety copies, bounded by their share of the budget and by
retention, and are never evicted. Nothing is removed silently: each range
goes to the ``pruned`` table, to /status and to the peers that lack it.

One step a second, each a few transactions of at most L{BATCH} records in
the store's thread, so sensors' commits go between them.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .disk import size_text
from .settings import ON_FULL

# Records deleted per transaction, at most.
BATCH = 1000
# Transactions per step, at most: a step leaves the database thread to the
# sensors after this many.
BATCHES_PER_STEP = 20
# Seconds between steps.
STEP = 1.0
# Eviction starts when the data takes this share of the budget, and goes
# on until it takes less than the second: sensors are not refused while
# something is safe to remove.
EVICT_FROM = 0.95
EVICT_TO = 0.90
# Pages given back to the filesystem after a step that pruned, at most.
VACUUM_PAGES = 2000
# Ranges /status lists, the newest.
STATUS_RANGES = 20

RETENTION = "retention"
EVICTED = "evicted"


def mark_interval(retain: Optional[float]) -> float:
    """
    How often each log is marked (p2pstore.gaps.mark): a hundredth of the
    retention, from 1 s to 10 min, so retention prunes at most that late.
    """
    if retain is None:
        return 60.0
    return min(max(retain / 100, 1.0), 600.0)


class Pruner:
    """
    Prunes a node's store by its retention and its full-disk policy.

    @ivar ranges: every range pruned here, or recorded as not held by a
        peer (L{p2pstore.gaps.PrunedRange}), oldest first.
    """

    log = Logger()

    def __init__(
        self,
        node,
        clock,
        retain: Optional[float] = None,
        min_copies: int = 1,
        on_full: str = "reject",
        step: float = STEP,
    ):
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}, not {on_full!r}")
        self.node = node
        self._clock = clock
        self.retain = retain
        self.min_copies = min_copies
        self.on_full = on_full
        self._step_seconds = step
        self._loop: Optional[LoopingCall] = None
        self._running = None
        self.ranges: list = []
        # Where each range is in ranges, by what stays as it grows.
        self._where: dict = {}
        self.steps = 0
        # Why eviction found nothing to remove, while it does not.
        self.nothing_safe: Optional[str] = None

    def start(self, pruned=()) -> None:
        for gone in pruned:
            self.recorded(gone)
        self._loop = LoopingCall(self.step)
        self._loop.clock = self._clock
        self._loop.start(self._step_seconds, now=False)

    def stop(self):
        """
        Stop stepping; fires once a step under way has ended.
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running

    def step(self):
        if self._running is not None:
            return None
        self._running = d = self._step()
        d.addErrback(
            lambda f: self.log.failure("pruning failed; it tries again in a second", f)
        )
        d.addBoth(self._stepped)
        return d

    def _stepped(self, _) -> None:
        self._running = None
        self.steps += 1

    @inlineCallbacks
    def _step(self):
        node = self.node
        if not node.opened:
            return
        budget = [BATCHES_PER_STEP]
        pruned = 0
        if self.retain is not None:
            yield node.store.mark_tails()
            cutoff = self._clock.seconds() - self.retain
            stored = yield node.store.stored_by(cutoff)
            for log, upto in sorted(stored.items()):
                pruned += yield self._prune(
                    log, min(upto, self._safe(log, RETENTION)), RETENTION, budget
                )
        disk = node.disk
        if self.on_full == "evict-safe" and disk is not None:
            pruned += yield self._evict(disk, budget)
        if pruned:
            yield node.store.vacuum(VACUUM_PAGES)
        if disk is not None:
            if disk.budget is not None:
                # Only a budget counts them: no transaction a second otherwise.
                disk.reusable = yield node.store.reusable()
            disk.sample()

    def _safe(self, log, reason: str) -> int:
        # How far a log may be pruned: to the end for a peer's copy; for
        # this node's own, as far as --min-copies others hold it. For
        # retention a holder that has pruned its copy since (by its own
        # retention) counts: the reading was copied, and is past the age
        # the cluster keeps. To evict, only a copy held now counts.
        if log[0] != self.node.node_id:
            # A peer's copy, by age, but not what an export destination
            # has not taken yet of an origin exported there: this node may
            # have to export it in the origin's place (takeover).
            limits = (e.retention_limit(log) for e in self.node.exporters)
            return min((limit for limit in limits if limit is not None), default=2**63 - 1)
        # Nor what an export destination has not taken yet.
        exported = min((e.exported(log) for e in self.node.exporters), default=2**63 - 1)
        holdings = self.node.replicator.holdings
        if reason == RETENTION:
            return min(holdings.copied_to(log, self.min_copies), exported)
        first = self.node.replicator.source.firsts.get(log, 1)
        return min(holdings.held_from(log, first, self.min_copies), exported)

    @inlineCallbacks
    def _prune(self, log, upto: int, reason: str, budget: list, stop=None):
        # Batches of one log up to ``upto``, while the step's budget lasts
        # and ``stop()`` says go on. Returns how many records went.
        store, replicator = self.node.store, self.node.replicator
        total = 0
        while budget[0] > 0 and replicator.source.firsts.get(log, 1) <= upto:
            if stop is not None and stop():
                break
            budget[0] -= 1
            done = yield store.prune(log[0], log[1], upto, reason, BATCH)
            if done is None:
                break
            first = replicator.source.firsts.get(log, 1)
            replicator.pruned(log, first, done.first - 1, reason)
            self.recorded(done.range)
            total += done.deleted
        return total

    def recorded(self, pruned) -> None:
        """
        A range was pruned here, or recorded as not held by a peer: a new
        one, or one that grew.
        """
        key = (pruned.db, pruned.origin, pruned.epoch, pruned.first, pruned.reason)
        at = self._where.get(key)
        if at is None:
            self._where[key] = len(self.ranges)
            self.ranges.append(pruned)
        else:
            self.ranges[at] = pruned

    @inlineCallbacks
    def _evict(self, disk, budget: list):
        if not disk.near_full(EVICT_FROM):
            self.nothing_safe = disk.nothing_safe = None
            return 0
        node = self.node
        total = 0
        own = sorted(
            (log for log in node.replicator.positions if log[0] == node.node_id),
            # The current epoch last: the others are older.
            key=lambda log: log[1] == node.store.epoch,
        )
        for log in own:
            total += yield self._prune(
                log, self._safe(log, EVICTED), EVICTED, budget,
                stop=lambda: not disk.near_full(EVICT_TO),
            )
        if total == 0 and disk.near_full(EVICT_FROM):
            why = (
                f"--on-full evict-safe found nothing safe to remove: none of this node's "
                f"readings is known to be on --min-copies {self.min_copies} other node(s)"
            )
            if why != self.nothing_safe:
                self.log.warn(
                    "{why}; readings are refused once the data takes all of --max-disk "
                    "({used} now). Connect the node's peers, or raise --max-disk.",
                    why=why,
                    used=size_text(disk.used_bytes()),
                )
            self.nothing_safe = disk.nothing_safe = why
        elif total:
            self.nothing_safe = disk.nothing_safe = None
            self.log.info(
                "evicted {count} of this node's oldest readings, held by {copies} other "
                "node(s), to stay within --max-disk",
                count=total,
                copies=self.min_copies,
            )
        return total

    def status(self) -> dict:
        counts: dict[str, int] = {}
        for gone in self.ranges:
            key = gone.reason.split(":")[0]
            counts[key] = counts.get(key, 0) + gone.last - gone.first + 1
        return {
            "retain_s": self.retain,
            "min_copies": self.min_copies,
            "on_full": self.on_full,
            "records": counts,
            "ranges": [gone.status() for gone in self.ranges[-STATUS_RANGES:]],
            "range_count": len(self.ranges),
            "nothing_safe": self.nothing_safe,
        }
