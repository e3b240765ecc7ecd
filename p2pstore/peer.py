"""
The peer protocol: a line protocol that only translates.

Lines become messages (L{p2pstore.wire}); the handshake decides who the
peer is (L{p2pstore.handshake}); after it every line is sealed with a
sequence number and a MAC (L{p2pstore.sealing}) and every message goes to
the L{Replicator}. A malformed, unknown, out-of-order or badly sealed line
drops the link with a logged reason; the dialler retries it.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from .handshake import HANDSHAKE_TIMEOUT, Handshake, HandshakeFailed
from .interfaces import ILink
from .sealing import Opener, SealBroken, Sealer
from .wire import Auth, BadMessage, Hello, Ping, Pong, Records, decode, encode

# A RECORDS batch of 1000 records of the longest fields fits with room to
# spare; anything longer is not a message this protocol ever sends.
MAX_LINE = 4 * 1024 * 1024

# A peer's link drops (and the authentications between them) are logged at
# most once per QUIET_INTERVAL; the rest are counted into the next line.
# /status keeps every drop by reason.
QUIET_INTERVAL = 10.0

# Idle links are probed; a link silent for longer than IDLE_TIMEOUT is dead.
PING_INTERVAL = 10.0
IDLE_TIMEOUT = 35.0


@implementer(ILink)
class PeerProtocol(LineOnlyReceiver):
    """
    One connection to a peer node, dialled or accepted.

    @ivar dial_address: the --peers address its L{Dialer} dialled, set by
        that dialer with C{on_close}, its hook for when the link closes;
        both stay C{None} on an accepted link.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(self, factory: "PeerFactory", dialled: bool):
        self.factory = factory
        self.dialled = dialled
        self.handshake: Optional[Handshake] = None
        self.peer_id: Optional[str] = None
        self.authenticated = False
        self.close_reason: Optional[str] = None
        self.itself = False
        self.connected_at = 0.0
        self.authenticated_at: Optional[float] = None
        self.on_close: Optional[Callable] = None
        self.dial_address: Optional[str] = None
        self._timer = None
        self._last_heard = 0.0
        # Set once the handshake is done: every later line is sealed.
        self._sealer: Optional[Sealer] = None
        self._opener: Optional[Opener] = None

    @property
    def address(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def connectionMade(self) -> None:
        factory = self.factory
        if hasattr(self.transport, "setTcpNoDelay"):
            # Live records go out at once, not held by Nagle's algorithm
            # until the peer acknowledges the previous segment.
            self.transport.setTcpNoDelay(True)
        self._last_heard = self.connected_at = factory.clock.seconds()
        self.handshake = Handshake(factory.node_id, factory.key, self.dialled, self.send)
        self._timer = factory.clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        self.handshake.start()

    @property
    def carried(self) -> int:
        """
        How many sealed lines the peer's side of this link delivered intact.
        """
        return self._opener.received if self._opener is not None else 0

    def _handshake_timeout(self) -> None:
        self._timer = None
        self.drop("did not authenticate within %d s" % HANDSHAKE_TIMEOUT)

    def send(self, message) -> None:
        line = encode(message)
        if self._sealer is not None:
            line = self._sealer.seal(line)
        self.sendLine(line)

    def drop(self, reason: str) -> None:
        """
        Close the link, logging and counting why.
        """
        if self.close_reason is None:
            self.close_reason = reason
            who = self.peer_id or "unidentified peer"
            more = self.factory.throttle.allow(("drop", self._who_key()))
            if more is not None:
                self.log.warn(
                    "dropping link to {who} at {address}: {reason}{more}",
                    who=who,
                    address=self.address,
                    reason=reason,
                    more=_more(more, "drop"),
                )
            self.factory.replicator.link_failed(self, reason)
        self.transport.loseConnection()

    def close(self) -> None:
        """
        Close the link for a stop.
        """
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self.close_reason is not None:
            return
        self._last_heard = self.factory.clock.seconds()
        if self._opener is not None:
            try:
                line = self._opener.open(line)
            except SealBroken as e:
                self.drop(str(e))
                if e.message is not None:
                    self._salvage(e.message)
                return
        try:
            message = decode(line)
        except BadMessage as e:
            self.drop(f"malformed message: {e}")
            return
        if not self.authenticated or isinstance(message, (Hello, Auth)):
            # The handshake's messages, all of them its to judge: after it
            # is done, another HELLO or AUTH fails it.
            try:
                done = self.handshake.received(message)
            except HandshakeFailed as e:
                self.peer_id = self.handshake.peer_id
                self.itself = e.itself
                self.drop(str(e))
                return
            self.peer_id = self.handshake.peer_id
            if done:
                sending, receiving = self.handshake.link_keys()
                self._sealer, self._opener = Sealer(sending), Opener(receiving)
                self._authenticated()
            return
        if isinstance(message, Ping):
            self.send(Pong())
        # Keepalives go to replication too: an idle link carries nothing
        # else, and every message from the peer moves its last_seen.
        try:
            self.factory.replicator.received(self, message)
        except BadMessage as e:
            self.drop(str(e))

    def _salvage(self, line: bytes) -> None:
        """
        A line that failed its MAC may still carry records that pass their
        own HMACs (on a noisy link most of a batch arrives intact): hand a
        RECORDS message to replication, which stores the records before
        the first that fails its check. Any other message is dropped
        unread, since nothing else in it can be checked.
        """
        try:
            message = decode(line)
        except BadMessage:
            return
        if isinstance(message, Records):
            self.factory.replicator.salvage(self, message)

    def _authenticated(self) -> None:
        # The handshake timer would otherwise drop the link 10 s after it
        # connected, authenticated or not.
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.authenticated = True
        self.authenticated_at = self.factory.clock.seconds()
        more = self.factory.throttle.allow(("up", self._who_key()))
        if more is not None:
            self.log.info(
                "link to {peer} at {address} authenticated{more}",
                peer=self.peer_id,
                address=self.address,
                more=_more(more, "authenticated link"),
            )
        self._schedule_ping()
        self.factory.replicator.link_up(self)

    def _schedule_ping(self) -> None:
        self._timer = self.factory.clock.callLater(PING_INTERVAL, self._ping)

    def _ping(self) -> None:
        silent = self.factory.clock.seconds() - self._last_heard
        if silent > IDLE_TIMEOUT:
            self._timer = None
            self.drop("silent for %d s" % silent)
            return
        self.send(Ping())
        self._schedule_ping()

    def _who_key(self) -> str:
        # Until the handshake proves the peer's id, its host stands for it:
        # a claimed id (or a damaged one) would start a key of its own.
        if self.authenticated and self.peer_id:
            return self.peer_id
        return getattr(self.transport.getPeer(), "host", "?")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.drop(f"sent a line longer than {self.MAX_LENGTH} bytes")

    def connectionLost(self, reason) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.authenticated:
            self.factory.replicator.link_down(self)
        elif self.close_reason is None and self.handshake is not None and self.handshake.awaiting_proof:
            # The other side refused our proof: it does not say why, but a
            # different cluster key is by far the likeliest.
            self.close_reason = "closed by the peer during the handshake: does it have the same cluster key?"
            more = self.factory.throttle.allow(("drop", self._who_key()))
            if more is not None:
                self.log.warn(
                    "link to {who} at {address} {reason}{more}",
                    who=self.peer_id or "unidentified peer",
                    address=self.address,
                    reason=self.close_reason,
                    more=_more(more, "drop"),
                )
            self.factory.replicator.link_failed(self, self.close_reason)
        if self.on_close is not None:
            self.on_close(self)


class LogThrottle:
    """
    Lets one log line per key through every C{interval} seconds, so that a
    link that drops many times a second (a noisy path, redialled at once)
    does not fill the log.
    """

    def __init__(self, clock, interval: float = QUIET_INTERVAL):
        self._clock = clock
        self._interval = interval
        self._logged: dict = {}
        self._held: dict = {}

    def allow(self, key) -> Optional[tuple]:
        """
        @return: C{None} to stay quiet; otherwise C{(count, seconds)}: how
            many lines were held back since the last one, over how long.
        """
        now = self._clock.seconds()
        if len(self._logged) > 1000:
            # Many hosts: forget the quiet ones rather than grow for ever.
            for stale in [k for k, t in self._logged.items() if now - t >= self._interval]:
                del self._logged[stale]
                self._held.pop(stale, None)
        last = self._logged.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._logged[key] = now
        return (self._held.pop(key, 0), 0.0 if last is None else now - last)


def _more(held: tuple, what: str) -> str:
    count, seconds = held
    if not count:
        return ""
    plural = "" if count == 1 else "s"
    return f" (and {count} more {what}{plural} in the last {seconds:.0f} s; /status lists the latest)"


class PeerFactory(Factory):
    """
    Builds peer protocols, dialled or accepted, for one node.
    """

    noisy = False

    def __init__(self, node_id: str, key: bytes, replicator, clock, dialled: bool):
        self.node_id = node_id
        self.key = key
        self.replicator = replicator
        self.clock = clock
        self.dialled = dialled
        self.throttle = LogThrottle(clock)
        # Set once the node's store is open.
        self.ready = dialled

    def buildProtocol(self, addr) -> Optional[PeerProtocol]:
        if not self.ready:
            return None
        return PeerProtocol(self, self.dialled)
