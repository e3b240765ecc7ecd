"""
Tests for the peer handshake (p2pstore.session) on its own, and for the peer
protocol (p2pstore.peer) over a StringTransport, a task.Clock and, for two
protocols joined in memory, twisted.test.iosim.
"""

from __future__ import annotations

from typing import Callable, Optional

from attrs import define, field
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.peer import IDLE_TIMEOUT, MAX_LINE, PING_INTERVAL, PeerFactory
from p2pstore.session import HANDSHAKE_TIMEOUT, Handshake, HandshakeFailed, proof
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
    decode,
    encode,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
DIALLER = "d" * 32
ACCEPTOR = "a" * 32
STRANGER = "5" * 32
ORIGIN = "0123456789abcdef0123456789abcdef"


def nonces(*values: bytes) -> Callable[[int], bytes]:
    """
    A random source that hands out the given nonces, in turn.
    """
    queue = list(values)

    def random(size: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == size
        return value

    return random


def nonce(byte: int) -> bytes:
    return bytes([byte]) * NONCE_BYTES


@define
class Side:
    """
    One end of an in-memory handshake: the machine, what it sent, and how it
    failed.
    """

    name: str
    handshake: Optional[Handshake] = None
    outbox: list = field(factory=list)
    failure: Optional[HandshakeFailed] = None
    authenticated: bool = False


@define
class Pair:
    """
    A dialler's and an acceptor's Handshake joined by in-memory queues, with
    a transcript of who sent what, in order.
    """

    dialler: Side
    acceptor: Side
    transcript: list = field(factory=list)

    @classmethod
    def build(
        cls,
        dialler_key=KEY,
        acceptor_key=KEY,
        dialler_id=DIALLER,
        acceptor_id=ACCEPTOR,
        dialler_random=None,
        acceptor_random=None,
    ) -> "Pair":
        pair = cls(Side("dialler"), Side("acceptor"))
        pair.dialler.handshake = Handshake(
            dialler_id, dialler_key, True, pair._sender(pair.dialler), random=dialler_random or nonces(nonce(1))
        )
        pair.acceptor.handshake = Handshake(
            acceptor_id, acceptor_key, False, pair._sender(pair.acceptor), random=acceptor_random or nonces(nonce(2))
        )
        return pair

    def _sender(self, side: Side):
        def send(message):
            self.transcript.append((side.name, message))
            side.outbox.append(message)

        return send

    def start(self) -> None:
        self.dialler.handshake.start()
        self.acceptor.handshake.start()

    def deliver(self, to: Side, message) -> None:
        try:
            if to.handshake.received(message):
                to.authenticated = True
        except HandshakeFailed as e:
            to.failure = e

    def run(self) -> None:
        """
        Start both sides and deliver messages, one at a time from each side
        in turn, until both are quiet or one has failed (and so hung up).
        """
        self.start()
        while self.dialler.outbox or self.acceptor.outbox:
            for sender, receiver in [(self.dialler, self.acceptor), (self.acceptor, self.dialler)]:
                if sender.outbox:
                    self.deliver(receiver, sender.outbox.pop(0))
                if self.dialler.failure or self.acceptor.failure:
                    return

    def sent_by(self, name: str) -> list:
        return [message for who, message in self.transcript if who == name]


class HandshakeTests(SynchronousTestCase):
    """
    The handshake state machine on its own, two of them talking to each
    other.
    """

    def test_same_key_authenticates_both_ways(self):
        """
        A dialler and an acceptor with the same key both end authenticated,
        each knowing the other's node id.
        """
        pair = Pair.build()
        pair.run()
        self.assertIsNone(pair.dialler.failure)
        self.assertIsNone(pair.acceptor.failure)
        self.assertTrue(pair.dialler.authenticated)
        self.assertTrue(pair.acceptor.authenticated)
        self.assertEqual(pair.dialler.handshake.peer_id, ACCEPTOR)
        self.assertEqual(pair.acceptor.handshake.peer_id, DIALLER)
        self.assertEqual(pair.dialler.handshake.state, "done")
        self.assertEqual(pair.acceptor.handshake.state, "done")

    def test_message_order(self):
        """
        Both sides send HELLO first, at once; the dialler proves the key
        first, and the acceptor proves it only after checking that proof.
        """
        pair = Pair.build()
        pair.start()
        self.assertEqual(pair.sent_by("dialler"), [Hello(PROTOCOL_VERSION, DIALLER, nonce(1))])
        self.assertEqual(pair.sent_by("acceptor"), [Hello(PROTOCOL_VERSION, ACCEPTOR, nonce(2))])

        # The acceptor learns who dialled, and waits for a proof.
        pair.deliver(pair.acceptor, pair.dialler.outbox.pop(0))
        self.assertEqual(len(pair.sent_by("acceptor")), 1)
        # The dialler proves the key as soon as it has the acceptor's nonce.
        pair.deliver(pair.dialler, pair.acceptor.outbox.pop(0))
        self.assertEqual(
            pair.sent_by("dialler")[1:], [Auth(proof(KEY, DIALLER, ACCEPTOR, nonce(1), nonce(2)))]
        )
        self.assertFalse(pair.dialler.authenticated)
        # Only then does the acceptor prove it, and it is done.
        pair.deliver(pair.acceptor, pair.dialler.outbox.pop(0))
        self.assertTrue(pair.acceptor.authenticated)
        self.assertEqual(
            pair.sent_by("acceptor")[1:], [Auth(proof(KEY, ACCEPTOR, DIALLER, nonce(2), nonce(1)))]
        )
        pair.deliver(pair.dialler, pair.acceptor.outbox.pop(0))
        self.assertTrue(pair.dialler.authenticated)
        self.assertEqual([who for who, _ in pair.transcript], ["dialler", "acceptor", "dialler", "acceptor"])

    def test_wrong_proof_gets_nothing_but_hello(self):
        """
        An acceptor given a wrong proof fails, having sent nothing but its
        HELLO.
        """
        pair = Pair.build()
        pair.start()
        pair.deliver(pair.acceptor, pair.dialler.outbox.pop(0))
        pair.deliver(pair.acceptor, Auth(b"\x00" * 32))
        self.assertIsInstance(pair.acceptor.failure, HandshakeFailed)
        self.assertIn("cluster keys differ", str(pair.acceptor.failure))
        self.assertEqual(pair.sent_by("acceptor"), [Hello(PROTOCOL_VERSION, ACCEPTOR, nonce(2))])
        self.assertEqual(pair.acceptor.handshake.state, "failed")

    def test_different_keys(self):
        """
        Sides with different cluster keys: the acceptor fails with 'cluster
        keys differ' and never sends an AUTH, so the dialler learns nothing
        derived from the acceptor's key.
        """
        pair = Pair.build(acceptor_key=OTHER_KEY)
        pair.run()
        self.assertIsInstance(pair.acceptor.failure, HandshakeFailed)
        self.assertIn("cluster keys differ", str(pair.acceptor.failure))
        self.assertFalse(pair.acceptor.failure.itself)
        self.assertFalse(pair.acceptor.authenticated)
        self.assertFalse(pair.dialler.authenticated)
        self.assertEqual([type(m) for m in pair.sent_by("acceptor")], [Hello])

    def test_itself(self):
        """
        A peer with this node's own id fails the handshake with itself=True,
        on either side, before any proof is sent.
        """
        pair = Pair.build(acceptor_id=DIALLER)
        pair.start()
        pair.deliver(pair.dialler, pair.acceptor.outbox.pop(0))
        pair.deliver(pair.acceptor, pair.dialler.outbox.pop(0))
        for side in [pair.dialler, pair.acceptor]:
            self.assertIsInstance(side.failure, HandshakeFailed)
            self.assertTrue(side.failure.itself)
            self.assertIn("itself", str(side.failure))
        self.assertEqual([type(m) for _, m in pair.transcript], [Hello, Hello])

    def test_first_message_must_be_hello(self):
        """
        Any message other than HELLO first fails the handshake, on either
        side, without sending anything more.
        """
        for dialled in [True, False]:
            for message in [
                Auth(b"\x00" * 32),
                Have({}),
                Ack(ORIGIN, ORIGIN, 1),
                Ping(),
                Pong(),
            ]:
                sent = []
                handshake = Handshake(ACCEPTOR, KEY, dialled, sent.append)
                handshake.start()
                with self.assertRaises(HandshakeFailed) as caught:
                    handshake.received(message)
                self.assertIn("before authenticating", str(caught.exception))
                self.assertFalse(caught.exception.itself)
                self.assertEqual([type(m) for m in sent], [Hello])

    def test_second_message_must_be_auth(self):
        """
        After HELLO, anything but AUTH (a second HELLO included) fails.
        """
        for message in [Hello(PROTOCOL_VERSION, DIALLER, nonce(3)), Ping(), Have({})]:
            sent = []
            handshake = Handshake(ACCEPTOR, KEY, False, sent.append)
            handshake.start()
            handshake.received(Hello(PROTOCOL_VERSION, DIALLER, nonce(1)))
            self.assertRaises(HandshakeFailed, handshake.received, message)
            self.assertEqual([type(m) for m in sent], [Hello])

    def test_wrong_version(self):
        """
        A HELLO of another protocol version fails, naming both versions.
        """
        for version in [0, PROTOCOL_VERSION + 1, -1]:
            handshake = Handshake(ACCEPTOR, KEY, False, lambda m: None)
            handshake.start()
            with self.assertRaises(HandshakeFailed) as caught:
                handshake.received(Hello(version, DIALLER, nonce(1)))
            self.assertIn(f"version {version}", str(caught.exception))
            self.assertFalse(caught.exception.itself)

    def test_replayed_auth(self):
        """
        An AUTH recorded from an earlier session does not authenticate a new
        one, since the acceptor's nonce is fresh; the acceptor sends no AUTH.
        """
        earlier = Pair.build()
        earlier.run()
        self.assertTrue(earlier.acceptor.authenticated)
        recorded_hello, recorded_auth = earlier.sent_by("dialler")

        pair = Pair.build(acceptor_random=nonces(nonce(7)))
        pair.acceptor.handshake.start()
        pair.deliver(pair.acceptor, recorded_hello)
        pair.deliver(pair.acceptor, recorded_auth)
        self.assertIsInstance(pair.acceptor.failure, HandshakeFailed)
        self.assertIn("cluster keys differ", str(pair.acceptor.failure))
        self.assertEqual([type(m) for m in pair.sent_by("acceptor")], [Hello])

    def test_reflected_proof_to_dialler(self):
        """
        A stranger that accepts a dial and sends the dialler's own proof back
        as its AUTH does not authenticate.
        """
        pair = Pair.build(acceptor_id=STRANGER)
        pair.start()
        pair.deliver(pair.dialler, pair.acceptor.outbox.pop(0))
        dialler_auth = pair.dialler.outbox[-1]
        pair.deliver(pair.dialler, dialler_auth)
        self.assertIsInstance(pair.dialler.failure, HandshakeFailed)
        self.assertFalse(pair.dialler.authenticated)

    def test_reflected_proof_to_acceptor(self):
        """
        A stranger that makes a node prove the key as dialler over nonces the
        stranger arranged (the node's nonce from a second connection the
        stranger dialled, and its own nonce from that second connection)
        cannot use that proof on the second connection: the proof names
        prover and verifier in order.
        """
        sent_dialling = []
        node_dials = Handshake(ACCEPTOR, KEY, True, sent_dialling.append, random=nonces(nonce(1)))
        sent_accepting = []
        node_accepts = Handshake(ACCEPTOR, KEY, False, sent_accepting.append, random=nonces(nonce(2)))

        # The stranger dials the node and reads its nonce...
        node_accepts.start()
        accepting_nonce = sent_accepting[0].nonce
        # ...then, dialled by the node, answers with that nonce as its own.
        node_dials.start()
        dialling_nonce = sent_dialling[0].nonce
        node_dials.received(Hello(PROTOCOL_VERSION, STRANGER, accepting_nonce))
        reflected = sent_dialling[-1]
        self.assertIsInstance(reflected, Auth)

        # On the connection it dialled, it claims the node's dialling nonce.
        node_accepts.received(Hello(PROTOCOL_VERSION, STRANGER, dialling_nonce))
        with self.assertRaises(HandshakeFailed) as caught:
            node_accepts.received(reflected)
        self.assertIn("cluster keys differ", str(caught.exception))
        self.assertEqual([type(m) for m in sent_accepting], [Hello])

    def test_nothing_after_failure(self):
        """
        A failed handshake stays failed: a later message fails again rather
        than authenticating.
        """
        pair = Pair.build(acceptor_key=OTHER_KEY)
        pair.run()
        self.assertRaises(
            HandshakeFailed,
            pair.acceptor.handshake.received,
            Auth(proof(OTHER_KEY, DIALLER, ACCEPTOR, nonce(1), nonce(2))),
        )

    def test_fresh_nonces(self):
        """
        By default every handshake draws its own random nonce.
        """
        sent = []
        for _ in range(2):
            Handshake(ACCEPTOR, KEY, False, sent.append).start()
        self.assertNotEqual(sent[0].nonce, sent[1].nonce)
        self.assertEqual(len(sent[0].nonce), NONCE_BYTES)


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

    def tell(self, message) -> None:
        self.proto.dataReceived(encode(message) + b"\n")

    def read(self) -> list:
        """
        The messages the protocol wrote since the last read.
        """
        data = self.transport.value()
        self.transport.clear()
        assert data == b"" or data.endswith(b"\n")
        return [decode(line) for line in data.split(b"\n")[:-1]]

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
        After authentication a PING is answered with a PONG, and neither is
        handed to replication.
        """
        self.authenticate()
        self.tell(Ping())
        self.assertEqual(self.read(), [Pong()])
        self.tell(Pong())
        self.assertEqual(self.read(), [])
        self.assertEqual(self.replicator.named("received"), [])

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
        After authentication every message but PING and PONG goes to
        replication.
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
        self.proto.dataReceived(b"nonsense\n" + encode(Have({})) + b"\n")
        self.tell(Have({}))
        self.assertDropped("malformed")
        self.assertEqual(self.replicator.named("received"), [])

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
