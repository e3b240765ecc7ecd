"""
Tests for the wiring of peer TLS in p2pstore.tap: the peer port and the
tls: peers get TLS, plain peers do not, the node says its certificate's
fingerprint at start, and a bad TLS option stops the start in one line.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.tls import PeerTLS

from .certs import cluster
from .test_tap import TapTestMixin


class PeerTLSWiringTests(TapTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.ca, (self.node,) = cluster(self.dir, "node-a")
        self.tls_args = (
            "--tls-cert", str(self.node.cert),
            "--tls-key", str(self.node.key),
            "--peer-ca", str(self.ca.cert),
        )

    def test_peer_port_and_tls_peers(self):
        """
        With --tls-cert, the peer port listens through TLS around the peer
        factory; a tls: peer is dialled through TLS and a plain one is not;
        the status has a tls part with this node's fingerprint.
        """
        reactor = MemoryReactorClock()
        service = self.gone(
            self.make(
                "--data-dir", str(self.data_dir()),
                "--peer-port", "tcp:23457:interface=127.0.0.1",
                "--peers", "tls:127.0.0.1:7001,127.0.0.1:7002",
                *self.tls_args,
                reactor=reactor,
            )
        )
        service.peers.privilegedStartService()
        [(port, factory, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (23457, "127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory, service.peers.factory)
        self.assertIsInstance(factory.tls, PeerTLS)
        tls_dialer, plain_dialer = service.node.dialers
        self.assertEqual(tls_dialer.address, "tls:127.0.0.1:7001")
        self.assertEqual(plain_dialer.address, "127.0.0.1:7002")
        self.assertNotIsInstance(tls_dialer._endpoint, HostnameEndpoint)
        self.assertIsInstance(plain_dialer._endpoint, HostnameEndpoint)
        status = service.node.status_snapshot()["tls"]
        self.assertEqual(status["fingerprint"], self.node.fingerprint)
        self.assertEqual(status["trust"], "ca")

    def test_fingerprint_noted(self):
        """
        The start notes name this node's fingerprint, for peers to pin, and
        how peers are checked.
        """
        service = self.gone(self.make("--data-dir", str(self.data_dir()), *self.tls_args))
        notes = "\n".join(service._notes)
        self.assertIn(f"this node's certificate {self.node.fingerprint} (CN=node-a", notes)
        self.assertIn(f"signed by the cluster CA in {self.ca.cert}", notes)

    def test_plain_without_options(self):
        """
        Without the TLS options, nothing changes: plain peer port, no tls
        part in the status.
        """
        reactor = MemoryReactorClock()
        service = self.gone(self.make("--data-dir", str(self.data_dir()), reactor=reactor))
        service.peers.privilegedStartService()
        [(_, factory, _, _)] = reactor.tcpServers
        self.assertIs(factory, service.peers.factory)
        self.assertNotIn("tls", service.node.status_snapshot())

    def test_bad_option_one_line(self):
        """
        A missing certificate file stops the start with one line naming
        --tls-cert.
        """
        message = self.assertStops(
            "--tls-cert",
            "--tls-cert", str(self.dir / "missing.crt"),
            "--tls-key", str(self.node.key),
            "--peer-ca", str(self.ca.cert),
        )
        self.assertIn("missing.crt", message)
        self.assertStops("--peers", "--peers", "tls:127.0.0.1:7001")
