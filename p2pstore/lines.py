"""
The sensor line protocol: the grammar of a reading line, and the answers
a node sends back (``OK <entry_index>``, ``ERR <reason>``).

Pure functions and values, no Twisted: the sensor protocol parses with
them and the ingestor's results are answered with them.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable, Iterable, NamedTuple, Optional

from attrs import define, frozen

# The column widths of the proof of concept, which its sensors keep to.
MAX_SENSOR_TYPE = 40
MAX_SENSOR_DATA = 80
MAX_READING_ID = 64

# `YYYY-MM-DD HH:MM:SS[.ffffff]`, a `T` separator and a UTC offset allowed;
# ASCII digits only ("\d" would take any script's, which some datetime
# implementations accept). Written once, without groups, for both the field
# check and the one-pass pattern of plain lines.
_TIMESTAMP_FORM = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
_TIMESTAMP = re.compile(r"\A" + _TIMESTAMP_FORM + r"\Z")
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
    + r"(?:,("
    + _TIMESTAMP_FORM
    + ")(?:,"
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

# The reason answered for readings whose commit failed: send them again.
RETRY_STORAGE = "retry: storage failure"


class BadLine(ValueError):
    """
    A sensor line that cannot be stored; ``str(error)`` is the reason sent
    back to the sensor.
    """


class Reading(NamedTuple):
    """
    One reading as a sensor sent it, before the node stores it.
    """

    sensor_type: str
    sensor_data: str
    timestamp: str
    reading_id: Optional[str] = None


@frozen
class Rejected:
    """
    A sensor line the node refused, kept for diagnosis.
    """

    received_at: str
    sensor_index: int
    reason: str
    raw: bytes


# Reading(...) without the Python-level __new__ a NamedTuple has.
_new_tuple = tuple.__new__


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


# The node's own timestamp format, the one the proof of concept's sensors send.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def format_utc(seconds: float) -> str:
    """
    ``seconds`` since the epoch in the node's own timestamp format, in UTC.
    """
    return datetime.fromtimestamp(seconds, timezone.utc).strftime(TIMESTAMP_FORMAT)


def ok_answers(indexes: Iterable[int]) -> bytes:
    """
    The answer lines for stored readings: ``OK <entry_index>`` each.
    """
    return b"".join([b"OK %d\n" % (index,) for index in indexes])


def error_answer(reason: str, count: int = 1) -> bytes:
    """
    ``count`` answer lines ``ERR <reason>``; reasons are ASCII.
    """
    return b"ERR %s\n" % (reason.encode("ascii"),) * count


# A reading as the proof of concept's sensors send it: no line end, one
# send() each, `<type>,<value>,<timestamp>` with the timestamp of Python's
# str(datetime.now()) (`YYYY-MM-DD HH:MM:SS`, then `.ffffff` unless the
# microseconds are 0).
_SEED_READING = re.compile(
    rb"[^,\r\n]{1,%d},[^,\r\n]{1,%d},"
    rb"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    % (MAX_SENSOR_TYPE, MAX_SENSOR_DATA)
)
# What may begin the reading after a timestamp: not a digit or a dot (they
# would continue the timestamp), nor a comma (a reading id), a space or a
# control character.
_READING_START = re.compile(rb"[!-+\-/:-~\x80-\xff]")


def split_unterminated(buffer: bytes) -> tuple[list[bytes], bytes]:
    """
    The readings at the start of the bytes of a sensor that sends no line
    ends: a reading ends right after a complete timestamp of the proof of
    concept's shape when the bytes that follow begin a new reading.

    @return: the readings found (each to be parsed by L{parse_line}), and
        the bytes left, the start of a reading whose end is not known yet.
    """
    found = []
    start = 0
    while True:
        match = _SEED_READING.match(buffer, start)
        if match is None or not _READING_START.match(buffer, match.end()):
            return found, buffer[start:]
        found.append(buffer[start : match.end()])
        start = match.end()


def is_whole_unterminated(buffer: bytes) -> bool:
    """
    Is ``buffer`` one whole reading of the proof of concept's shape, its
    timestamp's fraction absent or of all six digits, so that a pause after
    it may end it?
    """
    match = _SEED_READING.fullmatch(buffer)
    return match is not None and (match.group(1) is None or len(match.group(1)) == 7)


@define
class AckCopies:
    """
    The copies a sensor's readings need before their OK: the node's
    C{--ack-copies}, unless the sensor asks otherwise with ``ACK <k>``, up
    to the nodes of the cluster.
    """

    default: int = 1
    cluster_size: Callable[[], int] = lambda: 1


def parse_ack_line(line: bytes, cluster_size: int) -> tuple[Optional[int], bytes]:
    """
    A sensor's ``ACK <k>`` line: the copies it asks for (None: refused)
    and the answer line.
    """
    text = line[4:].strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or int(text) < 1:
        return None, b"ERR ack: give ACK <k>, k a number of copies from 1 to %d\n" % cluster_size
    copies = int(text)
    if copies > cluster_size:
        nodes = "node" if cluster_size == 1 else "nodes"
        return None, b"ERR ack: %d copies asked, but the cluster has %d %s\n" % (
            copies, cluster_size, nodes.encode()
        )
    return copies, b"OK ack %d\n" % copies
