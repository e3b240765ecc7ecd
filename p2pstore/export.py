"""
Export: a node's own readings posted as InfluxDB line protocol to each
``--export`` URL (InfluxDB 1.x and 2.x, VictoriaMetrics, QuestDB), from the
durable log.

Each destination has an L{Exporter}, which drives a
L{p2pstore.sending.LogSender} over the node's logs, one batch in flight:

- a cursor per (destination, origin, epoch) in SQLite
  (L{p2pstore.cursors}), moved only on a 2xx answer, so a restart or a
  kill -9 resends at most the batch that was in flight, which the
  destination overwrites (L{p2pstore.lineprotocol} makes each reading's
  point the same every time);
- batches of up to 5,000 readings or 512 KiB, gzipped; when caught up, a
  batch at most every second, so that export does not add a commit per
  sensor commit to the disk's wear;
- 429, 5xx, no answer: the same batch again, with jittered backoff doubling
  up to 5 minutes; 401, 403, 404: the same, logged as misconfigured, with
  what to check; 400 (or 413): the batch split in halves down to the one
  reading the destination refuses, which goes to the dead letters with the
  answer while export goes on;
- only records whose HMAC checks leave the node;
- takeover (L{p2pstore.takeover}): a node also exports an origin it holds
  whose node it has not reached for ``takeover`` seconds
  (--export-takeover), from the cursor that origin last announced
  (``EXPORTED``, with each HAVE). At most the batches in flight at a
  handover are sent twice; the destination overwrites them.

URLs may carry credentials (``user:password@``, InfluxDB 1.x's ``u=`` and
``p=``): they are sent, but every log line and ``/status`` shows the URL as
L{Destination.name}, with the secrets replaced by ``***``.
"""

from __future__ import annotations

import gzip
import random
from io import BytesIO
from typing import Optional

from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from . import lineprotocol
from .cursors import DeadLetter
from .destinations import Destination
from .gaps import Gap
from .records import ENTRY_INDEX, TIMESTAMP
from .sending import LogSender
from .takeover import Takeover
from .timerange import instant_of
from .wire import Exported

# The most readings, and bytes before gzip, in one write (the issue's, and
# InfluxDB's advice of 5,000 lines a write).
MAX_LINES = 5000
MAX_BODY = 512 * 1024
# A batch smaller than MAX_LINES goes out at most this often.
INTERVAL = 1.0
# Backoff after a failed write: from FIRST_BACKOFF doubling to MAX_BACKOFF,
# each delay drawn from half to all of it, so that nodes that lost one
# destination together do not come back together. A destination that does
# not answer at all (down, unreachable) is tried at least every
# MAX_CONNECT_BACKOFF: a connection it refuses costs it nothing, and a
# destination down for a minute then takes readings again within seconds,
# not minutes.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
MAX_CONNECT_BACKOFF = 30.0
# Readings refused one by one in a row, with nothing taken between, after
# which the destination is taken to refuse every write (a URL without its
# database, say): the readings wait, retried, instead of all going to the
# dead letters.
REFUSED_IN_A_ROW = 5
# A write that has not answered in this long counts as failed.
WRITE_TIMEOUT = 60.0
# The most of a destination's answer kept (in a dead letter, in the log).
MAX_ANSWER = 2000
_MISCONFIGURED = {401: "not authorised", 403: "forbidden", 404: "not found"}


class _Failed(Exception):
    """
    A write that did not succeed: its HTTP status (None without an
    answer) and what was said.
    """

    def __init__(self, status: Optional[int], answer: str):
        super().__init__(status, answer)
        self.status = status
        self.answer = answer


