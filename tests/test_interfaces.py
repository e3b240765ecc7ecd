"""
Tests for p2pstore.interfaces: the real protocols provide the interfaces
the logic objects call them through, ISensor and ILink.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from p2pstore.interfaces import ILink, ISensor
from p2pstore.peer import PeerFactory, PeerProtocol
from p2pstore.sensor import SensorProtocol

from .fakes import OpenedTestCase
from .test_handshake import ACCEPTOR, DIALLER, KEY
from .test_peer import StubReplicator


class SensorInterfaceTests(OpenedTestCase):
    """
    A SensorProtocol connected to an ingestor, as tests.test_sensor builds
    one.
    """

    def test_sensor(self) -> None:
        """
        A connected SensorProtocol provides ISensor: every method and the
        sensor_index attribute the ingestor sets.
        """
        self.assertIsInstance(self.protocol, SensorProtocol)
        self.assertTrue(verifyObject(ISensor, self.protocol))

    def test_not_connected(self) -> None:
        """
        The class itself declares ISensor.
        """
        self.assertTrue(ISensor.implementedBy(SensorProtocol))


class LinkInterfaceTests(SynchronousTestCase):
    """
    A PeerProtocol, as tests.test_peer builds one.
    """

    def protocol(self, dialled: bool) -> PeerProtocol:
        clock = Clock()
        factory = PeerFactory(DIALLER if dialled else ACCEPTOR, KEY, StubReplicator(), clock, dialled=dialled)
        factory.ready = True
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        return proto

    def test_accepted(self) -> None:
        """
        An accepted PeerProtocol provides ILink: its methods and the
        attributes replication reads.
        """
        proto = self.protocol(dialled=False)
        self.assertIsInstance(proto, PeerProtocol)
        self.assertTrue(verifyObject(ILink, proto))

    def test_dialled(self) -> None:
        """
        A dialled PeerProtocol provides ILink too.
        """
        self.assertTrue(verifyObject(ILink, self.protocol(dialled=True)))
