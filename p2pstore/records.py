"""
Sensor readings and stored records: parsing sensor lines, the canonical
byte encoding of a record, and its HMAC.

Pure functions and values, no Twisted: the sensor protocol, the store and
replication all use this one codec.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import operator
import re
from datetime import datetime, timezone
from typing import Callable, NamedTuple, Optional, Sequence

import attrs
from attrs import frozen, validators

# The seed's column widths.
MAX_SENSOR_TYPE = 40
MAX_SENSOR_DATA = 80
MAX_READING_ID = 64

NODE_ID = re.compile(r"\A[0-9a-f]{32}\Z")

# `YYYY-MM-DD HH:MM:SS[.ffffff]`, a `T` separator and a UTC offset allowed;
# ASCII digits only ("\d" would take any script's, which some datetime
# implementations accept).
_TIMESTAMP = re.compile(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\Z"
)
# A number at the start of sensor_data, then the unit: `1.798 atm`, `15% RH`.
_VALUE_UNIT = re.compile(
    r"\A([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(.*)\Z", re.S
)
# Control characters (C0, DEL and C1) have no place in a reading and would
# garble the sqlite3 tool's output.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain_field(limit: int) -> str:
    # 1..limit printable ASCII characters, no comma, no space at either end.
    return rf"([!-+\--~](?:[ -+\--~]{{0,{limit - 2}}}[!-+\--~])?)"


# The common line, which the field by field checks of parse_line would pass
# unchanged: printable ASCII, no space around a field, each within its
# limit, a well-formed timestamp if any. One match replaces a split, four
# strips and the searches.
_PLAIN_FIELDS = (
    _plain_field(MAX_SENSOR_TYPE)
    + ","
    + _plain_field(MAX_SENSOR_DATA)
    + r"(?:,([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    + r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)"
    + "(?:,"
    + _plain_field(MAX_READING_ID)
    + r")?)?"
)
_PLAIN_LINE = re.compile(_PLAIN_FIELDS + r"\Z")
# Every line of a chunk at once, each with the "\r" of a "\r\n" if any.
_PLAIN_LINES = re.compile(r"(?m)^" + _PLAIN_FIELDS + r"\r?$")
# The longest plain line, "\r" included: a sensor protocol that accepts
# lines this long can take a chunk of plain lines without measuring each.
MAX_PLAIN_LINE = (
    MAX_SENSOR_TYPE + MAX_SENSOR_DATA + len("2026-11-28T10:00:00.123456+01:00")
    + MAX_READING_ID + len(",,,\r")
)

_FORMAT = b"p2pstore-record-v1\n"


class BadLine(ValueError):
    """
    A sensor line that cannot be stored; ``str(error)`` is the reason sent
    back to the sensor.
    """


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


def _node_id(instance, attribute, value):
    if not is_node_id(value):
        raise ValueError(f"{attribute.name} must be 32 lowercase hex characters")


def _index(minimum: int):
    # An int, not a bool or a float: str(True) or str(1.0) would sign
    # differently from the equal int 1.
    def check(instance, attribute, value):
        if type(value) is not int or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}")

    return check


_text = validators.instance_of(str)


class Reading(NamedTuple):
    """
    One reading as a sensor sent it, before the node stores it.
    """

    sensor_type: str
    sensor_data: str
    timestamp: str
    reading_id: Optional[str] = None


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
    entry_index: int = attrs.field(validator=_index(1))
    sensor_index: int = attrs.field(validator=_index(0))
    sensor_type: str = attrs.field(validator=_text)
    sensor_data: str = attrs.field(validator=_text)
    timestamp: str = attrs.field(validator=_text)
    reading_id: Optional[str] = attrs.field(validator=validators.optional(_text))
    data_checksum: str = attrs.field(default="", validator=_text)

    @property
    def value(self) -> Optional[float]:
        return parse_value_unit(self.sensor_data)[0]

    @property
    def unit(self) -> Optional[str]:
        return parse_value_unit(self.sensor_data)[1]


# The fields of a RECORDS entry (see p2pstore.wire.Records), in order: a
# record's own, without the origin and epoch its log names once for all.
ENTRY_FIELDS = (
    "entry_index",
    "sensor_index",
    "sensor_type",
    "sensor_data",
    "timestamp",
    "reading_id",
    "data_checksum",
)

# The fields of a record as a RECORDS entry carries them, a tuple.
entry_of: Callable[[Record], tuple] = operator.attrgetter(*ENTRY_FIELDS)


# Reading(...) without the Python-level __new__ a NamedTuple has.
_new_tuple = tuple.__new__


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


def _check_field(text: str, name: str, limit: int, control: bool = True) -> str:
    if not text:
        raise BadLine(f"empty {name}")
    if len(text) > limit:
        raise BadLine(f"{name} longer than {limit} characters")
    if control and _CONTROL.search(text):
        raise BadLine(f"control character in {name}")
    return text


def _check_timestamp(text: str) -> str:
    if not _TIMESTAMP.match(text):
        raise BadLine("bad timestamp")
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise BadLine("bad timestamp") from None
    return text


def parse_line(line: bytes, now: Callable[[], str]) -> Reading:
    """
    Parse one sensor line (without its line ending):
    ``<sensor_type>,<value>[,<timestamp>[,<reading_id>]]``.

    @param now: called for the node's UTC time when the line has no
        timestamp.
    @raise BadLine: the line cannot be stored; its message says why.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLine("not UTF-8") from None
    plain = _PLAIN_LINE.match(text)
    if plain is None:
        return _parse_fields(text, now)
    sensor_type, sensor_data, timestamp, reading_id = plain.groups()
    if timestamp is None:
        timestamp = now()
    else:
        try:
            datetime.fromisoformat(timestamp)
        except ValueError:
            raise BadLine("bad timestamp") from None
    return Reading(sensor_type, sensor_data, timestamp, reading_id)


