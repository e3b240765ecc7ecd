"""
Tests for sensor_simulator.py's --tls and --ca: the options, and a TLS
connection that counts only once its handshake is done, a failed one
reported once with its reason. The simulator against a real node's ssl:
sensor port is in test_tls_nodes.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sensor_simulator import TLSSensorClientProtocol, parse_args

from .certs import cluster
from .test_simulator import Harness, ids_in


class TLSOptionTests(SynchronousTestCase):
    def parse_error(self, *args: str) -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            exit = self.assertRaises(SystemExit, parse_args, list(args))
        self.assertEqual(exit.code, 2)
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_off_by_default(self):
        """
        Without --tls the simulator speaks plain TCP, as before.
        """
        options = parse_args(["--temp"])
        self.assertFalse(options.tls)
        self.assertIsNone(options.ca)

    def test_tls_and_ca(self):
        """
        --ca reads the CA certificates the node's must be signed by.
        """
        ca, _ = cluster(Path(self.mktemp()), "node")
        options = parse_args(["--temp", "--tls", "--ca", str(ca.cert)])
        self.assertTrue(options.tls)
        self.assertIsNotNone(options.ca)

    def test_bad_ca(self):
        """
        A missing or non-PEM --ca, or --ca without --tls, is one line
        naming --ca.
        """
        directory = Path(self.mktemp())
        ca, _ = cluster(directory, "node")
        junk = directory / "junk.pem"
        junk.write_text("junk\n")
        self.assertIn("argument --ca: cannot read", self.parse_error("--temp", "--tls", "--ca", str(directory / "no")))
        self.assertIn("holds no PEM certificate", self.parse_error("--temp", "--tls", "--ca", str(junk)))
        self.assertIn("argument --ca: only with --tls", self.parse_error("--temp", "--ca", str(ca.cert)))


class TLSConnectionTests(SynchronousTestCase):
    def connect(self, h: Harness) -> tuple[TLSSensorClientProtocol, StringTransport]:
        protocol = TLSSensorClientProtocol(h.simulator)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_sends_after_handshake(self):
        """
        Readings go out once the handshake is done, not at the TCP connect.
        """
        h = Harness(interval=0, count=2)
        protocol, transport = self.connect(h)
        self.assertEqual(transport.value(), b"")
        protocol.handshakeCompleted()
        self.assertEqual(ids_in(transport.value()), ["run-1", "run-2"])

    def test_refused_certificate_reported_once(self):
        """
        Handshakes that fail (the node's certificate refused) print one
        'Cannot connect' line with the TLS reason, never 'Connected'.
        """
        h = Harness(interval=0, count=2)
        for _ in range(3):
            protocol, _ = self.connect(h)
            protocol.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
        self.assertEqual(
            h.out, ["Cannot connect to 127.0.0.1:12345 (TLS: certificate verify failed); retrying"]
        )

    def test_lost_after_handshake(self):
        """
        A connection lost after its handshake is a lost connection, as on TCP.
        """
        h = Harness(interval=0, count=2)
        protocol, _ = self.connect(h)
        protocol.handshakeCompleted()
        protocol.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(h.out[-1], "Lost connection to 127.0.0.1:12345; reconnecting")
