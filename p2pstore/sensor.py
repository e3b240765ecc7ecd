"""
The sensor protocol: one reading per line in, one answer per line out.

It only frames lines, parses them with L{p2pstore.lines} and hands them to
the L{Ingestor}; answers (``OK <entry_index>`` or ``ERR <reason>``) go back
in the order of the lines, however many are in flight.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from .access import AUTH_TIMEOUT
from .ingest import Ingestor, Pending
from .interfaces import ISensor
from .lines import (
    MAX_PLAIN_LINE,
    BadLine,
    Rejected,
    error_answer,
    is_whole_unterminated,
    ok_answers,
    parse_ack_line,
    parse_line,
    parse_plain_lines,
    split_unterminated,
)

# How long a sensor that sends no line ends must be silent, with a whole
# reading buffered, for that reading to end there. The proof of concept's
# sensors send one reading every 2 s, each in one send(), so the next
# reading usually ends it first; this ends the last one before a silence.
UNTERMINATED_PAUSE = 0.5


def _cancel(call) -> None:
    # Cancel a delayed call if it is pending; None to forget it.
    if call is not None and call.active():
        call.cancel()


def _answer(pending: Pending) -> bytes:
    # The answer lines of an answered Pending.
    if pending.reply is not None:
        return pending.reply
    if pending.error is not None:
        return error_answer(pending.error, len(pending.readings) or 1)
    return ok_answers(pending.indexes)


@implementer(IPushProducer, IHalfCloseableProtocol, ISensor)
class SensorProtocol(Protocol):
    """
    One sensor connection.

    Not a LineReceiver: an over-long line must be skipped up to its newline
    and answered, and the connection must go on, where LineReceiver would
    drop the connection.

    It is also the producer of its own answers: when the sensor does not
    read them and they back up, the connection stops being read too, so no
    buffer grows without bound.

    Sensors of the proof of concept send readings with no line ends and
    read nothing. Until a connection has sent a line end (with
    ``unterminated`` on), a reading also ends right after a complete
    timestamp of their shape when what follows begins a new reading, or
    after L{UNTERMINATED_PAUSE} of silence once what is buffered is a whole
    reading, or at the end of the stream; and nothing is answered. The first
    line end makes the connection a line sensor for good: from then on only
    line ends end readings, and every line is answered.

    With ``access`` (L{p2pstore.access.SensorAccess}), a connection from
    elsewhere is closed at once; with tokens, its first line must be ``AUTH
    <token>``, answered ``OK auth <name>``, or ``ERR not authenticated`` and closed.

    With ``acks`` (L{p2pstore.lines.AckCopies}), readings are answered OK
    once that many nodes hold them; an ``ACK <k>`` line before the first
    reading asks for ``k`` instead.
    """

    sensor_index = 0
    sensor_name = None

    def __init__(
        self,
        ingestor: Ingestor,
        max_line: int,
        now: Callable[[], str],
        clock=None,
        unterminated: bool = True,
        access=None,
        acks=None,
    ):
        self._ingestor = ingestor
        self._access = access
        self._acks = acks
        # The nodes that must hold a reading before its OK; until the first
        # reading, an ACK line may change it.
        self.ack_copies = acks.default if acks is not None else 1
        self._ack_open = acks is not None
        # Reads the AUTH line, until the sensor has sent it.
        self._first_line = access.first_line(max_line) if access and access.asks_tokens else None
        self._auth_call = None
        self._max_line = max_line
        self._now = now
        self._clock = clock
        # Readings without line ends are taken until a line end is seen.
        self._framing = unterminated
        self._pause_call = None
        # Readings taken without line ends, answered with nothing.
        self.unterminated = False
        self._buffer = b""
        # The start of an over-long line whose end has not arrived yet.
        self._skipping: bytes | None = None
        self._answers: deque[Pending] = deque()
        self._pauses: set[str] = set()
        self._connected = False
        # The sensor has finished sending (e.g. `printf ... | nc`): close
        # once every line it sent is answered.
        self._finished = False
        # Set when the node stops: what arrives is no longer read as lines.
        self._closing = False
        self._closed: list[Deferred] = []

    def connectionMade(self) -> None:
        if self._access is not None and not self._access.allows(self.transport.getPeer()):
            self._closing = True
            self.transport.abortConnection()
            return
        self._connected = True
        if hasattr(self.transport, "setTcpNoDelay"):
            # Answers go out at once, not held by Nagle's algorithm until
            # the sensor acknowledges the previous ones.
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        if self._first_line is None:
            self._ingestor.connect(self)
        elif self._clock is not None:
            why = f"no AUTH line within {AUTH_TIMEOUT:g} s"
            self._auth_call = self._clock.callLater(AUTH_TIMEOUT, self._not_authenticated, why)

    def _authenticate(self, data: bytes) -> bytes:
        # Take the AUTH line from the start of the stream; return what follows.
        got = self._first_line.feed(data)
        if got is None:
            return b""
        name, why_not, rest = got
        if name is None:
            self._not_authenticated(why_not)
            return b""
        self._first_line = None
        self._auth_call = _cancel(self._auth_call)
        self.sensor_name = name
        # It has sent a line end: a line sensor, each line answered.
        self._framing = False
        self.transport.write(b"OK auth %s\n" % name.encode("ascii"))
        self._ingestor.connect(self)
        return rest

    def _not_authenticated(self, reason: str) -> None:
        self._auth_call = _cancel(self._auth_call)
        self._closing = True
        self._access.failed(self.transport.getPeer(), reason)
        self.transport.write(b"ERR not authenticated\n")
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self._first_line is not None and not self._closing:
            self._access.failed(self.transport.getPeer(), "it closed before an AUTH line")
        self._auth_call = _cancel(self._auth_call)
        self._cancel_pause()
        self._connected = False
        self._ingestor.disconnect(self)
        waiting, self._closed = self._closed, []
        for d in waiting:
            d.callback(None)

    def close(self, clock, timeout: float) -> Deferred:
        """
        Close for a stop, after every answer has been written: send the
        answers and a FIN, then read and discard until the sensor closes
        too, so its kernel is not sent a reset that would throw away answers
        it has not read yet. After ``timeout`` seconds, abort.

        @return: a Deferred that fires once the connection is closed.
        """
        if not self._connected:
            return succeed(None)
        d = Deferred()
        self._closed.append(d)
        self._closing = True
        self._pauses.clear()
        self.transport.resumeProducing()
        self.transport.loseWriteConnection()
        timer = clock.callLater(timeout, self.transport.abortConnection)

        def closed(result):
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(closed)

    def readConnectionLost(self) -> None:
        if self._first_line is not None and not self._closing:
            self._not_authenticated("it closed before an AUTH line")
        if self._closing:
            self.transport.loseConnection()
            return
        self._cancel_pause()
        if self._framing and is_whole_unterminated(self._buffer):
            # The end of a sensor that sends no line ends: its last reading.
            self._take_unterminated([self._buffer])
            self._buffer = b""
        if self._buffer or self._skipping is not None:
            # Possibly cut short by a crash: storing it could store a wrong
            # value ("Temperature,3" of "Temperature,39C").
            self._reject(self._skipping or self._buffer, "unterminated line")
            self._buffer, self._skipping = b"", None
        self._finished = True
        self.answers_ready()

    def writeConnectionLost(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._first_line is not None:
            data = self._authenticate(data)
            if not data:
                return
        if self._framing:
            if b"\n" not in data:
                self._unterminated_data(data)
                return
            # A line sensor for good.
            self._framing = False
            self.unterminated = False
            self._cancel_pause()
        data = self._buffer + data
        end = data.rfind(b"\n") + 1
        if end and self._skipping is None and self._max_line >= MAX_PLAIN_LINE:
            # The common chunk, all plain lines, parsed in one pass.
            readings = parse_plain_lines(data[:end], self._now)
            if readings is not None:
                self._buffer = data[end:]
                self._submit(readings)
                self._limit_buffer()
                return
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        # The readings of this chunk go to the ingestor together, up to the
        # first refused line.
        readings: list = []
        for line in lines:
            if self._skipping is not None:
                readings = self._submit(readings)
                self._reject(self._skipping, "line too long")
                self._skipping = None
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"ACK ") and b"," not in line and self._acks is not None:
                # Not a reading (one has a comma, as "ACK 2,5C" would be).
                readings = self._submit(readings)
                self._ack(line)
                continue
            if len(line) > self._max_line:
                readings = self._submit(readings)
                self._reject(line, "line too long")
                continue
            try:
                readings.append(parse_line(line, self._now))
            except BadLine as e:
                readings = self._submit(readings)
                self._reject(line, str(e))
        self._submit(readings)
        self._limit_buffer()

    def _unterminated_data(self, data: bytes) -> None:
        if self._skipping is not None:
            # Over-long, as a line sensor's first line may be: skipped up to
            # its line end as any line is (or refused at the end).
            return
        readings, self._buffer = split_unterminated(self._buffer + data)
        self._take_unterminated(readings)
        self._limit_buffer()
        self._cancel_pause()
        if self._buffer and self._clock is not None:
            self._pause_call = self._clock.callLater(UNTERMINATED_PAUSE, self._paused)

    def _paused(self) -> None:
        self._pause_call = None
        if is_whole_unterminated(self._buffer):
            self._take_unterminated([self._buffer])
            self._buffer = b""

    def _cancel_pause(self) -> None:
        self._pause_call = _cancel(self._pause_call)

    def _take_unterminated(self, found: list[bytes]) -> None:
        readings: list = []
        for raw in found:
            try:
                readings.append(parse_line(raw, self._now))
            except BadLine as e:
                readings = self._submit(readings)
                self._reject(raw, str(e))
        if readings:
            self.unterminated = True
        self._submit(readings)

    def _limit_buffer(self) -> None:
        # One byte more than the limit for a "\r" that may precede "\n".
        if len(self._buffer) > self._max_line + 1:
            if self._skipping is None:
                self._skipping = self._buffer
            self._buffer = b""

    def _submit(self, readings: list) -> list:
        """
        Queue these readings for storing, if any; return a list for the next.
        """
        if not readings:
            return readings
        self._ack_open = False
        pending = Pending(self, readings, silent=self._framing, copies=self.ack_copies)
        self._answers.append(pending)
        self._ingestor.submit(pending)
        return []

    def _ack(self, line: bytes) -> None:
        # ACK <k>: the copies this connection's readings need.
        if not self._ack_open:
            self._reject(line, "ACK <k> comes before the first reading")
            return
        copies, answer = parse_ack_line(line, self._acks.cluster_size())
        if copies is not None:
            self.ack_copies = copies
        self._answers.append(Pending(self, reply=answer))
        self.answers_ready()

    def _reject(self, raw: bytes, reason: str) -> None:
        self._answers.append(Pending(self, error=reason, silent=self._framing))
        self._ingestor.reject(
            Rejected(
                received_at=self._now(),
                sensor_index=self.sensor_index,
                reason=reason,
                raw=raw[: self._max_line],
            )
        )
        self.answers_ready()

    def answers_ready(self) -> None:
        """
        Send every answer that is ready and has no unanswered line before it.
        """
        answers = self._answers
        ready = []
        while answers and answers[0].answered:
            pending = answers.popleft()
            if not pending.silent:
                ready.append(_answer(pending))
        if ready and self._connected:
            self.transport.write(b"".join(ready))
        if self._finished and not answers:
            self.transport.loseConnection()

    def pause(self, reason: str) -> None:
        """
        Stop reading this connection until every reason to pause is gone.
        """
        if not self._pauses and self._connected:
            self.transport.pauseProducing()
        self._pauses.add(reason)

    def resume(self, reason: str) -> None:
        self._pauses.discard(reason)
        if not self._pauses and self._connected:
            self.transport.resumeProducing()

    # IPushProducer, called by our transport about our answers.
    def pauseProducing(self) -> None:
        self.pause("answers")

    def resumeProducing(self) -> None:
        self.resume("answers")

    def stopProducing(self) -> None:
        pass


class SensorFactory(Factory):
    """
    Builds a L{SensorProtocol} per sensor connection.
    """

    noisy = False

    def __init__(
        self,
        ingestor: Ingestor,
        max_line: int,
        now: Callable[[], str],
        clock=None,
        unterminated: bool = True,
        access=None,
        acks=None,
    ):
        self.ingestor = ingestor
        self.max_line = max_line
        self.now = now
        self.clock = clock
        # Take readings from sensors that send no line ends.
        self.unterminated = unterminated
        # Which connections are let in (p2pstore.access.SensorAccess), or None: all.
        self.access = access
        # The copies readings need before their OK (p2pstore.lines.AckCopies).
        self.acks = acks

    def buildProtocol(self, addr) -> SensorProtocol:
        return SensorProtocol(
            self.ingestor, self.max_line, self.now, self.clock, self.unterminated, self.access,
            self.acks,
        )
