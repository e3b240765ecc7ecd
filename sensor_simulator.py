#!/usr/bin/env python3
"""
Simulate one sensor: send readings to a p2pstore node, resending each until it is acknowledged.

Each reading goes out as ``<sensor_type>,<value>,<timestamp>,<reading_id>\\n``; the node answers
every line, in order, with ``OK <entry_index>`` once the reading is durably stored or
``ERR <reason>`` if it rejected the line. A reading is kept until its answer arrives, and whatever
is unanswered is resent in order after a reconnection; the node stores a reading_id only once, so
resending never duplicates a reading.
"""

from __future__ import annotations

import argparse
import difflib
import math
import random
import secrets
import sys
from collections import deque
from datetime import datetime
from typing import Callable, Iterable, Optional

from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, error, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

USAGE = """\
You must specify the type of sensor data to simulate.
Available options:
--temp
--pressure
--humidity"""

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

# Readings sent but not yet answered on one connection; the node answers in order, so this
# only bounds how much is resent after a drop and how far ahead of the node we run.
DEFAULT_WINDOW = 100
# Unacknowledged readings kept in memory; while the node is away no new readings are made past this.
DEFAULT_BACKLOG_LIMIT = 10000
# Reconnection delays grow from about half a second to about ten.
RETRY_INITIAL_DELAY = 0.5
RETRY_MAX_DELAY = 10.0


@frozen
class Sensor:
    """A kind of sensor: its command-line flag, its type name on the wire, how it makes a value."""

    flag: str
    sensor_type: str
    make_value: Callable[[random.Random], str]


SENSORS = (
    Sensor("temp", "Temperature", lambda rng: "{}C".format(rng.randint(20, 40))),
    Sensor("pressure", "Atm. Pressure", lambda rng: "{:.3f} atm".format(rng.uniform(1.0, 5.0))),
    Sensor("humidity", "Humidity", lambda rng: "{}% RH".format(rng.randint(0, 100))),
)


@frozen
class Reading:
    """One sensor reading as sent to the node."""

    sensor_type: str
    value: str
    timestamp: str
    reading_id: str

    def display(self) -> str:
        """The reading as the user sees it: without the reading_id, like the original simulator."""
        return "{},{},{}".format(self.sensor_type, self.value, self.timestamp)

    def line(self) -> bytes:
        """The reading as a line of the sensor protocol, without the delimiter."""
        return "{},{}".format(self.display(), self.reading_id).encode("utf-8")


class ReadingSource:
    """Makes the readings of one sensor, each with a reading_id no other run will use."""

    def __init__(
        self,
        sensor: Sensor,
        rng: Optional[random.Random] = None,
        now: Callable[[], datetime] = datetime.now,
        run_id: Optional[str] = None,
    ):
        self._sensor = sensor
        self._rng = rng if rng is not None else random.Random()
        self._now = now
        # 64 random bits per run: the node keeps reading_ids forever; a clash would lose a reading.
        self._run_id = run_id if run_id is not None else secrets.token_hex(8)
        self._counter = 0

    def next_reading(self) -> Reading:
        """Make the next reading, stamped with the local time now."""
        self._counter += 1
        return Reading(
            sensor_type=self._sensor.sensor_type,
            value=self._sensor.make_value(self._rng),
            timestamp=self._now().strftime(TIMESTAMP_FORMAT),
            reading_id="{}-{}".format(self._run_id, self._counter),
        )


class BadAnswer(ValueError):
    """The node sent a line that is not an answer we can match to a reading."""


class NodeBusy(Exception):
    """
    The node could not store a reading just now (``ERR retry: ...``), or stored it but could not
    confirm the copies asked for (``ERR copies: ...``): send it again later.
    """


@frozen
class Answer:
    """The node's answer to a reading: accepted with its entry index, or rejected with a reason."""

    ok: bool
    index: Optional[int] = None
    reason: str = ""


def parse_answer(line: bytes) -> Answer:
    """Parse ``OK <entry_index>`` or ``ERR <reason>``; raise L{BadAnswer} for anything else."""
    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
    verb, _, rest = text.partition(" ")
    if verb == "OK":
        if rest.isascii() and rest.isdigit():  # isdigit() alone takes "²", which int() refuses
            return Answer(ok=True, index=int(rest))
    elif verb == "ERR":
        return Answer(ok=False, reason=rest)
    raise BadAnswer("unexpected answer {!r}".format(text))


