"""
A p2pstore node: its store, its sensor ingestion and its status, and the
service that starts and stops them in order.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from . import __version__
from .identity import record_lock_holder
from .ingest import Ingestor
from .replication import Replicator
from .storage import Store, StoreError

# How long a stopping node waits for sensors to close after their last answer.
SENSOR_CLOSE_TIMEOUT = 5.0

# How long a thread may hold the GIL while another waits for it (Python's
# default is 5 ms). The database thread gives the GIL up for every SQLite
# call and must take it back after; a waiting thread is woken each time the
# holder releases it for a system call, finds it taken again, and starts its
# 5 ms wait afresh, so while the reactor thread is busy with sensors (a
# system call every few hundred microseconds) the database thread can wait
# for as long as the reactor stays busy. At 20 us it asks for the GIL
# before the reactor's next system call. bench/gil.py (a SQLite writer
# beside one busy thread): 375 -> 182,120 rows/s; bench/ingest.py, 100
# connections, window 24: 66,502 -> 86,080 readings/s, p99 59 -> 46 ms.
GIL_SWITCH_INTERVAL = 20e-6

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
        replicator: Optional[Replicator] = None,
    ):
        self.node_id = node_id
        self.store = store
        self.ingestor = ingestor
        self.clock = clock
        self.replicator = replicator or Replicator(node_id, store, store.signer, clock)
        self.opened = False
        self.started_at = clock.seconds()
        self.dialers: list = []
        ingestor.on_commit = self._committed

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
            self.replicator.opened(opened.positions, opened.recovering)
            self.opened = True
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

        return d.addCallback(opened)

    def _committed(self, appended) -> None:
        self.replicator.appended(self.store.epoch, appended.last_index, appended.entries)

    def status_snapshot(self) -> dict:
        """
        Everything the node tells about itself, as plain JSON-ready data.
        """
        ingestor = self.ingestor
        replicator = self.replicator
        origins: dict = {}
        if self.opened:
            origins[self.node_id] = {"count": 0, "last_index": 0, "self": True}
            for (origin, epoch), position in replicator.positions.items():
                entry = origins.setdefault(origin, {"count": 0, "last_index": 0, "self": False})
                entry["count"] += position
                if origin != self.node_id or epoch == self.store.epoch:
                    entry["last_index"] = max(entry["last_index"], position)
        peers, totals = replicator.status(
            {
                dialer.address: dialer.protocol is not None
                for dialer in self.dialers
                # An address that turned out to be this node is no peer.
                if dialer.gave_up is None
            }
        )
        snapshot = {
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
            "peers": peers,
            "replication": totals,
        }
        if replicator.recovering:
            snapshot["recovery"] = replicator.recovery_progress()
        return snapshot

    def readings(self, origin: Optional[str], sensor_type: Optional[str], limit: int) -> Deferred:
        """
        The newest readings of an origin this node holds, newest first.

        @raise UnknownOrigin: this node holds no readings of ``origin``.
        @raise NotReady: the store is not open yet.
        """
        origin = origin or self.node_id
        if not self.opened:
            raise NotReady(self.state)
        if origin != self.node_id and not any(o == origin for o, _ in self.replicator.positions):
            raise UnknownOrigin(origin)
        return self.store.readings(origin, sensor_type, limit)


class Listener(StreamServerEndpointService):
    """
    Listens on the endpoint of one option, and stops the start with one line
    naming that option when it cannot.
    """

    _raiseSynchronously = True
    log = Logger()

    def __init__(self, option: str, description: str, endpoint, factory):
        super().__init__(endpoint, factory)
        self.option = option
        self.description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            message = (
                f"p2pstore: {self.option} {self.description}: cannot listen "
                f"({e.socketError}); choose a free port with {self.option}"
            )
            if _daemonized():
                # twistd without -n tells the command that started it only
                # of an Exception (SystemExit would leave that command
                # waiting for ever), and only its first 100 bytes: the
                # short reason there, the whole line in twistd.log.
                self.log.critical("{message}", message=message)
                reason = getattr(e.socketError, "strerror", None) or e.socketError
                raise CannotStart(f"{self.option} {self.description}: {reason}") from None
            raise SystemExit(message) from None


class CannotStart(Exception):
    """
    The node cannot start as configured; the message says why.
    """


def _daemonized() -> bool:
    """
    Whether twistd has made this process a daemon (it was started without
    -n): its standard descriptors then all point at /dev/null.
    """
    try:
        null = os.stat(os.devnull)
        descriptors = [os.fstat(fd) for fd in (0, 1, 2)]
    except OSError:
        return False
    return all((d.st_dev, d.st_ino) == (null.st_dev, null.st_ino) for d in descriptors)


class NodeService(MultiService):
    """
    Runs a L{Node}: opens its store, listens for sensors and status
    requests, and on stop commits and answers every reading already
    received before closing connections and the database.
    """

    log = Logger()

    def __init__(
        self,
        node: Node,
        sensors: Listener,
        status: Listener,
        reactor,
        notes=(),
        peers: Optional[Listener] = None,
        dialers=(),
        write_id=None,
        lock=None,
    ):
        super().__init__()
        # The data directory's lock (see lock_data_dir), released at stop.
        self._lock = lock
        # Writes a new node.id once the store is open (see write_node_id).
        self._write_id = write_id
        self.node = node
        self.reactor = reactor
        self.sensors = sensors
        self.status = status
        self.peers = peers
        node.dialers = list(dialers)
        self._notes = list(notes)
        self._opening: Optional[Deferred] = None
        self._switch_interval = sys.getswitchinterval()
        for listener in (sensors, status, peers):
            if listener is not None:
                listener.setServiceParent(self)

    def startService(self) -> None:
        if self._lock is not None:
            # This process (twistd's daemon) holds it now.
            record_lock_holder(self._lock)
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        # The objects alive at start (modules, classes, Twisted's machinery)
        # are put out of the cyclic garbage collector's reach while the node
        # runs. Otherwise each full collection walks them all holding the
        # GIL: at 70,000 readings/s, 11 pauses of 14-19 ms in 13 s, each
        # delaying every reading in flight; frozen, 1.6 ms (median).
        gc.collect()
        gc.freeze()
        super().startService()
        for note in self._notes:
            self.log.info("{note}", note=note)
        self._opening = self.node.start()
        self._opening.addCallbacks(self._opened, self._cannot_open)

    def _opened(self, _) -> None:
        if self._write_id is not None:
            self._write_id()
        # Peers are taken only once the store knows what it holds: before
        # that, this node would tell them it holds nothing.
        if self.peers is not None:
            self.peers.factory.ready = True
        for dialer in self.node.dialers:
            dialer.start()

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
        try:
            yield self._stop()
        finally:
            sys.setswitchinterval(self._switch_interval)
            gc.unfreeze()
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    @inlineCallbacks
    def _stop(self):
        ingestor = self.node.ingestor
        for dialer in self.node.dialers:
            dialer.stop()
        if self.peers is not None:
            yield self.peers.stopService()
            self.peers.factory.ready = False
        for peer in self.node.replicator.peers.values():
            for link in list(peer.links):
                link.transport.loseConnection()
        yield self.node.replicator.stop()
        yield self.sensors.stopService()
        for sensor in ingestor.sensors():
            sensor.pause("stopping")
        if self._opening is not None:
            yield self._opening
        yield ingestor.drain()
        lost = ingestor.unsaved_rejected + ingestor.dropped_rejected
        if lost:
            self.log.warn(
                "{lost} refused lines are lost, not stored in rejected_lines: their "
                "commits failed, see the errors above. Check the disk (space, "
                "permissions) before restarting.",
                lost=lost,
            )
        yield DeferredList(
            [sensor.close(self.reactor, SENSOR_CLOSE_TIMEOUT) for sensor in ingestor.sensors()]
        )
        yield self.status.stopService()
        if self.node.opened:
            yield self.node.store.mark_stopped()
        self.node.store.close()
        Service.stopService(self)
        if ingestor.not_stored:
            self.log.warn(
                "stopped; every reading received was answered, but {count} answers were "
                "'ERR retry' after failed commits: those readings were not stored here "
                "(sensors that keep unanswered readings, as sensor_simulator.py does, "
                "send them again). Check the disk (space, permissions) before restarting.",
                count=ingestor.not_stored,
            )
        else:
            self.log.info("stopped; every reading received was stored and answered")
