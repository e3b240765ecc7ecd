"""
The read of a time range of one origin's readings (``/readings?since=``):
one interaction on the read-only connection over the block index of the
origin's times (L{p2pstore.timeblocks}).

The entries are taken in the order of their earliest instants, minute by
minute from the range's start, and each entry's block is read by key,
once. Every reading has an entry no later than its instant, so once the
entries up to an instant are read, every reading before it is among the
rows read: a page is cut there, the C{limit} smallest by L{Key}.
"""

from __future__ import annotations

import heapq
from typing import Optional

from attrs import frozen

from .records import CHECKSUM, ENTRY_INDEX, TIMESTAMP, Record
from .schema import EPOCH, row_sql, rows_table, times_table
from .timeblocks import BLOCK_BITS, BLOCK_MASK, MINUTE, instant_at, micros
from .timerange import Key, TimeRange, key_of

# Entries whose blocks are read in one go, at most.
_BLOCKS_PER_READ = 16


@frozen
class Page:
    """
    One page of a range: its readings in L{Key} order, and the key of the
    last one when more follow (C{None}: the range ends here).
    """

    records: list
    next: Optional[Key] = None


def read_range(
    txn,
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
    # One snapshot for the entries and the rows.
    txn.execute("BEGIN")
    start, until = time_range.start(), time_range.until
    since = None if start is None else micros(start)
    before = None if until is None else micros(until)
    times = f"{db}.{times_table(origin)}"
    select = f"SELECT {row_sql(db)} FROM {db}.{rows_table(origin)} WHERE key BETWEEN ? AND ?"
    if sensor_type is not None:
        select += " AND sensor_type = ?"
    read: set = set()
    # The rows read that the range holds and no page has yet, by Key.
    waiting: list = []
    page: list = []
    minute = None if since is None else since // MINUTE - 1
    while len(page) <= limit:
        minute = _next_minute(txn, times, minute)
        if minute is None or (before is not None and minute * MINUTE >= before):
            page.extend(heapq.heappop(waiting) for _ in range(min(len(waiting), limit + 1 - len(page))))
            break
        entries = sorted(
            txn.execute(f"SELECT low, high, block FROM {times} WHERE minute = ?", (minute,))
        )
        for at in range(0, len(entries), _BLOCKS_PER_READ):
            blocks = sorted(
                block
                for _, high, block in entries[at : at + _BLOCKS_PER_READ]
                if (since is None or high >= since) and block not in read
            )
            read.update(blocks)
            for first, last in _runs(blocks):
                params = [first << BLOCK_BITS, (last << BLOCK_BITS) | BLOCK_MASK]
                if sensor_type is not None:
                    params.append(sensor_type)
                for row in txn.execute(select, params):
                    key = key_of(row[TIMESTAMP], row[EPOCH], row[ENTRY_INDEX])
                    if key is not None and time_range.holds(key):
                        heapq.heappush(waiting, (key, tuple(row)))
            # Every reading before the next entry's earliest instant has
            # been read.
            if at + _BLOCKS_PER_READ < len(entries):
                through = instant_at(entries[at + _BLOCKS_PER_READ][0])
            else:
                through = instant_at((minute + 1) * MINUTE)
            while waiting and len(page) <= limit and (through is None or waiting[0][0].instant < through):
                page.append(heapq.heappop(waiting))
            if len(page) > limit:
                break
    records = [Record(origin, row[EPOCH], *row[: CHECKSUM + 1]) for _, row in page[:limit]]
    return Page(records, page[limit - 1][0] if len(page) > limit else None)


def _next_minute(txn, times: str, after: Optional[int]) -> Optional[int]:
    # The first minute after ``after`` (None: any) that has an entry.
    if after is None:
        (minute,) = txn.execute(f"SELECT min(minute) FROM {times}").fetchone()
    else:
        (minute,) = txn.execute(f"SELECT min(minute) FROM {times} WHERE minute > ?", (after,)).fetchone()
    return minute


def _runs(blocks: list) -> list:
    # Sorted block numbers as runs of consecutive ones, (first, last).
    runs: list = []
    for block in blocks:
        if runs and runs[-1][1] == block - 1:
            runs[-1][1] = block
        else:
            runs.append([block, block])
    return runs
