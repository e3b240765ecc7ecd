"""
Recovery: a node that lost its own database gets its earlier readings back
from its peers. Peers say in HAVE how far they hold this node's own logs;
once this node holds every one of them that far, it has recovered.
"""

from __future__ import annotations

from twisted.logger import Logger


class Recovery:
    """
    How far this node's own earlier logs have come back.

    @ivar active: the node is recovering (its state is Syncing).
    """

    log = Logger()

    def __init__(self, node_id: str, store):
        self.node_id = node_id
        self._store = store
        self.active = False
        # The furthest any peer said it holds each of this node's own logs.
        self._targets: dict = {}
        self._heard = False

    def heard(self, has: dict, positions: dict) -> None:
        """
        A peer holds the logs ``has`` (``{log: last_index}``) that far.
        """
        self._heard = True
        for log, n in has.items():
            if log[0] == self.node_id and n > self._targets.get(log, 0):
                self._targets[log] = n
        self.check(positions)

    def check(self, positions: dict) -> None:
        """
        Has this node, holding ``positions``, got back all it lacked?
        """
        if not self.active or not self._heard:
            return
        for log, target in self._targets.items():
            if positions.get(log, 0) < target:
                return
        self.active = False
        self.log.info("recovered this node's earlier readings from its peers")
        self._store.finish_recovery()

    def progress(self, positions: dict) -> dict:
        """
        For the status: each log this node is recovering, how far it holds
        it and how far a peer does.
        """
        return {
            f"{origin}/{epoch}": {"have": positions.get((origin, epoch), 0), "target": target}
            for (origin, epoch), target in self._targets.items()
        }
