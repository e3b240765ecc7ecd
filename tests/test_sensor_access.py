"""
Tests for the sensor protocol behind p2pstore.access: with sensor tokens, a
connection's first line must be ``AUTH <token>``, and the name goes with
its readings; with --sensor-allow, connections from elsewhere are closed at
once. Over StringTransports and a task.Clock, as tests.test_sensor.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from p2pstore.access import AUTH_TIMEOUT, SensorAccess, parse_networks
from p2pstore.schema import sensor_name_of
from p2pstore.sensor import SensorFactory
from p2pstore.tokens import load_sensor_tokens

from .fakes import GOOD, MAX_LINE, SensorTestCase
from .test_tokens import ATTIC, BOILER

AUTH_BOILER = b"AUTH " + BOILER.encode() + b"\n"


class TokenTests(SensorTestCase):
    """
    With tokens, only a sensor whose first line is AUTH with a known token
    gets to send readings, which are stored with its name.
    """

    def setUp(self) -> None:
        super().setUp()
        self.path = Path(self.mktemp())
        self.path.write_text(f"boiler {BOILER}\nattic {ATTIC}\n")
        self.access = SensorAccess(self.clock, load_sensor_tokens(self.path))
        self.factory = SensorFactory(
            self.ingestor, self.max_line, self.now, self.clock, access=self.access
        )
        self.open_store()

    def names_stored(self) -> list:
        return [sensor_name_of(row) for call in self.store.calls for row in call.rows]

    def test_authenticated(self) -> None:
        """
        ``AUTH <token>`` is answered ``OK auth <name>``; the readings after
        it are answered as usual and stored with the name.
        """
        protocol, transport = self.connect()
        self.assertEqual(self.ingestor.connected, 0)
        protocol.dataReceived(AUTH_BOILER)
        self.assertEqual(transport.value(), b"OK auth boiler\n")
        self.assertEqual(self.ingestor.connected, 1)
        protocol.dataReceived(GOOD + b"\n" + GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(transport), [b"OK auth boiler", b"OK 1", b"OK 2"])
        self.assertEqual(self.names_stored(), ["boiler", "boiler"])
        self.assertEqual(protocol.sensor_name, "boiler")
        self.assertStillServing(transport)

    def test_auth_and_readings_together(self) -> None:
        """
        The AUTH line and readings may come in one piece, or the AUTH line
        byte by byte; each sensor's readings carry its own name.
        """
        first, first_transport = self.connect()
        first.dataReceived(b"AUTH " + ATTIC.encode() + b"\r\n" + GOOD + b"\n")
        second, second_transport = self.connect()
        for byte in AUTH_BOILER:
            second.dataReceived(bytes([byte]))
        second.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(first_transport), [b"OK auth attic", b"OK 1"])
        self.assertEqual(self.answers(second_transport), [b"OK auth boiler", b"OK 2"])
        self.assertEqual(self.names_stored(), ["attic", "boiler"])

    def assertRefused(self, transport: StringTransport, reason: str, events) -> None:
        self.assertEqual(transport.value(), b"ERR not authenticated\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.store.calls, [])
        self.assertEqual(self.ingestor.connected, 0)
        messages = [formatEvent(event) for event in events]
        self.assertEqual(len(messages), 1, messages)
        self.assertIn("from 192.168.1.1:54321: not authenticated (" + reason + ")", messages[0])
        self.assertIn(str(self.path), messages[0])
        for token in (BOILER, ATTIC):
            self.assertNotIn(token[:8], messages[0])

    def test_wrong_token(self) -> None:
        """
        An unknown token is answered ``ERR not authenticated`` and the
        connection closed; nothing it sent after is read, the failure is
        counted and logged with the address, never the token.
        """
        protocol, transport = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(b"AUTH " + BOILER[:-1].encode() + b"x\n" + GOOD + b"\n")
            protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertRefused(transport, "unknown token", events)
        self.assertEqual(self.access.auth_failures, 1)
        self.assertEqual(self.ingestor.rejected, 0)

    def test_plain_line_first(self) -> None:
        """
        A sensor that sends a reading first, as one without a token does, is
        refused, and the reading is not stored.
        """
        protocol, transport = self.connect()
        with capturedLogs() as events:
            protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertRefused(transport, "its first line is not AUTH <token>", events)

    def test_unterminated_sensor(self) -> None:
        """
        A sensor of the proof of concept (no line ends) is refused once its
        bytes pass the longest line.
        """
        protocol, transport = self.connect()
        with capturedLogs() as events:
            for _ in range(3):
                protocol.dataReceived(GOOD)
            self.clock.advance(1)
        self.commit_all()
        self.assertRefused(transport, "its first line is too long", events)

    def test_silent(self) -> None:
        """
        A connection that sends nothing is closed after AUTH_TIMEOUT.
        """
        protocol, transport = self.connect()
        self.clock.advance(AUTH_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertRefused(transport, f"no AUTH line within {AUTH_TIMEOUT:g} s", events)

    def test_no_timeout_once_authenticated(self) -> None:
        """
        An authenticated sensor may then stay silent.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(AUTH_BOILER)
        self.clock.advance(AUTH_TIMEOUT * 3)
        self.assertStillServing(transport)
        self.assertEqual(self.access.auth_failures, 0)

    def test_closed_before_auth(self) -> None:
        """
        A connection that ends before its AUTH line counts as a failure.
        """
        protocol, transport = self.connect()
        with capturedLogs():
            protocol.readConnectionLost()
        self.assertEqual(self.access.auth_failures, 1)
        protocol, transport = self.connect()
        with capturedLogs():
            protocol.connectionLost(None)
        self.assertEqual(self.access.auth_failures, 2)

    def test_status(self) -> None:
        """
        The connected sensors are counted by name.
        """
        for data in (AUTH_BOILER, AUTH_BOILER, b"AUTH " + ATTIC.encode() + b"\n"):
            protocol, _ = self.connect()
            protocol.dataReceived(data)
        self.connect()
        status = self.access.status(self.ingestor.sensors())
        self.assertEqual(status["names"], {"boiler": 2, "attic": 1})

    def test_reloaded(self) -> None:
        """
        After a reload, a sensor added to the file gets in, and one removed
        does not.
        """
        self.path.write_text(f"cellar {'c' * 20}\n")
        with capturedLogs() as events:
            self.access.reload()
        self.assertTrue(any(": 1 sensor known" in formatEvent(e) for e in events))
        protocol, transport = self.connect()
        protocol.dataReceived(b"AUTH " + b"c" * 20 + b"\n")
        self.assertEqual(transport.value(), b"OK auth cellar\n")
        protocol, transport = self.connect()
        with capturedLogs():
            protocol.dataReceived(AUTH_BOILER)
        self.assertEqual(transport.value(), b"ERR not authenticated\n")