class UnackedQueue:
    """
    The readings the node has not yet answered, oldest first.

    The first C{in_flight} of them were sent on the current connection, and the node answers
    in order, so every answer belongs to the oldest reading. After a connection is lost,
    nothing counts as sent any more and everything is sent again from the oldest.
    """

    def __init__(self) -> None:
        self._readings: deque[Reading] = deque()
        self.in_flight = 0
        self._removed = 0  # readings answered so far, so positions can be compared over time
        self._ever_sent = 0  # readings (counted from the very first) sent at least once

    def __len__(self) -> int:
        return len(self._readings)

    def __iter__(self):
        return iter(self._readings)

    def add(self, reading: Reading) -> None:
        """Keep a new reading until it is answered."""
        self._readings.append(reading)

    def has_unsent(self) -> bool:
        """Whether some reading has not been sent on the current connection."""
        return self.in_flight < len(self._readings)

    def take_unsent(self) -> tuple[Reading, bool]:
        """Mark the oldest unsent reading as sent; return it and whether this is its first send."""
        reading = self._readings[self.in_flight]
        position = self._removed + self.in_flight
        self.in_flight += 1
        first_time = position >= self._ever_sent
        if first_time:
            self._ever_sent = position + 1
        return reading, first_time

    def answered(self) -> Reading:
        """Remove and return the reading an answer belongs to: the oldest one in flight."""
        if self.in_flight == 0:
            raise BadAnswer("answer with no reading awaiting one")
        self.in_flight -= 1
        self._removed += 1
        return self._readings.popleft()

    def connection_lost(self) -> None:
        """Nothing is in flight any more: every reading must be sent again."""
        self.in_flight = 0


def describe_failure(failure: Failure) -> str:
    """A short reason for a failed connection, e.g. ``Connection refused``."""
    value = failure.value
    # Twisted's own messages wrap the system's ("Connection was refused by other side: 111: ...").
    if isinstance(value, (error.ConnectError, error.DNSLookupError)) and value.args:
        if value.args[0]:
            return str(value.args[0])
    return failure.getErrorMessage()


