"""
The block index of one origin's readings times (schema version 6), in
``server_id_<node id>_times``: for each block of 128 keys of the rows table
(so of one log) and each minute (UTC) that its rows' instants fall in, the
earliest and the latest of those instants, in microseconds since 1970 UTC.

It stands where an index of the timestamps stood, for disk wear
(bench/README.md): a commit of a few hundred readings of one log changes
one or two of this small table's pages, where the index changed about
seven. A range read (L{p2pstore.rangereads}) takes the entries of the
minutes it covers in order and reads each of their blocks by key.

Keyed by minute first, so that a sensor whose clock is wrong (an RTC back
at 1970 after a power cut) adds entries in minutes of its own, rather
than widening every block it writes in to decades and every range read
to a scan of the table.

The rule the store keeps: every stored row whose timestamp has an instant
(L{p2pstore.timerange.instant_of}) has the entry of its minute and block,
and that entry's ``low <= instant <= high``. An entry may cover more than
the rows held (a row moved to the quarantine leaves it), never less.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Optional

from .schema import rows_table, times_table
from .timerange import instant_of

# A block is the keys that differ only in their low BLOCK_BITS bits.
BLOCK_BITS = 7
BLOCK_MASK = (1 << BLOCK_BITS) - 1
MINUTE = 60_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def micros(instant: datetime) -> int:
    """
    An aware instant as microseconds since 1970 UTC.
    """
    return (instant - _EPOCH) // _MICROSECOND


def instant_at(micros: int) -> Optional[datetime]:
    """
    The instant of L{micros}, or C{None} past the calendar's end.
    """
    try:
        return _EPOCH + micros * _MICROSECOND
    except OverflowError:
        return None


def micros_of(timestamp) -> Optional[int]:
    """
    The instant of a stored timestamp in microseconds, or C{None} for one
    in no range.
    """
    instant = instant_of(timestamp) if isinstance(timestamp, str) else None
    return None if instant is None else micros(instant)


def entries(keyed: Iterable[tuple[int, object]]) -> dict:
    """
    The entries that cover rows given as ``(key, timestamp)``:
    C{{(minute, block): [low, high]}}.
    """
    found: dict = {}
    for key, timestamp in keyed:
        at = micros_of(timestamp)
        if at is None:
            continue
        place = (at // MINUTE, key >> BLOCK_BITS)
        span = found.get(place)
        if span is None:
            found[place] = [at, at]
        elif at < span[0]:
            span[0] = at
        elif at > span[1]:
            span[1] = at
    return found


def _upsert_sql(db: str, origin: str) -> str:
    return (
        f"INSERT INTO {db}.{times_table(origin)} (minute, block, low, high) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (minute, block) DO UPDATE SET "
        f"low = min(low, excluded.low), high = max(high, excluded.high)"
    )


def note(txn, db: str, origin: str, keyed: Iterable[tuple[int, object]]) -> None:
    """
    Cover rows being stored, given as ``(key, timestamp)``, in the same
    transaction.
    """
    found = entries(keyed)
    if found:
        txn.executemany(
            _upsert_sql(db, origin),
            [(minute, block, low, high) for (minute, block), (low, high) in found.items()],
        )


def forget(txn, db: str, origin: str, low: int, high: int) -> None:
    """
    Before the rows of keys ``low``..``high`` are deleted in this
    transaction: remove the entries of the blocks they touch, then cover
    again the rows of those blocks that stay, so a pruned range leaves no
    entry behind (a prune deletes a log's oldest rows, and its first and
    last block may be cut).
    """
    if low > high:
        return
    first, last = low & ~BLOCK_MASK, high | BLOCK_MASK
    rows = txn.execute(
        f"SELECT key, timestamp FROM {db}.{rows_table(origin)} WHERE key BETWEEN ? AND ?",
        (first, last),
    ).fetchall()
    txn.executemany(
        f"DELETE FROM {db}.{times_table(origin)} WHERE minute = ? AND block = ?",
        list(entries(rows)),
    )
    note(txn, db, origin, [(key, timestamp) for key, timestamp in rows if not low <= key <= high])


# Rows read at a time while a table's entries are built or checked.
_CHUNK = 16384


def _blocks(txn, db: str, origin: str) -> Iterable[tuple[int, list]]:
    # Every row (key, timestamp) of a rows table in key order, a chunk at a
    # time, as (how many rows so far, the chunk).
    table = f"{db}.{rows_table(origin)}"
    after, done = -1, 0
    while True:
        rows = txn.execute(
            f"SELECT key, timestamp FROM {table} WHERE key > ? ORDER BY key LIMIT {_CHUNK}", (after,)
        ).fetchall()
        if not rows:
            return
        done += len(rows)
        after = rows[-1][0]
        yield done, rows


def build(txn, db: str, origin: str, progress: Callable[[int], None]) -> None:
    """
    Make the entries of every row of one origin's rows table (the upgrade
    to schema version 6), calling C{progress(rows done)} after each chunk.
    """
    for done, rows in _blocks(txn, db, origin):
        # A block may be cut between two chunks: the upsert joins it.
        note(txn, db, origin, rows)
        progress(done)


def uncovered(conn, db: str, origin: str, progress: Callable[[int], None] = lambda done: None):
    """
    The keys of the rows of one origin's table that no entry covers (a
    file another program changed, or a defect): a range read would miss
    them. Calls C{progress(rows done)} after each chunk.
    """
    table = times_table(origin)
    for done, rows in _blocks(conn, db, origin):
        held = {
            place: conn.execute(
                f"SELECT low, high FROM {db}.{table} WHERE minute = ? AND block = ?", place
            ).fetchone()
            for place in entries(rows)
        }
        for key, timestamp in rows:
            at = micros_of(timestamp)
            if at is None:
                continue
            span = held[at // MINUTE, key >> BLOCK_BITS]
            if span is None or not span[0] <= at <= span[1]:
                yield key
        progress(done)
