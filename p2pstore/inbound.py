"""
Records arriving from peers: each batch checked against its origin's HMAC,
the batches that arrived together stored in one transaction (what to keep
of each decided by L{plan_apply}, the one statement of that policy), and
each answered with the position now held.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.logger import Logger

from .disk import RECORD_BYTES, is_full
from .records import CHECKSUM, ENTRY_INDEX, Signer
from .sending import Log
from .gaps import Gap
from .wire import BadMessage, Pruned, Records


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


# How a range a peer no longer held is recorded: "not held by peer <id>:
# <its reason>", kept as it is when passed on.
NOT_HELD = "not held by peer"


class Inbound:
    """
    The received batches of every peer, on their way to the store.

    @param applied: called with ``(link, peer, message, good, result)`` for
        each batch stored (``good``: the entries that passed their check,
        ``result``: the store's L{p2pstore.storage.Applied}).
    @param failed: called with ``(link, peer, message)`` for each batch of
        a transaction that failed.
    @param done: called once each transaction's batches are answered.
    """

    log = Logger()

    def __init__(
        self,
        store,
        signer: Signer,
        window: int,
        applied: Callable,
        failed: Callable,
        done: Callable[[], None],
        no_room: Callable = lambda link, peer, message, why: None,
    ):
        self._store = store
        self._signer = signer
        self.window = window
        self._on_applied = applied
        self._on_failed = failed
        self._on_done = done
        self._on_no_room = no_room
        self._inbox: deque = deque()
        self._storing: list = []
        self.applying = False
        self.stopped = False
        # The disk under the store (p2pstore.disk.Disk), once set.
        self.disk = None

    def received(self, link, peer, message: Records) -> None:
        """
        A batch from ``peer`` on ``link``.

        @raise BadMessage: the peer sent more than ``window`` batches
            without waiting for their acknowledgements.
        """
        # Batches being stored are unacknowledged as well as queued ones.
        pending = sum(1 for l, *_ in self._inbox if l is link) + sum(
            1 for l, *_ in self._storing if l is link
        )
        if pending >= self.window:
            raise BadMessage(f"sent more than {self.window} unacknowledged batches")
        self._inbox.append((link, peer, message))
        self._apply()

    def stop(self) -> None:
        """
        Store nothing more; what was not acknowledged is sent again after
        the restart.
        """
        self.stopped = True
        self._inbox.clear()

    def _verified(self, peer, message: Records):
        """
        The entries up to the first whose checksum is wrong; for a
        L{Pruned}, the L{Gap} to record, with who no longer held it.
        """
        if isinstance(message, Pruned):
            reason = message.reason
            if not reason.startswith(NOT_HELD):
                reason = f"{NOT_HELD} {peer.node_id}: {reason}"
            return Gap(message.first, message.last, reason)
        entries = message.entries
        valid = self._signer.valid_prefix(message.origin, message.epoch, entries)
        if valid < len(entries):
            peer.rejected += 1
            peer.health.refused(f"checksum mismatch for {message.origin} {message.epoch}")
            self.log.warn(
                "rejected a record from peer {peer}: checksum mismatch for {origin} "
                "{epoch}:{index} (corrupted in transit or forged); it will be asked for again",
                peer=peer.node_id,
                origin=message.origin,
                epoch=message.epoch,
                index=entries[valid][ENTRY_INDEX],
            )
        return entries[:valid]

    def _apply(self) -> None:
        if self.stopped or self.applying or not self._inbox:
            return
        refusing = self.disk.peer_refusing() if self.disk is not None else None
        if refusing is not None:
            # No room for them (p2pstore.disk): each sender is told so.
            while self._inbox:
                self._on_no_room(*self._inbox.popleft(), refusing)
            self._on_done()
            return
        room = self.disk.peer_room() if self.disk is not None else None
        batch = []
        while self._inbox:
            link, peer, message = self._inbox.popleft()
            batch.append((link, peer, message, self._verified(peer, message)))
            if room is not None:
                room -= len(message.entries) * RECORD_BYTES
                if room <= 0:
                    # What the budget has room for in one transaction; the
                    # rest waits for the next, which checks the sizes again.
                    break
        self.applying = True
        self._storing = batch
        d = self._store.apply([(m.origin, m.epoch, good) for _, _, m, good in batch], plan_apply)
        d.addCallbacks(self._applied, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addErrback(lambda f: self.log.failure("could not act on stored records", f))
        d.addBoth(self._done)

    def _applied(self, results: list, batch: list) -> None:
        if self.disk is not None:
            self.disk.wrote()
        for (link, peer, message, good), result in zip(batch, results):
            self._on_applied(link, peer, message, good, result)

    def _failed(self, failure, batch: list) -> None:
        if self.disk is not None and is_full(failure):
            self.disk.filled("records from peers")
        else:
            self.log.failure(
                "could not store replicated records; their senders will send them again", failure
            )
        for link, peer, message, _ in batch:
            self._on_failed(link, peer, message)

    def _done(self, _) -> None:
        self.applying = False
        self._storing = []
        self._on_done()
        self._apply()