class NoTokenTests(SensorTestCase):
    """
    Without tokens, an access object that allows any address changes
    nothing: plain lines are answered at once.
    """

    def test_plain(self) -> None:
        self.factory = SensorFactory(
            self.ingestor, MAX_LINE, self.now, self.clock, access=SensorAccess(self.clock)
        )
        self.open_store()
        protocol, transport = self.connect()
        self.assertEqual(self.ingestor.connected, 1)
        protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(transport), [b"OK 1"])
        self.assertEqual([sensor_name_of(row) for row in self.store.calls[0].rows], [None])


class AllowTests(SensorTestCase):
    """
    With --sensor-allow, a connection from elsewhere is closed at once.
    """

    def connect_from(self, host: str, networks: str):
        self.access = SensorAccess(self.clock, networks=parse_networks(networks))
        self.factory = SensorFactory(self.ingestor, MAX_LINE, self.now, self.clock, access=self.access)
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5000))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_refused(self) -> None:
        """
        The connection is aborted before anything is read, counted, and
        never connected to the ingestor.
        """
        self.open_store()
        with capturedLogs():
            protocol, transport = self.connect_from("192.168.1.1", "10.0.0.0/8")
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.access.refused, 1)
        self.assertEqual(self.ingestor.connected, 0)
        protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.store.calls, [])

    def test_allowed(self) -> None:
        self.open_store()
        protocol, transport = self.connect_from("192.168.1.1", "10.0.0.0/8,192.168.0.0/16")
        protocol.dataReceived(GOOD + b"\n")
        self.commit_all()
        self.assertEqual(self.answers(transport), [b"OK 1"])
        self.assertEqual(self.access.refused, 0)
