"""
Tests for the peer handshake (p2pstore.handshake)
on its own: two Handshake machines joined by in-memory queues.
"""

from __future__ import annotations

from typing import Callable, Optional

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.handshake import Handshake, HandshakeFailed, proof
from p2pstore.wire import NONCE_BYTES, PROTOCOL_VERSION, Ack, Auth, Have, Hello, Ping, Pong

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

    def test_link_keys(self):
        """
        Both sides derive the same key for each direction, a different one
        for each direction, and different ones on a connection with other
        nonces.
        """
        pair = Pair.build()
        pair.run()
        dialler_sends, dialler_receives = pair.dialler.handshake.link_keys()
        acceptor_sends, acceptor_receives = pair.acceptor.handshake.link_keys()
        self.assertEqual(dialler_sends, acceptor_receives)
        self.assertEqual(dialler_receives, acceptor_sends)
        self.assertNotEqual(dialler_sends, dialler_receives)
        self.assertNotIn(KEY, (dialler_sends, dialler_receives))
        other = Pair.build(dialler_random=nonces(nonce(3)))
        other.run()
        self.assertNotEqual(other.dialler.handshake.link_keys()[0], dialler_sends)
        self.assertNotEqual(other.dialler.handshake.link_keys()[1], dialler_receives)

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
