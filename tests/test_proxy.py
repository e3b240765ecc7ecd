"""
Tests for the tests' on-path proxy (tests/proxy.py), over real sockets.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from .nodes import wait_for
from .proxy import FROM_DIALLER, LineTamper, Proxy


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Collect(Protocol):
    def __init__(self):
        self.received = b""

    def dataReceived(self, data):
        self.received += data


class ProxyTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo)
        )
        self.addCleanup(port.stopListening)
        self.proxy = Proxy(port.getHost().port)
        yield self.proxy.start()
        self.addCleanup(self.proxy.stop)

    @inlineCallbacks
    def connect(self):
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.port).connect(
            Factory.forProtocol(Collect)
        )
        self.addCleanup(client.transport.abortConnection)
        return client

    @inlineCallbacks
    def test_honest(self):
        """
        Without a tamper every byte passes both ways.
        """
        client = yield self.connect()
        client.transport.write(b"one\ntwo")
        yield wait_for(lambda: client.received == b"one\ntwo", 5, "the echo")
        self.assertEqual(self.proxy.accepted, 1)

    @inlineCallbacks
    def test_lines(self):
        """
        A line tamper drops, replays and rewrites lines of one direction;
        made honest, it passes what it held back.
        """

        def rewrite(number, line):
            return [[], [line, line], [line.upper()]][number % 3]

        self.proxy.tamper = lambda d: LineTamper(rewrite) if d == FROM_DIALLER else LineTamper(
            lambda n, line: [line]
        )
        client = yield self.connect()
        client.transport.write(b"a\nb\nc\nd")
        yield wait_for(lambda: client.received == b"b\nb\nC\n", 5, "the rewritten lines")
        self.proxy.tamper = None
        client.transport.write(b"e\n")
        yield wait_for(lambda: client.received == b"b\nb\nC\nde\n", 5, "the held-back bytes")

    @inlineCallbacks
    def test_drop_all(self):
        """
        drop_all closes open connections, as a failing link would.
        """
        client = yield self.connect()
        client.transport.write(b"x")
        yield wait_for(lambda: client.received == b"x", 5, "the echo")
        self.proxy.drop_all()
        yield wait_for(lambda: self.proxy.closed == 1, 5, "the close")
