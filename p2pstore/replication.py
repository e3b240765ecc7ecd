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

import time
from typing import Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from .copies import HeldRelay, Holdings
from .departed import SWEEP_INTERVAL, departures
from .gaps import Gap
from .inbound import Inbound
from .linkhealth import LinkHealth
from .records import ENTRY_INDEX, Signer
from .recovery import Recovery
from .sending import Log, LogSender, LogSource
from .wire import (
    MAX_RECORDS, Ack, BadMessage, Exported, Full, Have, Held, Links, Ping, Pong, Pruned, Records,
    Repair, Want,
)

# HAVE announcements are coalesced over this long.
HAVE_DELAY = 0.05


class PeerState:
    """
    What this node knows about one peer node, over all its links.

    ``links[0]`` carries what this node sends (the channel of its
    L{LogSender}); every link carries the peer's own sends and our
    acknowledgements of them.
    """

    def __init__(self, node_id: Optional[str]):
        self.node_id = node_id
        self.links: list = []
        self.address: Optional[str] = None
        # The nodes this peer says it is linked to: their records reach it
        # from them, so this node does not forward them too.
        self.linked_to: frozenset = frozenset()
        self.sender: Optional[LogSender] = None
        self.received = 0
        self.rejected = 0
        self.conflicts = 0
        self.link_errors = 0
        # Links that authenticated, over the node's uptime: one that climbs
        # while the peer stays connected is a link that keeps breaking.
        self.links_opened = 0
        self.last_seen: Optional[float] = None
        # When it was found gone (p2pstore.departed), while it is.
        self.gone_since: Optional[float] = None
        # Why its links dropped or its records were refused, lately.
        self.health = LinkHealth(time.time)


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
        self.source = LogSource(store, clock=clock)
        self.peers: dict[str, PeerState] = {}
        self.inbound = Inbound(
            store, signer, window, self._applied, self._apply_failed, self._applied_all,
            self._no_room,
        )
        self._have_call = None
        self._store = store
        # The export cursors to announce (p2pstore.export), as EXPORTED
        # messages, and who hears those of peers.
        self.export_positions: Callable[[], list] = list
        self.export_listeners: list[Callable[[Exported], None]] = []
        self._exported_sent: list = []
        # The scrub that keeps the quarantine (p2pstore.scrub), once set.
        self.scrub = None
        self.refused_links = 0
        # ... by what precedes the reason's first colon.
        self.refused_reasons: dict[str, int] = {}
        self.recovery = Recovery(node_id, store)
        # Who else holds how much of each log (p2pstore.copies).
        self.holdings = Holdings(node_id, clock)
        self.relay = HeldRelay(
            node_id, self.holdings, clock, self._send_held, self._linked, self._reaches
        )
        self.ready = False
        self.stopped = False
        self._idle_waiters: list = []
        # Called with each range recorded as not held by a peer
        # (p2pstore.gaps.PrunedRange).
        self.gap_listeners: list = []
        # The addresses this node dials (its --peers that are not itself):
        # a peer one of them leads to is never gone (p2pstore.departed).
        self.dialled_addresses: Callable[[], set] = set
        self._sweep_call = None

    # -- this node's own logs --------------------------------------------

    @property
    def positions(self) -> dict:
        """
        How far this node holds each log: ``{(origin, epoch): last_index}``.
        """
        return self.source.positions

    def opened(self, positions: dict, recovering: bool, firsts=None, pruned=()) -> None:
        self.source.opened(positions)
        self.source.firsts = dict(firsts or {})
        for gone in pruned:
            self.source.lost((gone.origin, gone.epoch), gone.first, gone.last, gone.reason)
        self.recovery.active = recovering
        self.ready = True

    def stop(self) -> Deferred:
        """
        Stop sending and applying; fires once no database work is under way,
        so the store can be closed. What was not acknowledged is sent again
        after the restart.
        """
        self.stopped = True
        self.relay.stop()
        for call in (self._have_call, self._sweep_call):
            if call is not None and call.active():
                call.cancel()
        for peer in self.peers.values():
            peer.sender.stop()
        self.inbound.stop()
        if self._busy():
            d = Deferred()
            self._idle_waiters.append(d)
            return d
        return succeed(None)

    def _busy(self) -> bool:
        return self.inbound.applying or any(peer.sender.reading for peer in self.peers.values())

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
            self._added((origin, epoch), entries[-1][ENTRY_INDEX], lambda: entries)

    def appended(self, epoch: str, last_index: int, entries: Callable[[], list]) -> None:
        """
        This node's own log grew to ``last_index``: send the new records to
        every peer. ``entries()`` builds them as RECORDS entries, which is
        only worth doing when a peer may want them.
        """
        self._added((self.node_id, epoch), last_index, entries)

    def _added(self, log: Log, last_index: int, entries: Callable[[], list]) -> None:
        # No peer has ever linked: nothing to keep a tail for.
        self.source.added(log, last_index, entries, keep=bool(self.peers))
        self.holdings.stored(log, last_index)
        for peer in self.peers.values():
            peer.sender.pump()
        self._announce()

    # -- links ------------------------------------------------------------

    def _peer(self, node_id: str) -> PeerState:
        peer = self.peers.get(node_id)
        if peer is None:
            peer = self.peers[node_id] = PeerState(node_id)

            def skip(log: Log) -> bool:
                # A log whose origin the peer is linked to: the origin sends
                # it to the peer itself.
                return log[0] in peer.linked_to and log[0] not in (self.node_id, node_id)

            peer.sender = LogSender(
                node_id,
                self.source,
                self._clock,
                self._transmit,
                self.batch_size,
                self.window,
                skip=skip,
                idle=self._maybe_idle,
                refused=self.refused,
            )
            if self.stopped:
                peer.sender.stop()
        return peer

    @staticmethod
    def _transmit(link, log: Log, entries) -> None:
        if isinstance(entries, Gap):
            link.send(Pruned(log[0], log[1], entries.first, entries.last, entries.reason))
        else:
            link.send(Records(log[0], log[1], entries))

    def link_up(self, link) -> None:
        peer = self._peer(link.peer_id)
        if not peer.links:
            # Back after all its links were down: what it holds comes anew.
            self.holdings.forget(peer.node_id)
            self.holdings.back(peer.node_id)
            peer.gone_since = None
        peer.links.append(link)
        peer.links_opened += 1
        if peer.sender.channel is None:
            # What the peer holds is known once its HAVE on this link comes.
            peer.sender.channel = link
        peer.address = link.dial_address or peer.address or link.address
        peer.last_seen = self._clock.seconds()
        link.send(Have(self._have_payload()))
        for message in self.export_positions():
            link.send(message)
        self._announce_links()
        if self.scrub is not None and self.scrub.pending:
            self.scrub.ask()

    def link_down(self, link) -> None:
        peer = self.peers.get(link.peer_id)
        if peer is None or link not in peer.links:
            return
        peer.links.remove(link)
        if not peer.links:
            self._announce_links()
            self._schedule_sweep()
        if peer.sender.channel is link:
            # Batches in flight on that link are lost: resume from what the
            # peer is known to hold, on its next link.
            peer.sender.switch(peer.links[0] if peer.links else None)

    def link_failed(self, link, reason: str) -> None:
        """
        A link was dropped for a protocol or authentication error.
        """
        peer = self.peers.get(link.peer_id) if link.authenticated else None
        if peer is not None:
            peer.link_errors += 1
            peer.health.dropped(reason.split(":")[0], reason)
        else:
            self.refused_links += 1
            kind = reason.split(":")[0]
            self.refused_reasons[kind] = self.refused_reasons.get(kind, 0) + 1

    # -- messages ---------------------------------------------------------

    def received(self, link, message) -> None:
        """
        A message from an authenticated link, keepalives included: each
        moves the peer's C{last_seen}.

        @raise BadMessage: it breaks the protocol; the link is dropped.
        """
        peer = self.peers[link.peer_id]
        peer.last_seen = self._clock.seconds()
        if isinstance(message, (Ping, Pong)):
            pass  # answered by the protocol; heard from is all they say
        elif isinstance(message, Have):
            self._have(peer, link, message)
        elif isinstance(message, (Records, Pruned)):
            self.inbound.received(link, peer, message)
        elif isinstance(message, Ack):
            # Sent after the peer's commit: it holds the log that far.
            self.holdings.heard((message.origin, message.epoch), peer.node_id, message.last_index)
            if link is peer.sender.channel:
                peer.sender.acked((message.origin, message.epoch), message.last_index)
        elif isinstance(message, Links):
            peer.linked_to = message.node_ids
            peer.sender.pump()
        elif isinstance(message, Want):
            self._wanted(peer, link, message)
        elif isinstance(message, Repair):
            self._repair(peer, message)
        elif isinstance(message, Full):
            peer.sender.no_room(message.reason)
        elif isinstance(message, Held):
            for holder, last in message.holders.items():
                self.holdings.heard((message.origin, message.epoch), holder, last)
        elif isinstance(message, Exported):
            for listener in self.export_listeners:
                listener(message)
        else:
            raise BadMessage(f"unexpected {type(message).__name__.upper()}")

    # -- repairs of records in quarantine (p2pstore.scrub) -----------------

    def want(self, origin: str, epoch: str, indexes: list) -> None:
        """
        Ask every linked peer for these records of a log, lost here.
        """
        if self.stopped:
            return
        message = Want(origin, epoch, tuple(indexes))
        for peer in self.peers.values():
            if peer.links:
                peer.links[0].send(message)

    def refused(self, log: Log, index: int) -> None:
        # A peer refused this record of ours, or it is missing: check it.
        if self.scrub is not None and not self.stopped:
            d = self.scrub.check_now(log[0], log[1], index)
            d.addErrback(lambda f: self.log.failure("could not check a refused record", f))

    def _wanted(self, peer: PeerState, link, message: Want) -> None:
        d = self._store.entries_at(message.origin, message.epoch, message.indexes)

        def answer(entries: list) -> None:
            if entries and not self.stopped and link.authenticated and link in peer.links:
                link.send(Repair(message.origin, message.epoch, entries))

        d.addCallback(answer)
        d.addErrback(lambda f: self.log.failure("could not read records a peer asked for", f))

    def _repair(self, peer: PeerState, message: Repair) -> None:
        if self.scrub is None or self.stopped:
            return
        good = [
            entry
            for entry in message.entries
            if self._signer.valid_prefix(message.origin, message.epoch, [entry]) == 1
        ]
        if len(good) < len(message.entries):
            peer.rejected += len(message.entries) - len(good)
            peer.health.refused(f"checksum mismatch in a repair of {message.origin} {message.epoch}")
        if not good:
            return
        d = self.scrub.repair(message.origin, message.epoch, good, peer.node_id)

        def repaired(indexes: list) -> None:
            if indexes:
                for other in self.peers.values():
                    other.sender.pump()

        d.addCallback(repaired)
        d.addErrback(lambda f: self.log.failure("could not store repaired records", f))

    def salvage(self, link, message: Records) -> None:
        """
        A batch from a link just dropped because its line failed its MAC:
        store the records before the first that fails its own HMAC (it is
        counted as rejected), so a noisy link still makes progress.
        """
        peer = self.peers.get(link.peer_id)
        if peer is None or self.stopped:
            return
        try:
            self.inbound.received(link, peer, message)
        except BadMessage:
            pass

    def _have(self, peer: PeerState, link, message: Have) -> None:
        has = {(o, e): n for o, epochs in message.positions.items() for e, n in epochs.items()}
        self.recovery.heard(has, self.positions)
        peer.sender.told(has, on_channel=link is peer.sender.channel)
        for log, last in has.items():
            self.holdings.heard(log, peer.node_id, last, message.firsts.get(log, 1))

    def reachable(self, node_id: str) -> bool:
        """
        Whether node ``node_id`` is up as far as this node can tell: linked
        to it, or to a peer that says it is linked to it.
        """
        return self._linked(node_id) or any(
            peer.links and node_id in peer.linked_to for peer in self.peers.values()
        )

    def announce(self) -> None:
        """
        Tell the peers what changed (HAVE, and the export cursors), shortly.
        """
        self._announce()

    def _linked(self, node_id: str) -> bool:
        peer = self.peers.get(node_id)
        return peer is not None and bool(peer.links)

    def _reaches(self, holder: str, origin: str) -> bool:
        peer = self.peers.get(holder)
        return peer is not None and bool(peer.links) and origin in peer.linked_to

    def _send_held(self, node_id: str, message: Held) -> None:
        peer = self.peers.get(node_id)
        if peer is not None and peer.links and not self.stopped:
            peer.links[0].send(message)

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
        messages = [Have(self._have_payload(), dict(self.source.firsts))]
        exported = self.export_positions()
        if exported != self._exported_sent:
            # Only when they moved: a new link gets them at once anyway.
            self._exported_sent = exported
            messages += exported
        for peer in self.peers.values():
            for link in peer.links:
                for message in messages:
                    link.send(message)

    # -- applying ---------------------------------------------------------

    def _applied(self, link, peer: PeerState, message: Records, good: list, result) -> None:
        """
        A received batch was stored, as far as ``result`` says: answer it,
        and send on what it added.
        """
        if result.gap is not None:
            # A range the sender no longer held: recorded, and held past.
            self._skipped(message, result)
        elif isinstance(good, list) and good:
            # The sender holds what it sent (logs have no gaps): do not send
            # it back, nor count it as lacking.
            log = (message.origin, message.epoch)
            peer.sender.holds(log, good[-1][ENTRY_INDEX])
            self.holdings.heard(log, peer.node_id, good[-1][ENTRY_INDEX])
            self.relay.came_from(log, peer.node_id)
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
        self._answer(link, peer, message, result.last_index)

    def _skipped(self, message: Pruned, result) -> None:
        log, gap = (message.origin, message.epoch), result.gap
        self.source.lost(log, gap.first, gap.last, gap.reason)
        self.source.positions[log] = max(self.source.positions.get(log, 0), result.last_index)
        for listener in self.gap_listeners:
            listener(gap)
        self.log.warn(
            "records {first} to {last} of log {origin}/{epoch} cannot be had from that peer "
            "({reason}): recorded as a pruned range here, listed in /status under disk.pruned",
            first=gap.first,
            last=gap.last,
            origin=message.origin,
            epoch=message.epoch,
            reason=gap.reason,
        )
        for peer in self.peers.values():
            peer.sender.pump()
        self._announce()

    def pruned(self, log: Log, first: int, last: int, reason: str) -> None:
        """
        This node pruned records ``first`` to ``last`` of a log: peers that
        lack them are told so, and every peer hears where the log starts.
        """
        self.source.lost(log, first, last, reason)
        self._announce()

    def _answer(self, link, peer: PeerState, message: Records, last_index: int) -> None:
        if link.authenticated and link in peer.links:
            link.send(Ack(message.origin, message.epoch, last_index))

    def _apply_failed(self, link, peer: PeerState, message: Records) -> None:
        # The position unchanged, or the sender would keep the batch counted
        # in its window for ever, and stall.
        self._answer(link, peer, message, self.positions.get((message.origin, message.epoch), 0))

    def _no_room(self, link, peer: PeerState, message: Records, why: str) -> None:
        # Not stored for lack of room: the sender backs off, then sends again.
        if link.authenticated and link in peer.links:
            link.send(Full(why))
        self._apply_failed(link, peer, message)

    def _applied_all(self) -> None:
        self.recovery.check(self.positions)
        self._maybe_idle()

    @property
    def recovering(self) -> bool:
        return self.recovery.active

    def recovery_progress(self) -> dict:
        return self.recovery.progress(self.positions)

    # -- peers that are gone (p2pstore.departed) ----------------------------

    def _schedule_sweep(self) -> None:
        # Only while some peer has no link: only such a peer can go.
        if self.stopped or (self._sweep_call is not None and self._sweep_call.active()):
            return
        if any(not peer.links for peer in self.peers.values()):
            self._sweep_call = self._clock.callLater(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        self._sweep_call = None
        try:
            self.sweep_peers()
        except Exception:
            self.log.failure("the sweep of gone peers failed")
        self._schedule_sweep()

    def sweep_peers(self) -> None:
        """
        Mark the peers that are gone, forget what they held, and remove the
        entries of those gone for long enough.
        """
        now = self._clock.seconds()
        gone, expired = departures(self.peers.values(), self.dialled_addresses(), now)
        for node_id in gone:
            peer = self.peers[node_id]
            if peer.gone_since is None:
                peer.gone_since = now
                self.holdings.gone(node_id)
                self.log.info(
                    "peer {node_id} ({address}) gone: no link since {last_seen}, and no "
                    "address this node dials leads to it; its copies no longer count",
                    node_id=node_id, address=peer.address, last_seen=peer.last_seen,
                )
        for node_id in expired:
            peer = self.peers[node_id]
            if peer.sender.reading:
                continue  # next sweep, once its read is done
            peer.sender.stop()
            del self.peers[node_id]
            self.log.info("peer {node_id} forgotten: no link for an hour", node_id=node_id)

    # -- status -------------------------------------------------------------

    def _peer_status(self, peer: PeerState, connecting: bool) -> dict:
        sender = peer.sender
        return {
            "address": peer.address,
            "node_id": peer.node_id,
            "connected": bool(peer.links) or connecting,
            "authenticated": bool(peer.links),
            "last_seen": peer.last_seen,
            # No link for long, and no dialled address leads to it: no failing link.
            "gone": peer.gone_since is not None,
            "sent": sender.sent_count if sender else 0,
            "received": peer.received,
            "rejected": peer.rejected,
            "conflicts": peer.conflicts,
            "link_errors": peer.link_errors,
            "links_opened": peer.links_opened,
            "lag": sender.lag() if sender else {},
            "lag_s": sender.lag_seconds() if sender else {},
            # Below the largest on a link that damages batches.
            "batch_size": sender.batch_size if sender else self.batch_size,
            "max_batch_size": sender.max_batch_size if sender else self.batch_size,
            "trouble": peer.health.trouble(
                sender.batch_size if sender else self.batch_size,
                sender.max_batch_size if sender else self.batch_size,
            ),
            "troubles": peer.health.events(),
            "trouble_counts": dict(peer.health.counts),
            # The peer has no room for this node's records, and since when.
            "full": sender.full if sender else None,
            "full_since": sender.full_since if sender else None,
        }

    def status(self, dialling: Optional[dict] = None) -> tuple[list, dict]:
        """
        The ``peers`` list and ``replication`` totals of the status.

        @param dialling: ``{address: connected}`` of the addresses this node
            dials, so that peers never reached yet are listed too.
        """
        if self.ready:
            self.sweep_peers()
        peers = [self._peer_status(peer, False) for peer in self.peers.values()]
        known = {peer.address for peer in self.peers.values()}
        for address, connected in (dialling or {}).items():
            if address not in known:
                unknown = PeerState(None)
                unknown.address = address
                peers.append(self._peer_status(unknown, connected))
        totals = {
            key: sum(p[key] for p in peers)
            for key in ("sent", "received", "rejected", "conflicts", "link_errors")
        }
        totals["refused_links"] = self.refused_links
        totals["refused_reasons"] = dict(self.refused_reasons)
        return peers, totals
