"""
Readings as InfluxDB line protocol, for export: one point per reading.

The mapping (documented in the README):

- measurement: the reading's ``sensor_type``;
- tags: ``origin`` (the node id of the node that stored the reading first),
  and ``unit`` when the value parsed as a number with a unit;
- field: ``value`` (a float) when ``sensor_data`` starts with a number,
  else ``data`` (the string as sent);
- time: the reading's timestamp (UTC when it carries no offset) in
  nanoseconds, plus the entry index modulo the timestamp's own precision:
  the digits below what the sensor stamped. Two readings of one type from
  one origin therefore differ in time, even with the same timestamp, unless
  their indexes differ by a multiple of that room (1,000 for a timestamp to
  the microsecond: a clock stuck for a thousand readings), and a point sent
  twice is the same point, which the destination overwrites.

Pure: no Twisted. Escaping follows the line protocol's rules: commas and
spaces in a measurement, commas, equals signs and spaces in tag keys and
values, double quotes and backslashes in a string field, a backslash that
would escape what follows it as ``\\\\``, and a measurement that would
start a comment (``#``) escaped.
"""

from __future__ import annotations

import calendar
import functools
import re
from datetime import datetime, timezone
from typing import Iterable, Optional

from .records import ENTRY_INDEX, SENSOR_DATA, SENSOR_TYPE, TIMESTAMP, parse_value_unit

# A backslash is escaped in a measurement or tag only where it would
# escape what follows it (a special character, or the separator after the
# end): InfluxDB 1.x keeps a doubled backslash there as two.
_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_TAG = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_MEASUREMENT_BACKSLASH = re.compile(r"\\(?=[, ]|\Z)")
_TAG_BACKSLASH = re.compile(r"\\(?=[,= ]|\Z)")
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
# The sensor line's timestamp (p2pstore.lines): the whole seconds and the
# offset, which many readings share, then the fraction. Anything else (an
# old or foreign record) goes the slow way, through datetime alone.
_TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?"
    r"(Z|[+-][0-9]{2}(?::?[0-9]{2})?)?\Z"
)


class BadTimestamp(ValueError):
    """
    A stored timestamp that is not ISO-8601: a point cannot carry it.
    """


@functools.lru_cache(maxsize=1024)
def measurement(name: str) -> str:
    escaped = _MEASUREMENT_BACKSLASH.sub(r"\\\\", name).translate(_MEASUREMENT)
    # A line that starts with "#" is a comment, which a destination skips
    # without a word.
    return "\\" + escaped if escaped.startswith("#") else escaped


@functools.lru_cache(maxsize=1024)
def tag(text: str) -> str:
    return _TAG_BACKSLASH.sub(r"\\\\", text).translate(_TAG)


def string_field(text: str) -> str:
    return '"' + text.translate(_STRING) + '"'


def _fraction_digits(timestamp: str) -> int:
    # The digits after the seconds' ".", 0 without any.
    dot = timestamp.find(".", 19)
    if dot < 0:
        return 0
    end = dot + 1
    while end < len(timestamp) and timestamp[end].isdigit():
        end += 1
    return end - dot - 1


@functools.lru_cache(maxsize=4096)
def _seconds(whole: str, offset: str) -> int:
    # Unix seconds of a timestamp's whole seconds at its offset.
    return _slow(whole + offset, 0) // 10**9


def nanoseconds(timestamp: str, entry_index: int) -> int:
    """
    The point's time for a reading stamped ``timestamp`` stored at
    ``entry_index``: Unix nanoseconds, unique per index below the
    timestamp's precision.

    @raise BadTimestamp: ``timestamp`` is not ISO-8601.
    """
    found = _TIMESTAMP.match(timestamp)
    if found is None:
        return _slow(timestamp, entry_index)
    whole, fraction, offset = found.groups()
    fraction = fraction or ""
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    room = 10 ** (9 - len(fraction))
    return _seconds(whole, offset or "") * 10**9 + micro * 1000 + entry_index % room


def _slow(timestamp: str, entry_index: int) -> int:
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        raise BadTimestamp(f"not an ISO-8601 timestamp: {timestamp!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    # Whole integers all the way: a float of nanoseconds since 1970 has
    # only 15-16 significant digits.
    seconds = calendar.timegm(when.utctimetuple())
    room = 10 ** (9 - min(_fraction_digits(timestamp), 6))
    return seconds * 10**9 + when.microsecond * 1000 + entry_index % room


def point(origin: str, entry: tuple) -> str:
    """
    One reading (a RECORDS entry, L{p2pstore.records.ENTRY}) of ``origin``
    as a line, without its newline.
    """
    value, unit = parse_value_unit(entry[SENSOR_DATA])
    tags = "origin=" + tag(origin)
    if unit:
        tags += ",unit=" + tag(unit)
    if value is None:
        field = "data=" + string_field(entry[SENSOR_DATA])
    else:
        field = "value=" + repr(value)
    time = nanoseconds(entry[TIMESTAMP], entry[ENTRY_INDEX])
    return f"{measurement(entry[SENSOR_TYPE])},{tags} {field} {time}"


def lines(origin: str, entries: Iterable[tuple], limit: int) -> tuple[bytes, int, Optional[tuple]]:
    """
    The body of one write: the points of ``entries`` in order, each ended by
    a newline, up to ``limit`` bytes (at least one point).

    @return: the body, how many entries it holds, and the first entry left
        out because it cannot be a point (a bad timestamp), or C{None}.
    """
    body = bytearray()
    count = 0
    for entry in entries:
        try:
            line = (point(origin, entry) + "\n").encode("utf-8")
        except BadTimestamp:
            return bytes(body), count, entry
        if count and len(body) + len(line) > limit:
            break
        body += line
        count += 1
    return bytes(body), count, None

