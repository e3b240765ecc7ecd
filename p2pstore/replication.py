"""
Replication: what each peer lacks, what to send it, and what to apply
from it.

A node holds logs, one per ``(origin, epoch)``, each gapless from index 1.
Peers tell each other how far they hold every log (HAVE); each side then
sends the other, in order and in batches, every record it lacks, keeping at
most ``window`` batches unacknowledged per peer. Received records are checked
against their origin's HMAC before they are stored; a batch is stored only
where it continues the log, so a log never has a gap and a position never
gets a second content.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .records import CHECKSUM, ENTRY_INDEX, Signer
from .wire import MAX_RECORDS, Ack, BadMessage, Have, Links, Records

Log = tuple  # (origin, epoch)

# Recent records of each log, kept to send live without reading them back
# (as RECORDS entries, p2pstore.wire.Records).
TAIL = 4096
# Batches read from disk at once, at most, for a peer that lacks them: while
# sensors keep the database thread busy, each read waits for a commit, so
# one batch per read could not keep up with a fast log.
READ_BATCHES = 4
# How long before records a peer rejected are sent again.
RETRY_DELAY = 1.0
# HAVE announcements are coalesced over this long.
HAVE_DELAY = 0.05


def plan_apply(own: Log, log: Log, position: int, entries: list, stored: dict) -> tuple[list, int]:
    """
    The policy for a checked batch of consecutive records of ``log``, which
    this node holds up to ``position``: store only what continues the log,
    compare what repeats a held position with the stored checksum, and never
    take positions of this node's own current log ``own``, which this node
    alone assigns.

    @param stored: the stored checksum of each held position the batch
        repeats, by entry_index.
    @return: the entries to store, and how many records conflict with what
        is stored (the stored ones are kept).
    """
    if not entries:
        return [], 0
    held = min(max(position - entries[0][ENTRY_INDEX] + 1, 0), len(entries))
    conflicts = sum(
        1 for entry in entries[:held] if stored.get(entry[ENTRY_INDEX]) != entry[CHECKSUM]
    )
    beyond = entries[held:]
    if log == own:
        # A peer offering more of this node's current log is a conflict.
        return [], conflicts + len(beyond)
    if beyond and beyond[0][ENTRY_INDEX] == position + 1:
        return beyond, conflicts
    # After a gap, whose missing records are sent again first.
    return [], conflicts


class PeerState:
    """
    What this node knows about one peer node, over all its links.

    ``links[0]`` carries what this node sends; every link carries the
    peer's own sends and our acknowledgements of them.
    """

    def __init__(self, node_id: str):
        self.node_id = node_id
        self.links: list = []
        self.address: Optional[str] = None
        self.has: dict = {}
        self.sent: dict = {}
        # The nodes this peer says it is linked to: their records reach it
        # from them, so this node does not forward them too.
        self.linked_to: frozenset = frozenset()
        self.known = False
        # (log, last index) of each unacknowledged batch, oldest first: the
        # peer acknowledges batches in the order it received them.
        self.unacked: deque = deque()
        self.reading = False
        self.retry = None
        self.sent_count = 0
        self.received = 0
        self.rejected = 0
        self.conflicts = 0
        self.link_errors = 0
        self.last_seen: Optional[float] = None

    @property
    def inflight(self) -> int:
        return len(self.unacked)

    def next_to_send(self, log: Log) -> int:
        return self.sent.get(log, self.has.get(log, 0)) + 1


class Replicator:
    """
    Replication state of one node: its logs' positions and every peer's.
    """

    log = Logger()

    def __init__(
        self,
        node_id: str,
        store,
        signer: Signer,
        clock,
        batch_size: int = MAX_RECORDS,
        # Sixteen batches in flight keep a catch-up from waiting on round
        # trips (bench/replicate.py: about 54,000 -> 65,000 records/s).
        window: int = 16,
    ):
        if not 1 <= batch_size <= MAX_RECORDS:
            # A peer refuses a longer RECORDS line and drops the link.
            raise ValueError(f"batch_size must be from 1 to {MAX_RECORDS}, not {batch_size}")
        self.node_id = node_id
        self._store = store
        self._signer = signer
        self._clock = clock
        self.batch_size = batch_size
        self.window = window
        self.positions: dict = {}
        self.peers: dict[str, PeerState] = {}
        self._tail: dict = {}
        self._inbox: deque = deque()
        self._applying = False
        self._storing: list = []
        self._have_call = None
        self.refused_links = 0
        self.recovering = False
        self._recovery_targets: dict = {}
        self._heard_from_peer = False
        self.ready = False
        self.stopped = False
        self._idle_waiters: list = []

    # -- this node's own logs --------------------------------------------

    def opened(self, positions: dict, recovering: bool) -> None:
        self.positions = dict(positions)
        self.recovering = recovering
        self.ready = True

    def stop(self) -> Deferred:
        """
        Stop sending and applying; fires once no database work is under way,
        so the store can be closed. What was not acknowledged is sent again
        after the restart.
        """
        self.stopped = True
        if self._have_call is not None and self._have_call.active():
            self._have_call.cancel()
        for peer in self.peers.values():
            if peer.retry is not None and peer.retry.active():
                peer.retry.cancel()
        self._inbox.clear()
        if self._busy():
            d = Deferred()
            self._idle_waiters.append(d)
            return d
        return succeed(None)

    def _busy(self) -> bool:
        return self._applying or any(peer.reading for peer in self.peers.values())

    def _maybe_idle(self) -> None:
        if self.stopped and not self._busy():
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def committed(self, origin: str, epoch: str, entries: list) -> None:
        """
        Records were added to a log by replication: send them on to every
        peer that lacks them.
        """
        if entries:
            self._added((origin, epoch), entries[-1][0], lambda: entries)

    def appended(self, epoch: str, last_index: int, entries: Callable[[], list]) -> None:
        """
        This node's own log grew to ``last_index``: send the new records to
        every peer. ``entries()`` builds them as RECORDS entries, which is
        only worth doing when a peer may want them.
        """
        self._added((self.node_id, epoch), last_index, entries)

    def _added(self, log: Log, last_index: int, entries: Callable[[], list]) -> None:
        self.positions[log] = last_index
        if self.peers:
            tail = self._tail.get(log)
            if tail is None:
                tail = self._tail[log] = deque(maxlen=TAIL)
            tail.extend(entries())
        else:
            # No peer has ever linked: nothing to keep for. A tail with a
            # gap would hand out wrong records, so one that falls behind
            # is dropped; a peer that links later is sent from disk.
            self._tail.pop(log, None)
        for peer in self.peers.values():
            self._pump(peer)
        self._announce()

    def _from_tail(self, log: Log, start: int, end: int) -> Optional[list]:
        # Entries: their entry_index first.
        tail = self._tail.get(log)
        if not tail or tail[0][0] > start or tail[-1][0] < end:
            return None
        offset = start - tail[0][0]
        # Not tail[i] per record: indexing into the middle of a deque walks it.
        entries = list(islice(tail, offset, offset + end - start + 1))
        if entries[0][0] != start or entries[-1][0] != end:
            # A gap in the tail (records that never reached it): from disk.
            return None
        return entries

    # -- links ------------------------------------------------------------

    def link_up(self, link) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is None:
            peer = self.peers[link.peer_id] = PeerState(link.peer_id)
        peer.links.append(link)
        peer.address = getattr(link, "dial_address", None) or peer.address or link.address
        peer.last_seen = self._clock.seconds()
        link.send(Have(self._have_payload()))
        self._announce_links()

    def link_down(self, link) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is None or link not in peer.links:
            return
        carried_sends = peer.links[0] is link
        peer.links.remove(link)
        if not peer.links:
            self._announce_links()
        if carried_sends:
            # Batches in flight on that link are lost: resume from what the
            # peer is known to hold, on its next link.
            peer.unacked.clear()
            peer.sent = {}
            peer.known = bool(peer.links)
            self._pump(peer)

    def link_failed(self, link, reason: str) -> None:
        """
        A link was dropped for a protocol or authentication error.
        """
        peer = self.peers.get(link.peer_id) if link.authenticated else None
        if peer is not None:
            peer.link_errors += 1
        else:
            self.refused_links += 1

    # -- messages ---------------------------------------------------------

    def received(self, link, message) -> None:
        """
        A message from an authenticated link.

        @raise BadMessage: it breaks the protocol; the link is dropped.
        """
        peer = self.peers[link.peer_id]
        peer.last_seen = self._clock.seconds()
        if isinstance(message, Have):
            self._have(peer, link, message)
        elif isinstance(message, Records):
            # Batches being stored are unacknowledged as well as queued ones.
            pending = sum(1 for l, _ in self._inbox if l is link) + sum(
                1 for l, *_ in self._storing if l is link
            )
            if pending >= self.window:
                raise BadMessage(f"sent more than {self.window} unacknowledged batches")
            self._inbox.append((link, message))
            self._apply()
        elif isinstance(message, Ack):
            self._ack(peer, link, message)
        elif isinstance(message, Links):
            peer.linked_to = message.node_ids
            self._pump(peer)
        else:
            raise BadMessage(f"unexpected {type(message).__name__.upper()}")

    def _have(self, peer: PeerState, link, message: Have) -> None:
        has = {(o, e): n for o, epochs in message.positions.items() for e, n in epochs.items()}
        peer.has = has
        self._heard_from_peer = True
        for log, n in has.items():
            if log[0] == self.node_id and n > self._recovery_targets.get(log, 0):
                self._recovery_targets[log] = n
        if link is peer.links[0]:
            if not peer.known or peer.inflight == 0:
                peer.sent = dict(has)
                peer.known = True
            else:
                for log, n in has.items():
                    if n > peer.sent.get(log, 0):
                        peer.sent[log] = n
        self._check_recovery()
        self._pump(peer)

    def _ack(self, peer: PeerState, link, message: Ack) -> None:
        if not peer.links or link is not peer.links[0] or peer.inflight == 0:
            return
        # Acknowledgements come in the order the batches went: this one
        # answers the oldest. Only a position below that batch's end means a
        # refusal; below what was sent since is just the pipeline.
        sent_log, end = peer.unacked.popleft()
        log = (message.origin, message.epoch)
        if log != sent_log:
            # The batch reached the peer under another name (its origin or
            # epoch corrupted in transit), so none of it was stored: send it
            # again from what the peer is known to hold.
            peer.sent[sent_log] = peer.has.get(sent_log, 0)
            self._retry_later(peer)
            return
        peer.has[log] = message.last_index
        if message.last_index < end:
            # The peer refused part of what was sent (a record failed its
            # check): send it again, after a pause so a link that corrupts
            # everything does not spin.
            peer.sent[log] = message.last_index
            self._retry_later(peer)
            return
        self._pump(peer)

    def _retry_later(self, peer: PeerState) -> None:
        # After a pause, so that a link that corrupts everything does not spin.
        if peer.retry is None or not peer.retry.active():
            peer.retry = self._clock.callLater(RETRY_DELAY, self._pump, peer)

    # -- sending ----------------------------------------------------------

    def _next_log(self, peer: PeerState) -> Optional[Log]:
        for log, position in self.positions.items():
            if log[0] in peer.linked_to and log[0] not in (self.node_id, peer.node_id):
                # Its origin sends it to the peer itself.
                continue
            if peer.next_to_send(log) <= position:
                return log
        return None

    def _pump(self, peer: PeerState) -> None:
        if self.stopped or not peer.links or not peer.known or peer.reading:
            return
        if peer.retry is not None and peer.retry.active():
            return
        link = peer.links[0]
        while peer.inflight < self.window:
            log = self._next_log(peer)
            if log is None:
                return
            start = peer.next_to_send(log)
            end = min(start + self.batch_size - 1, self.positions[log])
            entries = self._from_tail(log, start, end)
            if entries is None:
                batches = min(self.window - peer.inflight, READ_BATCHES)
                end = min(start + batches * self.batch_size - 1, self.positions[log])
                peer.reading = True
                d = self._store.read_entries(log[0], log[1], start - 1, end - start + 1)
                d.addCallback(self._read, peer, link, log, start)
                d.addErrback(self._read_failed, peer, log)
                return
            self._send(peer, link, log, entries)

    def _read(self, entries: list, peer: PeerState, link, log: Log, start: int) -> None:
        peer.reading = False
        self._maybe_idle()
        if not entries and not self.stopped:
            # The position says these rows exist but the table has none (rows
            # deleted by hand?): try again later rather than spin on reads.
            self.log.warn(
                "log {log} is held up to {position} but has no rows from {start}; retrying",
                log=log,
                position=self.positions.get(log),
                start=start,
            )
            self._retry_later(peer)
            return
        if (
            entries
            and not self.stopped
            and peer.links
            and link is peer.links[0]
            and entries[0][0] == peer.next_to_send(log)
        ):
            # Acknowledgements meanwhile only made room in the window.
            for at in range(0, len(entries), self.batch_size):
                self._send(peer, link, log, entries[at : at + self.batch_size])
        self._pump(peer)

    def _read_failed(self, failure, peer: PeerState, log: Log) -> None:
        peer.reading = False
        if self.stopped:
            self._maybe_idle()
            return
        self.log.failure(
            "could not read log {log} to send to {peer}; will retry", failure, log=log, peer=peer.node_id
        )
        peer.retry = self._clock.callLater(RETRY_DELAY, self._pump, peer)

    def _send(self, peer: PeerState, link, log: Log, entries: list) -> None:
        link.send(Records(log[0], log[1], entries))
        last = entries[-1][0]
        peer.sent[log] = last
        peer.unacked.append((log, last))
        peer.sent_count += len(entries)

    def _links(self) -> Links:
        return Links(frozenset(p.node_id for p in self.peers.values() if p.links))

    def _announce_links(self) -> None:
        """
        Tell every peer which nodes this node is now linked to.
        """
        if self.stopped:
            return
        message = self._links()
        for peer in self.peers.values():
            for link in peer.links:
                link.send(message)

    def _have_payload(self) -> dict:
        payload: dict = {}
        for (origin, epoch), n in self.positions.items():
            payload.setdefault(origin, {})[epoch] = n
        return payload

    def _announce(self) -> None:
        if self.stopped:
            return
        if self._have_call is None and any(peer.links for peer in self.peers.values()):
            self._have_call = self._clock.callLater(HAVE_DELAY, self._send_have)

    def _send_have(self) -> None:
        self._have_call = None
        message = Have(self._have_payload())
        for peer in self.peers.values():
            for link in peer.links:
                link.send(message)

    # -- applying ---------------------------------------------------------

    def _verified(self, peer: PeerState, message: Records) -> list:
        """
        The entries up to the first whose checksum is wrong.
        """
        entries = message.entries
        valid = self._signer.valid_prefix(message.origin, message.epoch, entries)
        if valid < len(entries):
            peer.rejected += 1
            self.log.warn(
                "rejected a record from peer {peer}: checksum mismatch for {origin} "
                "{epoch}:{index} (corrupted in transit or forged); it will be asked for again",
                peer=peer.node_id,
                origin=message.origin,
                epoch=message.epoch,
                index=entries[valid][0],
            )
        return entries[:valid]

    def _apply(self) -> None:
        if self.stopped or self._applying or not self._inbox:
            return
        batch = []
        while self._inbox:
            link, message = self._inbox.popleft()
            peer = self.peers[link.peer_id]
            batch.append((link, peer, message, self._verified(peer, message)))
        self._applying = True
        self._storing = batch
        d = self._store.apply(
            [(m.origin, m.epoch, good) for _, _, m, good in batch], plan_apply
        )
        d.addCallbacks(self._applied, self._apply_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addErrback(lambda f: self.log.failure("could not act on stored records", f))
        d.addBoth(self._apply_done)

    def _applied(self, results: list, batch: list) -> None:
        for (link, peer, message, good), result in zip(batch, results):
            if good:
                # The sender holds what it sent (logs have no gaps): do not
                # send it back, nor count it as lacking.
                self._peer_holds(peer, (message.origin, message.epoch), good[-1][0])
            peer.received += len(result.added)
            if result.conflicts:
                peer.conflicts += result.conflicts
                self.log.error(
                    "{count} records from peer {peer} differ from the stored ones at "
                    "the same positions of log {origin}/{epoch}; kept the stored ones",
                    count=result.conflicts,
                    peer=peer.node_id,
                    origin=message.origin,
                    epoch=message.epoch,
                )
            self.committed(message.origin, message.epoch, result.added)
            if link.authenticated and link in peer.links:
                link.send(Ack(message.origin, message.epoch, result.last_index))
        self._check_recovery()

    @staticmethod
    def _peer_holds(peer: PeerState, log: Log, position: int) -> None:
        if position > peer.has.get(log, 0):
            peer.has[log] = position
        if log in peer.sent and peer.sent[log] < position:
            peer.sent[log] = position

    def _apply_failed(self, failure, batch: list) -> None:
        self.log.failure(
            "could not store replicated records; their senders will send them again", failure
        )
        # Answer every batch with the position unchanged, or each sender would
        # keep those batches counted in its window for ever, and stall.
        for link, peer, message, _ in batch:
            if link.authenticated and link in peer.links:
                log = (message.origin, message.epoch)
                link.send(Ack(message.origin, message.epoch, self.positions.get(log, 0)))

    def _apply_done(self, _) -> None:
        self._applying = False
        self._storing = []
        self._maybe_idle()
        self._apply()

    # -- recovery -----------------------------------------------------------

    def _check_recovery(self) -> None:
        if not self.recovering or not self._heard_from_peer:
            return
        for log, target in self._recovery_targets.items():
            if self.positions.get(log, 0) < target:
                return
        self.recovering = False
        self.log.info("recovered this node's earlier readings from its peers")
        self._store.finish_recovery()

    def recovery_progress(self) -> dict:
        return {
            f"{origin}/{epoch}": {"have": self.positions.get((origin, epoch), 0), "target": target}
            for (origin, epoch), target in self._recovery_targets.items()
        }

    # -- status -------------------------------------------------------------

    def _peer_status(self, peer: PeerState, connecting: bool) -> dict:
        lag: dict = {}
        if peer.node_id is not None:
            for log, position in self.positions.items():
                missing = position - peer.has.get(log, 0)
                if missing > 0:
                    lag[log[0]] = lag.get(log[0], 0) + missing
        return {
            "address": peer.address,
            "node_id": peer.node_id,
            "connected": bool(peer.links) or connecting,
            "authenticated": bool(peer.links),
            "last_seen": peer.last_seen,
            "sent": peer.sent_count,
            "received": peer.received,
            "rejected": peer.rejected,
            "conflicts": peer.conflicts,
            "link_errors": peer.link_errors,
            "lag": lag,
        }

    def status(self, dialling: dict = {}) -> tuple[list, dict]:
        """
        The ``peers`` list and ``replication`` totals of the status.

        @param dialling: ``{address: connected}`` of the addresses this node
            dials, so that peers never reached yet are listed too.
        """
        peers = [self._peer_status(peer, False) for peer in self.peers.values()]
        known = {peer.address for peer in self.peers.values()}
        for address, connected in dialling.items():
            if address not in known:
                unknown = PeerState(None)
                unknown.address = address
                peers.append(self._peer_status(unknown, connected))
        totals = {
            key: sum(p[key] for p in peers)
            for key in ("sent", "received", "rejected", "conflicts", "link_errors")
        }
        totals["refused_links"] = self.refused_links
        return peers, totals