class Simulator:
    """
    Makes readings, sends them over whatever connection is up, and keeps each until it is answered.

    With an interval, one reading is made every C{interval} seconds (none while C{backlog_limit}
    readings are unanswered). With interval 0, a reading is made whenever fewer than C{window}
    are in flight, so the node's answers set the pace. With a count, it finishes after that many
    readings were accepted, and C{done} fires.
    """

    log = Logger()

    def __init__(
        self,
        source: ReadingSource,
        clock: IReactorTime,
        where: str,
        interval: float = 2.0,
        count: Optional[int] = None,
        window: int = DEFAULT_WINDOW,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        out: Callable[[str], None] = print,
        token: Optional[bytes] = None,
    ):
        self.queue = UnackedQueue()
        # Sent as "AUTH <token>" first on every connection (a node with --sensor-tokens).
        self.token = token
        self._source = source
        self._clock = clock
        self._where = where
        self._interval = interval
        self._count = count
        self._window = window
        self._backlog_limit = backlog_limit
        self._out = out
        self._protocol: Optional[SensorClientProtocol] = None
        self._link = "new"  # "new", then "up" or "down"; a line is printed only when it changes
        self._name: Optional[str] = None  # the name the node answered "OK auth" with
        self._loop: Optional[task.LoopingCall] = None
        self.accepted = 0
        self.finished = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self) -> None:
        """Begin making readings."""
        if self._interval > 0:
            self._loop = task.LoopingCall(self._tick)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """Make no more readings (for shutdown); what is unanswered stays unanswered."""
        self.finished = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    # Connection events, from the protocol and the endpoint.

    def connected(self, protocol: SensorClientProtocol, name: Optional[str] = None) -> None:
        """
        A connection is up (authenticated as C{name} with a token): send
        everything unanswered, oldest first, then new readings.
        """
        self._protocol = protocol
        self.queue.connection_lost()
        if name is not None and name != self._name:
            self._name = name
            self._out("Authenticated to {} as sensor {}".format(self._where, name))
        if self._link == "down":
            self._out(
                "Connected to {}; sending {} unacknowledged readings".format(
                    self._where, len(self.queue)
                )
            )
        self._link = "up"
        self._pump()

    def disconnected(self, protocol: SensorClientProtocol, reason: Failure) -> None:
        """The connection is gone; readings in flight will be resent on the next one."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        self.queue.connection_lost()
        if not self.finished and self._link != "down":
            self._out("Lost connection to {}; reconnecting".format(self._where))
        self._link = "down"

    def connection_failed(self, failure: Failure) -> None:
        """A connection attempt failed; say so once, not once per attempt."""
        if self.finished or failure.check(defer.CancelledError):
            return
        if self._link != "down":
            reason = describe_failure(failure)
            self._out("Cannot connect to {} ({}); retrying".format(self._where, reason))
        self._link = "down"

    def auth_refused(self, answer: str) -> None:
        """The node refused the token; the protocol drops the connection, and it is tried again."""
        if self._link != "down":
            self._out(
                "Node at {} refused the token ({}): check --token-file against the node's "
                "--sensor-tokens; retrying".format(self._where, answer)
            )
        self._link = "down"

    def node_busy(self, reason: str) -> None:
        """The node could not store a reading; the protocol drops the connection to resend it."""
        if reason.startswith("copies: "):
            # Stored there, not yet on enough nodes (--ack-copies): the resend confirms it.
            # "copies: 1 of 2 (no peer connected); kept, ..." says "1 of 2, no peer connected".
            held = reason[len("copies: "):].split(";")[0].replace(" (", ", ").rstrip(")")
            what = "kept a reading but could not confirm its copies"
            reason = held
        else:
            what = "could not store a reading"
        self._out("Node at {} {} ({}); reconnecting to resend".format(self._where, what, reason))
        self._link = "down"

    def bad_answer(self, problem: str) -> None:
        """The node said something that matches no reading; the protocol drops the connection."""
        self._out("Bad answer from {}: {}; reconnecting".format(self._where, problem))
        self._link = "down"

    # Answers, in the order the readings were sent.

    def answer(self, answer: Answer) -> None:
        """Apply the node's answer to the oldest reading in flight."""
        if not answer.ok and answer.reason.startswith(("retry", "copies", "full")):
            # Keep the reading: it goes again, first, on the next connection.
            raise NodeBusy(answer.reason)
        reading = self.queue.answered()
        if answer.ok:
            self.accepted += 1
            self.log.debug(
                "{reading_id} stored as entry {index}",
                reading_id=reading.reading_id,
                index=answer.index,
            )
        else:
            self._out("Rejected {}: {}".format(reading.line().decode("utf-8"), answer.reason))
        if self._count is not None and self.accepted >= self._count and not self.done.called:
            self.stop()
            self.done.callback(None)
            return
        self._pump()

    # Making and sending readings.

    def _may_make_reading(self) -> bool:
        if self.finished or len(self.queue) >= self._backlog_limit:
            return False
        # Rejected readings do not count: only accepted ones bring us nearer to the count.
        return self._count is None or self.accepted + len(self.queue) < self._count

    def _tick(self) -> None:
        if self._may_make_reading():
            self.queue.add(self._source.next_reading())
            self._pump()

    def _pump(self) -> None:
        """Send unsent readings while the connection is up and the window has room."""
        while self._protocol is not None and self.queue.in_flight < self._window:
            if not self.queue.has_unsent():
                if self._interval > 0 or not self._may_make_reading():
                    return
                self.queue.add(self._source.next_reading())
            reading, first_time = self.queue.take_unsent()
            self._protocol.send_reading(reading)
            if first_time:
                self._out("Sending " + reading.display())


class SensorClientProtocol(LineOnlyReceiver):
    """Sends readings as lines and hands each answer line to the L{Simulator}."""

    delimiter = b"\n"
    # Answers are "OK <index>" or a short "ERR <reason>"; longer lines do not come from a node.
    MAX_LENGTH = 4096

    def __init__(self, simulator: Simulator):
        self.simulator = simulator
        self._authenticating = False

    def connectionMade(self) -> None:
        self._link_ready()

    def _link_ready(self) -> None:
        # With a token, the connection is usable once the node has answered "OK auth <name>".
        if self.simulator.token is None:
            self.simulator.connected(self)
        else:
            self._authenticating = True
            self.sendLine(b"AUTH " + self.simulator.token)

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:
        self.simulator.disconnected(self, reason)

    def send_reading(self, reading: Reading) -> None:
        self.sendLine(reading.line())

    def lineReceived(self, line: bytes) -> None:
        if self._authenticating:
            self._authenticating = False
            if line.startswith(b"OK auth "):
                name = line[len(b"OK auth "):].decode("utf-8", "replace")[:200]
                self.simulator.connected(self, name)
            else:
                self.simulator.auth_refused(line.decode("utf-8", "replace")[:200])
                self.transport.loseConnection()
            return
        try:
            self.simulator.answer(parse_answer(line))
        except NodeBusy as busy:
            self.simulator.node_busy(str(busy))
            self.transport.loseConnection()
        except BadAnswer as problem:
            # Answers are matched to readings by their order, so after one we cannot place,
            # none can be trusted: start over on a new connection (resending is safe).
            self.simulator.bad_answer(str(problem))
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.simulator.bad_answer("answer longer than {} bytes".format(self.MAX_LENGTH))
        self.transport.loseConnection()


