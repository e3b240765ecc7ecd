"""
Who may talk to a node: which sensor connections are let in (from the
networks of ``--sensor-allow``; with ``--sensor-tokens``, only those that
send a known token first), counted and logged; and the reload of the token
files on SIGHUP.

Checking only, no protocol: L{p2pstore.sensor} asks L{SensorAccess} about
each connection. The files are L{p2pstore.tokens}.
"""

from __future__ import annotations

import ipaddress
import signal
from collections import OrderedDict
from typing import Callable, Iterable, Optional

from attrs import define, field
from twisted.application.service import Service
from twisted.logger import Logger

from .tokens import ReloadableFile, name_of

# What a sensor sends first when the node has tokens.
AUTH = b"AUTH "
# How long a sensor may take to send its AUTH line.
AUTH_TIMEOUT = 10.0
# A refused address is logged again, with how many were not, at most this often.
LOG_INTERVAL = 60.0
# Addresses remembered for that (the oldest forgotten first).
MAX_REMEMBERED = 1024


def parse_networks(text: str) -> tuple:
    """
    The networks of ``--sensor-allow``: comma-separated IPv4 or IPv6
    networks (``10.0.0.0/8``, ``fd00::/8``) or addresses; none means any.

    @raise ValueError: one is neither; the message names it.
    """
    networks = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IPv4 or IPv6 network such as 10.0.0.0/8") from None
    return tuple(networks)


@define
class RateLimitedLog:
    """
    Logs a message about one address at once, then at most once every
    ``interval`` seconds with the number not logged in between.
    """

    clock: object
    interval: float = LOG_INTERVAL
    _last: OrderedDict = field(factory=OrderedDict, init=False)

    def due(self, key: str) -> Optional[int]:
        """
        @return: None if the message is not to be logged now, else how many
            were not logged since the last one.
        """
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)
        return 0 if last is None else last[1]


def _host_of(address) -> Optional[str]:
    return getattr(address, "host", None)


def address_text(address) -> str:
    """
    ``host:port`` of a connection's other end, for the log.
    """
    host, port = _host_of(address), getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@define
class SensorAccess:
    """
    Which sensor connections are let in: from the allowed networks, and,
    with tokens, those whose first line is ``AUTH <token>``. It counts and
    logs those it keeps out.

    @ivar tokens: the sensor tokens file, or None: no AUTH line is asked for.
    @ivar networks: the allowed networks; empty allows every address.
    @ivar refused: connections refused for their address.
    @ivar auth_failures: connections closed for a missing or wrong token.
    """

    clock: object
    tokens: Optional[ReloadableFile] = None
    networks: tuple = ()
    refused: int = 0
    auth_failures: int = 0
    _refused_log: RateLimitedLog = field(default=None, init=False)
    _failed_log: RateLimitedLog = field(default=None, init=False)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        self._refused_log = RateLimitedLog(self.clock)
        self._failed_log = RateLimitedLog(self.clock)

    @property
    def asks_tokens(self) -> bool:
        return self.tokens is not None

    def allows(self, address) -> bool:
        """
        May a sensor connect from ``address`` (an C{IAddress})? If not, it
        is counted and logged (each address at most once a minute).
        """
        if not self.networks:
            return True
        host = _host_of(address)
        if host is None:
            # Not an IP connection (a UNIX socket): no network to check.
            return True
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            ip = None
        if ip is not None:
            mapped = getattr(ip, "ipv4_mapped", None)
            candidates = (ip,) if mapped is None else (ip, mapped)
            if any(candidate in network for candidate in candidates for network in self.networks):
                return True
        self.refused += 1
        skipped = self._refused_log.due(host)
        if skipped is not None:
            self.log.warn(
                "refused a sensor connection from {address}: not in --sensor-allow "
                "({networks}){more}. Add its network to --sensor-allow if it is a sensor of yours.",
                address=address_text(address),
                networks=",".join(map(str, self.networks)),
                more=f"; {skipped} more from {host} not logged" if skipped else "",
            )
        return False

    def first_line(self, max_line: int) -> "FirstLine":
        """
        What reads the AUTH line of one sensor connection.
        """
        return FirstLine(self.tokens, max_line)

    def failed(self, address, reason: str) -> None:
        """
        A connection was closed unauthenticated: count it, and log it with
        its address (never what it sent).
        """
        self.auth_failures += 1
        host = _host_of(address) or str(address)
        skipped = self._failed_log.due(host)
        if skipped is not None:
            self.log.warn(
                "closed a sensor connection from {address}: not authenticated ({reason}){more}. "
                "A sensor must send 'AUTH <token>' as its first line, with its token from "
                "{path}.",
                address=address_text(address),
                reason=reason,
                more=f"; {skipped} more from {host} not logged" if skipped else "",
                path=str(self.tokens.path),
            )

    def reload(self) -> None:
        """
        Read the sensor tokens file again (on SIGHUP).
        """
        if self.tokens is not None and self.tokens.reload():
            self.log.info(
                "reloaded {path}: {known}",
                path=str(self.tokens.path), known=sensors_known(len(self.tokens.value)),
            )

    def status(self, sensors: Iterable) -> dict:
        """
        The counts for ``/status``: how many connected sensors go by each
        name, and the connections kept out.
        """
        names: dict[str, int] = {}
        for sensor in sensors:
            if sensor.sensor_name is not None:
                names[sensor.sensor_name] = names.get(sensor.sensor_name, 0) + 1
        return {"names": names, "auth_failures": self.auth_failures, "refused": self.refused}


@define
class FirstLine:
    """
    The AUTH line at the start of a sensor's stream, as it arrives.
    """

    tokens: ReloadableFile
    max_line: int
    _buffer: bytes = b""

    def feed(self, data: bytes) -> Optional[tuple[Optional[str], str, bytes]]:
        """
        Take the bytes that arrived.

        @return: None until the line is whole; then the sensor's name (or
            None, and why not), and the bytes after the line.
        """
        buffer = self._buffer + data
        end = buffer.find(b"\n")
        if end < 0:
            self._buffer = buffer
            if len(buffer) > self.max_line:
                return None, "its first line is too long", b""
            return None
        self._buffer = b""
        line = buffer[:end].rstrip(b"\r")
        if not line.startswith(AUTH):
            return None, "its first line is not AUTH <token>", b""
        name = name_of(self.tokens.value, line[len(AUTH) :].strip())
        return name, "unknown token", buffer[end + 1 :]


class ReloadOnHangup(Service):
    """
    Calls each of ``actions`` in the reactor thread when the process gets
    SIGHUP, while it runs; the handler before it is put back at stop.
    """

    name = "reload-on-hangup"
    log = Logger()

    def __init__(self, reactor, actions: Iterable[Callable[[], None]]):
        self._reactor = reactor
        self.actions = list(actions)
        self._saved = None

    def startService(self) -> None:
        super().startService()
        self._saved = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self):
        if self._saved is not None:
            signal.signal(signal.SIGHUP, self._saved)
            self._saved = None
        return super().stopService()

    def _hangup(self, signum, frame) -> None:
        # A signal handler may run between any two bytecodes of the reactor
        # thread: the work is done by the reactor, at its next turn.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        for action in self.actions:
            try:
                action()
            except Exception:
                self.log.failure("a reload on SIGHUP failed; please report this bug")


def sensors_known(count: int) -> str:
    """
    How many sensors a tokens file names, for the log.
    """
    return "1 sensor known" if count == 1 else f"{count} sensors known"
