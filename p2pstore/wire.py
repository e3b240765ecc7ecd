"""
The peer protocol's messages: one line each, ``<VERB> <JSON payload>``.

Parsing checks the shape of every payload, so the handshake and replication
code only ever see well-formed values; anything else is L{BadMessage}.
See docs/peer-protocol.md.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from .records import ENTRY, ENTRY_INDEX, is_node_id

# 2: lines after the handshake are sealed (p2pstore.sealing).
# 3: WANT and REPAIR (records in quarantine), HELD (copies beyond a relay),
# FULL (no room for a peer's records).
PROTOCOL_VERSION = 3
# SQLite's largest integer.
MAX_INTEGER = 2**63 - 1
NONCE_BYTES = 32
# Records in one RECORDS message, at most: what bounds the work and memory
# one line can cost the receiver (its HMAC checks, one transaction).
MAX_RECORDS = 1000

HELLO = b"HELLO"
AUTH = b"AUTH"
HAVE = b"HAVE"
RECORDS = b"RECORDS"
ACK = b"ACK"
PING = b"PING"
PONG = b"PONG"
LINKS = b"LINKS"
WANT = b"WANT"
REPAIR = b"REPAIR"
HELD = b"HELD"
FULL = b"FULL"

VERBS = (HELLO, AUTH, HAVE, RECORDS, ACK, PING, PONG, LINKS, WANT, REPAIR, HELD, FULL)
# The longest reason a FULL carries.
MAX_REASON = 300
# Positions one WANT asks for, at most.
MAX_WANTED = 100


class BadMessage(ValueError):
    """
    A line that is not a well-formed peer message; the text says what.
    """


@frozen
class Hello:
    version: int
    node_id: str
    nonce: bytes


@frozen
class Auth:
    proof: bytes


@frozen
class Have:
    """
    How far the sender holds each log: ``{origin: {epoch: last_index}}``.
    """

    positions: dict


@frozen
class Records:
    """
    Consecutive records of one log, as their origin stored them: each an
    entry, a tuple of the record's fields in the order of L{p2pstore.records.ENTRY},
    the origin and epoch once for all.

    Entries, not L{Record} objects, because replication only passes records
    from one database to another: a node sends them as it reads them, and
    decoding checks each entry's types and the indexes' order in a few
    passes over the whole batch. Replication checks each entry's HMAC
    before it stores it.
    """

    origin: str
    epoch: str
    entries: list


@frozen
class Ack:
    """
    The receiver of a L{Records} batch now holds ``(origin, epoch)`` up to
    ``last_index``.
    """

    origin: str
    epoch: str
    last_index: int


@frozen
class Want:
    """
    The sender lost these records of a log (they failed their check on its
    disk, or were gone): a receiver that holds them answers L{Repair}.
    """

    origin: str
    epoch: str
    indexes: tuple


@frozen
class Repair:
    """
    Records of one log that a L{Want} asked for, not necessarily
    consecutive; the receiver checks each HMAC and stores only those it
    has in quarantine.
    """

    origin: str
    epoch: str
    entries: list


@frozen
class Held:
    """
    Other nodes hold ``(origin, epoch)`` up to these indexes, after their
    commits: ``{node id: last_index}``. A relay sends it towards the origin
    when a node it forwarded the log to acknowledges it.
    """

    origin: str
    epoch: str
    holders: dict


@frozen
class Full:
    """
    The sender has no room for the receiver's records (its disk budget or
    its disk): the batches it answers next were not stored; send again later.
    """

    reason: str


@frozen
class Links:
    """
    The nodes the sender has an authenticated link to now: a peer linked to
    an origin gets that origin's records from it directly, so they need not
    be forwarded to it as well.
    """

    node_ids: frozenset


@frozen
class Ping:
    pass


@frozen
class Pong:
    pass


def _dump(verb: bytes, payload: Any) -> bytes:
    return verb + b" " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(message) -> bytes:
    """
    The line (without its delimiter) for a message.
    """
    if isinstance(message, Hello):
        return _dump(HELLO, {"v": message.version, "node": message.node_id, "nonce": message.nonce.hex()})
    if isinstance(message, Auth):
        return _dump(AUTH, {"proof": message.proof.hex()})
    if isinstance(message, Have):
        return _dump(HAVE, message.positions)
    if isinstance(message, Records):
        return _dump(
            RECORDS, {"origin": message.origin, "epoch": message.epoch, "records": message.entries}
        )
    if isinstance(message, Ack):
        return _dump(ACK, {"origin": message.origin, "epoch": message.epoch, "have": message.last_index})
    if isinstance(message, Want):
        return _dump(
            WANT, {"origin": message.origin, "epoch": message.epoch, "indexes": list(message.indexes)}
        )
    if isinstance(message, Repair):
        return _dump(
            REPAIR, {"origin": message.origin, "epoch": message.epoch, "records": message.entries}
        )
    if isinstance(message, Held):
        return _dump(HELD, {"origin": message.origin, "epoch": message.epoch, "nodes": message.holders})
    if isinstance(message, Full):
        return _dump(FULL, {"reason": message.reason[:MAX_REASON]})
    if isinstance(message, Links):
        return _dump(LINKS, {"nodes": sorted(message.node_ids)})
    if isinstance(message, Ping):
        return PING + b" {}"
    if isinstance(message, Pong):
        return PONG + b" {}"
    raise TypeError(f"not a peer message: {message!r}")


def _hex(value, name: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != size * 2:
        raise BadMessage(f"{name} is not {size} bytes of hex")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise BadMessage(f"{name} is not hex") from None
    # fromhex skips whitespace, so 2 * size characters can be fewer bytes.
    if len(data) != size:
        raise BadMessage(f"{name} is not {size} bytes of hex")
    return data


def _node(value, name: str) -> str:
    if not is_node_id(value):
        raise BadMessage(f"{name} is not a node id")
    return value


def _index(value, name: str) -> int:
    if type(value) is not int or value < 0:
        raise BadMessage(f"{name} is not a non-negative integer")
    return value


_NoneType = type(None)


def _entries(rows, verb: str = "RECORDS", consecutive: bool = True) -> list[tuple]:
    """
    The entries of a RECORDS (or REPAIR) payload, each field checked by the
    rule of L{p2pstore.records.ENTRY} (and the indexes within SQLite's
    integers and, for RECORDS, consecutive; for REPAIR, rising), a column
    at a time: this runs for every record a node receives.
    """
    if not isinstance(rows, list) or not rows:
        raise BadMessage(f"{verb} has no records")
    if len(rows) > MAX_RECORDS:
        raise BadMessage(f"{verb} has {len(rows)} records, more than {MAX_RECORDS}")
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {len(ENTRY)}:
        raise BadMessage(f"a record is not a list of {len(ENTRY)} fields")
    columns = list(zip(*rows))
    for field, column in zip(ENTRY, columns):
        types = set(map(type, column))
        if field.kind is int:
            # type() is int: not a bool, and not a float equal to an int,
            # which would sign differently.
            if types != {int} or min(column) < field.minimum:
                raise BadMessage(f"{field.name} is not {field.wanted}")
            if max(column) > MAX_INTEGER:
                raise BadMessage("an index is larger than SQLite can store")
        elif not (types <= {str, _NoneType} if field.optional else types == {str}):
            raise BadMessage(f"{field.name} is not {field.wanted}")
    entry_indexes = columns[ENTRY_INDEX]
    first = entry_indexes[0]
    if consecutive:
        if entry_indexes != tuple(range(first, first + len(rows))):
            raise BadMessage("RECORDS indexes are not consecutive")
    elif any(a >= b for a, b in zip(entry_indexes, entry_indexes[1:])):
        raise BadMessage(f"{verb} indexes are not rising")
    return list(zip(*columns))


def decode(line: bytes):
    """
    Parse one line into a message.

    @raise BadMessage: it is not one.
    """
    verb, _, body = line.partition(b" ")
    if verb not in VERBS:
        raise BadMessage(f"unknown message {verb[:20]!r}")
    try:
        # Decoded first: json.loads(bytes) would also take UTF-16, UTF-32
        # and a byte-order mark, which no node sends.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage(f"{verb.decode()} payload is not UTF-8") from None
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: deeply nested brackets from a hostile peer.
        raise BadMessage(f"{verb.decode()} payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadMessage(f"{verb.decode()} payload is not an object")
    if verb == HELLO:
        version = payload.get("v")
        if type(version) is not int:
            raise BadMessage("HELLO has no version")
        return Hello(version, _node(payload.get("node"), "node"), _hex(payload.get("nonce"), "nonce", NONCE_BYTES))
    if verb == AUTH:
        return Auth(_hex(payload.get("proof"), "proof", 32))
    if verb == HAVE:
        positions = {}
        for origin, epochs in payload.items():
            _node(origin, "origin")
            if not isinstance(epochs, dict):
                raise BadMessage("HAVE positions are not objects")
            positions[origin] = {_node(e, "epoch"): _index(n, "last_index") for e, n in epochs.items()}
        return Have(positions)
    if verb == RECORDS:
        origin = _node(payload.get("origin"), "origin")
        epoch = _node(payload.get("epoch"), "epoch")
        return Records(origin, epoch, _entries(payload.get("records")))
    if verb == ACK:
        return Ack(
            _node(payload.get("origin"), "origin"),
            _node(payload.get("epoch"), "epoch"),
            _index(payload.get("have"), "have"),
        )
    if verb == WANT:
        indexes = payload.get("indexes")
        if not isinstance(indexes, list) or not 0 < len(indexes) <= MAX_WANTED:
            raise BadMessage(f"WANT has no list of 1 to {MAX_WANTED} indexes")
        return Want(
            _node(payload.get("origin"), "origin"),
            _node(payload.get("epoch"), "epoch"),
            tuple(_index(i, "index") for i in indexes),
        )
    if verb == REPAIR:
        return Repair(
            _node(payload.get("origin"), "origin"),
            _node(payload.get("epoch"), "epoch"),
            _entries(payload.get("records"), "REPAIR", consecutive=False),
        )
    if verb == HELD:
        holders = payload.get("nodes")
        if not isinstance(holders, dict) or not holders:
            raise BadMessage("HELD has no nodes")
        return Held(
            _node(payload.get("origin"), "origin"),
            _node(payload.get("epoch"), "epoch"),
            {_node(n, "node"): _index(i, "last_index") for n, i in holders.items()},
        )
    if verb == FULL:
        reason = payload.get("reason")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise BadMessage(f"FULL has no reason of up to {MAX_REASON} characters")
        return Full(reason)
    if verb == LINKS:
        nodes = payload.get("nodes")
        if not isinstance(nodes, list):
            raise BadMessage("LINKS has no list of nodes")
        return Links(frozenset(_node(n, "node") for n in nodes))
    if verb == PING:
        return Ping()
    return Pong()