class Exporter:
    """
    Ships a node's own logs to one destination.

    @ivar saved: how far the destination holds each log, as saved in
        SQLite: what pruning may remove (L{exported}).
    """

    log = Logger()

    def __init__(
        self,
        destination: Destination,
        node_id: str,
        source,
        store,
        signer,
        clock,
        agent=None,
        refused=lambda log, index: None,
        interval: float = INTERVAL,
        max_lines: int = MAX_LINES,
        max_body: int = MAX_BODY,
        takeover: Optional[float] = None,
        reachable=lambda node_id: True,
        announce=lambda: None,
    ):
        self.destination = destination
        self._node_id = node_id
        self._source = source
        self._store = store
        self._signer = signer
        self._clock = clock
        self._pool = None
        if agent is None:
            self._pool = HTTPConnectionPool(clock, persistent=True)
            self._pool.maxPersistentPerHost = 1
            agent = Agent(clock, pool=self._pool, connectTimeout=30)
        self._agent = agent
        self._interval = interval
        self._max_lines = max_lines
        self._max_body = max_body
        self._announce = announce
        self.takeover = Takeover(destination.name, node_id, source, store, clock, takeover, reachable)
        self.sender = LogSender(
            destination.name,
            source,
            clock,
            self._transmit,
            max_lines,
            window=1,
            skip=self._skip,
            refused=refused,
        )
        self.saved: dict = {}
        self.started = False
        self.sent = 0
        self.dead_lettered = 0
        self.last_success: Optional[float] = None
        self.last_error: Optional[str] = None
        self.failing_since: Optional[float] = None
        # Whether the last failure said the URL or credentials are wrong.
        self.misconfigured = False
        self.errors: dict = {}
        # The (log, index) of the last record not exported for its HMAC.
        self._bad = None
        # Readings refused alone since the last write taken.
        self._refused_in_a_row = 0
        self._small_at = float("-inf")
        self._backoff = 0.0
        self._retry = None
        self._request = None
        self._loop: Optional[LoopingCall] = None
        self._stopped = False
        self._started_at = clock.seconds()
        # Each log's last index when export started: this node knows when it
        # came to hold later records (the source's held times), not these.
        self._before_start: dict = {}
        # For the oldest waiting record of each log, when it is one of
        # those: the time its reading says, read from disk (None while read).
        self._stamps: dict = {}

    # -- lifecycle -----------------------------------------------------------

    def start(self):
        """
        Read the cursors, then ship. Fires once shipping has begun.
        """
        d = self._store.export_cursors(self.destination.name)

        def loaded(result):
            cursors, dead = result
            self.saved = dict(cursors)
            self._before_start = dict(self._source.positions)
            self.dead_lettered = dead
            self.started = True
            self.sender.channel = self.destination
            self.sender.told(cursors, on_channel=True)
            self._loop = LoopingCall(self._flush)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=False)

        return d.addCallback(loaded)

    def stop(self):
        """
        Stop shipping: a write in flight is abandoned, and sent again after
        the next start (its cursor did not move). Fires once the
        destination's connections are closed.
        """
        self._stopped = True
        self.sender.stop()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._request is not None:
            self._request.cancel()
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return succeed(None)

    # -- what to ship, and when ----------------------------------------------

    @property
    def heard(self) -> dict:
        return self.takeover.heard

    @property
    def taken_over(self) -> set:
        return self.takeover.taken_over

    def _exports(self, log) -> bool:
        return self.takeover.exports(log)

    def _skip(self, log) -> bool:
        if not self._exports(log):
            return True
        waiting = self._source.positions[log] - self.sender.next_to_send(log) + 1
        # A full batch at once; a smaller one once an interval.
        return waiting < self._max_lines and self._clock.seconds() < self._small_at + self._interval

    def appended(self, log, last_index: int) -> None:
        """
        An own log grew: ship, if a batch is full.
        """
        if self.started:
            self.sender.pump()

    def _flush(self) -> None:
        for log, index in self.takeover.check(self.saved):
            self.sender.holds(log, index)
        self.takeover.save_heard(self.saved)
        self._read_stamps()
        self.sender.pump()

    def _read_stamps(self) -> None:
        # The oldest waiting record of a log stored before export started
        # has no held time: its reading's timestamp stands in (at most the
        # start), so that its age is not counted from the start alone.
        waiting = set()
        for log, position in self._source.positions.items():
            index = self.saved.get(log, 0) + 1
            if self._exports(log) and index <= min(position, self._before_start.get(log, 0)):
                waiting.add((log, index))
        for key in set(self._stamps) - waiting:
            del self._stamps[key]
        for log, index in waiting - set(self._stamps):
            self._stamps[(log, index)] = None
            d = self._store.row_at(log[0], log[1], index)
            d.addCallback(self._stamped, log, index)
            d.addErrback(self._unstamped, log, index)

    def _unstamped(self, failure, log, index) -> None:
        # Read again at the next flush; meanwhile its age counts from the start.
        self._stamps.pop((log, index), None)
        self.log.failure("could not read a waiting reading's time; trying again", failure)

    def _stamped(self, row, log, index) -> None:
        if (log, index) not in self._stamps:
            return
        stamp = row[TIMESTAMP] if row else None
        # Another program may have written anything there.
        when = instant_of(stamp) if isinstance(stamp, str) else None
        at = self._started_at if when is None else min(when.timestamp(), self._started_at)
        self._stamps[(log, index)] = at

    def heard_exported(self, message: Exported) -> None:
        """
        A peer says how far this destination holds logs (its cursors).
        What this node exports itself goes on from there, its cursor saved.
        """
        if message.destination != self.destination.name:
            return
        for log, index in self.takeover.heard_exported(message, self.saved):
            if not self.started:
                continue
            self.sender.holds(log, index)
            d = self._store.exported(self.destination.name, log, index)
            d.addCallback(lambda _, log=log, index=index: self._advanced(log, index))
            d.addErrback(
                lambda f: self.log.failure("could not save an export cursor a peer sent", f)
            )

    def _advanced(self, log, index: int) -> None:
        self.saved[log] = max(self.saved.get(log, 0), index)

    def announcement(self) -> Exported:
        """
        How far this destination holds each log, as this node saved it.
        """
        positions = {log: n for log, n in self.saved.items() if n}
        # Its own logs with nothing taken yet too: peers then know that this
        # origin exports here, and keep what the destination lacks of it.
        for log in self._source.positions:
            if log[0] == self._node_id:
                positions.setdefault(log, 0)
        return Exported(self.destination.name, positions)

    # -- one batch -----------------------------------------------------------

    def _transmit(self, channel, log, entries) -> None:
        # Called by the sender, which counts the batch in flight only on
        # return: every outcome is handled in a later turn.
        if isinstance(entries, Gap):
            # Records this node no longer holds (pruned): nothing to send;
            # the cursor steps over them with the next save.
            self._clock.callLater(0, self._delivered, log, entries.last, 0, True)
            return
        if len(entries) < self._max_lines:
            self._small_at = self._clock.seconds()
        good = self._signer.valid_prefix(log[0], log[1], entries)
        if good == 0:
            # Never exported. The sender's refusal path has the scrub check
            # it (and fetch a good copy from a peer), and tries again after
            # a pause.
            index = entries[0][ENTRY_INDEX]
            if self._bad != (log, index):
                self._bad = (log, index)
                self.log.warn(
                    "not exporting entry {index} of log {origin}/{epoch} to {destination}: its "
                    "HMAC does not check; export of this log waits for the scrub to repair it",
                    index=index, origin=log[0], epoch=log[1], destination=self.destination.name,
                )
            self._clock.callLater(0, self.sender.acked, log, index - 1)
            return
        body, count, bad = lineprotocol.lines(log[0], entries[:good], self._max_body)
        if count == 0:
            # The first record cannot be a point at all.
            letter = DeadLetter(log[0], log[1], bad[ENTRY_INDEX], None, None, "bad timestamp")
            self._clock.callLater(0, self._dead, log, bad[ENTRY_INDEX], letter)
            return
        last = entries[count - 1][ENTRY_INDEX]
        whole = count == len(entries)
        self._post(log, gzip.compress(body, 1), body, count, last, whole)

    def _post(self, log, compressed: bytes, body: bytes, count: int, last: int, whole: bool):
        headers = Headers(
            {
                b"Content-Type": [b"text/plain; charset=utf-8"],
                b"Content-Encoding": [b"gzip"],
                b"User-Agent": [b"p2pstore"],
            }
        )
        if self.destination.authorization is not None:
            headers.addRawHeader(b"Authorization", self.destination.authorization)
        d = self._agent.request(
            b"POST",
            self.destination.url.encode("ascii"),
            headers,
            FileBodyProducer(BytesIO(compressed)),
        )
        d.addTimeout(WRITE_TIMEOUT, self._clock)
        self._request = d
        d.addCallback(self._answered)
        d.addCallbacks(
            lambda _: self._delivered(log, last, count, whole),
            self._failed,
            errbackArgs=(log, compressed, body, count, last, whole),
        )
        d.addErrback(lambda f: self.log.failure("export to {destination} broke", f,
                                                destination=self.destination.name))

    def _answered(self, response):
        d = readBody(response)

        def read(text: bytes):
            if 200 <= response.code < 300:
                return None
            raise _Failed(response.code, text[:MAX_ANSWER].decode("utf-8", "replace").strip())

        return d.addCallback(read)

    def _delivered(self, log, last: int, count: int, whole: bool) -> None:
        self._request = None
        if self._stopped:
            return
        d = self._store.exported(self.destination.name, log, last)

        def saved(_):
            self.saved[log] = max(self.saved.get(log, 0), last)
            self._announce()
            self.sent += count
            if count:
                self._refused_in_a_row = 0
            now = self._clock.seconds()
            self.last_success = now
            if self.failing_since is not None:
                self.log.info(
                    "export to {destination} works again after {seconds:.0f} s of failures",
                    destination=self.destination.name, seconds=now - self.failing_since,
                )
            self.failing_since = None
            self.last_error = None
            self.misconfigured = False
            self._backoff = 0.0
            if self._stopped:
                return
            if whole:
                self.sender.acked(log, last)
            else:
                self.sender.took(log, last)

        return d.addCallbacks(saved, self._save_failed, errbackArgs=(log, last, count, whole))

    def _save_failed(self, failure, log, last: int, count: int, whole: bool) -> None:
        # The destination has the batch but the cursor did not move: the
        # batch goes again, and is overwritten there.
        self.log.failure(
            "could not save the export cursor of {destination}; sending again",
            failure, destination=self.destination.name,
        )
        self._again(lambda: self._delivered(log, last, count, whole))

    def _dead(self, log, index: int, letter: DeadLetter) -> None:
        self._request = None
        if self._stopped:
            return
        d = self._store.exported(self.destination.name, log, index, [letter])

        def saved(_):
            self.saved[log] = max(self.saved.get(log, 0), index)
            self.dead_lettered += 1
            self.log.error(
                "{destination} refused entry {index} of log {origin}/{epoch} ({status}: "
                "{answer}); it is kept in export_dead_letters of the own database, and export "
                "goes on",
                destination=self.destination.name, index=index, origin=log[0], epoch=log[1],
                status=letter.status or "not sent", answer=letter.answer,
            )
            if not self._stopped:
                self.sender.acked(log, index)

        d.addCallbacks(saved, self._save_failed, errbackArgs=(log, index, 0, True))

    def _failed(self, failure, log, compressed, body, count: int, last: int, whole: bool):
        self._request = None
        if self._stopped:
            return
        if failure.check(_Failed):
            status, answer = failure.value.status, failure.value.answer
        else:
            status, answer = None, _describe(failure)
        key = str(status) if status is not None else "connection"
        self.errors[key] = self.errors.get(key, 0) + 1
        if status in (400, 413) and self._refused_in_a_row < REFUSED_IN_A_ROW:
            if count > 1:
                # One of them is bad (or the batch too large): halves.
                self.sender.resend_smaller()
                return
            self._refused_in_a_row += 1
            self.last_error = f"{status} {answer} (entry {last} sent to the dead letters)"
            line = body.decode("utf-8").rstrip("\n")
            self._dead(log, last, DeadLetter(log[0], log[1], last, line, status, answer))
            return
        now = self._clock.seconds()
        most = MAX_BACKOFF if status is not None else MAX_CONNECT_BACKOFF
        self._backoff = min(max(self._backoff * 2, FIRST_BACKOFF), most)
        delay = self._backoff * random.uniform(0.5, 1.0)
        error = f"{status} {answer}" if status is not None else answer
        self.misconfigured = status in _MISCONFIGURED or status in (400, 413)
        if status in _MISCONFIGURED:
            advice = (
                f"{_MISCONFIGURED[status]}: check the URL's database or bucket and the "
                "credentials (--export-token-file for InfluxDB 2.x)"
            )
            error = f"{error} ({advice})"
        elif self.misconfigured:
            error = (
                f"{error} (every write refused, {REFUSED_IN_A_ROW} readings alone in a row: check "
                "the URL, e.g. its ?db=; the readings wait here)"
            )
        if self.failing_since is None or error != self.last_error:
            self.log.warn(
                "export to {destination} failed: {error}; trying again in {delay:.0f} s, "
                "doubling up to {most:.0f} s; readings are kept until it takes them",
                destination=self.destination.name, error=error, delay=delay, most=most,
            )
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = error
        self._again(lambda: self._post(log, compressed, body, count, last, whole), delay)

    def _again(self, call, delay: Optional[float] = None) -> None:
        if delay is None:
            self._backoff = min(max(self._backoff * 2, FIRST_BACKOFF), MAX_BACKOFF)
            delay = self._backoff
        self._retry = self._clock.callLater(delay, lambda: None if self._stopped else call())

    # -- status --------------------------------------------------------------

    def exported(self, log) -> int:
        """
        How far the destination holds ``log``, saved: pruning keeps the rest.
        """
        return self.saved.get(log, 0)

    def retention_limit(self, log) -> Optional[int]:
        """
        How far retention may prune a peer's ``log`` here for this
        destination (L{Takeover.retention_limit}); before the saved cursors
        are read, nothing may go.
        """
        if not self.started:
            return 0
        return self.takeover.retention_limit(log, self.saved)

    def pending(self) -> int:
        firsts = self._source.firsts
        return sum(
            max(0, position - max(self.saved.get(log, 0), firsts.get(log, 1) - 1))
            for log, position in self._source.positions.items()
            if self._exports(log)
        )

    def status(self) -> dict:
        now = self._clock.seconds()
        oldest = None
        held = self._source.held
        for log, position in self._source.positions.items():
            if not self._exports(log) or position <= self.saved.get(log, 0):
                continue
            # When the oldest reading not exported came (to within a
            # second); for one stored before export started, the time its
            # reading says; at least since the node started.
            index = self.saved.get(log, 0) + 1
            if index <= self._before_start.get(log, 0):
                since = self._stamps.get((log, index))
            else:
                since = held.since(log, index) if held is not None else None
            since = self._started_at if since is None else since
            oldest = since if oldest is None else min(oldest, since)
        if self.failing_since is None:
            state = "ok" if self.started else "starting"
        elif self.misconfigured:
            state = "misconfigured"
        else:
            state = "retrying"
        return {
            "url": self.destination.name,
            "state": state,
            "pending": self.pending(),
            "oldest_unexported_age_s": None if oldest is None else round(now - oldest, 3),
            "sent": self.sent,
            "dead_lettered": self.dead_lettered,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failing_since": self.failing_since,
            "errors": dict(self.errors),
            "taken_over": sorted(self.taken_over),
        }


def _describe(failure) -> str:
    if failure.check(DeferredTimeout, CancelledError):
        return f"no answer within {WRITE_TIMEOUT:.0f} s"
    # ResponseFailed and the like carry the reasons of their own.
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return failure.getErrorMessage()
