"""
The twistd service of a node: the order in which it starts and stops its
listeners, store and links, and the process tuning it runs under.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import Callable, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .identity import record_lock_holder
from .node import Node
from .schema import StoreError

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


def exit_failed_at_end() -> None:
    """
    Make this process exit with status 1 once it has ended (twistd's
    cleanup done), for a node whose store could not open: twistd itself
    exits 0 whatever stopped its reactor, and a supervisor (systemd's
    C{Restart=on-failure}, C{systemctl status}) must see the failure.

    Process-wide, so only the plugin's makeService asks for it.
    """
    # Once, however often asked.
    atexit.unregister(_exit_failed_now)
    atexit.register(_exit_failed_now)


def _exit_failed_now() -> None:
    # Run at interpreter exit: twistd has stopped the reactor, removed its
    # pid file and closed its log by then.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class ProcessTuning(MultiService):
    """
    Tunes the process for a node's latency while its children run, and puts
    it back once they have stopped: the GIL switch interval
    (L{GIL_SWITCH_INTERVAL}), and the objects alive at start out of the
    cyclic garbage collector's reach.

    Process-wide, so made once per process (the plugin's makeService puts
    the node under it), never per node: nodes built in one process (tests)
    leave the process alone.
    """

    name = "process-tuning"

    def __init__(self, switch_interval: float = GIL_SWITCH_INTERVAL):
        super().__init__()
        self.switch_interval = switch_interval
        self._saved: Optional[float] = None

    def startService(self) -> None:
        self._saved = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval)
        # Otherwise each full collection walks every object alive at start
        # (modules, classes, Twisted's machinery) holding the GIL: at 70,000
        # readings/s, 11 pauses of 14-19 ms in 13 s, each delaying every
        # reading in flight; frozen, 1.6 ms (median).
        gc.collect()
        gc.freeze()
        super().startService()

    def stopService(self) -> Deferred:
        def restore(result):
            if self._saved is not None:
                sys.setswitchinterval(self._saved)
                self._saved = None
            gc.unfreeze()
            return result

        return super().stopService().addBoth(restore)


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

    name = "node"
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
        errors=(),
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
        # What went wrong before the start that the user must hear of.
        self._errors = list(errors)
        self._opening: Optional[Deferred] = None
        # Called when the store cannot open, before the reactor stops (the
        # plugin's makeService: exit_failed_at_end).
        self.on_failed_start: Callable[[], None] = lambda: None
        for listener in (sensors, status, peers):
            if listener is not None:
                listener.setServiceParent(self)

    def startService(self) -> None:
        if self._lock is not None:
            # This process (twistd's daemon) holds it now.
            record_lock_holder(self._lock)
        super().startService()
        for note in self._notes:
            self.log.info("{note}", note=note)
        for error in self._errors:
            self.log.error("{error}", error=error)
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
        self.on_failed_start()
        self.reactor.stop()

    @inlineCallbacks
    def stopService(self):
        try:
            yield self._stop()
        finally:
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
                link.close()
        yield self.node.replicator.stop()
        # A write in flight is sent again at the next start: its cursor
        # moves only once the destination has answered.
        yield DeferredList([exporter.stop() for exporter in self.node.exporters])
        if self.node.scrub is not None:
            yield self.node.scrub.stop()
        if self.node.pruner is not None:
            # A batch under way commits or not, whole: the next start
            # prunes on from where the log starts then.
            yield self.node.pruner.stop()
        yield self.sensors.stopService()
        for sensor in ingestor.sensors():
            sensor.pause("stopping")
        if self._opening is not None:
            yield self._opening
        yield ingestor.drain()
        if self.node.copy_wait is not None:
            # The links are closed: no copy can be confirmed now.
            self.node.copy_wait.stop()
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
        if not self.node.opened:
            self.log.info(
                "stopped without opening the store, so no reading was stored or answered "
                "OK. Fix what the error above names, then start the node again."
            )
        elif ingestor.not_full:
            self.log.warn(
                "stopped; every reading received was answered, but {count} readings were "
                "answered 'ERR full' for lack of space: those were not stored here (sensors "
                "that keep unanswered readings send them again). Free space on the disk of "
                "{path}, or raise --max-disk, before restarting.",
                count=ingestor.not_full,
                path=str(self.node.store.path.parent),
            )
        elif ingestor.not_stored:
            self.log.warn(
                "stopped; every reading received was answered, but {count} answers were "
                "'ERR retry' after failed commits: those readings were not stored here "
                "(sensors that keep unanswered readings, as sensor_simulator.py does, "
                "send them again). Check the disk (space, permissions) before restarting.",
                count=ingestor.not_stored,
            )
        else:
            self.log.info("stopped; every reading received was stored and answered")