class SensorClientFactory(Factory):
    """Builds one L{SensorClientProtocol} per connection, all feeding the same L{Simulator}."""

    noisy = False

    def __init__(self, simulator: Simulator):
        self.simulator = simulator

    def buildProtocol(self, addr) -> SensorClientProtocol:
        protocol = SensorClientProtocol(self.simulator)
        protocol.factory = self
        return protocol


@implementer(IHandshakeListener)
class TLSSensorClientProtocol(SensorClientProtocol):
    """
    L{SensorClientProtocol} over TLS: the connection counts as made once the handshake is done,
    and one that ends before (a certificate refused) as a failed attempt, reported once.
    """

    _handshake_done = False

    def connectionMade(self) -> None:
        pass

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        self._link_ready()

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:
        if self._handshake_done:
            self.simulator.disconnected(self, reason)
        else:
            self.simulator.connection_failed(Failure(TLSFailed(describe_tls_failure(reason))))


class TLSFailed(Exception):
    """The TLS handshake with the node failed; the message says why."""


def describe_tls_failure(failure: Failure) -> str:
    """A short reason for a failed TLS handshake, e.g. ``TLS: certificate verify failed``."""
    queue = failure.value.args[0] if failure.value.args else None
    if isinstance(queue, list) and queue and all(isinstance(e, tuple) and len(e) == 3 for e in queue):
        return "TLS: " + "; ".join(str(e[2]) for e in queue)
    return "TLS: " + failure.getErrorMessage()


class TLSSensorClientFactory(SensorClientFactory):
    """Builds L{TLSSensorClientProtocol}s."""

    def buildProtocol(self, addr) -> TLSSensorClientProtocol:
        protocol = TLSSensorClientProtocol(self.simulator)
        protocol.factory = self
        return protocol


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """An endpoint that reports why a connection attempt failed (ClientService only logs it)."""

    def __init__(self, endpoint: IStreamClientEndpoint, on_failure: Callable[[Failure], None]):
        self._endpoint = endpoint
        self._on_failure = on_failure

    def connect(self, factory):
        def report(failure: Failure) -> Failure:
            self._on_failure(failure)
            return failure

        return self._endpoint.connect(factory).addErrback(report)


def make_service(
    endpoint: IStreamClientEndpoint,
    simulator: Simulator,
    clock: IReactorTime,
    jitter: Callable[[], float] = random.random,
    tls: bool = False,
) -> ClientService:
    """
    The service keeping C{simulator} connected to the node, retrying with growing delays;
    with C{tls}, C{endpoint} is a TLS one and a connection counts once its handshake is done.
    """
    return ClientService(
        ReportingEndpoint(endpoint, simulator.connection_failed),
        (TLSSensorClientFactory if tls else SensorClientFactory)(simulator),
        retryPolicy=backoffPolicy(RETRY_INITIAL_DELAY, RETRY_MAX_DELAY, jitter=jitter),
        clock=clock,
    )


class _OneLineParser(argparse.ArgumentParser):
    """Report a bad option as one line on stderr, without the usage block."""

    def error(self, message: str):
        self.exit(2, "{}: error: {}\n".format(self.prog, message))

    def unknown(self, words: list[str]):
        """
        Exit for words no option takes (a misspelled flag): the line saying so, a guess at the
        flag meant, and the seed's list of sensor flags, since a sensor flag is the one most
        often meant.
        """
        flags = [o for action in self._actions for o in action.option_strings]
        lines = ["{}: error: unrecognized arguments: {}".format(self.prog, " ".join(words))]
        for word in words:
            flag = word if word.startswith("-") else "--" + word
            guess = difflib.get_close_matches(flag, flags, 1)
            if guess:
                lines.append("Did you mean {}?".format(guess[0]))
                break
        lines.extend(USAGE.splitlines()[1:])
        lines.append("Run {} --help for the other options.".format(self.prog))
        self.exit(2, "\n".join(lines) + "\n")


