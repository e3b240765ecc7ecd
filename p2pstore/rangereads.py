"""
The read of a time range of one origin's readings (``/readings?since=``):
one interaction on the read-only connection over the text ranges of the
timestamp index that L{p2pstore.timerange.windows} names, and the memo of
the numeric UTC offsets each readings table holds.

Each window is read in text order, which is the order of its instants,
so the index gives a page without a sort of the range; a page is cut only
where every window has been read past it.
"""

from __future__ import annotations

from typing import Optional

from attrs import define, field, frozen

from .records import CHECKSUM, ENTRY_INDEX, TIMESTAMP, Record
from .schema import EPOCH, key_range, row_sql, rows_table
from .timerange import Key, TimeRange, Window, key_of, offset_of, windows


@frozen
class Page:
    """
    One page of a range: its readings in L{Key} order, and the key of the
    last one when more follow (C{None}: the range ends here).
    """

    records: list
    next: Optional[Key] = None


@define
class Offsets:
    """
    The numeric UTC offsets (``+02:00``, ``-0500``...) each readings table
    holds in its timestamps, as suffixes: a range reads a window for each.

    Kept from query to query and brought up to date at each by the rows
    each log added since (its keys only grow, but for a repaired row, whose
    reading was checked once already), so only the first query of a table
    reads it all. A change to the last row seen of a log (deleted, a key
    given again after a vacuum) starts that table again.
    """

    # (db, origin) -> ({ordinal: (the last key read, its checksum)}, the suffixes)
    _seen: dict = field(factory=dict)

    def of(self, txn, db: str, origin: str) -> frozenset:
        table = f"{db}.{rows_table(origin)}"
        ends, suffixes = self._seen.get((db, origin), ({}, frozenset()))
        ordinals = [
            o for (o,) in txn.execute(
                f"SELECT ordinal FROM {db}.epochs WHERE origin = ?", (origin,)
            ).fetchall()
        ]
        for ordinal, (last, checksum) in ends.items():
            row = txn.execute(f"SELECT data_checksum FROM {table} WHERE key = ?", (last,)).fetchone()
            if row is None or row[0] != checksum:
                ends, suffixes = {}, frozenset()
                break
        ends = dict(ends)
        for ordinal in ordinals:
            low, high = key_range(ordinal)
            after = ends.get(ordinal, (low - 1, None))[0]
            top = txn.execute(
                f"SELECT key, data_checksum FROM {table} WHERE key BETWEEN ? AND ? "
                f"ORDER BY key DESC LIMIT 1",
                (low, high),
            ).fetchone()
            if top is None or top[0] <= after:
                continue
            found = txn.execute(
                f"SELECT DISTINCT ltrim(substr(timestamp, 20), '.0123456789') FROM {table} "
                f"WHERE key > ? AND key <= ? AND substr(timestamp, 20) GLOB '*[-+]*'",
                (after, top[0]),
            ).fetchall()
            suffixes = suffixes | {
                s for (s,) in found if isinstance(s, str) and offset_of(s) is not None
            }
            ends[ordinal] = (top[0], top[1])
        self._seen[(db, origin)] = (ends, suffixes)
        return suffixes


def read_range(
    txn,
    offsets: Offsets,
    db: str,
    origin: str,
    sensor_type: Optional[str],
    time_range: TimeRange,
    limit: int,
) -> Page:
    """
    Up to ``limit`` readings of ``time_range``, oldest first (a
    L{p2pstore.adbapi} interaction on the read-only connection).
    """
    # One snapshot for the memo and every window.
    txn.execute("BEGIN")
    reads = [
        _WindowRead(window, db, rows_table(origin), sensor_type)
        for window in windows(time_range, offsets.of(txn, db, origin))
    ]
    fetch = limit + 1
    while True:
        found = []
        through = None
        for read in reads:
            rows, read_through = read.rows(txn, fetch)
            found.extend(rows)
            if read_through is not None and (through is None or read_through < through):
                through = read_through
        keyed = []
        for row in found:
            key = key_of(row[TIMESTAMP], row[EPOCH], row[ENTRY_INDEX])
            if key is not None and time_range.holds(key) and (through is None or key.instant < through):
                keyed.append((key, row))
        if len(keyed) > limit or through is None:
            break
        # Rows of the first or last second fell outside the range: read on.
        fetch *= 2
    keyed.sort(key=lambda pair: pair[0])
    page = keyed[:limit]
    records = [Record(origin, row[EPOCH], *row[: CHECKSUM + 1]) for _, row in page]
    return Page(records, page[-1][0] if len(keyed) > limit else None)


@define
class _WindowRead:
    """
    The rows of one window, in text order.
    """

    window: Window
    db: str
    table: str
    sensor_type: Optional[str]

    def _select(self, txn, low, high, limit=None) -> list:
        sql = (
            f"SELECT {row_sql(self.db)} FROM {self.db}.{self.table} WHERE timestamp GLOB ? "
            f"AND ltrim(substr(timestamp, 20), '.0123456789') = ?"
        )
        params: list = [self.window.pattern, self.window.suffix]
        if low is not None:
            sql += " AND timestamp >= ?"
            params.append(low)
        if high is not None:
            sql += " AND timestamp < ?"
            params.append(high)
        if self.sensor_type is not None:
            sql += " AND sensor_type = ?"
            params.append(self.sensor_type)
        sql += " ORDER BY timestamp"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return txn.execute(sql, params).fetchall()

    def rows(self, txn, fetch: int):
        """
        The window's first ``fetch`` rows or more, and the instant before
        which all its readings are among them (C{None}: all are).
        """
        low, high = self.window.low, self.window.high
        rows: list = []
        while True:
            chunk = self._select(txn, low, high, fetch)
            if len(chunk) < fetch:
                return rows + chunk, None
            # Complete the last second: its rows are not in time order
            # ("10:00:00Z" sorts after "10:00:00.5Z").
            second = chunk[-1][TIMESTAMP][:19]
            rest_low, rest_high = self.window.rest_of(second)
            rows += [row for row in chunk if row[TIMESTAMP][:19] != second]
            rows += self._select(txn, rest_low, rest_high)
            through = self.window.read_through(second)
            if through is not None:
                return rows, through
            # No valid time: no reading of it is in any range. Read on.
            low = rest_high
