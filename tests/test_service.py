"""
Tests for p2pstore.service: ProcessTuning tuning the process only while
its children run, and a NodeService leaving the process alone.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore.node import RUNNING
from p2pstore.service import GIL_SWITCH_INTERVAL, ProcessTuning
from p2pstore.tap import makeNode
from p2pstore.testing import free_port

from .nodes import KeepRunning
from .test_tap import options

# A switch interval no code sets, so that a change by anything shows.
UNUSUAL = 0.0042


class SlowChild(Service):
    """
    A child whose stop ends when the test says.
    """

    def __init__(self):
        self.stopping = Deferred()

    def stopService(self):
        Service.stopService(self)
        return self.stopping


class TuningTestCase:
    def keep_process(self) -> None:
        """
        Put the process back however the test ends.
        """
        saved = sys.getswitchinterval()
        sys.setswitchinterval(UNUSUAL)
        self.addCleanup(sys.setswitchinterval, saved)
        self.addCleanup(gc.unfreeze)
        self.assertNotAlmostEqual(UNUSUAL, GIL_SWITCH_INTERVAL)


class ProcessTuningTests(TuningTestCase, SynchronousTestCase):
    """
    ProcessTuning sets the GIL switch interval and freezes the objects
    alive at start while its children run, and restores both only once
    they have stopped.
    """

    def test_tuned_while_children_run(self) -> None:
        """
        From start until the children's stop has ended the switch interval
        is the tuned one and objects are frozen; then both are as before.
        """
        self.keep_process()
        self.assertEqual(gc.get_freeze_count(), 0)
        top = ProcessTuning(switch_interval=0.0007)
        child = SlowChild()
        child.setServiceParent(top)
        top.startService()
        self.assertTrue(child.running)
        self.assertAlmostEqual(sys.getswitchinterval(), 0.0007)
        self.assertGreater(gc.get_freeze_count(), 0)
        stopped = top.stopService()
        self.assertNoResult(stopped)
        # The child is still stopping: the process stays tuned.
        self.assertAlmostEqual(sys.getswitchinterval(), 0.0007)
        self.assertGreater(gc.get_freeze_count(), 0)
        child.stopping.callback(None)
        self.successResultOf(stopped)
        self.assertAlmostEqual(sys.getswitchinterval(), UNUSUAL)
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_default_interval(self) -> None:
        """
        By default the switch interval is GIL_SWITCH_INTERVAL.
        """
        self.keep_process()
        top = ProcessTuning()
        top.startService()
        self.assertAlmostEqual(sys.getswitchinterval(), GIL_SWITCH_INTERVAL)
        self.successResultOf(top.stopService())
        self.assertAlmostEqual(sys.getswitchinterval(), UNUSUAL)

    def test_restored_after_failed_stop(self) -> None:
        """
        A child whose stop fails still gets the process put back.
        """
        self.keep_process()
        top = ProcessTuning(switch_interval=0.0007)
        child = SlowChild()
        child.setServiceParent(top)
        top.startService()
        stopped = top.stopService()
        child.stopping.errback(RuntimeError("stop failed"))
        [(succeeded, failure)] = self.successResultOf(stopped)
        self.assertFalse(succeeded)
        failure.trap(RuntimeError)
        # Handled here, not left for the garbage collector to report.
        child.stopping.addErrback(lambda _: None)
        self.assertAlmostEqual(sys.getswitchinterval(), UNUSUAL)
        self.assertEqual(gc.get_freeze_count(), 0)


class NodeServiceTests(TuningTestCase, TestCase):
    """
    A NodeService made by makeNode leaves the process alone: tuning is the
    plugin's, once per process.
    """

    def node(self):
        from twisted.internet import reactor

        ports = [f"tcp:{free_port()}:interface=127.0.0.1" for _ in range(3)]
        service = makeNode(
            options(
                "--data-dir", str(Path(self.mktemp())),
                "--sensor-port", ports[0], "--peer-port", ports[1], "--status-port", ports[2],
            ),
            reactor=reactor,
        )
        service.reactor = KeepRunning(reactor)
        return service

    @inlineCallbacks
    def test_two_nodes_leave_switch_interval(self):
        """
        Two nodes started and stopped in one process leave the switch
        interval as it was throughout.
        """
        self.keep_process()
        first, second = self.node(), self.node()
        first.startService()
        self.assertEqual(sys.getswitchinterval(), UNUSUAL)
        second.startService()
        try:
            self.assertEqual(sys.getswitchinterval(), UNUSUAL)
            yield first._opening
            yield second._opening
            for service in (first, second):
                self.assertFalse(service.reactor.stopped, "a store could not open: see the log")
                self.assertEqual(service.node.state, RUNNING)
            self.assertEqual(sys.getswitchinterval(), UNUSUAL)
            yield first.stopService()
            self.assertEqual(sys.getswitchinterval(), UNUSUAL)
        finally:
            if first.running:
                yield first.stopService()
            yield second.stopService()
        self.assertEqual(sys.getswitchinterval(), UNUSUAL)
        self.assertEqual(gc.get_freeze_count(), 0)
