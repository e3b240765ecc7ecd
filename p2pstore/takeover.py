"""
Export takeover, for one ``--export`` destination: what peers say the
destination holds of each log (their ``EXPORTED`` cursors), and which
origins this node exports in their place.

A node exports an origin it holds whose node it has not reached (directly,
or through a peer linked to it) for ``after`` seconds (--export-takeover),
from the cursor that origin last announced, so that losing a node leaves no
gap upstream; the origin, back, goes on from the other's cursor. The
cursors peers announce are also what retention may prune of their logs
here (L{Takeover.retention_limit}), and are saved for that, at most every
L{HEARD_SAVE_S}, so that a restart keeps them.

L{p2pstore.export.Exporter} owns one, and its C{saved} cursors: the
functions here are given them.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.logger import Logger

from .wire import Exported

# Cursors peers announced for logs this node does not export are saved at
# most this often (seconds): an extra commit a second would wear the disk.
HEARD_SAVE_S = 10.0


class Takeover:
    """
    @ivar heard: how far peers say the destination holds each log, 0
        included (an origin that announces the destination exports there).
    @ivar taken_over: the origins this node exports for their node, which
        is down.
    """

    log = Logger()

    def __init__(
        self,
        destination: str,
        node_id: str,
        source,
        store,
        clock,
        after: Optional[float],
        reachable: Callable[[str], bool],
    ):
        self.destination = destination
        self._node_id = node_id
        self._source = source
        self._store = store
        self._clock = clock
        self._after = after
        self._reachable = reachable
        self._started_at = clock.seconds()
        self.heard: dict = {}
        self.taken_over: set = set()
        # When each origin was last seen up.
        self._seen: dict = {}
        # Cursors heard for logs this node does not export, not saved yet.
        self._unsaved: dict = {}
        self._saved_at = float("-inf")
        self._saving = False

    def exports(self, log) -> bool:
        """
        Whether this node exports ``log``: its own, or taken over.
        """
        return log[0] == self._node_id or log[0] in self.taken_over

    def check(self, saved: dict) -> list:
        """
        Take over the origins unreachable for long enough, and give back
        those reachable again.

        @return: the logs newly taken over, each with the index the
            destination holds it to, as C{(log, index)}.
        """
        if self._after is None:
            return []
        now = self._clock.seconds()
        taken = []
        origins = {log[0] for log in self._source.positions} - {self._node_id}
        for origin in origins:
            if self._reachable(origin):
                self._seen[origin] = now
                if origin in self.taken_over:
                    self.taken_over.discard(origin)
                    self.log.info(
                        "origin {origin} is up again: it exports its own readings to "
                        "{destination} again",
                        origin=origin, destination=self.destination,
                    )
                continue
            down = now - self._seen.get(origin, self._started_at)
            if origin in self.taken_over or down < self._after:
                continue
            self.taken_over.add(origin)
            logs = [
                (log, max(saved.get(log, 0), self.heard.get(log, 0)))
                for log in self._source.positions if log[0] == origin
            ]
            taken.extend(logs)
            self.log.warn(
                "origin {origin} has been unreachable for {down:.0f} s: this node exports "
                "its readings to {destination} until it is back, from where it announced "
                "(entry {start})",
                origin=origin, down=down, destination=self.destination,
                start=", ".join(str(index + 1) for _, index in logs),
            )
        return taken

    def heard_exported(self, message: Exported, saved: dict) -> list:
        """
        A peer says how far this destination holds logs (its cursors).

        @return: the logs this node exports that the destination holds
            further than C{saved} says, as C{(log, index)}: the exporter goes
            on from there. Cursors of other logs are kept, to be saved.
        """
        ahead = []
        for log, index in message.positions.items():
            if index <= self.heard.get(log, -1):
                continue
            self.heard[log] = index
            if self.exports(log):
                if index > saved.get(log, 0):
                    ahead.append((log, index))
            elif log[0] != self._node_id and index > saved.get(log, -1):
                self._unsaved[log] = index
        return ahead

    def save_heard(self, saved: dict) -> None:
        """
        Save the cursors heard since the last save, if L{HEARD_SAVE_S} has
        passed; C{saved} gets them once they are.
        """
        now = self._clock.seconds()
        if not self._unsaved or self._saving or now < self._saved_at + HEARD_SAVE_S:
            return
        positions, self._unsaved = self._unsaved, {}
        self._saved_at, self._saving = now, True

        def stored(_):
            for log, index in positions.items():
                saved[log] = max(saved.get(log, 0), index)

        def failed(f):
            for log, index in positions.items():
                self._unsaved[log] = max(self._unsaved.get(log, 0), index)
            self.log.failure("could not save the export cursors peers sent; trying again", f)

        def done(_):
            self._saving = False

        d = self._store.heard_exported(self.destination, positions)
        d.addCallbacks(stored, failed).addBoth(done)

    def retention_limit(self, log, saved: dict) -> Optional[int]:
        """
        How far retention may prune a peer's ``log`` here for this
        destination: up to where the destination is known to hold it
        (C{saved} here, or announced by a peer), when this node exports the
        log now (taken over), its origin announced cursors for this
        destination since this node started (it exports there, and this
        node may take over), or it announced them before and cannot be
        reached now to say it still does (a restart while it is down).
        Else C{None}, no limit: no node exports that origin here, and one
        that stopped exporting here has its copies pruned by age again.
        """
        origin = log[0]
        if (
            self.exports(log)
            or any(known[0] == origin for known in self.heard)
            or (any(known[0] == origin for known in saved) and not self._reachable(origin))
        ):
            return max(saved.get(log, 0), self.heard.get(log, 0))
        return None
