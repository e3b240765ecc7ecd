"""
A p2pstore node: the logic root that holds its store, ingestion and
replication together, and the one place its status is read from.

The service that starts and stops it is L{p2pstore.service}.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from . import __version__
from .ingest import Ingestor
from .replication import Replicator
from .schema import VERSION as SCHEMA_VERSION
from .storage import Store
from .timerange import TimeRange
from .tls import link_security

INITIALIZING = "Initializing"
SYNCING = "Syncing"
RUNNING = "Running"


class UnknownOrigin(KeyError):
    """
    This node holds no readings of that origin.
    """


class NotReady(Exception):
    """
    The node's store is still opening: ask again shortly.
    """


class Node:
    """
    The state of one node, and the one place its status is read from.
    """

    log = Logger()

    def __init__(
        self,
        node_id: str,
        store: Store,
        ingestor: Ingestor,
        clock,
        replicator: Replicator,
    ):
        self.node_id = node_id
        self.store = store
        self.ingestor = ingestor
        self.clock = clock
        self.replicator = replicator
        self.opened = False
        self.started_at = clock.seconds()
        self.dialers: list = []
        # Which sensor connections are let in (p2pstore.access.SensorAccess).
        self.access = None
        # The PeerTLSStatus of its peer links' TLS, when they have it.
        self.tls = None
        # The damaged databases moved aside at start (p2pstore.damaged).
        self.set_aside: list = []
        # The scrub of its stored records (p2pstore.scrub), when it has one.
        self.scrub = None
        # The disk under its databases (p2pstore.disk).
        self.disk = None
        # What prunes its logs by retention and its full-disk policy
        # (p2pstore.pruning), when it has one.
        self.pruner = None
        # The answers that wait for copies on other nodes (p2pstore.copies).
        self.copy_wait = None
        self.ack_copies = 1
        # One p2pstore.export.Exporter per --export destination.
        self.exporters: list = []
        ingestor.observers.append(self._committed)
        replicator.dialled_addresses = self._dialled_addresses

    def _dialled_addresses(self) -> set:
        # An address that turned out to be this node is no peer.
        return {dialer.address for dialer in self.dialers if dialer.gave_up is None}

    @property
    def state(self) -> str:
        if not self.opened:
            return INITIALIZING
        if self.replicator.recovering:
            return SYNCING
        return RUNNING

    def start(self) -> Deferred:
        """
        Open the store, then take readings.
        """
        d = self.store.open()

        def opened(opened):
            self.ingestor.opened(opened)
            self.replicator.opened(
                opened.positions, opened.recovering, opened.firsts, opened.pruned
            )
            self.opened = True
            if self.pruner is not None:
                self.replicator.gap_listeners.append(self.pruner.recorded)
                self.pruner.start(opened.pruned)
            self.log.info(
                "node {node_id} {state}: {count} readings of its own stored, epoch {epoch}",
                node_id=self.node_id,
                state=self.state.lower(),
                count=opened.count,
                epoch=opened.epoch,
            )
            if opened.recovering:
                self.log.warn(
                    "this node's own database was missing or empty: taking new "
                    "readings in a new epoch while fetching earlier ones from peers"
                )
            for exporter in self.exporters:
                exporter.start().addErrback(
                    lambda f, exporter=exporter: self.log.failure(
                        "export to {destination} could not start", f,
                        destination=exporter.destination.name,
                    )
                )
            if self.scrub is not None:
                self.scrub.start().addErrback(
                    lambda f: self.log.failure("the scrub of stored records could not start", f)
                )

        return d.addCallback(opened)

    def own_log(self) -> tuple:
        """
        This node's current log, ``(node id, epoch)``.
        """
        return (self.node_id, self.store.epoch)

    def cluster_size(self) -> int:
        """
        The nodes this node knows of: itself, its peers (linked, dialled or
        heard of through them) and the origins of the logs it holds.
        """
        replicator = self.replicator
        # A gone peer (p2pstore.departed) is no node a copy can be had from.
        peers = {node_id for node_id, peer in replicator.peers.items() if peer.gone_since is None}
        known = {self.node_id, *peers, *replicator.holdings.nodes()}
        known.update(origin for origin, _ in replicator.positions)
        dialled = sum(1 for dialer in self.dialers if dialer.gave_up is None)
        return max(len(known), 1 + dialled)

    def why_no_copies(self) -> str:
        """
        Why readings lack copies, for the 'ERR copies' answer.
        """
        if not any(peer.links for peer in self.replicator.peers.values()):
            return "no peer connected"
        return "peers behind"

    def _committed(self, appended) -> None:
        self.replicator.appended(self.store.epoch, appended.last_index, appended.entries)
        for exporter in self.exporters:
            exporter.appended(self.own_log(), appended.last_index)

    def status_snapshot(self) -> dict:
        """
        Everything the node tells about itself, as plain JSON-ready data.
        """
        ingestor = self.ingestor
        replicator = self.replicator
        origins: dict = {}
        logs = []
        if self.opened:
            origins[self.node_id] = {"count": 0, "last_index": 0, "self": True}
            source = replicator.source
            for log, position in replicator.positions.items():
                origin, epoch = log
                entry = origins.setdefault(origin, {"count": 0, "last_index": 0, "self": False})
                gone = sum(
                    min(gap.last, position) - gap.first + 1
                    for gap in source.gaps.get(log, ())
                    if gap.first <= position
                )
                entry["count"] += position - gone
                # The highest position over the origin's epochs, on its own node as on its
                # peers: which epoch an origin numbers in now only it knows, so a rule
                # that needs it would have the node and its peers disagree (issue 19).
                entry["last_index"] = max(entry["last_index"], position)
                held = {"origin": origin, "epoch": epoch, "first": source.firsts.get(log, 1),
                        "last": position, "held": position - gone}
                if log == self.own_log():
                    held["current"] = True
                logs.append(held)
        peers, totals = replicator.status(
            {
                dialer.address: dialer.protocol is not None
                for dialer in self.dialers
                # An address that turned out to be this node is no peer.
                if dialer.gave_up is None
            }
        )
        for entry in peers:
            state = replicator.peers.get(entry["node_id"]) if entry["node_id"] else None
            entry["links"] = [link_security(link) for link in state.links] if state else []
        snapshot = {
            "node_id": self.node_id,
            "state": self.state,
            "version": __version__,
            # The layout of the files this p2pstore writes (p2pstore.schema):
            # how to tell the nodes of a cluster upgraded in turn apart.
            "schema_version": SCHEMA_VERSION,
            "uptime_s": round(self.clock.seconds() - self.started_at, 3),
            # The node's own clock, which its other times (a peer's
            # last_seen) are on: a reader's clock may be off.
            "time": round(self.clock.seconds(), 3),
            "sensors": {
                "connected": ingestor.connected,
                "accepted": ingestor.accepted,
                "rejected": ingestor.rejected,
                "queued": ingestor.queued,
                "unterminated_connected": ingestor.unterminated_connected,
                "unterminated_accepted": ingestor.accepted_unterminated,
                "rejected_reasons": dict(ingestor.refused.reasons),
                # Readings answered ERR retry (a failed commit) or ERR full.
                "not_stored": ingestor.not_stored,
                "not_full": ingestor.not_full,
            },
            "commits": {
                "seconds": ingestor.commit_seconds.status(),
                "readings": ingestor.commit_readings.status(),
            },
            "origins": origins,
            "logs": sorted(logs, key=lambda entry: (entry["origin"], entry["epoch"])),
            "peers": peers,
            "replication": totals,
        }
        if self.access is not None:
            snapshot["sensors"].update(self.access.status(ingestor.sensors()))
        if self.tls is not None:
            snapshot["tls"] = self.tls.status()
        if self.scrub is not None:
            snapshot["scrub"] = self.scrub.status()
        if self.disk is not None:
            snapshot["disk"] = self.disk.status()
            if self.pruner is not None:
                snapshot["disk"]["pruned"] = self.pruner.status()
        if self.copy_wait is not None:
            snapshot["ack_copies"] = self.ack_copies
            copies = snapshot["copies"] = self.copy_wait.status()
            copies["under_copied"] = (
                replicator.holdings.under_copied(replicator.positions, self.ack_copies)
                if self.opened and self.ack_copies > 1
                else []
            )
        if self.exporters:
            snapshot["exports"] = [exporter.status() for exporter in self.exporters]
        if self.set_aside:
            snapshot["damaged_files"] = [moved.status() for moved in self.set_aside]
        if replicator.recovering:
            snapshot["recovery"] = replicator.recovery_progress()
        return snapshot

    def readings(
        self,
        origin: Optional[str],
        sensor_type: Optional[str],
        limit: int,
        time_range: Optional[TimeRange] = None,
    ) -> Deferred:
        """
        The readings of an origin this node holds: without ``time_range``
        the newest, newest first (a list of L{Record}); with it, a page of
        that range, oldest first (L{p2pstore.rangereads.Page}).

        @raise UnknownOrigin: this node holds no readings of ``origin``.
        @raise NotReady: the store is not open yet.
        """
        origin = origin or self.node_id
        if not self.opened:
            raise NotReady(self.state)
        if origin != self.node_id and not any(o == origin for o, _ in self.replicator.positions):
            raise UnknownOrigin(origin)
        if time_range is not None:
            return self.store.readings_in(origin, sensor_type, time_range, limit)
        return self.store.readings(origin, sensor_type, limit)
