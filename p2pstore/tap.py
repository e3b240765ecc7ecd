"""
``twistd p2pstore``: the command-line options, and the wiring of a node
from them.

A bad value stops the start with one line naming the option (raised as
SystemExit, which twistd prints as it is), never a traceback.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Optional

from attrs import frozen
from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.python import usage

from .dialer import Dialer
from .identity import (
    KEY_FILE,
    PEER_DB,
    SELF_DB,
    ConfigError,
    load_key,
    lock_data_dir,
    prepare_data_dir,
    resolve_node_id,
    write_node_id,
)
from .ingest import Ingestor
from .node import Listener, Node, NodeService
from .peer import PeerFactory
from .records import Signer, format_utc
from .replication import Replicator
from .sensor import SensorFactory
from .status import status_site
from .storage import Store

DEFAULT_PEER_PORT = 12346
SYNC_MODES = ("full", "normal")
# A line of the longest fields the protocol allows is about 220 bytes.
MIN_LINE, MAX_LINE = 256, 1024 * 1024

_HOSTNAME = re.compile(
    r"\A(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
# A plain number in ASCII digits: str.isdigit() also takes `²` and `١`,
# which int() refuses or reads unexpectedly, and int() refuses 4300+ digits.
_NUMBER = re.compile(r"\A[0-9]{1,10}\Z")
# The port of a tcp, tcp6 or ssl description, given first or as port=.
_ENDPOINT_PORT = re.compile(r"\A(?:tcp6?|ssl):(?:[^:]*:)*?(?:port=)?(\d+)(?::|\Z)")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a p2pstore node: sensors send readings over TCP, the node stores "
        "them in SQLite, each signed with the cluster key. Ports take a number "
        "or a Twisted endpoint description such as tcp:12345:interface=127.0.0.1."
    )
    optParameters = [
        ["data-dir", None, "./p2pstore-data",
         "Directory of the node's databases, node.id and cluster.key; created when missing."],
        ["sensor-port", None, "12345", "Where sensors connect."],
        ["peer-port", None, "12346", "Where peers connect."],
        ["status-port", None, "8000", "Where the HTTP status (/status, /readings) is served."],
        ["peers", None, "",
         f"Comma-separated host[:port] of the peers to dial (port {DEFAULT_PEER_PORT} when omitted)."],
        ["secret-file", None, None,
         "The cluster key for record HMACs. [default: <data-dir>/cluster.key, "
         "made from 32 random bytes when missing]"],
        ["max-line", None, "1024", "The longest sensor line accepted, in bytes."],
        ["sync", None, "full", "SQLite's synchronous setting: full or normal."],
    ]


@frozen
class Peer:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@frozen
class Settings:
    """
    The node's options, checked.
    """

    data_dir: Path
    sensor_port: str
    peer_port: str
    status_port: str
    peers: tuple[Peer, ...]
    secret_file: Optional[Path]
    max_line: int
    sync: str


def _port_number(option: str, text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option}: port {port} is out of range (1-65535)")
    return port


def parse_endpoint(option: str, text: str, reactor) -> str:
    """
    A port number or a server endpoint description, as a description.
    """
    text = text.strip()
    if _NUMBER.match(text):
        return f"tcp:{_port_number(option, text)}"
    try:
        serverFromString(reactor, text)
    except Exception as e:
        raise ConfigError(
            f"{option}: {text!r} is neither a port number nor an endpoint "
            f"description like tcp:12345:interface=127.0.0.1 ({e})"
        ) from None
    match = _ENDPOINT_PORT.match(text)
    if match:
        _port_number(option, match.group(1))
    return text


def parse_peer(text: str) -> Peer:
    """
    ``host``, ``host:port``, ``[v6 address]`` or ``[v6 address]:port``.
    """
    port = str(DEFAULT_PEER_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"--peers: {text!r} is not host[:port]")
        if rest:
            port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"--peers: {host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, colon, rest = text.partition(":")
        if colon:
            port = rest
        if not _HOSTNAME.match(host):
            raise ConfigError(f"--peers: {text!r} is not host[:port] (bad host {host!r})")
        if host.rpartition(".")[2].isdigit():
            # No top-level domain is all digits: this is meant as an IPv4 address.
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ConfigError(f"--peers: {host!r} in {text!r} is not an IPv4 address") from None
    if not _NUMBER.match(port):
        raise ConfigError(f"--peers: {text!r} has a bad port {port!r}")
    return Peer(host, _port_number(f"--peers: {text!r}", port))


def parse_settings(config: Options, reactor) -> Settings:
    """
    Check every option.

    @raise ConfigError: one of them is wrong; the message names it.
    """
    max_line = config["max-line"].strip()
    if not _NUMBER.match(max_line) or not MIN_LINE <= int(max_line) <= MAX_LINE:
        raise ConfigError(
            f"--max-line: {config['max-line']!r} is not a number of bytes "
            f"between {MIN_LINE} and {MAX_LINE}"
        )
    sync = config["sync"].strip().lower()
    if sync not in SYNC_MODES:
        raise ConfigError(f"--sync: {config['sync']!r} is not one of {', '.join(SYNC_MODES)}")
    peers = tuple(parse_peer(p.strip()) for p in config["peers"].split(",") if p.strip())
    return Settings(
        data_dir=Path(config["data-dir"]),
        sensor_port=parse_endpoint("--sensor-port", config["sensor-port"], reactor),
        peer_port=parse_endpoint("--peer-port", config["peer-port"], reactor),
        status_port=parse_endpoint("--status-port", config["status-port"], reactor),
        peers=peers,
        secret_file=Path(config["secret-file"]) if config["secret-file"] else None,
        max_line=int(max_line),
        sync=sync,
    )


def makeService(config: Options, reactor=None) -> NodeService:
    """
    Check the options, set up the data directory, and wire a node.
    """
    if reactor is None:
        from twisted.internet import reactor
    lock = None
    try:
        settings = parse_settings(config, reactor)
        data_dir = prepare_data_dir(settings.data_dir)
        lock = lock_data_dir(data_dir)
        key_path = settings.secret_file or data_dir / KEY_FILE
        key, key_made = load_key(key_path, create=settings.secret_file is None)
        node_id, id_made = resolve_node_id(data_dir)
    except ConfigError as e:
        if lock is not None:
            lock.close()
        raise SystemExit(f"p2pstore: {e}") from None

    signer = Signer.from_key(key)
    store = Store(
        path=data_dir / SELF_DB,
        node_id=node_id,
        signer=signer,
        synchronous=settings.sync.upper(),
        reactor=reactor,
        peer_path=data_dir / PEER_DB,
        recover_if_empty=not id_made and bool(settings.peers),
    )
    ingestor = Ingestor(store, reactor)
    replicator = Replicator(node_id, store, signer, reactor)
    node = Node(node_id, store, ingestor, reactor, replicator)

    def now() -> str:
        return format_utc(reactor.seconds())

    sensors = Listener(
        "--sensor-port",
        settings.sensor_port,
        serverFromString(reactor, settings.sensor_port),
        SensorFactory(ingestor, settings.max_line, now),
    )
    status = Listener(
        "--status-port",
        settings.status_port,
        serverFromString(reactor, settings.status_port),
        status_site(node),
    )
    peers = Listener(
        "--peer-port",
        settings.peer_port,
        serverFromString(reactor, settings.peer_port),
        PeerFactory(node_id, key, replicator, reactor, dialled=False),
    )
    dialler = PeerFactory(node_id, key, replicator, reactor, dialled=True)
    dialers = [
        Dialer(str(peer), HostnameEndpoint(reactor, peer.host, peer.port), dialler, reactor)
        for peer in settings.peers
    ]
    notes = [
        f"p2pstore node {node_id} ({'new' if id_made else 'from ' + str(data_dir / 'node.id')})",
        f"data directory {data_dir.resolve()}",
        f"cluster key {key_path.resolve()} ({'created' if key_made else 'read'})",
        f"sensors on {settings.sensor_port}, status on {settings.status_port}, "
        f"peers on {settings.peer_port}",
        f"dialling peers: {', '.join(map(str, settings.peers)) or 'none'}",
    ]
    return NodeService(
        node,
        sensors,
        status,
        reactor,
        notes,
        peers=peers,
        dialers=dialers,
        write_id=(lambda: write_node_id(data_dir, node_id)) if id_made else None,
        lock=lock,
    )
