"""
A node's settings: checked from a plain mapping of setting names to values
(``{"sensor-port": "12345", ...}``), which the command line gives today and
a config file can give too. Every error names the setting it is about.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Mapping, Optional

from attrs import frozen
from twisted.internet.endpoints import serverFromString

from .access import parse_networks
from .destinations import BadDestination, parse_destination
from .tokens import AccessFileError, load_http_token, load_sensor_tokens
from .certificates import (
    CertificateError,
    PeerCredentials,
    check_key,
    load_certificates,
    load_key,
    parse_fingerprints,
)

DEFAULT_PEER_PORT = 12346
SYNC_MODES = ("full", "normal")
UNTERMINATED = ("accept", "refuse")
# A line of the longest fields the protocol allows is about 220 bytes.
MIN_LINE, MAX_LINE = 256, 1024 * 1024

# Every setting and its default, as the command line spells it.
DEFAULTS = {
    "data-dir": "./p2pstore-data",
    "sensor-port": "12345",
    "peer-port": str(DEFAULT_PEER_PORT),
    "status-port": "8000",
    "peers": "",
    "secret-file": None,
    "max-line": "1024",
    "sync": "full",
    "unterminated-readings": "accept",
    "sensor-tokens": None,
    "sensor-allow": "",
    "http-token-file": None,
    "tls-cert": None,
    "tls-key": None,
    "peer-ca": None,
    "peer-tls-fingerprints": "",
    "scrub-rate": "50",
    "max-disk": None,
    "retain": None,
    "min-copies": "1",
    "on-full": "reject",
    "ack-copies": "1",
    "ack-timeout": "10s",
    "commit-interval": "40ms",
    # Given any number of times: a list.
    "export": (),
    "export-token-file": None,
    "export-takeover": "5m",
}
# Records a second the scrub may check, at most (0: only at start and on a
# peer's refusal).
MAX_SCRUB_RATE = 100000
# Nodes an OK may wait for, at most; the cluster's size bounds it too.
MAX_ACK_COPIES = 100
# The longest an OK may wait for copies.
MAX_ACK_TIMEOUT = 3600.0
# The longest --commit-interval: every answer may wait that much more.
MAX_COMMIT_INTERVAL = 1.0
# --retain: from a second to ten years.
MIN_RETAIN, MAX_RETAIN = 1.0, 3650 * 86400.0
ON_FULL = ("reject", "evict-safe")
# --export-takeover: from a second to a week.
MIN_TAKEOVER, MAX_TAKEOVER = 1.0, 7 * 86400.0
# A duration: a number and a unit.
_DURATION = re.compile(r"\A([0-9]{1,9}(?:\.[0-9]{1,6})?)(ms|s|m|h|d)\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# A size: a number and a unit, decimal (MB) or binary (MiB).
_SIZE = re.compile(r"\A([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)\Z")
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
# The smallest --max-disk: room for the schema, a few batches and the reserve.
MIN_DISK = 4 * 10**6

_HOSTNAME = re.compile(
    r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
# A plain number in ASCII digits: str.isdigit() also takes `²` and `١`,
# which int() refuses or reads unexpectedly, and int() refuses 4300+ digits.
_NUMBER = re.compile(r"\A[0-9]{1,10}\Z")
# The port of a tcp, tcp6 or ssl description, given first or as port=.
_ENDPOINT_PORT = re.compile(r"\A(?:tcp6?|ssl):(?:[^:]*:)*?(?:port=)?(\d+)(?::|\Z)")


class ConfigError(Exception):
    """
    The node cannot start with these settings.

    @ivar setting: the name of the setting that is wrong (``data-dir``).
    @ivar problem: what is wrong with it, and what to do.

    ``str()`` names the setting as the command line spells it
    (``--data-dir: ...``).
    """

    def __init__(self, setting: str, problem: str):
        super().__init__(setting, problem)
        self.setting = setting
        self.problem = problem

    def __str__(self) -> str:
        return f"--{self.setting}: {self.problem}"


@frozen
class Peer:
    host: str
    port: int
    # Dialled over TLS (given as tls:host:port).
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls:' if self.tls else ''}{host}:{self.port}"


@frozen
class Settings:
    """
    The node's settings, checked.
    """

    data_dir: Path
    sensor_port: str
    peer_port: str
    status_port: str
    peers: tuple[Peer, ...]
    secret_file: Optional[Path]
    max_line: int
    sync: str
    # Take readings from sensors that send no line ends (the proof of
    # concept's).
    unterminated_readings: bool = True
    # The sensors' tokens file: without it, no AUTH line is asked for.
    sensor_tokens: Optional[Path] = None
    # The networks sensors may connect from (ipaddress networks); () for any.
    sensor_allow: tuple = ()
    # The bearer token file of /readings (and /metrics).
    http_token_file: Optional[Path] = None
    # TLS on the peer port and to tls: peers; None: plain TCP.
    peer_tls: Optional[PeerCredentials] = None
    # Stored records the scrub checks again a second (p2pstore.scrub).
    scrub_rate: int = 50
    # The nodes that must hold a reading before it is answered OK, this
    # one included, and how long its answer waits for them (seconds).
    ack_copies: int = 1
    ack_timeout: float = 10.0
    # The least time from the start of one commit of readings to the next
    # (seconds): under load, readings that arrive meanwhile share a commit.
    commit_interval: float = 0.04
    # The --export destinations (p2pstore.export.Destination), in order.
    exports: tuple = ()
    # How long an origin's node is unreachable before this node exports
    # that origin's readings in its place.
    export_takeover: float = 300.0
    # --max-disk: the most both databases may take, in bytes, or None.
    max_disk: Optional[int] = None
    # --retain in seconds (None: for ever), the other nodes that must hold
    # an own reading before it is pruned, and what a full budget does.
    retain: Optional[float] = None
    min_copies: int = 1
    on_full: str = "reject"


def _port_number(setting: str, text: str, what: str = "") -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(setting, f"{what}port {port} is out of range (1-65535)")
    return port


def parse_endpoint(setting: str, text: str, reactor) -> str:
    """
    A port number or a server endpoint description, as a description.
    """
    text = str(text).strip()
    if _NUMBER.match(text):
        return f"tcp:{_port_number(setting, text)}"
    try:
        serverFromString(reactor, text)
    except Exception as e:
        raise ConfigError(
            setting,
            f"{text!r} is neither a port number nor an endpoint "
            f"description like tcp:12345:interface=127.0.0.1 ({e})",
        ) from None
    match = _ENDPOINT_PORT.match(text)
    if match:
        _port_number(setting, match.group(1))
    return text


def parse_peer(text: str) -> Peer:
    """
    ``host``, ``host:port``, ``[v6 address]`` or ``[v6 address]:port``,
    each dialled over TLS when prefixed ``tls:`` (``tls:12346`` alone is
    the host named tls).
    """
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() == "tls" and not _NUMBER.match(rest):
        peer = parse_peer(rest)
        return Peer(peer.host, peer.port, tls=True)
    port = str(DEFAULT_PEER_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError("peers", f"{text!r} is not host[:port]")
        if rest:
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError("peers", f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, colon, rest = text.partition(":")
        if colon:
            port = rest
        if not _HOSTNAME.match(host):
            raise ConfigError("peers", f"{text!r} is not host[:port] (bad host {host!r})")
        if host.rpartition(".")[2].isdigit():
            # No top-level domain is all digits: this is meant as an IPv4 address.
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ConfigError("peers", f"{host!r} in {text!r} is not an IPv4 address") from None
    if not _NUMBER.match(port):
        raise ConfigError("peers", f"{text!r} has a bad port {port!r}")
    return Peer(host, _port_number("peers", port, f"{text!r}: "))


def _exports(given, token_file) -> tuple:
    """
    The --export destinations: a URL or a list of them (the option given
    more than once), each with --export-token-file's token if given.
    """
    urls = [given] if isinstance(given, str) else list(given or ())
    token = None
    if token_file:
        if not urls:
            raise ConfigError("export-token-file", "is for --export destinations: give --export too")
        try:
            token = load_http_token(Path(str(token_file))).value
        except AccessFileError as e:
            raise ConfigError("export-token-file", str(e)) from None
    destinations = []
    for url in urls:
        try:
            destination = parse_destination(str(url), token)
        except BadDestination as e:
            raise ConfigError("export", str(e)) from None
        if any(d.name == destination.name for d in destinations):
            raise ConfigError("export", f"{destination.name} is given twice")
        destinations.append(destination)
    return tuple(destinations)


def _token_file(setting: str, text, load) -> Optional[Path]:
    """
    A token file's path, the file read and checked.
    """
    if not text:
        return None
    path = Path(str(text))
    try:
        load(path)
    except AccessFileError as e:
        raise ConfigError(setting, str(e)) from None
    return path


def parse_duration(setting: str, text, lowest: float, highest: float) -> float:
    """
    A duration such as ``10s``, ``500ms``, ``5m``, ``12h`` or ``30d``, in
    seconds, from ``lowest`` to ``highest``.
    """
    found = _DURATION.match(str(text).strip().lower())
    if found is None:
        raise ConfigError(
            setting,
            f"{text!r} is not a duration: give a number and a unit, ms, s, m, h or d (10s, 500ms, 5m)",
        )
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not lowest <= seconds <= highest:
        raise ConfigError(setting, f"{text!r} is not from {lowest:g} s to {highest:g} s")
    return seconds


def parse_size(setting: str, text, lowest: int) -> int:
    """
    A size such as ``500MB``, ``2GiB`` or ``12 MB``, in bytes, at least ``lowest``.
    """
    found = _SIZE.match(str(text).strip().lower())
    if found is None:
        raise ConfigError(
            setting,
            f"{text!r} is not a size: give a number and a unit, MB or GB (powers of 1000) or "
            "MiB or GiB (powers of 1024): 500MB, 2GiB",
        )
    size = int(float(found.group(1)) * _SIZE_UNITS[found.group(2)])
    if size < lowest:
        raise ConfigError(setting, f"{text!r} is less than the smallest, {lowest // 10**6} MB")
    return size


def check_settings(given: Mapping[str, object], reactor) -> Settings:
    """
    Check every setting; those not given take their defaults.

    @raise ConfigError: one of them is wrong, or not a setting at all.
    """
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(unknown[0], f"is not a setting (the settings: {', '.join(DEFAULTS)})")
    values = {**DEFAULTS, **given}
    max_line = str(values["max-line"]).strip()
    if not _NUMBER.match(max_line) or not MIN_LINE <= int(max_line) <= MAX_LINE:
        raise ConfigError(
            "max-line",
            f"{values['max-line']!r} is not a number of bytes between {MIN_LINE} and {MAX_LINE}",
        )
    scrub_rate = str(values["scrub-rate"]).strip()
    if not _NUMBER.match(scrub_rate) or int(scrub_rate) > MAX_SCRUB_RATE:
        raise ConfigError(
            "scrub-rate",
            f"{values['scrub-rate']!r} is not a number of records a second from 0 to {MAX_SCRUB_RATE}",
        )
    ack_copies = str(values["ack-copies"]).strip()
    if not _NUMBER.match(ack_copies) or not 1 <= int(ack_copies) <= MAX_ACK_COPIES:
        raise ConfigError(
            "ack-copies",
            f"{values['ack-copies']!r} is not a number of nodes from 1 (this node alone) to "
            f"{MAX_ACK_COPIES}",
        )
    ack_timeout = parse_duration("ack-timeout", values["ack-timeout"], 0.01, MAX_ACK_TIMEOUT)
    commit_interval = parse_duration(
        "commit-interval", values["commit-interval"], 0.0, MAX_COMMIT_INTERVAL
    )
    retain = values["retain"]
    if retain:
        retain = parse_duration("retain", retain, MIN_RETAIN, MAX_RETAIN)
    min_copies = str(values["min-copies"]).strip()
    if not _NUMBER.match(min_copies) or int(min_copies) > MAX_ACK_COPIES:
        raise ConfigError(
            "min-copies",
            f"{values['min-copies']!r} is not a number of other nodes from 0 to {MAX_ACK_COPIES}",
        )
    on_full = str(values["on-full"]).strip().lower()
    if on_full not in ON_FULL:
        raise ConfigError("on-full", f"{values['on-full']!r} is not one of {', '.join(ON_FULL)}")
    sync = str(values["sync"]).strip().lower()
    if sync not in SYNC_MODES:
        raise ConfigError("sync", f"{values['sync']!r} is not one of {', '.join(SYNC_MODES)}")
    unterminated = str(values["unterminated-readings"]).strip().lower()
    if unterminated not in UNTERMINATED:
        raise ConfigError(
            "unterminated-readings",
            f"{values['unterminated-readings']!r} is not one of {', '.join(UNTERMINATED)}",
        )
    peers = tuple(parse_peer(p.strip()) for p in str(values["peers"]).split(",") if p.strip())
    exports = _exports(values["export"], values["export-token-file"])
    export_takeover = parse_duration(
        "export-takeover", values["export-takeover"], MIN_TAKEOVER, MAX_TAKEOVER
    )
    secret_file = values["secret-file"]
    try:
        sensor_allow = parse_networks(values["sensor-allow"] or "")
    except ValueError as e:
        raise ConfigError("sensor-allow", str(e)) from None
    peer_port = parse_endpoint("peer-port", values["peer-port"], reactor)
    if peer_port.lower().startswith("ssl:"):
        raise ConfigError(
            "peer-port",
            f"{peer_port!r}: give the peer port as tcp:PORT (or a number) and this node's "
            "certificate with --tls-cert and --tls-key: the peer port then speaks TLS, "
            "checking peers' certificates too (see docs/tls.md)",
        )
    return Settings(
        data_dir=Path(values["data-dir"]),
        sensor_port=parse_endpoint("sensor-port", values["sensor-port"], reactor),
        peer_port=peer_port,
        status_port=parse_endpoint("status-port", values["status-port"], reactor),
        peers=peers,
        secret_file=Path(secret_file) if secret_file else None,
        max_line=int(max_line),
        sync=sync,
        unterminated_readings=unterminated == "accept",
        sensor_tokens=_token_file("sensor-tokens", values["sensor-tokens"], load_sensor_tokens),
        sensor_allow=sensor_allow,
        http_token_file=_token_file("http-token-file", values["http-token-file"], load_http_token),
        peer_tls=_peer_tls(values, peers),
        scrub_rate=int(scrub_rate),
        ack_copies=int(ack_copies),
        ack_timeout=ack_timeout,
        commit_interval=commit_interval,
        max_disk=parse_size("max-disk", values["max-disk"], MIN_DISK) if values["max-disk"] else None,
        retain=retain or None,
        min_copies=int(min_copies),
        on_full=on_full,
        exports=exports,
        export_takeover=export_takeover,
    )


def _peer_tls(values: Mapping[str, object], peers: tuple[Peer, ...]) -> Optional[PeerCredentials]:
    """
    This node's certificate and key and how it checks its peers', or
    None for plain TCP links.
    """
    cert, key = values["tls-cert"], values["tls-key"]
    ca = values["peer-ca"]
    pins = str(values["peer-tls-fingerprints"] or "").strip()
    if not cert and not key:
        for name, given in (("peer-ca", ca), ("peer-tls-fingerprints", pins)):
            if given:
                raise ConfigError(
                    name, "checks peers' TLS certificates: give this node's own with --tls-cert and --tls-key too"
                )
        for peer in peers:
            if peer.tls:
                raise ConfigError(
                    "peers",
                    f"{peer} is dialled over TLS: give this node's certificate and key with "
                    "--tls-cert and --tls-key, and --peer-ca or --peer-tls-fingerprints (see docs/tls.md)",
                )
        return None
    if not cert:
        raise ConfigError("tls-cert", "--tls-key is given: give the certificate it belongs to too")
    if not key:
        raise ConfigError("tls-key", "--tls-cert is given: give its private key too")
    if ca and pins:
        raise ConfigError(
            "peer-tls-fingerprints", "give either --peer-ca or --peer-tls-fingerprints, not both"
        )
    if not ca and not pins:
        raise ConfigError(
            "peer-ca",
            "peer TLS needs a way to check peers' certificates: give --peer-ca (the cluster CA "
            "that signed them) or --peer-tls-fingerprints (the pinned certificates)",
        )
    setting = "tls-cert"
    try:
        certificates = load_certificates(Path(cert), "node's certificate (PEM)")
        setting = "tls-key"
        private_key = load_key(Path(key))
        check_key(certificates[0], private_key, Path(key))
        setting = "peer-ca"
        authorities = load_certificates(Path(ca), "cluster CA's certificate (PEM)") if ca else ()
        setting = "peer-tls-fingerprints"
        pinned = parse_fingerprints(pins)
    except CertificateError as e:
        raise ConfigError(setting, str(e)) from None
    if not ca and not pinned:
        raise ConfigError("peer-tls-fingerprints", f"{pins!r} lists no fingerprint")
    return PeerCredentials(
        certificate=certificates[0],
        chain=certificates[1:],
        key=private_key,
        ca=authorities,
        pins=pinned,
        certificate_path=Path(cert),
        ca_path=Path(ca) if ca else None,
    )
