"""
The scrub: every stored record's HMAC checked again while the node runs, at
a bounded rate, so that a row changed on disk is found before anyone needs
it; and the quarantine that keeps such a row from being served, until a
peer sends a good copy.

A record that fails is moved to the ``quarantine`` table: its log keeps its
position (the node still owes that record to its peers), a read of the log
for peers stops before it (L{p2pstore.storage.BadEntry}), and the node asks
its peers for it (C{WANT}) until one answers with a copy that checks
(C{REPAIR}). The scrub also checks at once a record that a peer refused,
and a position a read for peers found missing: the peer's refusal is how a
bad copy is found long before the scrub's pass reaches it.

At start the last C{START_TAIL} rows of every log are checked first (the
rows a crash or a failing disk most likely left wrong), then passes over
every table run at C{rate} rows a second, for ever.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Optional

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .checking import row_problem
from .records import ENTRY_INDEX, Signer, is_node_id
from .schema import EPOCH, PEER_DB, SELF_DB
from .wire import MAX_WANTED

# Rows checked a second: a pass over 1,000,000 records in under 6 hours, at
# about 1% of a core (bench/scrub.py).
ROWS_PER_SECOND = 50
# How often a chunk of rows is checked.
STEP = 1.0
# Rows of each table checked at start, before the first pass.
START_TAIL = 1000
# How often the records still in quarantine are asked for again.
ASK_AGAIN = 30.0
# A pass starts at most this often: a small database is not checked over
# and over (nor its passes logged every few seconds).
PASS_EVERY = 3600.0

Position = tuple  # (origin, epoch, index)


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _file(db: str) -> str:
    return SELF_DB if db == "main" else PEER_DB


class Scrub:
    """
    Checks a node's stored records again and keeps its quarantine.

    @param want: called with C{(origin, epoch, indexes)} to ask the peers
        for records in quarantine.
    @ivar pending: the positions in quarantine, not repaired yet.
    """

    log = Logger()

    def __init__(
        self,
        store,
        signer: Signer,
        clock,
        want: Callable[[str, str, list], None],
        rate: int = ROWS_PER_SECOND,
        step: float = STEP,
        start_tail: int = START_TAIL,
        ask_again: float = ASK_AGAIN,
        pass_every: float = PASS_EVERY,
        now: Callable[[], str] = _utc_now,
    ):
        self._store = store
        self._signer = signer
        self._clock = clock
        self._want = want
        self.rate = rate
        self._chunk = max(1, round(rate * step))
        self._step = step
        self._start_tail = start_tail
        self._ask_again = ask_again
        self._pass_every = pass_every
        self._pass_started: Optional[float] = None
        self._now = now
        self._loop: Optional[LoopingCall] = None
        self._busy = False
        self.stopped = False
        self._work = 0
        self._idle_waiters: list = []
        self._asked_at: Optional[float] = None
        self._tables: list = []
        # Where the pass is: the table's number in _tables, and the rowid.
        self._table = 0
        self._rowid = 0
        self.pending: dict = {}
        self.checked = 0
        self.passes = 0
        self.found = 0
        self.repaired = 0
        self._pass_checked = 0
        self._pass_found = 0

    # -- running ------------------------------------------------------------

    def start(self) -> Deferred:
        """
        Load what is in quarantine and ask for it, check the tail of every
        table, then run passes at the rate.
        """
        return self._track(self._start())

    @inlineCallbacks
    def _start(self):
        pending, self.repaired = yield self._store.quarantined()
        self.pending = dict.fromkeys(pending)
        if self.pending:
            self.log.warn(
                "{count} records are in quarantine (they failed their check on this node's "
                "disk): asking peers for good copies; /status 'scrub' shows how many are left",
                count=len(self.pending),
            )
        # Links come up later, and each asks for what is in quarantine.
        self._asked_at = self._clock.seconds()
        self._tables = yield self._store.readings_tables()
        # The first pass begins with the tables as they are now.
        self._pass_started = self._clock.seconds()
        for db, origin in self._tables:
            if self.stopped:
                return
            rows = yield self._store.tail_rows(db, origin, self._start_tail)
            yield self._check(db, origin, rows)
        if self.rate > 0 and not self.stopped:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self._clock
            self._loop.start(self._step, now=False)

    def stop(self) -> Deferred:
        """
        Check nothing more; fires once no database work of the scrub is
        under way, so the store can be closed.
        """
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._work:
            d = Deferred()
            self._idle_waiters.append(d)
            return d
        return succeed(None)

    def _track(self, d: Deferred) -> Deferred:
        # Database work under way, which stop waits for.
        self._work += 1

        def done(result):
            self._work -= 1
            if not self._work:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    waiter.callback(None)
            return result

        return d.addBoth(done)

    def _tick(self) -> None:
        if self._busy or self.stopped:
            return
        self._busy = True
        d = self._track(self._pass_step())
        d.addErrback(
            lambda f: self.log.failure("the scrub could not read the database; it tries again", f)
        )
        d.addBoth(self._done)
        if self.pending and (
            self._asked_at is None or self._clock.seconds() - self._asked_at >= self._ask_again
        ):
            self.ask()

    def _done(self, _) -> None:
        self._busy = False

    @inlineCallbacks
    def _pass_step(self):
        now = self._clock.seconds()
        if self._pass_started is not None and self._table >= len(self._tables):
            # The pass is over: once, say so; then wait for the next.
            if self._pass_checked:
                self.passes += 1
                self.log.info(
                    "scrub pass {n} done: {checked} records checked, {found} failed their check",
                    n=self.passes,
                    checked=self._pass_checked,
                    found=self._pass_found,
                )
                self._pass_checked = self._pass_found = 0
            if now - self._pass_started < self._pass_every:
                return
        if self._pass_started is None or self._table >= len(self._tables):
            self._pass_started = now
            self._tables = yield self._store.readings_tables()
            self._table = self._rowid = 0
            return
        db, origin = self._tables[self._table]
        rows = yield self._store.scrub_rows(db, origin, self._rowid, self._chunk)
        yield self._check(db, origin, rows)
        if len(rows) < self._chunk:
            self._table += 1
            self._rowid = 0
        else:
            self._rowid = rows[-1][0]

    @inlineCallbacks
    def _check(self, db: str, origin: str, rows: list):
        for _, row in rows:
            self.checked += 1
            self._pass_checked += 1
            problem = row_problem(self._signer, origin, row)
            if problem is not None:
                yield self._quarantine(db, origin, row[EPOCH], row[ENTRY_INDEX], row, problem)

    # -- one record ---------------------------------------------------------

    def check_now(self, origin: str, epoch: str, index: int) -> Deferred:
        """
        Check one stored record at once: a peer refused it, or a read for
        peers found its position empty.
        """
        if self.stopped or (origin, epoch, index) in self.pending:
            return succeed(None)
        return self._track(self._check_now(origin, epoch, index))

    @inlineCallbacks
    def _check_now(self, origin: str, epoch: str, index: int):
        row = yield self._store.row_at(origin, epoch, index)
        problem = "missing" if row is None else row_problem(self._signer, origin, row)
        if problem is not None:
            db = "main" if origin == self._store.node_id else "peer"
            yield self._quarantine(db, origin, epoch, index, row, problem)

    @inlineCallbacks
    def _quarantine(self, db: str, origin: str, epoch, index, row, problem: str):
        moved = yield self._store.quarantine(origin, epoch, index, row, problem, self._now())
        if not moved:
            return
        self.found += 1
        self._pass_found += 1
        self.log.error(
            "record {index} of log {origin}/{epoch} in {file} failed its check ({problem}): "
            "moved to its quarantine table and asked for from peers; it is not sent to "
            "anyone until a good copy comes. Several such records mean a failing disk: "
            "run p2pstore verify on the data directory once the node is stopped",
            index=index,
            origin=origin,
            epoch=epoch,
            file=_file(db),
            problem=problem,
        )
        if is_node_id(epoch) and type(index) is int and index >= 1:
            self.pending[(origin, epoch, index)] = None
            self._want(origin, epoch, [index])

    def ask(self) -> None:
        """
        Ask the peers for every record in quarantine.
        """
        self._asked_at = self._clock.seconds()
        by_log: dict = {}
        for origin, epoch, index in self.pending:
            by_log.setdefault((origin, epoch), []).append(index)
        for (origin, epoch), indexes in by_log.items():
            indexes.sort()
            for at in range(0, len(indexes), MAX_WANTED):
                self._want(origin, epoch, indexes[at : at + MAX_WANTED])

    def repair(self, origin: str, epoch: str, entries: list, peer: str) -> Deferred:
        """
        Good copies (their HMACs checked) of records, from ``peer``: put
        back those in quarantine.

        @return: a Deferred firing with the indexes put back.
        """
        if self.stopped:
            return succeed([])
        return self._track(self._repair(origin, epoch, entries, peer))

    @inlineCallbacks
    def _repair(self, origin: str, epoch: str, entries: list, peer: str):
        wanted = [e for e in entries if (origin, epoch, e[ENTRY_INDEX]) in self.pending]
        if not wanted:
            return []
        repaired = yield self._store.repair(origin, epoch, wanted, self._now())
        for index in repaired:
            self.pending.pop((origin, epoch, index), None)
        self.repaired += len(repaired)
        if repaired:
            self.log.info(
                "repaired {count} records of log {origin}/{epoch} in quarantine with good "
                "copies from peer {peer}; {left} left in quarantine",
                count=len(repaired),
                origin=origin,
                epoch=epoch,
                peer=peer,
                left=len(self.pending),
            )
        return repaired

    def status(self) -> dict:
        return {
            "rate": self.rate,
            "checked": self.checked,
            "passes": self.passes,
            "found": self.found,
            "quarantined": len(self.pending),
            "repaired": self.repaired,
        }
