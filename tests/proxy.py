"""
An on-path TCP proxy for tests: it stands between a node that dials and the
node it dials, on 127.0.0.1, and can rewrite what passes, as an attacker or
a bad link on the path would.

Each connection accepted is forwarded to the target. What passes in each
direction goes through the proxy's C{tamper}, a L{Tamper} given the bytes
(raw) or, for a L{LineTamper}, one line at a time; setting C{proxy.tamper}
to C{None} makes the proxy honest again for every connection, including
those open.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

# Directions, named by the side that sent the bytes.
FROM_DIALLER = "from-dialler"
FROM_ACCEPTOR = "from-acceptor"


class Tamper:
    """
    Rewrites the bytes of one direction of one connection; this one passes
    them unchanged. One instance per connection and direction, made by the
    proxy's C{make_tamper(direction)}.
    """

    def data(self, data: bytes) -> bytes:
        return data


class LineTamper(Tamper):
    """
    Rewrites whole lines: C{line(number, line)} (the line without its
    newline, numbered from 0 in this direction) returns the lines to send in
    its place: C{[]} drops it, C{[line, line]} replays it.
    """

    def __init__(self, line: Callable[[int, bytes], list]):
        self._line = line
        self._buffer = b""
        self._count = 0

    def data(self, data: bytes) -> bytes:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        out = []
        for line in lines:
            out.extend(self._line(self._count, line))
            self._count += 1
        return b"".join(piece + b"\n" for piece in out)


class _Side(Protocol):
    def __init__(self, connection: "_Connection", direction: str):
        self.connection = connection
        self.direction = direction

    def dataReceived(self, data: bytes) -> None:
        self.connection.forward(self.direction, data)

    def connectionLost(self, reason) -> None:
        self.connection.lost(self)


class _Connection:
    """
    One dialler's connection and the proxy's connection to the target.
    """

    def __init__(self, proxy: "Proxy"):
        self.proxy = proxy
        self.dialler: Optional[_Side] = None
        self.acceptor: Optional[_Side] = None
        self.pending: list[bytes] = []
        self.tampers = {}
        self.closed = False

    def forward(self, direction: str, data: bytes) -> None:
        make = self.proxy.make_tamper
        if make is not None:
            if direction not in self.tampers:
                self.tampers[direction] = make(direction)
            data = self.tampers[direction].data(data)
        elif direction in self.tampers:
            # Honest again: flush what a line tamper held back.
            data = getattr(self.tampers.pop(direction), "_buffer", b"") + data
        if not data:
            return
        if direction == FROM_DIALLER:
            if self.acceptor is None:
                self.pending.append(data)
            else:
                self.acceptor.transport.write(data)
        elif self.dialler is not None:
            self.dialler.transport.write(data)

    def lost(self, side: _Side) -> None:
        for other in (self.dialler, self.acceptor):
            if other is not None and other is not side:
                other.transport.loseConnection()
        if not self.closed:
            self.closed = True
            self.proxy.closed += 1


class Proxy:
    """
    Listens on 127.0.0.1 and forwards each connection to C{target_port}.

    @ivar make_tamper: C{None} (honest), or a callable taking a direction
        and returning the L{Tamper} for it on a new connection.
    @ivar accepted: connections accepted so far.
    @ivar closed: connections closed so far (by either side).
    """

    def __init__(self, target_port: int, reactor=default_reactor):
        self.target_port = target_port
        self.reactor = reactor
        self.make_tamper: Optional[Callable[[str], Tamper]] = None
        self.accepted = 0
        self.closed = 0
        self.port = None
        self._listening = None
        self._connections: list[_Connection] = []

    @property
    def tamper(self):
        return self.make_tamper

    @tamper.setter
    def tamper(self, make: Optional[Callable[[str], Tamper]]) -> None:
        self.make_tamper = make

    @inlineCallbacks
    def start(self):
        """
        Listen; fires with the port number to dial.
        """
        proxy = self

        class Accepting(Factory):
            def buildProtocol(self, addr):
                proxy.accepted += 1
                connection = _Connection(proxy)
                proxy._connections.append(connection)
                side = _Side(connection, FROM_DIALLER)
                connection.dialler = side
                proxy._connect(connection)
                return side

        self._listening = yield TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1").listen(
            Accepting()
        )
        self.port = self._listening.getHost().port
        return self.port

    def _connect(self, connection: _Connection) -> None:
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.target_port, timeout=5)

        class Target(Factory):
            def buildProtocol(self, addr):
                return _Side(connection, FROM_ACCEPTOR)

        def connected(side):
            connection.acceptor = side
            if connection.closed:
                side.transport.loseConnection()
                return
            for data in connection.pending:
                side.transport.write(data)
            connection.pending = []

        def failed(failure):
            if connection.dialler is not None:
                connection.dialler.transport.loseConnection()

        endpoint.connect(Target()).addCallbacks(connected, failed)

    def drop_all(self) -> None:
        """
        Close every open connection, as a failing link would.
        """
        for connection in self._connections:
            for side in (connection.dialler, connection.acceptor):
                if side is not None:
                    side.transport.abortConnection()
        self._connections = [c for c in self._connections if not c.closed]

    def stop(self) -> Deferred:
        """
        Stop listening and close every connection.
        """
        self.drop_all()
        if self._listening is None:
            return succeed(None)
        return self._listening.stopListening()
