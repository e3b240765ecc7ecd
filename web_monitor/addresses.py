"""
The servers to monitor: ``HOST[:PORT]`` entries of ``--servers``, checked once at start.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

from attrs import frozen

# The node's status port when an entry names none.
DEFAULT_STATUS_PORT = 8000

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_NUMERIC = re.compile(r"[0-9.]+\Z")


@frozen
class ServerAddress:
    """
    One entry of ``--servers``.

    @ivar text: the entry as the user wrote it, which is how the console and
        the page name the server.
    @ivar error: why the entry is not a usable address, or C{None}.
    """

    text: str
    host: Optional[str]
    port: Optional[int]
    error: Optional[str] = None

    @property
    def valid(self) -> bool:
        return self.error is None


def parse_server(text: str) -> ServerAddress:
    """
    Read one ``HOST[:PORT]`` entry: an IPv4 address, a host name, or an IPv6
    address (in brackets when a port follows). A malformed entry is returned
    with its C{error} set rather than raised, so it is reported for that
    server alone.
    """
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return _invalid(text, "an IPv6 address in brackets needs its closing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return _invalid(text, "only ':PORT' may follow ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    port = DEFAULT_STATUS_PORT
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            return _invalid(text, f"the port must be a number, not {port_text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            return _invalid(text, f"port {port} is out of range (1-65535)")
    problem = _host_problem(host)
    if problem:
        return _invalid(text, problem)
    return ServerAddress(text, host, port)


def parse_servers(option: str) -> list[ServerAddress]:
    """
    Read a comma-separated ``--servers`` value; empty entries (a trailing
    comma) are dropped.
    """
    return [parse_server(entry) for entry in option.split(",") if entry.strip()]


def _host_problem(host: str) -> Optional[str]:
    if not host:
        return "no host given"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if _NUMERIC.match(host):
        # All digits and dots is meant as an IPv4 address: never look it up as a name.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        return f"{host!r} is neither an IP address nor a host name"
    return None


def _invalid(text: str, why: str) -> ServerAddress:
    return ServerAddress(text, None, None, why)
