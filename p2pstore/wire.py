"""
The peer protocol's messages: one line each, ``<VERB> <JSON payload>``.

Parsing checks the shape of every payload, so the session and replication
code only ever see well-formed values; anything else is L{BadMessage}.
See docs/peer-protocol.md.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from .records import Record, is_node_id

PROTOCOL_VERSION = 1
NONCE_BYTES = 32

HELLO = b"HELLO"
AUTH = b"AUTH"
HAVE = b"HAVE"
RECORDS = b"RECORDS"
ACK = b"ACK"
PING = b"PING"
PONG = b"PONG"
LINKS = b"LINKS"

VERBS = (HELLO, AUTH, HAVE, RECORDS, ACK, PING, PONG, LINKS)


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
    Consecutive records of one log, as their origin stored them.
    """

    origin: str
    epoch: str
    records: list


@frozen
class Entries:
    """
    L{Records} to send, as the sender holds them: each entry the record's
    fields in the order RECORDS carries them (L{entry_of}), the origin and
    epoch once for all. Encoded without building a L{Record} per entry; the
    receiver decodes L{Records} and checks every record.
    """

    origin: str
    epoch: str
    entries: list


def entry_of(record: Record) -> tuple:
    """
    The fields of a record as a RECORDS entry carries them.
    """
    return (
        record.entry_index,
        record.sensor_index,
        record.sensor_type,
        record.sensor_data,
        record.timestamp,
        record.reading_id,
        record.data_checksum,
    )


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
    if isinstance(message, Entries):
        return _dump(
            RECORDS, {"origin": message.origin, "epoch": message.epoch, "records": message.entries}
        )
    if isinstance(message, Records):
        return encode(
            Entries(message.origin, message.epoch, [entry_of(r) for r in message.records])
        )
    if isinstance(message, Ack):
        return _dump(ACK, {"origin": message.origin, "epoch": message.epoch, "have": message.last_index})
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


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise BadMessage(f"{name} is not a string")
    return value


def _record(origin: str, epoch: str, row) -> Record:
    if not isinstance(row, list) or len(row) != 7:
        raise BadMessage("a record is not a list of 7 fields")
    entry_index, sensor_index, sensor_type, sensor_data, timestamp, reading_id, checksum = row
    if reading_id is not None:
        _text(reading_id, "reading_id")
    try:
        return Record(
            origin=origin,
            epoch=epoch,
            entry_index=_index(entry_index, "entry_index"),
            sensor_index=_index(sensor_index, "sensor_index"),
            sensor_type=_text(sensor_type, "sensor_type"),
            sensor_data=_text(sensor_data, "sensor_data"),
            timestamp=_text(timestamp, "timestamp"),
            reading_id=reading_id,
            data_checksum=_text(checksum, "data_checksum"),
        )
    except ValueError as e:
        raise BadMessage(f"bad record: {e}") from None


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
        rows = payload.get("records")
        if not isinstance(rows, list) or not rows:
            raise BadMessage("RECORDS has no records")
        records = [_record(origin, epoch, row) for row in rows]
        first = records[0].entry_index
        for offset, record in enumerate(records):
            if record.entry_index != first + offset:
                raise BadMessage("RECORDS indexes are not consecutive")
        return Records(origin, epoch, records)
    if verb == ACK:
        return Ack(
            _node(payload.get("origin"), "origin"),
            _node(payload.get("epoch"), "epoch"),
            _index(payload.get("have"), "have"),
        )
    if verb == LINKS:
        nodes = payload.get("nodes")
        if not isinstance(nodes, list):
            raise BadMessage("LINKS has no list of nodes")
        return Links(frozenset(_node(n, "node") for n in nodes))
    if verb == PING:
        return Ping()
    return Pong()
