"""
A stored record: its fields and the rule for a valid one, its canonical
bytes, and its HMAC under the cluster key.

Pure functions and values, no Twisted: the store, the peer messages and
replication all use this one codec. The grammar of sensor lines is
L{p2pstore.lines}.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import operator
import re
from typing import Callable, Optional, Sequence

import attrs
from attrs import frozen

NODE_ID = re.compile(r"\A[0-9a-f]{32}\Z")

# A number at the start of sensor_data, then the unit: `1.798 atm`, `15% RH`.
_VALUE_UNIT = re.compile(
    r"\A([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(.*)\Z", re.S
)

_FORMAT = b"p2pstore-record-v1\n"


class BadRecord(ValueError):
    """
    A record whose checksum does not match its fields under the cluster key.
    """


# Ids already seen valid: every record names its origin and epoch, and
# matching the same few ids again and again is a hot path.
_VALID_IDS: set = set()


def is_node_id(text: str) -> bool:
    """
    Is ``text`` a node id: 32 lowercase hex characters?
    """
    if not isinstance(text, str):
        return False
    if text in _VALID_IDS:
        return True
    if NODE_ID.match(text) is not None:
        if len(_VALID_IDS) < 4096:
            _VALID_IDS.add(text)
        return True
    return False


@frozen
class Field:
    """
    One field of a record and what a valid record holds in it: an C{int}
    of at least ``minimum`` (never a bool, nor a float equal to an int,
    which would sign differently), or a C{str}, or C{None} when
    ``optional``.

    The one statement of the rule: L{Record} checks it as it is built,
    L{p2pstore.wire} a column at a time as a batch arrives, and
    L{p2pstore.schema} has SQLite check it as rows are read.
    """

    name: str
    kind: type
    minimum: int = 0
    optional: bool = False

    @property
    def wanted(self) -> str:
        """
        What the field must be, for error messages.
        """
        if self.kind is int:
            return "a positive integer" if self.minimum == 1 else "a non-negative integer"
        return "a string or null" if self.optional else "a string"


# The fields of a record as a RECORDS entry carries them (see
# p2pstore.wire.Records), in order: a record's own, without the origin and
# epoch its log names once for all.
ENTRY = (
    Field("entry_index", int, minimum=1),
    Field("sensor_index", int, minimum=0),
    Field("sensor_type", str),
    Field("sensor_data", str),
    Field("timestamp", str),
    Field("reading_id", str, optional=True),
    Field("data_checksum", str),
)
ENTRY_FIELDS = tuple(field.name for field in ENTRY)
# The positions of those fields in an entry tuple (and in a stored row,
# which begins with an entry: see p2pstore.schema.ROW_COLUMNS).
(
    ENTRY_INDEX,
    SENSOR_INDEX,
    SENSOR_TYPE,
    SENSOR_DATA,
    TIMESTAMP,
    READING_ID,
    CHECKSUM,
) = range(len(ENTRY))


def _node_id(instance, attribute, value):
    if not is_node_id(value):
        raise ValueError(f"{attribute.name} must be 32 lowercase hex characters")


def _valid(field: Field):
    # An attrs validator for one field of ENTRY.
    def check(instance, attribute, value):
        if value is None and field.optional:
            return
        if field.kind is int:
            if type(value) is not int or value < field.minimum:
                raise ValueError(f"{field.name} must be an integer >= {field.minimum}")
        elif type(value) is not field.kind:
            raise TypeError(f"{field.name} must be {field.wanted}, not {type(value).__name__}")

    return check


@frozen
class Record:
    """
    One stored reading, exactly as its origin node stored and signed it.

    ``(origin, epoch, entry_index)`` is its position: ``epoch`` names the
    incarnation of the origin's own database that assigned ``entry_index``
    (1, 2, 3... without gaps within an epoch).
    """

    origin: str = attrs.field(validator=_node_id)
    epoch: str = attrs.field(validator=_node_id)
    entry_index: int = attrs.field(validator=_valid(ENTRY[ENTRY_INDEX]))
    sensor_index: int = attrs.field(validator=_valid(ENTRY[SENSOR_INDEX]))
    sensor_type: str = attrs.field(validator=_valid(ENTRY[SENSOR_TYPE]))
    sensor_data: str = attrs.field(validator=_valid(ENTRY[SENSOR_DATA]))
    timestamp: str = attrs.field(validator=_valid(ENTRY[TIMESTAMP]))
    reading_id: Optional[str] = attrs.field(validator=_valid(ENTRY[READING_ID]))
    data_checksum: str = attrs.field(default="", validator=_valid(ENTRY[CHECKSUM]))

    @property
    def value(self) -> Optional[float]:
        return parse_value_unit(self.sensor_data)[0]

    @property
    def unit(self) -> Optional[str]:
        return parse_value_unit(self.sensor_data)[1]


# The fields of a record as a RECORDS entry carries them, a tuple.
entry_of: Callable[[Record], tuple] = operator.attrgetter(*ENTRY_FIELDS)


def _netstring(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"%d:%s," % (len(data), data)


def _log_prefix(origin: str, epoch: str) -> bytes:
    return _FORMAT + _netstring(origin) + _netstring(epoch)


def _entry_bytes(
    entry_index: int,
    sensor_index: int,
    sensor_type: str,
    sensor_data: str,
    timestamp: str,
    reading_id: Optional[str],
) -> bytes:
    # The same netstrings as _netstring() makes, in one formatting step: this
    # runs for every reading stored or received. Built as text, which counts
    # characters; they are the bytes when the UTF-8 is as long as the text.
    index = str(entry_index)
    sensor = str(sensor_index)
    text = (
        f"{len(index)}:{index},{len(sensor)}:{sensor},{len(sensor_type)}:{sensor_type},"
        f"{len(sensor_data)}:{sensor_data},{len(timestamp)}:{timestamp},"
        + ("-" if reading_id is None else f"{len(reading_id)}:{reading_id},")
    )
    data = text.encode("utf-8")
    if len(data) == len(text):
        return data
    return b"".join(
        [
            _netstring(index),
            _netstring(sensor),
            _netstring(sensor_type),
            _netstring(sensor_data),
            _netstring(timestamp),
            b"-" if reading_id is None else _netstring(reading_id),
        ]
    )


def canonical_bytes(record: Record) -> bytes:
    """
    The bytes a record's checksum covers.

    Every field is a netstring (its length, a colon, its UTF-8 bytes, a
    comma), and a missing reading_id is ``-`` where a netstring would start
    with a digit, so no content of any field can make two records encode
    alike.
    """
    # The entry's fields but its checksum.
    return _log_prefix(record.origin, record.epoch) + _entry_bytes(*entry_of(record)[:-1])


# Logs whose prefix MAC is kept; a node sees a handful.
_LOG_MACS = 1024

_BLOCK = 64  # SHA-256's block size, which HMAC pads the key to.


@frozen
class Signer:
    """
    Signs and verifies records with the cluster key: HMAC-SHA256 (RFC 2104)
    over the canonical bytes, made from C{hashlib} states rather than
    C{hmac.HMAC} objects.

    The inner hash is started once from the key and once more per log with
    its common prefix (format, origin, epoch); each record then costs two
    state copies and two short updates, about half of what copying an
    C{hmac.HMAC} costs. The tests check it against C{hmac.new}.
    """

    _inner: "hashlib._Hash" = attrs.field(repr=False, alias="inner")
    _outer: "hashlib._Hash" = attrs.field(repr=False, alias="outer")
    _logs: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    @classmethod
    def from_key(cls, key: bytes) -> "Signer":
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        return cls(
            inner=hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            outer=hashlib.sha256(bytes(b ^ 0x5C for b in key)),
        )

    def _for_log(self, origin: str, epoch: str):
        inner = self._logs.get((origin, epoch))
        if inner is None:
            if len(self._logs) >= _LOG_MACS:
                self._logs.clear()
            inner = self._inner.copy()
            inner.update(_log_prefix(origin, epoch))
            self._logs[(origin, epoch)] = inner
        return inner

    def checksum_of(
        self,
        origin: str,
        epoch: str,
        entry_index: int,
        sensor_index: int,
        sensor_type: str,
        sensor_data: str,
        timestamp: str,
        reading_id: Optional[str],
    ) -> str:
        """
        The hex HMAC-SHA256 of the canonical bytes of a record with these
        fields, without building the record.
        """
        inner = self._for_log(origin, epoch).copy()
        inner.update(
            _entry_bytes(entry_index, sensor_index, sensor_type, sensor_data, timestamp, reading_id)
        )
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def checksum(self, record: Record) -> str:
        """
        The hex HMAC-SHA256 of the record's canonical bytes.
        """
        return self.checksum_of(record.origin, record.epoch, *entry_of(record)[:-1])

    def sign(self, record: Record) -> Record:
        """
        The record with its ``data_checksum`` set.
        """
        return attrs.evolve(record, data_checksum=self.checksum(record))

    def verify(self, record: Record) -> Record:
        """
        Return the record if its checksum is right, else raise L{BadRecord}.
        """
        if not self.valid_prefix(record.origin, record.epoch, [entry_of(record)]):
            raise BadRecord(
                f"checksum mismatch for {record.origin} "
                f"{record.epoch}:{record.entry_index}"
            )
        return record

    def valid_prefix(self, origin: str, epoch: str, entries: Sequence[tuple]) -> int:
        """
        How many of the first entries of a log (each a record's fields in
        the order of a RECORDS entry, its checksum last) carry the right
        checksum: all of them, or the position of the first that does not.
        """
        log = self._for_log(origin, epoch)
        outer = self._outer
        for position, (index, sensor, kind, data, stamp, reading_id, given) in enumerate(entries):
            inner = log.copy()
            try:
                inner.update(_entry_bytes(index, sensor, kind, data, stamp, reading_id))
            except UnicodeEncodeError:
                # A lone surrogate in a field: no node could have signed that.
                return position
            mac = outer.copy()
            mac.update(inner.digest())
            # compare_digest refuses str that is not ASCII.
            if not (given.isascii() and hmac.compare_digest(mac.hexdigest(), given)):
                return position
        return len(entries)


@functools.lru_cache(maxsize=4096)
def parse_value_unit(sensor_data: str) -> tuple[Optional[float], Optional[str]]:
    """
    Split ``1.798 atm`` into ``(1.798, "atm")`` and ``15% RH`` into
    ``(15.0, "% RH")``; ``(None, None)`` when it does not start with a number.
    """
    match = _VALUE_UNIT.match(sensor_data)
    if match is None:
        return None, None
    number, unit = match.groups()
    value = float(number)
    if not math.isfinite(value):
        # `1e999C` overflows; NULL rather than an infinity JSON cannot carry.
        return None, None
    return value, (unit or None)
