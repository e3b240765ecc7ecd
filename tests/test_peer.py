"""
Tests for the peer protocol (p2pstore.peer): PeerProtocol and PeerFactory over
a StringTransport and a task.Clock and, for two protocols joined in memory,
twisted.test.iosim.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs, formatEvent
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.peer import (
    IDLE_TIMEOUT,
    MAX_LINE,
    PING_INTERVAL,
    QUIET_INTERVAL,
    LogThrottle,
    PeerFactory,
    _more,
)
from p2pstore.handshake import HANDSHAKE_TIMEOUT, Handshake
from p2pstore.sealing import Opener, Sealer
from p2pstore.wire import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    BadMessage,
    Have,
    Hello,
    Ping,
    Pong,
    Records,
    decode,
    encode,
)

from .test_handshake import ACCEPTOR, DIALLER, KEY, ORIGIN, OTHER_KEY


@define
class StubReplicator:
    """
    Records what the peer protocol tells replication.
    """

    calls: list = field(factory=list)
    refuse: bool = False

    def link_up(self, link) -> None:
        self.calls.append(("link_up", link))

    def link_down(self, link) -> None:
        self.calls.append(("link_down", link))

    def link_failed(self, link, reason: str) -> None:
        self.calls.append(("link_failed", link, reason))

    def received(self, link, message) -> None:
        self.calls.append(("received", link, message))
        if self.refuse:
            raise BadMessage("replication refuses this")

    def salvage(self, link, message) -> None:
        self.calls.append(("salvage", link, message))

    def named(self, name: str) -> list:
        return [call for call in self.calls if call[0] == name]


class PeerProtocolTests(SynchronousTestCase):
    """
    One PeerProtocol (this node accepting) over a StringTransport, talking to
    a Handshake the test drives as the remote peer.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.replicator = StubReplicator()
        self.factory = PeerFactory(ACCEPTOR, KEY, self.replicator, self.clock, dialled=False)
        self.factory.ready = True
        self.proto = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.remote = Handshake(DIALLER, KEY, True, self.tell)
        self.sealer = self.opener = None

    def seal(self, line: bytes) -> bytes:
        """
        C{line} as the remote peer sends it: sealed once its handshake is done.
        """
        if self.remote.state != "done":
            return line
        self.keys()
        return self.sealer.seal(line)

    def keys(self) -> None:
        """
        Seal and open the remote's lines with the keys of its handshake.
        """
        if self.sealer is None:
            sending, receiving = self.remote.link_keys()
            self.sealer, self.opener = Sealer(sending), Opener(receiving)

    def tell(self, message) -> None:
        self.proto.dataReceived(self.seal(encode(message)) + b"\n")

    def lines(self) -> list:
        """
        The lines the protocol wrote since the last read, as sent.
        """
        data = self.transport.value()
        self.transport.clear()
        assert data == b"" or data.endswith(b"\n")
        return data.split(b"\n")[:-1]

    def read(self) -> list:
        """
        The messages the protocol wrote since the last read, their seals
        checked once the remote's handshake is done.
        """
        lines = self.lines()
        if self.remote.state == "done":
            self.keys()
            lines = [self.opener.open(line) for line in lines]
        return [decode(line) for line in lines]

    def authenticate(self) -> None:
        self.remote.start()
        for message in self.read():
            self.remote.received(message)
        done = [self.remote.received(message) for message in self.read()]
        self.assertEqual(done, [True])
        self.assertTrue(self.proto.authenticated)

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))

    def assertDropped(self, reason: str) -> None:
        self.assertTrue(self.transport.disconnecting)
        failed = self.replicator.named("link_failed")
        self.assertEqual(len(failed), 1)
        self.assertIs(failed[0][1], self.proto)
        self.assertIn(reason, failed[0][2])
        self.assertIn(reason, self.proto.close_reason)

    def test_hello_at_once(self):
        """
        On connecting the protocol sends its HELLO and nothing else.
        """
        [hello] = self.read()
        self.assertIsInstance(hello, Hello)
        self.assertEqual(hello.node_id, ACCEPTOR)

    def test_authenticates(self):
        """
        A peer with the key authenticates; replication hears link_up with the
        peer's id, and nothing before.
        """
        self.assertEqual(self.replicator.calls, [])
        self.authenticate()
        self.assertEqual(self.replicator.calls, [("link_up", self.proto)])
        self.assertEqual(self.proto.peer_id, DIALLER)
        self.assertEqual(self.proto.authenticated_at, self.clock.seconds())
        self.assertFalse(self.transport.disconnecting)

    def test_garbage_before_auth(self):
        """
        Garbage before authentication drops the link, and link_failed says
        why; replication never hears link_up.
        """
        self.proto.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertDropped("malformed message")
        self.assertEqual(self.replicator.named("link_up"), [])
        self.lose()
        self.assertEqual(self.replicator.named("link_down"), [])

    def test_message_before_auth(self):
        """
        A well-formed message other than HELLO before authentication drops
        the link; it is not handed to replication.
        """
        self.tell(Have({}))
        self.assertDropped("before authenticating")
        self.assertEqual(self.replicator.named("received"), [])

    def test_wrong_key(self):
        """
        A peer with another key is dropped with 'cluster keys differ' and
        receives nothing but this node's HELLO.
        """
        self.remote = Handshake(DIALLER, OTHER_KEY, True, self.tell)
        self.remote.start()
        [hello] = self.read()
        self.remote.received(hello)
        self.assertDropped("cluster keys differ")
        self.assertEqual(self.read(), [])
        self.assertEqual(self.proto.peer_id, DIALLER)

    def test_itself(self):
        """
        A peer claiming this node's own id is dropped, and the protocol
        remembers that it was itself.
        """
        self.tell(Hello(PROTOCOL_VERSION, ACCEPTOR, b"\x00" * NONCE_BYTES))
        self.assertDropped("itself")
        self.assertTrue(self.proto.itself)

    def test_handshake_timeout(self):
        """
        A peer that has not authenticated 10 s after connecting is dropped.
        """
        self.assertEqual(HANDSHAKE_TIMEOUT, 10.0)
        self.proto.dataReceived(encode(Hello(PROTOCOL_VERSION, DIALLER, b"\x01" * NONCE_BYTES)) + b"\n")
        self.clock.advance(HANDSHAKE_TIMEOUT - 0.001)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.001)
        self.assertDropped("did not authenticate within 10 s")
        self.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_timeout_after_auth(self):
        """
        An authenticated link that keeps talking outlives the handshake
        timeout.
        """
        self.authenticate()
        for _ in range(10):
            self.clock.advance(HANDSHAKE_TIMEOUT / 2)
            self.tell(Pong())
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.replicator.named("link_failed"), [])

    def test_ping_answered(self):
        """
        After authentication a PING is answered with a PONG, and both are
        handed to replication, which thus hears that the peer is there.
        """
        self.authenticate()
        self.tell(Ping())
        self.assertEqual(self.read(), [Pong()])
        self.tell(Pong())
        self.assertEqual(self.read(), [])
        self.assertEqual(
            self.replicator.named("received"),
            [("received", self.proto, Ping()), ("received", self.proto, Pong())],
        )

    def test_pings_when_idle(self):
        """
        An authenticated link sends PING every PING_INTERVAL.
        """
        self.authenticate()
        self.clock.advance(PING_INTERVAL)
        self.assertEqual(self.read(), [Ping()])
        self.tell(Pong())
        self.clock.advance(PING_INTERVAL)
        self.assertEqual(self.read(), [Ping()])

    def test_idle_timeout(self):
        """
        An authenticated link from which nothing arrives is dropped once it
        has been silent for IDLE_TIMEOUT (checked at the next PING), and
        replication hears link_down when the connection goes.
        """
        self.authenticate()
        elapsed = 0.0
        while elapsed + PING_INTERVAL <= IDLE_TIMEOUT:
            self.clock.advance(PING_INTERVAL)
            elapsed += PING_INTERVAL
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(PING_INTERVAL)
        self.assertDropped("silent")
        self.lose()
        self.assertEqual(self.replicator.named("link_down"), [("link_down", self.proto)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answering_link_stays_up(self):
        """
        A link whose peer answers every PING stays up however long it lasts.
        """
        self.authenticate()
        for _ in range(20):
            self.clock.advance(PING_INTERVAL)
            for message in self.read():
                if isinstance(message, Ping):
                    self.tell(Pong())
        self.assertFalse(self.transport.disconnecting)

    def test_over_long_line(self):
        """
        A line longer than MAX_LENGTH drops the link, whether or not its end
        has arrived.
        """
        self.assertEqual(self.proto.MAX_LENGTH, MAX_LINE)
        self.proto.dataReceived(b"HAVE " + b" " * MAX_LINE)
        self.assertDropped("longer than")

    def test_over_long_delimited_line(self):
        """
        A complete line longer than MAX_LENGTH, after authentication, drops
        the link and is not handed to replication.
        """
        self.authenticate()
        self.proto.dataReceived(b"HAVE {}" + b" " * MAX_LINE + b"\n")
        self.assertDropped("longer than")
        self.assertEqual(self.replicator.named("received"), [])

    def test_messages_to_replication(self):
        """
        After authentication every message goes to replication.
        """
        self.authenticate()
        self.tell(Have({ORIGIN: {ORIGIN: 3}}))
        self.assertEqual(self.replicator.named("received"), [("received", self.proto, Have({ORIGIN: {ORIGIN: 3}}))])

    def test_replication_refuses(self):
        """
        A message replication finds out of order (BadMessage) drops the link.
        """
        self.authenticate()
        self.replicator.refuse = True
        self.tell(Ack(ORIGIN, ORIGIN, 1))
        self.assertDropped("replication refuses this")

    def test_handshake_after_auth(self):
        """
        A HELLO or AUTH after authentication is out of order and drops the
        link; replication never sees it.
        """
        for message in [Hello(PROTOCOL_VERSION, DIALLER, b"\x00" * NONCE_BYTES), Auth(b"\x00" * 32)]:
            self.setUp()
            self.authenticate()
            self.tell(message)
            self.assertDropped("after authenticating")
            self.assertEqual(self.replicator.named("received"), [])

    def test_nothing_after_drop(self):
        """
        Lines that arrive with or after the one that dropped the link are
        ignored.
        """
        self.authenticate()
        self.proto.dataReceived(self.seal(b"nonsense") + b"\n" + self.seal(encode(Have({}))) + b"\n")
        self.tell(Have({}))
        self.assertDropped("malformed")
        self.assertEqual(self.replicator.named("received"), [])

    def test_lines_sealed_after_handshake(self):
        """
        Every line after the handshake carries the next sequence number and
        a MAC: the protocol's answers open with the remote's key, in order.
        """
        self.authenticate()
        self.tell(Ping())
        self.tell(Ping())
        lines = self.lines()
        self.assertEqual([line.split(b" ")[-2] for line in lines], [b"1", b"2"])
        self.keys()
        self.assertEqual([decode(self.opener.open(line)) for line in lines], [Pong(), Pong()])

    def sealed_have(self, count: int) -> list:
        """
        C{count} sealed HAVE lines from the remote, not yet delivered.
        """
        self.authenticate()
        return [self.seal(encode(Have({ORIGIN: {ORIGIN: i + 1}}))) + b"\n" for i in range(count)]

    def assertRefusedOnLink(self, reason: str) -> None:
        self.assertDropped(reason)
        self.assertEqual(self.replicator.named("received"), [])

    def test_altered_line(self):
        """
        A line altered on the link fails its MAC: the link is dropped and
        replication never sees the message.
        """
        [line] = self.sealed_have(1)
        self.proto.dataReceived(line.replace(b":1}", b":9}"))
        self.assertRefusedOnLink("bad MAC: line 1 after the handshake was altered or injected")

    def test_altered_records_salvaged(self):
        """
        A RECORDS line that fails its MAC goes to replication's salvage
        (whose records still face their own HMAC check) after the link is
        dropped; any other altered message is dropped unread.
        """
        records = Records(ORIGIN, ORIGIN, [(1, 1, "Temperature", "39C", "2026-11-28 10:00:00", None, "0" * 64)])
        self.authenticate()
        line = self.seal(encode(records))
        self.proto.dataReceived(line[:-1] + (b"0" if line[-1:] != b"0" else b"1") + b"\n")
        self.assertRefusedOnLink("bad MAC")
        self.assertEqual(self.replicator.named("salvage"), [("salvage", self.proto, records)])

        self.setUp()
        [line] = self.sealed_have(1)
        self.proto.dataReceived(line.replace(b":1}", b":9}"))
        self.assertEqual(self.replicator.named("salvage"), [])

    def test_injected_line(self):
        """
        A line without a seal, or with a made-up one, after the handshake
        drops the link.
        """
        for line, reason in [
            (encode(Have({})), "unsealed message: line 1"),
            (encode(Have({})) + b" 1 " + b"0" * 32, "bad MAC: line 1"),
        ]:
            self.setUp()
            self.authenticate()
            self.proto.dataReceived(line + b"\n")
            self.assertRefusedOnLink(reason)

    def test_replayed_line(self):
        """
        A line delivered twice is out of sequence the second time.
        """
        [line] = self.sealed_have(1)
        self.proto.dataReceived(line + line)
        self.assertDropped("out of sequence: line 2 after the handshake is the peer's line 1")
        self.assertEqual(len(self.replicator.named("received")), 1)

    def test_dropped_line(self):
        """
        A line lost on the link shows as a gap in the sequence.
        """
        first, second = self.sealed_have(2)
        self.proto.dataReceived(second)
        self.assertRefusedOnLink("out of sequence: line 1 after the handshake is the peer's line 2")

    def test_reordered_lines(self):
        """
        Two lines swapped on the link are out of sequence.
        """
        first, second = self.sealed_have(2)
        self.proto.dataReceived(second + first)
        self.assertRefusedOnLink("out of sequence")

    def test_reflected_line(self):
        """
        A line the protocol sent, sent back to it, fails its MAC: each
        direction has its own key.
        """
        self.authenticate()
        self.tell(Ping())
        [pong] = self.lines()
        self.proto.dataReceived(pong + b"\n")
        self.assertDropped("bad MAC")

    def test_line_from_another_connection(self):
        """
        A line sealed on an earlier connection with the same peer fails its
        MAC on this one: the keys come from this handshake's nonces.
        """
        [line] = self.sealed_have(1)
        self.setUp()
        self.authenticate()
        self.proto.dataReceived(line)
        self.assertRefusedOnLink("bad MAC")

    def test_on_close(self):
        """
        When the connection goes, an authenticated link reports link_down
        and then calls on_close (the dialler's hook) with itself.
        """
        closed = []
        self.proto.on_close = closed.append
        self.authenticate()
        self.lose()
        self.assertEqual(self.replicator.named("link_down"), [("link_down", self.proto)])
        self.assertEqual(closed, [self.proto])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DropLogTests(SynchronousTestCase):
    """
    A link that drops many times a second (a noisy path, redialled at once)
    logs once per QUIET_INTERVAL per peer, and the next line counts the rest.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.replicator = StubReplicator()
        self.factory = PeerFactory(ACCEPTOR, KEY, self.replicator, self.clock, dialled=False)
        self.factory.ready = True

    def garbage_link(self) -> None:
        proto = self.factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        proto.dataReceived(b"garbage\n")
        proto.connectionLost(Failure(ConnectionDone()))

    def drops(self, events) -> list:
        return [formatEvent(e) for e in events if "dropping link" in formatEvent(e)]

    def test_drops_logged_once_per_interval(self):
        """
        Five drops within QUIET_INTERVAL log one line; every drop still
        reaches replication (which keeps the count for /status). The first
        drop after the interval logs again and says how many were held.
        """
        with capturedLogs() as events:
            for _ in range(5):
                self.garbage_link()
                self.clock.advance(0.1)
        self.assertEqual(len(self.drops(events)), 1)
        self.assertEqual(len(self.replicator.named("link_failed")), 5)
        self.clock.advance(QUIET_INTERVAL)
        with capturedLogs() as events:
            self.garbage_link()
        [line] = self.drops(events)
        self.assertIn("malformed message", line)
        self.assertIn("and 4 more drops in the last 11 s", line)

    def test_throttle_keys_apart(self):
        """
        Each key has its own interval: a drop from one peer does not hide
        another's.
        """
        throttle = LogThrottle(self.clock, 10.0)
        self.assertEqual(throttle.allow(("drop", "a")), (0, 0.0))
        self.assertIsNone(throttle.allow(("drop", "a")))
        self.assertEqual(throttle.allow(("drop", "b")), (0, 0.0))
        self.assertEqual(throttle.allow(("up", "a")), (0, 0.0))
        self.clock.advance(9.9)
        self.assertIsNone(throttle.allow(("drop", "a")))
        self.clock.advance(0.1)
        self.assertEqual(throttle.allow(("drop", "a")), (2, 10.0))
        self.assertEqual(_more((2, 10.0), "drop"), " (and 2 more drops in the last 10 s; /status lists the latest)")
        self.assertEqual(_more((0, 10.0), "drop"), "")


class PeerFactoryTests(SynchronousTestCase):
    """
    The factory behind the peer port and the dialers.
    """

    def test_accepts_only_when_ready(self):
        """
        An accepting factory refuses connections (builds no protocol) until
        the node is ready; a dialling one builds protocols at once.
        """
        accepting = PeerFactory(ACCEPTOR, KEY, StubReplicator(), Clock(), dialled=False)
        self.assertIsNone(accepting.buildProtocol(None))
        accepting.ready = True
        self.assertFalse(accepting.buildProtocol(None).dialled)
        dialling = PeerFactory(DIALLER, KEY, StubReplicator(), Clock(), dialled=True)
        self.assertTrue(dialling.buildProtocol(None).dialled)


class InMemoryLinkTests(SynchronousTestCase):
    """
    Two PeerProtocols, one dialling and one accepting, joined in memory with
    twisted.test.iosim.
    """

    def join(self, dialler_id=DIALLER, acceptor_id=ACCEPTOR, dialler_key=KEY, acceptor_key=KEY):
        self.clock = Clock()
        self.dialler_replicator = StubReplicator()
        self.acceptor_replicator = StubReplicator()
        self.dialler = PeerFactory(dialler_id, dialler_key, self.dialler_replicator, self.clock, True).buildProtocol(None)
        accepting = PeerFactory(acceptor_id, acceptor_key, self.acceptor_replicator, self.clock, False)
        accepting.ready = True
        self.acceptor = accepting.buildProtocol(None)
        self.pump = connect(
            self.acceptor,
            FakeTransport(self.acceptor, isServer=True),
            self.dialler,
            FakeTransport(self.dialler, isServer=False),
            clock=self.clock,
        )

    def test_authenticate(self):
        """
        Two nodes with the same key authenticate, and each tells its
        replication link_up with a link naming the other node.
        """
        self.join()
        self.assertTrue(self.dialler.authenticated)
        self.assertTrue(self.acceptor.authenticated)
        self.assertEqual(self.dialler_replicator.calls, [("link_up", self.dialler)])
        self.assertEqual(self.acceptor_replicator.calls, [("link_up", self.acceptor)])
        self.assertEqual(self.dialler.peer_id, ACCEPTOR)
        self.assertEqual(self.acceptor.peer_id, DIALLER)

    def test_keep_alive(self):
        """
        Two idle linked nodes keep each other alive with PING and PONG far
        beyond the idle timeout.
        """
        self.join()
        for _ in range(int(3 * IDLE_TIMEOUT / PING_INTERVAL)):
            self.clock.advance(PING_INTERVAL)
            self.pump.flush(advanceClock=False)
        self.assertTrue(self.dialler.authenticated)
        self.assertFalse(self.dialler.transport.disconnecting)
        self.assertFalse(self.acceptor.transport.disconnecting)
        self.assertEqual(self.dialler_replicator.named("link_down"), [])

    def test_different_keys(self):
        """
        Nodes with different keys never authenticate: the acceptor drops the
        link with 'cluster keys differ', the dialler sees it close, neither
        tells its replication link_up.
        """
        self.join(acceptor_key=OTHER_KEY)
        self.assertFalse(self.dialler.authenticated)
        self.assertFalse(self.acceptor.authenticated)
        [(_, link, reason)] = self.acceptor_replicator.named("link_failed")
        self.assertIn("cluster keys differ", reason)
        self.assertEqual(self.dialler_replicator.named("link_up"), [])
        self.assertEqual(self.acceptor_replicator.named("link_up"), [])
        self.assertTrue(self.dialler.transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_itself(self):
        """
        A node that dials its own address is told so: the dialling side
        knows the link was itself.
        """
        self.join(acceptor_id=DIALLER)
        self.assertTrue(self.dialler.itself)
        self.assertTrue(self.acceptor.itself)
        self.assertFalse(self.dialler.authenticated)
