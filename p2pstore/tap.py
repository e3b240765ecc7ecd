"""
``twistd p2pstore``: the command-line options, and the wiring of a node
from its settings.

A bad value stops the start with one line naming the option (raised as
SystemExit, which twistd prints as it is), never a traceback. With
``--config FILE``, the settings not given on the command line come from the
file (L{p2pstore.config}), and an error about one of them names the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.python import usage

from .access import ReloadOnHangup, SensorAccess, sensors_known
from .certificates import subject_name
from .config import ConfigFileError, read_config
from .copies import CopyWait
from .damaged import SetAside, advice, check_databases
from .disk import Disk, wal_limit
from .dialer import Dialer
from .export import Exporter
from .identity import KEY_FILE, load_key, lock_data_dir, prepare_data_dir, resolve_node_id, write_node_id
from .ingest import Ingestor
from .lines import AckCopies, format_utc
from .node import Node
from .peer import PeerFactory
from .records import Signer
from .replication import Replicator
from .rows import OwnRows
from .schema import PEER_DB, SELF_DB
from .pruning import Pruner, mark_interval
from .scrub import Scrub
from .sensor import SensorFactory
from .service import Listener, NodeService, ProcessTuning, exit_failed_at_end
from .settings import DEFAULT_PEER_PORT, DEFAULTS, ConfigError, Settings, check_settings
from .status import status_site
from .storage import Store
from .tls import PeerTLS
from .tokens import AccessFileError, load_http_token, load_sensor_tokens, loosely_readable

_HELP = {
    "data-dir": "Directory of the node's databases, node.id and cluster.key; created when missing.",
    "sensor-port": "Where sensors connect.",
    "peer-port": "Where peers connect.",
    "status-port": "Where the HTTP status (/status, /readings, /metrics, /readyz) is served.",
    "peers": (
        f"Comma-separated host[:port] of the peers to dial (port {DEFAULT_PEER_PORT} when omitted); "
        "tls:host[:port] dials one over TLS (needs --tls-cert)."
    ),
    "secret-file": (
        "The cluster key for record HMACs. [default: <data-dir>/cluster.key, "
        "made from 32 random bytes when missing]"
    ),
    "max-line": "The longest sensor line accepted, in bytes.",
    "sync": "SQLite's synchronous setting: full or normal.",
    "scrub-rate": (
        "Stored records checked again against their HMACs each second, in the background "
        "(0: only the newest 1,000 of each log at start, and those peers refuse)."
    ),
    "unterminated-readings": (
        "accept: also take readings from sensors that send no line ends (the proof of "
        "concept's), unanswered; refuse: only lines ended by a newline are readings."
    ),
    "sensor-tokens": (
        "A file of 'name token' lines: each sensor must then send 'AUTH <token>' first, "
        "and its name is stored with its readings. Reloaded on SIGHUP. [default: no tokens]"
    ),
    "sensor-allow": (
        "Comma-separated networks (10.0.0.0/8, fd00::/8) sensors may connect from; "
        "others are refused. [default: any]"
    ),
    "http-token-file": (
        "A file holding one token: /readings then needs 'Authorization: Bearer <token>' "
        "(/status stays open). Reloaded on SIGHUP. [default: no token]"
    ),
    "tls-cert": (
        "This node's certificate (PEM) for peer TLS. With it, the peer port speaks only "
        "mutual TLS, and tls: peers are dialled with it. See docs/tls.md."
    ),
    "tls-key": "The private key (PEM, unencrypted) of --tls-cert.",
    "max-disk": (
        "The most the node's databases may take together (500MB, 2GiB); past it own "
        "readings are answered 'ERR full: ...', and peers' copies get at most half of it. "
        "[default: no budget]"
    ),
    "retain": (
        "Prune readings stored longer ago than this (30d, 12h, 5s): peers' copies, and this "
        "node's own once --min-copies other nodes hold them. [default: keep for ever]"
    ),
    "min-copies": (
        "The other nodes that must hold one of this node's readings before retention or "
        "--on-full evict-safe may remove it here (0: none)."
    ),
    "on-full": (
        "At --max-disk or on a full filesystem: reject answers new readings 'ERR full: ...'; "
        "evict-safe first removes this node's oldest readings that --min-copies other nodes "
        "hold, and rejects only when none is."
    ),
    "ack-copies": (
        "The nodes that must hold a reading, each on its disk, before it is answered OK: "
        "1 is this node alone, 2 this node and one peer. A sensor may ask for another "
        "number with an 'ACK <k>' line first."
    ),
    "ack-timeout": (
        "How long an answer waits for --ack-copies (10s, 500ms, 1m); then it is "
        "'ERR copies: ...', the reading kept, and the same reading sent again is answered "
        "OK once the copies exist."
    ),
    "commit-interval": (
        "Under load, the least time from one commit of readings to the next (40ms): readings "
        "that arrive meanwhile share its one fsync, so far fewer bytes are written per reading "
        "(SD cards wear less), and an answer waits up to this much more. A reading after a "
        "quiet spell commits at once. 0ms: commit as soon as the commit before has."
    ),
    "export-token-file": (
        "A file holding one token, sent to every --export destination as 'Authorization: "
        "Token <token>' (InfluxDB 2.x and 3.x). [default: none]"
    ),
    "export-takeover": (
        "How long a peer must be unreachable (5m, 30s) before this node exports that "
        "peer's readings it holds to the --export destinations in its place, from where the "
        "peer got to; the peer, back, goes on from here."
    ),
    "peer-ca": "Peer TLS: the cluster CA (PEM); a peer's certificate must be signed by it.",
    "peer-tls-fingerprints": (
        "Peer TLS: comma-separated sha256:HEX of the peers' certificates (each node logs "
        "its own at start); only these are accepted. Instead of --peer-ca."
    ),
}


# Options given once per value, collected in a list.
_REPEATED = {"export"}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a p2pstore node: sensors send readings over TCP, the node stores "
        "them in SQLite, each signed with the cluster key. Ports take a number "
        "or a Twisted endpoint description such as tcp:12345:interface=127.0.0.1."
    )
    optParameters = [
        [
            "config", None, None,
            "A TOML file of settings: its keys are these options' names (sensor-port = 12345); "
            "an option given here wins over the file. See p2pstore.example.toml. [default: none]",
        ],
    ] + [
        [name, None, default, _HELP[name]]
        for name, default in DEFAULTS.items()
        if name not in _REPEATED
    ]

    def __init__(self):
        super().__init__()
        self["export"] = []
        # The settings given on the command line, which win over --config's
        # file: the options usage.Options sets (see __setitem__), whatever
        # their value, the default included.
        self.given: set[str] = set()

    def __setitem__(self, name: str, value) -> None:
        # usage.Options sets each parameter it parses this way, and its
        # defaults without it (by update).
        super().__setitem__(name, value)
        if hasattr(self, "given"):
            self.given.add(name)

    def opt_export(self, url: str) -> None:
        """
        Post this node's readings as InfluxDB line protocol to this write URL, e.g.
        http://host:8086/write?db=sensors (InfluxDB 1.x, VictoriaMetrics, QuestDB) or
        https://host/api/v2/write?org=ORG&bucket=BUCKET (InfluxDB 2.x, with
        --export-token-file). Give it once per destination. [default: no export]
        """
        self["export"].append(url)
        self.given.add("export")


def parse_settings(config: Options, reactor) -> Settings:
    """
    Check every setting: those given on the command line, then those of
    the --config file, then the defaults.

    @raise ConfigError: one of them is wrong; the message names it, and
        the file when the value came from the file.
    """
    given = {name: config[name] for name in DEFAULTS if name in config.given}
    path = config["config"]
    from_file = read_config(Path(path)) if path else {}
    try:
        return check_settings({**from_file, **given}, reactor)
    except ConfigError as e:
        if e.setting in from_file and e.setting not in given:
            raise ConfigFileError(Path(path), e.setting, e.problem) from None
        raise


def makeService(config: Options, reactor=None) -> ProcessTuning:
    """
    The node of these options, under the process tuning it runs with.
    """
    if reactor is None:
        from twisted.internet import reactor
    top = ProcessTuning()
    node = makeNode(config, reactor)
    node.on_failed_start = exit_failed_at_end
    node.setServiceParent(top)
    # Process-wide, as the signal is: one node per process.
    ReloadOnHangup(reactor, node.reloads).setServiceParent(top)
    return top


def makeNode(config: Options, reactor=None) -> NodeService:
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
        disk = Disk(data_dir / SELF_DB, data_dir / PEER_DB, reactor, settings.max_disk)
        disk.prepare()
        moved = _check_databases(data_dir, reactor)
        key_path = settings.secret_file or data_dir / KEY_FILE
        key, key_made = load_key(key_path, create=settings.secret_file is None)
        node_id, id_made = resolve_node_id(data_dir)
        sensor_tokens = http_token = None
        if settings.sensor_tokens is not None:
            sensor_tokens = _load("sensor-tokens", load_sensor_tokens, settings.sensor_tokens)
        if settings.http_token_file is not None:
            http_token = _load("http-token-file", load_http_token, settings.http_token_file)
    except ConfigError as e:
        if lock is not None:
            lock.close()
        raise SystemExit(f"p2pstore: {e}") from None

    signer = Signer.from_key(key)
    store = Store(
        path=data_dir / SELF_DB,
        node_id=node_id,
        synchronous=settings.sync.upper(),
        reactor=reactor,
        peer_path=data_dir / PEER_DB,
        recover_if_empty=not id_made and bool(settings.peers),
        wal_limit=wal_limit(settings.max_disk),
        mark_interval=mark_interval(settings.retain),
    )
    ingestor = Ingestor(
        store, OwnRows(node_id, signer), reactor, commit_interval=settings.commit_interval
    )
    replicator = Replicator(node_id, store, signer, reactor)
    node = Node(node_id, store, ingestor, reactor, replicator)
    node.scrub = replicator.scrub = Scrub(store, signer, reactor, replicator.want, settings.scrub_rate)
    node.access = SensorAccess(reactor, sensor_tokens, settings.sensor_allow)
    node.set_aside = moved
    node.copy_wait = ingestor.copy_wait = CopyWait(
        replicator.holdings, reactor, settings.ack_timeout, node.own_log, node.why_no_copies
    )
    node.disk = ingestor.disk = replicator.inbound.disk = disk
    node.pruner = Pruner(node, reactor, settings.retain, settings.min_copies, settings.on_full)
    node.ack_copies = settings.ack_copies
    node.exporters = [
        Exporter(
            destination, node_id, replicator.source, store, signer, reactor,
            refused=replicator.refused, takeover=settings.export_takeover,
            reachable=replicator.reachable, announce=replicator.announce,
        )
        for destination in settings.exports
    ]
    replicator.export_listeners = [exporter.heard_exported for exporter in node.exporters]
    replicator.export_positions = lambda: [e.announcement() for e in node.exporters]
    acks = AckCopies(settings.ack_copies, node.cluster_size)

    def now() -> str:
        return format_utc(reactor.seconds())

    sensors = Listener(
        "--sensor-port",
        settings.sensor_port,
        serverFromString(reactor, settings.sensor_port),
        SensorFactory(
            ingestor, settings.max_line, now, reactor, settings.unterminated_readings, node.access,
            acks,
        ),
    )
    status = Listener(
        "--status-port",
        settings.status_port,
        serverFromString(reactor, settings.status_port),
        status_site(node, http_token),
    )
    tls = PeerTLS(settings.peer_tls, node_id, reactor) if settings.peer_tls else None
    peer_endpoint = serverFromString(reactor, settings.peer_port)
    peers = Listener(
        "--peer-port",
        settings.peer_port,
        tls.server(peer_endpoint) if tls else peer_endpoint,
        PeerFactory(node_id, key, replicator, reactor, dialled=False),
    )
    dialler = PeerFactory(node_id, key, replicator, reactor, dialled=True)

    def dial(peer):
        endpoint = HostnameEndpoint(reactor, peer.host, peer.port)
        return tls.client(endpoint) if peer.tls else endpoint

    dialers = [Dialer(str(peer), dial(peer), dialler, reactor) for peer in settings.peers]
    notes = [
        f"p2pstore node {node_id} ({'new' if id_made else 'from ' + str(data_dir / 'node.id')})",
        f"data directory {data_dir.resolve()}",
        f"cluster key {key_path.resolve()} ({'created' if key_made else 'read'})",
        f"sensors on {settings.sensor_port}, status on {settings.status_port}, "
        f"peers on {settings.peer_port}",
        f"dialling peers: {', '.join(map(str, settings.peers)) or 'none'}",
        *_access_notes(settings, sensor_tokens, http_token),
        _copies_note(settings),
        "exporting readings to: "
        + (", ".join(d.name for d in settings.exports) or "nowhere (no --export)"),
    ]
    if tls is not None:
        node.tls = tls.status
        credentials = settings.peer_tls
        checked = (
            f"signed by the cluster CA in {credentials.ca_path}"
            if credentials.ca
            else f"pinned ({len(credentials.pins)} in --peer-tls-fingerprints)"
        )
        notes += [
            f"peer TLS: the peer port takes only TLS; peers' certificates must be {checked}",
            f"this node's certificate {credentials.fingerprint} "
            f"({subject_name(credentials.certificate)}, {credentials.certificate_path}): "
            "peers that pin certificates list it in --peer-tls-fingerprints",
        ]
    service = NodeService(
        node,
        sensors,
        status,
        reactor,
        notes,
        peers=peers,
        dialers=dialers,
        write_id=(lambda: write_node_id(data_dir, node_id)) if id_made else None,
        lock=lock,
        errors=[advice(m, m.path.name == SELF_DB, bool(settings.peers)) for m in moved],
    )
    # What SIGHUP reads again (see makeService).
    service.reloads = [node.access.reload] + ([http_token.reload_logged] if http_token else [])
    return service


def _check_databases(data_dir: Path, reactor) -> list[SetAside]:
    """
    Move aside the node's databases SQLite finds damaged (L{p2pstore.damaged}).
    """
    try:
        return check_databases([data_dir / SELF_DB, data_dir / PEER_DB], reactor.seconds())
    except (sqlite3.Error, OSError) as e:
        raise ConfigError("data-dir", f"cannot check the databases in {data_dir}: {e}") from None


def _load(setting: str, load, path):
    try:
        return load(path)
    except AccessFileError as e:
        raise ConfigError(setting, str(e)) from None


def _copies_note(settings: Settings) -> str:
    """
    The start's line about what an OK promises.
    """
    if settings.ack_copies == 1:
        return "answers OK once a reading is on this node's disk (--ack-copies 1)"
    others = settings.ack_copies - 1
    note = (
        f"answers OK once a reading is on this node's disk and on {others} other "
        f"node{'s' if others > 1 else ''} (--ack-copies {settings.ack_copies}), "
        f"or 'ERR copies' after {settings.ack_timeout:g} s"
    )
    if len(settings.peers) < others:
        note += (
            f"; warning: only {len(settings.peers)} peers are given with --peers, so unless "
            "others dial this node every reading will be answered 'ERR copies'"
        )
    return note


def _access_notes(settings: Settings, sensor_tokens, http_token) -> list[str]:
    """
    The start's lines about who may connect.
    """
    notes = []
    if sensor_tokens is not None:
        notes.append(
            f"sensors need a token: {sensors_known(len(sensor_tokens.value))} from "
            f"{settings.sensor_tokens} (reloaded on SIGHUP)"
        )
    if settings.sensor_allow:
        notes.append(f"sensors only from {','.join(map(str, settings.sensor_allow))}")
    if http_token is not None:
        notes.append(f"/readings needs the bearer token of {settings.http_token_file}")
    for loaded in (sensor_tokens, http_token):
        if loaded is not None and loosely_readable(loaded.path):
            notes.append(
                f"warning: {loaded.path} can be read by other users: chmod 600 it"
            )
    return notes
