"""
What a node answers on ``/status`` and ``/readings``, checked field by field.

Nothing a server sends is trusted: every field the monitor uses is checked for
its type and range here, and anything else raises L{BadAnswer} with a message
naming the field. Fields the monitor does not use are ignored.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Optional

from attrs import frozen

# The states a node reports about itself (p2pstore.node).
NODE_STATES = ("Running", "Syncing", "Initializing")

# Bounds on what one answer may hold; a node sends far less.
MAX_ORIGINS = 1000
MAX_PEERS = 1000
MAX_EXPORTS = 100
# No count a node keeps is larger (SQLite's largest integer); a larger one
# would overflow the float arithmetic of rates.
MAX_INTEGER = 2**63 - 1
# Logs: an origin per node, a few epochs each.
MAX_LOGS = 10 * MAX_ORIGINS
MAX_READINGS = 10000
MAX_TEXT = 200
# A peer's trouble line names what went wrong, with its reason: longer.
MAX_TROUBLE = 2000

_NODE_ID = re.compile(r"[0-9a-f]{32}\Z")


class BadAnswer(ValueError):
    """
    An answer that is not JSON, or not shaped as a node's answer.
    """


@frozen
class Peer:
    address: Optional[str]
    node_id: Optional[str]
    connected: bool
    # Left out by older nodes: None.
    trouble: Optional[str] = None
    link_errors: Optional[int] = None
    rejected: Optional[int] = None
    # Found gone (no link for long, p2pstore.departed): its entry goes soon.
    gone: bool = False
    # When a message of it last arrived (the node's wall clock).
    last_seen: Optional[float] = None
    # The records it is known to lack, per origin, and how long the oldest
    # of them has waited per origin (seconds); empty when it lacks none.
    lag: Optional[dict] = None
    lag_s: Optional[dict] = None

    @property
    def lag_records(self) -> Optional[int]:
        return None if self.lag is None else sum(self.lag.values())

    @property
    def lag_seconds(self) -> Optional[float]:
        return None if self.lag_s is None else max(self.lag_s.values(), default=0.0)


@frozen
class Export:
    """
    One ``--export`` destination of a node, as its ``/status`` says.

    @ivar url: the destination, its secrets already replaced by the node.
    @ivar state: C{"starting"}, C{"ok"}, C{"retrying"} or C{"misconfigured"}
        (a newer node may say more).
    @ivar pending: readings not yet exported; C{oldest_age_s} is how long the
        oldest of them has waited (None when none waits).
    @ivar last_error: why the last write failed, while it fails.
    """

    url: str
    state: str
    pending: int
    oldest_age_s: Optional[float] = None
    dead_lettered: Optional[int] = None
    last_error: Optional[str] = None


@frozen
class Log:
    """
    One log a node holds (its /status "logs"): the positions C{first} to
    C{last} of one epoch of an origin, C{held} of them, and whether it is
    the origin's current epoch.
    """

    origin: str
    epoch: str
    first: int
    last: int
    held: int
    current: bool = False


@frozen
class NodeStatus:
    """
    The parts of a node's ``/status`` the monitor shows. A field the node
    left out is C{None} (an older or newer node may not send it).

    @ivar origins: how many readings of each origin (by node id) the node holds.
    """

    node_id: str
    state: str
    version: Optional[str]
    uptime_s: Optional[float]
    sensors_connected: Optional[int]
    sensors_rejected: Optional[int]
    # Of those connected, sensors that send readings without line ends.
    sensors_unterminated: Optional[int]
    origins: Optional[dict]
    peers: Optional[tuple]
    # Records that failed their check on the node's disk, waiting for a
    # good copy from a peer (its scrub), and files moved aside at start.
    quarantined: Optional[int] = None
    damaged_files: Optional[int] = None
    # The node's disk (its /status "disk"): bytes its databases take, its
    # --max-disk, the days left at the last hour's growth, and why it is
    # full (None while it is not).
    disk_used: Optional[int] = None
    disk_budget: Optional[int] = None
    disk_days_left: Optional[float] = None
    disk_full: Optional[str] = None
    # Its --export destinations; None when it exports nowhere.
    exports: Optional[tuple] = None
    # The copies its sensors' readings wait for (--ack-copies), when above 1.
    ack_copies: Optional[int] = None
    # The node's clock when it answered (its last_seen times are on it).
    time: Optional[float] = None
    # Readings answered OK since the node started.
    sensors_accepted: Optional[int] = None
    # How many connected sensors go by each name (nodes with --sensor-tokens).
    sensor_names: Optional[dict] = None
    # Per origin, the logs the node holds of it (Log), oldest epoch first.
    logs: Optional[dict] = None

    @property
    def own_readings(self) -> Optional[int]:
        if self.origins is None:
            return None
        return self.origins.get(self.node_id, 0)

    @property
    def held_for_others(self) -> Optional[int]:
        if self.origins is None:
            return None
        return sum(count for origin, count in self.origins.items() if origin != self.node_id)

    @property
    def links_up(self) -> Optional[int]:
        return None if self.peers is None else sum(1 for p in self.peers if p.connected)

    @property
    def links_down(self) -> Optional[int]:
        """
        Links down to peers that are not gone (those are L{peers_gone}).
        """
        return None if self.peers is None else sum(1 for p in self.peers if not p.connected and not p.gone)

    @property
    def peers_gone(self) -> tuple:
        return () if self.peers is None else tuple(p for p in self.peers if p.gone and not p.connected)

    @property
    def peers_in_trouble(self) -> tuple:
        """
        The peers whose links dropped or whose records were refused lately.
        """
        return () if self.peers is None else tuple(p for p in self.peers if p.trouble)


@frozen
class Reading:
    sensor_type: str
    sensor_data: str
    timestamp: str
    value: Optional[float]
    unit: Optional[str]


def decode_json(body: bytes) -> Any:
    """
    Parse an answer's body as JSON, refusing what Python's parser would
    otherwise let through (NaN, Infinity) or choke on (deep nesting).
    """
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise BadAnswer("the answer is not UTF-8") from None
    except RecursionError:
        raise BadAnswer("the answer is not JSON: nested too deeply") from None
    except ValueError as e:
        raise BadAnswer(f"the answer is not JSON: {_short(str(e))}") from None


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_status(data: Any) -> NodeStatus:
    """
    Check a decoded ``/status`` answer.

    @raise BadAnswer: naming the first field that is missing or wrong.
    """
    status = _Object(data, "", "the status")
    node_id = status.field("node_id", _is_node_id, "a node id (32 lowercase hex characters)", True)
    state = status.field("state", lambda v: v in NODE_STATES, "one of " + ", ".join(NODE_STATES), True)
    sensors = status.object("sensors")
    origins = None
    origins_data = status.field("origins", lambda v: isinstance(v, dict), "an object")
    if origins_data is not None:
        if len(origins_data) > MAX_ORIGINS:
            raise BadAnswer(f"'origins' lists more than {MAX_ORIGINS} origins")
        origins = {}
        for origin, entry in origins_data.items():
            if not _is_node_id(origin):
                raise BadAnswer(f"'origins' has a key that is not a node id: {_show(origin)}")
            origins[origin] = _Object(entry, f"origins.{origin}").field(
                "count", _is_count, "a whole number >= 0", True
            )
    peers_data = status.items("peers", MAX_PEERS, "peers")
    peers = None if peers_data is None else tuple(_peer(p) for p in peers_data)
    scrub = status.object("scrub")
    damaged = status.field("damaged_files", lambda v: isinstance(v, list), "a list")
    disk = status.object("disk")
    full = disk and disk.field(
        "full", lambda v: v is False or _is_trouble(v), f"false or a string of 1 to {MAX_TROUBLE} characters"
    )
    logs = None
    logs_data = status.items("logs", MAX_LOGS, "logs")
    if logs_data is not None:
        by_origin: dict = {}
        for entry in logs_data:
            log = _log(entry)
            by_origin.setdefault(log.origin, []).append(log)
        logs = {origin: tuple(held) for origin, held in by_origin.items()}
    exports_data = status.items("exports", MAX_EXPORTS, "destinations")
    exports = tuple(_export(e) for e in exports_data) if exports_data else None
    return NodeStatus(
        node_id=node_id,
        state=state,
        version=status.field("version", _is_text, "a string"),
        uptime_s=status.field("uptime_s", _is_duration, "a number of seconds >= 0"),
        sensors_connected=sensors and sensors.field("connected", _is_count, "a whole number >= 0"),
        sensors_rejected=sensors and sensors.field("rejected", _is_count, "a whole number >= 0"),
        sensors_unterminated=sensors
        and sensors.field("unterminated_connected", _is_count, "a whole number >= 0"),
        origins=origins,
        peers=peers,
        quarantined=scrub and scrub.field("quarantined", _is_count, "a whole number >= 0"),
        damaged_files=None if damaged is None else len(damaged),
        disk_used=disk and disk.field("used_bytes", _is_count, "a whole number >= 0"),
        disk_budget=disk and disk.field("budget_bytes", _is_count, "a whole number >= 0 or null"),
        disk_days_left=disk and disk.field("days_left", _is_duration, "a number >= 0 or null"),
        disk_full=full or None,
        exports=exports,
        ack_copies=status.field("ack_copies", lambda v: _is_count(v) and v >= 1, "a whole number >= 1"),
        time=status.field("time", _is_duration, "a time (seconds since 1970)"),
        sensors_accepted=sensors and sensors.field("accepted", _is_count, "a whole number >= 0"),
        sensor_names=sensors and sensors.field(
            "names", lambda v: _is_map(v, _is_text, _is_count), "an object of names and counts"
        ),
        logs=logs,
    )


def _log(log: "_Object") -> Log:
    return Log(
        origin=log.field("origin", _is_node_id, "a node id", True),
        epoch=log.field("epoch", _is_node_id, "an epoch id (32 lowercase hex characters)", True),
        first=log.field("first", _is_count, "a whole number >= 0", True),
        last=log.field("last", _is_count, "a whole number >= 0", True),
        held=log.field("held", _is_count, "a whole number >= 0", True),
        current=log.field("current", lambda v: isinstance(v, bool), "true or false") or False,
    )


def _peer(peer: "_Object") -> Peer:
    return Peer(
        address=peer.field("address", _is_text, "a string"),
        node_id=peer.field("node_id", _is_node_id, "a node id"),
        connected=peer.field("connected", lambda v: isinstance(v, bool), "true or false", True),
        trouble=peer.field(
            "trouble", _is_trouble, f"a string of 1 to {MAX_TROUBLE} characters or null"
        ),
        link_errors=peer.field("link_errors", _is_count, "a whole number >= 0"),
        rejected=peer.field("rejected", _is_count, "a whole number >= 0"),
        gone=peer.field("gone", lambda v: isinstance(v, bool), "true or false") or False,
        last_seen=peer.field("last_seen", _is_duration, "a time (seconds since 1970) or null"),
        lag=peer.field("lag", lambda v: _is_map(v, _is_node_id, _is_count), "an object of node ids and counts"),
        lag_s=peer.field(
            "lag_s", lambda v: _is_map(v, _is_node_id, _is_duration), "an object of node ids and seconds"
        ),
    )


def _export(export: "_Object") -> Export:
    trouble = f"a string of 1 to {MAX_TROUBLE} characters"
    return Export(
        url=export.field("url", _is_trouble, trouble, True),
        state=export.field("state", _is_text, f"a string of 1 to {MAX_TEXT} characters", True),
        pending=export.field("pending", _is_count, "a whole number >= 0", True),
        oldest_age_s=export.field("oldest_unexported_age_s", _is_duration, "a number of seconds >= 0 or null"),
        dead_lettered=export.field("dead_lettered", _is_count, "a whole number >= 0"),
        last_error=export.field("last_error", _is_trouble, f"{trouble} or null"),
    )


def parse_readings(data: Any) -> tuple:
    """
    Check a decoded ``/readings`` answer.

    @return: its readings, newest first, as the node sends them.
    @raise BadAnswer: naming the first field that is missing or wrong.
    """
    answer = _Object(data, "", "the readings answer")
    readings = answer.field("readings", lambda v: isinstance(v, list), "a list", True)
    if len(readings) > MAX_READINGS:
        raise BadAnswer(f"'readings' lists more than {MAX_READINGS} readings")
    return tuple(_reading(_Object(r, f"readings[{n}]")) for n, r in enumerate(readings))


def _reading(reading: "_Object") -> Reading:
    text = "a string of 1 to %d characters" % MAX_TEXT
    return Reading(
        sensor_type=reading.field("sensor_type", _is_text, text, True),
        sensor_data=reading.field("sensor_data", _is_text, text, True),
        timestamp=reading.field("timestamp", _is_text, text, True),
        value=reading.field("value", _is_number, "a finite number or null"),
        unit=reading.field("unit", _is_text, text),
    )


def error_message(body: bytes) -> Optional[str]:
    """
    The ``error`` string of a node's JSON error answer, if it has a usable one.
    """
    try:
        data = decode_json(body)
    except BadAnswer:
        return None
    if isinstance(data, dict) and _is_text(data.get("error")):
        return data["error"]
    return None


class _Object:
    """
    A decoded JSON object whose fields are checked one by one; C{path}
    names it in messages (C{""} for a whole answer, then called C{label}).
    """

    def __init__(self, data: Any, path: str, label: Optional[str] = None):
        if not isinstance(data, dict):
            raise BadAnswer(f"{label or repr(path)} should be an object, not {_show(data)}")
        self.data = data
        self.path = path

    def field(self, name: str, check: Callable[[Any], bool], what: str, required: bool = False):
        value = self.data.get(name)
        if value is None:
            if required:
                raise BadAnswer(f"'{self._name(name)}' is missing")
            return None
        if not check(value):
            raise BadAnswer(f"'{self._name(name)}' should be {what}, not {_show(value)}")
        return value

    def items(self, name: str, limit: int, what: str) -> Optional[list]:
        """
        The objects of the list C{name}, at most C{limit} of them (C{what}
        they are, for the message), or C{None} when it is left out.
        """
        values = self.field(name, lambda v: isinstance(v, list), "a list")
        if values is None:
            return None
        if len(values) > limit:
            raise BadAnswer(f"'{self._name(name)}' lists more than {limit} {what}")
        return [_Object(v, f"{self._name(name)}[{n}]") for n, v in enumerate(values)]

    def object(self, name: str) -> Optional["_Object"]:
        value = self.data.get(name)
        return None if value is None else _Object(value, self._name(name))

    def _name(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def _is_node_id(value) -> bool:
    return isinstance(value, str) and _NODE_ID.match(value) is not None


def _is_map(value, key: Callable[[Any], bool], item: Callable[[Any], bool]) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= MAX_ORIGINS
        and all(key(k) and item(v) for k, v in value.items())
    )


def _is_text(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _is_trouble(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TROUBLE


def _is_number(value) -> bool:
    # bool is an int in Python, but true is no count; an int too large for
    # a float would make math.isfinite raise.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return -MAX_INTEGER <= value <= MAX_INTEGER
    return math.isfinite(value)


def _is_duration(value) -> bool:
    return _is_number(value) and value >= 0


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER


def _show(value: Any) -> str:
    """
    A short description of an untrusted value for a message.
    """
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    return _short(json.dumps(value))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
