"""
Time ranges over readings' timestamps, for ``/readings?since=&until=``: the
bounds a user types, the instant a stored timestamp stands for, and the
order and paging token of a range.

The rule: a reading's instant is its timestamp, taken as UTC when it has
no offset (as the exporter takes it). A range is half-open: ``since``
inclusive, ``until`` exclusive. Its readings come oldest first, in the
order of L{Key}; a timestamp outside the sensor line grammar
(L{p2pstore.lines}) is in no range.

Stored timestamps are the text a sensor sent: ``YYYY-MM-DD`` then a space
or ``T``, ``HH:MM:SS``, a fraction of 1 to 6 digits or none, then ``Z``, a
numeric offset (``+02``, ``+0200``, ``+02:00``) or nothing. Text order is
not time order across those spellings, so a range is read by instant,
through the block index of each table's times (L{p2pstore.timeblocks}).

Pure functions and values: no Twisted, no SQL.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional

from attrs import field, frozen

from .lines import _TIMESTAMP
from .records import is_node_id

_EXAMPLE = "2026-11-28T10:00:00Z"
_ONE_SECOND = timedelta(seconds=1)
# What a user may type: ISO-8601 as datetime.fromisoformat reads it, within
# a sane length.
_MAX_BOUND = 40
# A "+" in a URL's query is a space: "10:00:00+02:00" unescaped arrives as
# "10:00:00 02:00".
_SPACED_OFFSET = re.compile(r"(.*:[0-9]{2}(?:\.[0-9]+)?) ([0-9]{2}(?::?[0-9]{2})?)")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,400}")
# Sorts after every character a timestamp's rest holds (digits . : + - Z).
_AFTER_REST = "~"


class BadRange(ValueError):
    """
    A range parameter that cannot be used; ``str(error)`` names it and
    says what is wrong.
    """


def parse_bound(name: str, text: str) -> datetime:
    """
    A user's ``since`` or ``until``: ISO-8601, as ``2026-11-28``,
    ``2026-11-28T10:00``, ``2026-11-28 10:00:00.123456``, with or without
    an offset (``Z``, ``+02:00``); without one it is UTC.

    @return: the instant, an aware UTC datetime.
    @raise BadRange: not such a time.
    """
    when = None
    stripped = text.strip()
    if stripped.isascii() and len(stripped) <= _MAX_BOUND:
        when = _fromisoformat(stripped)
        spaced = _SPACED_OFFSET.fullmatch(stripped)
        if when is None and spaced is not None:
            when = _fromisoformat(spaced[1] + "+" + spaced[2])
    if when is None:
        raise BadRange(
            f"{name} must be ISO-8601, e.g. {_EXAMPLE} or 2026-11-28, not {text!r}"
            " (write + as %2B in a URL)"
        )
    return _utc(when)


def _fromisoformat(text: str) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def instant_of(timestamp: str) -> Optional[datetime]:
    """
    The instant a stored timestamp stands for (UTC when it has no offset),
    or C{None} for one outside the sensor line grammar.
    """
    if not _TIMESTAMP.match(timestamp):
        return None
    when = _fromisoformat(timestamp)
    return None if when is None else _utc(when)


class Key(NamedTuple):
    """
    The place of a reading in a range: its instant, then (for the same
    instant written two ways) its timestamp's text, then its position,
    which is one reading's alone within an origin.
    """

    instant: datetime
    timestamp: str
    epoch: str
    entry_index: int


def encode_after(key: Key) -> str:
    """
    The ``after`` token of the last reading of a page: the next page
    starts after it. URL-safe, opaque to clients.
    """
    text = json.dumps([key.timestamp, key.epoch, key.entry_index], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_after(token: str) -> Key:
    """
    @raise BadRange: not a token L{encode_after} made.
    """
    try:
        if not _TOKEN.fullmatch(token):
            raise ValueError(token)
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        timestamp, epoch, entry_index = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, TypeError):
        raise BadRange("after must be the 'next' token of an earlier answer") from None
    instant = instant_of(timestamp) if isinstance(timestamp, str) else None
    if (
        instant is None
        or not is_node_id(epoch)
        or type(entry_index) is not int
        or entry_index < 1
    ):
        raise BadRange("after must be the 'next' token of an earlier answer")
    return Key(instant, timestamp, epoch, entry_index)


@frozen
class TimeRange:
    """
    The readings asked for: ``since <= instant < until`` (C{None}: no
    bound), after the reading ``after`` if given, oldest first.
    """

    since: Optional[datetime] = None
    until: Optional[datetime] = field(default=None)
    after: Optional[Key] = None

    @until.validator
    def _ordered(self, attribute, until) -> None:
        if self.since is not None and until is not None and self.since > until:
            raise BadRange("since must not be after until (since is inclusive, until exclusive)")

    def start(self) -> Optional[datetime]:
        """
        The earliest instant a reading still to come may have.
        """
        if self.after is None:
            return self.since
        if self.since is None:
            return self.after.instant
        return max(self.since, self.after.instant)

    def holds(self, key: Key) -> bool:
        return (
            (self.since is None or key.instant >= self.since)
            and (self.until is None or key.instant < self.until)
            and (self.after is None or key > self.after)
        )


def key_of(timestamp: str, epoch: str, entry_index: int) -> Optional[Key]:
    """
    A stored reading's L{Key}, or C{None} when its timestamp is in no range.
    """
    instant = instant_of(timestamp)
    return None if instant is None else Key(instant, timestamp, epoch, entry_index)


def time_range(
    since: Optional[str], until: Optional[str], after: Optional[str]
) -> Optional[TimeRange]:
    """
    The range of ``/readings``' parameters (their text, C{None} when
    absent), or C{None} when none is given.

    @raise BadRange: a parameter cannot be used.
    """
    if since is None and until is None and after is None:
        return None
    return TimeRange(
        since=None if since is None else parse_bound("since", since),
        until=None if until is None else parse_bound("until", until),
        after=None if after is None else decode_after(after),
    )