def _option_type(convert: Callable[[str], object], valid: Callable, expected: str):
    """An argparse type: C{convert} the text, insist the value is C{valid}, name C{expected}."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError("must be {}, not {!r}".format(expected, text))
        return value

    return parse


_host = _option_type(str, lambda host: bool(host.strip()), "a host name or address")
_port = _option_type(int, lambda port: 1 <= port <= 65535, "a port number from 1 to 65535")
_interval = _option_type(
    float, lambda seconds: math.isfinite(seconds) and seconds >= 0, "a number of seconds, 0 or more"
)
_count = _option_type(int, lambda n: n >= 1, "a whole number, 1 or more")


def _ca_file(path: str):
    """An argparse type: the trust root of the CA certificates in a PEM file."""
    # Imported here: only TLS needs pyOpenSSL and cryptography (twisted[tls]).
    from cryptography import x509
    from OpenSSL import crypto
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise argparse.ArgumentTypeError("cannot read {!r} ({})".format(path, e.strerror))
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise argparse.ArgumentTypeError("{!r} holds no PEM certificate".format(path))
    return trustRootFromCertificates(
        [Certificate(crypto.X509.from_cryptography(c)) for c in certificates]
    )


def _token_file(path: str) -> bytes:
    """An argparse type: the one token in a file (a node's --sensor-tokens names it)."""
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise argparse.ArgumentTypeError("cannot read {!r} ({})".format(path, e.strerror))
    if not token or len(token.split()) != 1 or not token.isascii():
        raise argparse.ArgumentTypeError(
            "{!r} must hold one token: the token of this sensor's line in the node's "
            "--sensor-tokens file".format(path)
        )
    return token


def parse_args(argv: Iterable[str]) -> argparse.Namespace:
    """
    Parse the command line; a bad value exits with status 2 and one line naming the option, and
    a misspelled flag with the list of sensor flags too.
    """
    parser = _OneLineParser(
        prog="sensor_simulator.py", description="Send simulated sensor readings to a p2pstore node."
    )
    kinds = parser.add_mutually_exclusive_group()
    for sensor in SENSORS:
        kinds.add_argument(
            "--" + sensor.flag,
            dest="sensor",
            action="store_const",
            const=sensor,
            help="simulate {} readings".format(sensor.sensor_type),
        )
    parser.add_argument(
        "--host", type=_host, default="127.0.0.1", help="node address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=_port, default=12345, help="node sensor port (default 12345)"
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        help="seconds between readings (default 2); 0 sends as fast as the node acknowledges",
    )
    parser.add_argument(
        "--count", type=_count, default=None, help="exit after N readings were acknowledged"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS (a node whose --sensor-port is ssl:...); its certificate must name "
        "--host and be signed by --ca, or without --ca by a CA this system trusts",
    )
    parser.add_argument(
        "--ca",
        type=_ca_file,
        default=None,
        metavar="FILE",
        help="with --tls: the CA certificate(s), PEM, that signed the node's certificate",
    )
    parser.add_argument(
        "--token-file",
        type=_token_file,
        default=None,
        metavar="FILE",
        help="a file holding this sensor's token, sent as 'AUTH <token>' first (a node with "
        "--sensor-tokens)",
    )
    options, unknown = parser.parse_known_args(list(argv))
    if unknown:
        parser.unknown(unknown)
    if options.ca is not None and not options.tls:
        parser.error("argument --ca: only with --tls")
    return options


def _print_now(text: str) -> None:
    print(text, flush=True)


def run(reactor, options: argparse.Namespace) -> defer.Deferred[None]:
    """Simulate until C{--count} readings are acknowledged (forever without it)."""
    host = "[{}]".format(options.host) if ":" in options.host else options.host
    where = "{}:{}".format(host, options.port)
    simulator = Simulator(
        ReadingSource(options.sensor),
        clock=reactor,
        where=where,
        interval=options.interval,
        count=options.count,
        out=_print_now,
        token=getattr(options, "token_file", None),
    )
    endpoint = HostnameEndpoint(reactor, options.host, options.port)
    tls = getattr(options, "tls", False)
    if tls:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(options.host, trustRoot=options.ca), endpoint)
    service = make_service(endpoint, simulator, reactor, tls=tls)

    def shut_down() -> defer.Deferred[None]:
        simulator.stop()
        return service.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    service.startService()
    simulator.start()
    return simulator.done.addCallback(lambda _: shut_down())


def main(argv: list[str]) -> None:
    """Command-line entry point: C{argv} without the program name."""
    try:
        options = parse_args(argv)
        if options.sensor is None:
            print(USAGE)
            sys.exit(1)
        task.react(run, (options,))
    except KeyboardInterrupt:
        # Ctrl-C before the reactor took over SIGINT: no traceback.
        sys.exit(130)


if __name__ == "__main__":
    main(sys.argv[1:])