def parse_plain_lines(chunk: bytes, now: Callable[[], str]) -> Optional[list[Reading]]:
    """
    The readings of a chunk of whole lines, each ending in ``\n``, when
    every line is plain (see _PLAIN_LINE): one pass of one regex over the
    chunk, about half the cost of a L{parse_line} call per line.

    @return: the readings, as L{parse_line} makes them, or C{None} when any
        line is not plain or not UTF-8: then parse each line with
        L{parse_line}, which says what is wrong with it.
    """
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = _PLAIN_LINES.findall(text)
    # No line holds two matches and no match spans two lines.
    if len(lines) != text.count("\n"):
        return None
    try:
        for _, _, timestamp, _ in lines:
            if timestamp:
                datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    # An absent field is "" in findall's tuples, and never "" when present.
    return [
        _new_tuple(Reading, (sensor_type, sensor_data, timestamp or now(), reading_id or None))
        for sensor_type, sensor_data, timestamp, reading_id in lines
    ]


def _parse_fields(text: str, now: Callable[[], str]) -> Reading:
    """
    parse_line for any line: split, strip and check each field, saying what
    is wrong.
    """
    if not text.strip():
        raise BadLine("empty line")
    fields = [field.strip() for field in text.split(",")]
    if len(fields) > 4:
        raise BadLine("too many fields")
    if len(fields) < 2:
        raise BadLine("missing value")
    # One search of the whole line; the fields are searched only to say
    # which one holds a control character.
    control = _CONTROL.search(text) is not None
    sensor_type = _check_field(fields[0], "sensor type", MAX_SENSOR_TYPE, control)
    sensor_data = _check_field(fields[1], "value", MAX_SENSOR_DATA, control)
    if len(fields) > 2:
        timestamp = _check_timestamp(fields[2])
    else:
        timestamp = now()
    reading_id = None
    if len(fields) > 3:
        reading_id = _check_field(fields[3], "reading id", MAX_READING_ID, control)
    return Reading(sensor_type, sensor_data, timestamp, reading_id)


def format_utc(seconds: float) -> str:
    """
    The node's own timestamp format, as the seed's sensors send it, in UTC.
    """
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f"
    )
