"""
The handshake of one peer connection: mutual challenge-response on the
cluster key.

Both sides send ``HELLO`` with their node id and a fresh nonce. The side
that dialled proves the key first; the side that accepted checks that proof
before it proves anything itself, so a stranger that dials a node never
receives anything derived from the key. A proof is
``HMAC-SHA256(key, tag | prover id | verifier id | prover nonce | verifier
nonce)``: bound to both nonces and both ids, it can be neither replayed nor
reflected.

Once both proofs are checked the handshake hands the protocol a key for
each direction (L{link_keys}); every later line is sealed with them
(L{p2pstore.sealing}).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Callable, Optional

from twisted.logger import Logger

from .sealing import link_key
from .wire import PROTOCOL_VERSION, NONCE_BYTES, Auth, Hello

_TAG = b"p2pstore-peer-auth-v1"

HANDSHAKE_TIMEOUT = 10.0


def proof(key: bytes, prover: str, verifier: str, prover_nonce: bytes, verifier_nonce: bytes) -> bytes:
    """
    The proof that ``prover`` holds ``key``, for this pair of nonces.
    """
    return hmac.new(
        key,
        _TAG + prover.encode("ascii") + verifier.encode("ascii") + prover_nonce + verifier_nonce,
        hashlib.sha256,
    ).digest()


class HandshakeFailed(Exception):
    """
    The peer did not authenticate; the message is the logged reason.

    @ivar itself: the peer is this very node, so dialling it again is
        pointless.
    """

    def __init__(self, reason: str, itself: bool = False):
        super().__init__(reason)
        self.itself = itself


class Handshake:
    """
    The handshake state of one connection, as a small explicit state machine.

    States:
      - ``hello``: waiting for the peer's HELLO.
      - ``auth``: waiting for the peer's AUTH (its proof).
      - ``done``: the peer proved the key; every later message is
        replication's.
      - ``failed``: the connection is being dropped.

    Outputs go through ``send(message)``; a failure raises
    L{HandshakeFailed}, and the protocol disconnects.
    """

    log = Logger()

    def __init__(
        self,
        node_id: str,
        key: bytes,
        dialled: bool,
        send: Callable,
        random: Callable[[int], bytes] = os.urandom,
    ):
        self.node_id = node_id
        self._key = key
        self.dialled = dialled
        self._send = send
        self._nonce = random(NONCE_BYTES)
        self.state = "hello"
        self.peer_id: Optional[str] = None
        self._peer_nonce: Optional[bytes] = None

    def start(self) -> None:
        self._send(Hello(PROTOCOL_VERSION, self.node_id, self._nonce))

    def _prove(self) -> None:
        self._send(Auth(proof(self._key, self.node_id, self.peer_id, self._nonce, self._peer_nonce)))

    def _fail(self, reason: str, itself: bool = False):
        self.state = "failed"
        raise HandshakeFailed(reason, itself)

    @property
    def awaiting_proof(self) -> bool:
        """
        The peer said HELLO and has not proved the key yet.
        """
        return self.state == "auth"

    def link_keys(self) -> tuple[bytes, bytes]:
        """
        @return: the keys that seal the lines this side sends and the lines
            it receives on this connection; only once the handshake is done.
        """
        assert self.state == "done", self.state
        return (
            link_key(self._key, self.node_id, self.peer_id, self._nonce, self._peer_nonce),
            link_key(self._key, self.peer_id, self.node_id, self._peer_nonce, self._nonce),
        )

    def received(self, message) -> bool:
        """
        Handle a handshake message.

        @return: True once the peer is authenticated.
        @raise HandshakeFailed: drop the connection, for the reason given.
        """
        if self.state == "hello":
            if not isinstance(message, Hello):
                self._fail(f"sent {type(message).__name__.upper()} before authenticating")
            if message.version != PROTOCOL_VERSION:
                self._fail(
                    f"speaks peer protocol version {message.version}, this node "
                    f"{PROTOCOL_VERSION}: run the same p2pstore version on both"
                )
            self.peer_id = message.node_id
            if message.node_id == self.node_id:
                self._fail("is this node itself (remove its own address from --peers)", itself=True)
            self._peer_nonce = message.nonce
            self.state = "auth"
            if self.dialled:
                self._prove()
            return False
        if self.state == "auth":
            if not isinstance(message, Auth):
                self._fail(f"sent {type(message).__name__.upper()} before authenticating")
            expected = proof(self._key, self.peer_id, self.node_id, self._peer_nonce, self._nonce)
            if not hmac.compare_digest(expected, message.proof):
                self._fail("failed authentication: cluster keys differ (or the link corrupts data)")
            if not self.dialled:
                self._prove()
            self.state = "done"
            return True
        self._fail(f"sent {type(message).__name__.upper()} after authenticating")
