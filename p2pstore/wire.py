"""
The peer protocol's messages: one line each, ``<VERB> <JSON payload>``.

Parsing checks the shape of every payload, so the handshake and replication
code only ever see well-formed values; anything else is L{BadMessage}.
See docs/peer-protocol.md.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from attrs import frozen

from .records import ENTRY, ENTRY_INDEX, is_node_id

# 2: lines after the handshake are sealed (p2pstore.sealing).
# 3: WANT and REPAIR (records in quarantine), HELD (copies beyond a relay),
# FULL (no room for a peer's records).
# 4: HAVE may say where a log starts ([first, last]), PRUNED (a range the
# sender no longer holds).
# 5: EXPORTED (how far an export destination holds each log).
PROTOCOL_VERSION = 5
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
PRUNED = b"PRUNED"
EXPORTED = b"EXPORTED"

VERBS = (
    HELLO, AUTH, HAVE, RECORDS, ACK, PING, PONG, LINKS, WANT, REPAIR, HELD, FULL, PRUNED, EXPORTED
)
# The longest destination name an EXPORTED carries.
MAX_DESTINATION = 2048
# The longest reason a FULL or PRUNED carries.
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
    How far the sender holds each log: ``{origin: {epoch: last_index}}``,
    and where each log it holds from past 1 starts: ``{(origin, epoch):
    first_index}`` (on the wire such a log's position is ``[first,
    last]``).
    """

    positions: dict
    firsts: dict = attrs.Factory(dict)


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
class Exported:
    """
    Export destination ``destination`` (its URL without secrets, as
    L{p2pstore.destinations.Destination.name}) has taken each log up to
    ``positions`` (``{(origin, epoch): index}``), as the sender's cursors
    say: so that a node that takes over the export of an origin that is
    down starts where it left off, and the origin, back, goes on from
    where the other got to.
    """

    destination: str
    positions: dict


@frozen
class Pruned:
    """
    The sender no longer holds records ``first`` to ``last`` of ``(origin,
    epoch)``, for ``reason`` (its retention, its disk budget): sent in
    order with the records, in place of those, to a peer that lacks them.
    The receiver records the range and answers L{Ack} as for a batch.
    """

    origin: str
    epoch: str
    first: int
    last: int
    reason: str
    # No records: what L{Records} has, for what counts them.
    entries = ()


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
        positions = {
            origin: {
                epoch: [message.firsts[(origin, epoch)], last]
                if (origin, epoch) in message.firsts
                else last
                for epoch, last in epochs.items()
            }
            for origin, epochs in message.positions.items()
        }
        return _dump(HAVE, positions)
    if isinstance(message, Exported):
        logs: dict = {}
        for (origin, epoch), index in message.positions.items():
            logs.setdefault(origin, {})[epoch] = index
        return _dump(EXPORTED, {"destination": message.destination, "logs": logs})
    if isinstance(message, Pruned):
        return _dump(
            PRUNED,
            {
                "origin": message.origin,
                "epoch": message.epoch,
                "first": message.first,
                "last": message.last,
                "reason": message.reason[:MAX_REASON],
            },
        )
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
        positions, firsts = {}, {}
        for origin, epochs in payload.items():
            _node(origin, "origin")
            if not isinstance(epochs, dict):
                raise BadMessage("HAVE positions are not objects")
            held = positions[origin] = {}
            for e, n in epochs.items():
                _node(e, "epoch")
                if isinstance(n, list):
                    if len(n) != 2:
                        raise BadMessage("a HAVE range is not [first, last]")
                    first, n = _index(n[0], "first_index"), _index(n[1], "last_index")
                    if not 1 <= first <= n + 1:
                        raise BadMessage("a HAVE range's first index is not from 1 to last + 1")
                    if first > 1:
                        firsts[(origin, e)] = first
                held[e] = _index(n, "last_index")
        return Have(positions, firsts)
    if verb == EXPORTED:
        destination = payload.get("destination")
        if not isinstance(destination, str) or not 0 < len(destination) <= MAX_DESTINATION:
            raise BadMessage(f"EXPORTED has no destination of up to {MAX_DESTINATION} characters")
        logs = payload.get("logs")
        if not isinstance(logs, dict):
            raise BadMessage("EXPORTED logs are not an object")
        positions = {}
        for origin, epochs in logs.items():
            _node(origin, "origin")
            if not isinstance(epochs, dict):
                raise BadMessage("EXPORTED positions are not objects")
            for epoch, index in epochs.items():
                positions[(origin, _node(epoch, "epoch"))] = _index(index, "index")
        return Exported(destination, positions)
    if verb == PRUNED:
        first, last = _index(payload.get("first"), "first"), _index(payload.get("last"), "last")
        reason = payload.get("reason")
        if not 1 <= first <= last:
            raise BadMessage("PRUNED has no range from 1 on")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise BadMessage(f"PRUNED has no reason of up to {MAX_REASON} characters")
        return Pruned(
            _node(payload.get("origin"), "origin"), _node(payload.get("epoch"), "epoch"),
            first, last, reason,
        )
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
