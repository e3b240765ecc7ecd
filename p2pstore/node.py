"""
A p2pstore node: its store, its sensor ingestion and its status, and the
service that starts and stops them in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from . import __version__
from .ingest import Ingestor
from .records import is_node_id
from .storage import Store, StoreError

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

    def __init__(self, node_id: str, store: Store, ingestor: Ingestor, clock):
        self.node_id = node_id
        self.store = store
        self.ingestor = ingestor
        self.clock = clock
        self.state = INITIALIZING
        self.started_at = clock.seconds()

    def start(self) -> Deferred:
        """
        Open the store, then take readings.
        """
        d = self.store.open()

        def opened(opened):
            self.ingestor.opened(opened)
            self.state = RUNNING
            self.log.info(
                "node {node_id} running: {count} readings stored, epoch {epoch}",
                node_id=self.node_id,
                count=opened.count,
                epoch=opened.epoch,
            )

        return d.addCallback(opened)

    def status_snapshot(self) -> dict:
        """
        Everything the node tells about itself, as plain JSON-ready data.
        """
        ingestor = self.ingestor
        origins = {}
        if self.state != INITIALIZING:
            origins[self.node_id] = {
                "count": ingestor.count,
                "last_index": ingestor.last_index,
                "self": True,
            }
        return {
            "node_id": self.node_id,
            "state": self.state,
            "version": __version__,
            "uptime_s": round(self.clock.seconds() - self.started_at, 3),
            "sensors": {
                "connected": ingestor.connected,
                "accepted": ingestor.accepted,
                "rejected": ingestor.rejected,
                "queued": ingestor.queued,
            },
            "origins": origins,
            "peers": [],
        }

    def readings(self, origin: Optional[str], sensor_type: Optional[str], limit: int) -> Deferred:
        """
        The newest readings of an origin this node holds, newest first.

        @raise UnknownOrigin: this node holds no readings of ``origin``.
        @raise NotReady: the store is not open yet.
        """
        origin = origin or self.node_id
        if not is_node_id(origin) or origin != self.node_id:
            raise UnknownOrigin(origin)
        if self.state == INITIALIZING:
            raise NotReady(self.state)
        return self.store.readings(origin, sensor_type, limit)


class Listener(StreamServerEndpointService):
    """
    Listens on the endpoint of one option, and stops the start with one line
    naming that option when it cannot.
    """

    _raiseSynchronously = True

    def __init__(self, option: str, description: str, endpoint, factory):
        super().__init__(endpoint, factory)
        self.option = option
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"p2pstore: {self.option} {self.description}: cannot listen "
                f"({e.socketError}); choose a free port with {self.option}"
            ) from None


class NodeService(MultiService):
    """
    Runs a L{Node}: opens its store, listens for sensors and status
    requests, and on stop commits and answers every reading already
    received before closing connections and the database.
    """

    log = Logger()

    def __init__(self, node: Node, sensors: Listener, status: Listener, reactor, notes=()):
        super().__init__()
        self.node = node
        self.reactor = reactor
        self.sensors = sensors
        self.status = status
        self._notes = list(notes)
        self._opening: Optional[Deferred] = None
        sensors.setServiceParent(self)
        status.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        for note in self._notes:
            self.log.info("{note}", note=note)
        self._opening = self.node.start()
        self._opening.addErrback(self._cannot_open)

    def _cannot_open(self, failure) -> None:
        if failure.check(StoreError):
            self.log.critical("cannot open the store: {reason}", reason=str(failure.value))
        else:
            self.log.failure(
                "cannot open the store {path}: check the file and the disk, "
                "or move it aside to start afresh",
                failure,
                path=str(self.node.store.path),
            )
        self.reactor.stop()

    @inlineCallbacks
    def stopService(self):
        ingestor = self.node.ingestor
        yield self.sensors.stopService()
        for sensor in ingestor.sensors():
            sensor.pause("stopping")
        if self._opening is not None:
            yield self._opening
        yield ingestor.drain()
        for sensor in ingestor.sensors():
            sensor.transport.loseConnection()
        yield self.status.stopService()
        self.node.store.close()
        Service.stopService(self)
        self.log.info("stopped; every reading received was stored and answered")
