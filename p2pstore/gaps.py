"""
Logs that start after 1, and the ranges a database no longer holds: the
transactions that prune a log's oldest records, record a range a peer no
longer held, and mark when each log reached an index, for retention.

Every change here goes in one transaction with the position it moves, in
the same file: a crash leaves a log either as it was or pruned that far,
so pruning resumes from ``first_index`` after a restart.
"""

from __future__ import annotations

from typing import Optional

from attrs import frozen

from . import readingids, timeblocks
from .logkeys import span
from .schema import rows_table


@frozen
class PrunedRange:
    """
    Records ``first`` to ``last`` of a log that database ``db`` (``main``
    or ``peer``) no longer holds, why, and when they went (Unix time).
    """

    db: str
    origin: str
    epoch: str
    first: int
    last: int
    reason: str
    at: float

    def status(self) -> dict:
        return {
            "origin": self.origin,
            "epoch": self.epoch,
            "first": self.first,
            "last": self.last,
            "count": self.last - self.first + 1,
            "reason": self.reason,
            "at": self.at,
        }


@frozen
class Gap:
    """
    A peer no longer holds records ``first`` to ``last`` of a log (its
    PRUNED message), for the reason it gives: a receiver that lacks them
    records the range and holds the log from ``last + 1`` on.
    """

    first: int
    last: int
    reason: str


@frozen
class Prune:
    """
    What one pruning transaction did: ``deleted`` rows of a log went, which
    is now held from ``first`` on, and the range it extended or added.
    """

    deleted: int
    first: int
    range: PrunedRange


def pruned_ranges(txn, db: str) -> list:
    """
    The ranges ``db`` no longer holds, as L{PrunedRange}s, oldest first.
    """
    return [
        PrunedRange(db, *row)
        for row in txn.execute(
            f"SELECT origin, epoch, first_index, last_index, reason, pruned_at "
            f"FROM {db}.pruned ORDER BY id"
        ).fetchall()
    ]


def record_pruned(txn, db, origin, epoch, first, last, reason, now) -> PrunedRange:
    """
    Record that ``db`` no longer holds ``first`` to ``last`` of a log:
    extend the log's latest range of the same reason when this one follows
    it, so that pruning in many batches leaves one row.
    """
    row = txn.execute(
        f"SELECT id, first_index, last_index FROM {db}.pruned "
        f"WHERE origin = ? AND epoch = ? AND reason = ? ORDER BY id DESC LIMIT 1",
        (origin, epoch, reason),
    ).fetchone()
    if row is not None and row[2] == first - 1:
        txn.execute(
            f"UPDATE {db}.pruned SET last_index = ?, pruned_at = ? WHERE id = ?",
            (last, now, row[0]),
        )
        first = row[1]
    else:
        txn.execute(
            f"INSERT INTO {db}.pruned (origin, epoch, first_index, last_index, reason, pruned_at) "
            f"VALUES (?, ?, ?, ?, ?, ?)",
            (origin, epoch, first, last, reason, now),
        )
    return PrunedRange(db, origin, epoch, first, last, reason, now)


def prune(txn, db, origin, epoch, upto, reason, limit, now) -> Optional[Prune]:
    """
    Delete a log's oldest records, from its first held up to ``upto`` but
    at most ``limit`` of them, and move its first index past them.

    @return: L{Prune}, or None when nothing up to ``upto`` is held.
    """
    txn.execute("BEGIN IMMEDIATE")
    row = txn.execute(
        f"SELECT first_index, last_index FROM {db}.log_positions WHERE origin = ? AND epoch = ?",
        (origin, epoch),
    ).fetchone()
    if row is None:
        return None
    first, last = row
    stop = min(upto, last, first + limit - 1)
    if stop < first:
        return None
    if db == "main":
        # The node's own log: its reading ids go with the rows.
        readingids.forget(txn, origin, epoch, first, stop)
    keys = span(txn, db, origin, epoch, first, stop)
    timeblocks.forget(txn, db, origin, *keys)
    txn.execute(f"DELETE FROM {db}.{rows_table(origin)} WHERE key BETWEEN ? AND ?", keys)
    deleted = txn.rowcount
    txn.execute(
        f"UPDATE {db}.log_positions SET first_index = ? WHERE origin = ? AND epoch = ?",
        (stop + 1, origin, epoch),
    )
    txn.execute(
        f"DELETE FROM {db}.log_marks WHERE origin = ? AND epoch = ? AND entry_index <= ?",
        (origin, epoch, stop),
    )
    pruned = record_pruned(txn, db, origin, epoch, first, stop, reason, now)
    return Prune(deleted, stop + 1, pruned)


def skip(txn, db, origin, epoch, position, gap: Gap, now) -> Optional[PrunedRange]:
    """
    A peer no longer holds ``gap``'s range of a log this node holds up to
    ``position``: record what of it this node lacks, and hold the log up to
    the range's end. A log with no record held yet starts after it.

    @return: the range recorded, or None when this node lacks none of it
        (or the range does not follow what it holds: it waits for those).
    """
    if not gap.first <= position + 1 <= gap.last:
        return None
    txn.execute(
        f"INSERT INTO {db}.log_positions (origin, epoch, last_index, first_index) "
        f"VALUES (?, ?, ?, ?) ON CONFLICT (origin, epoch) DO UPDATE SET "
        f"last_index = excluded.last_index, first_index = CASE "
        f"WHEN first_index > last_index THEN excluded.first_index ELSE first_index END",
        (origin, epoch, gap.last, gap.last + 1),
    )
    return record_pruned(txn, db, origin, epoch, position + 1, gap.last, gap.reason, now)


def first_index(txn, db: str, origin: str, epoch: str) -> int:
    row = txn.execute(
        f"SELECT first_index FROM {db}.log_positions WHERE origin = ? AND epoch = ?",
        (origin, epoch),
    ).fetchone()
    return row[0] if row else 1


def mark(txn, db: str, origin: str, epoch: str, index: int, now: float) -> None:
    """
    Log ``(origin, epoch)`` reached ``index`` in ``db`` by ``now``.
    """
    txn.execute(
        f"INSERT OR REPLACE INTO {db}.log_marks (origin, epoch, entry_index, stored_at) "
        f"VALUES (?, ?, ?, ?)",
        (origin, epoch, index, now),
    )


def mark_tails(txn, now: float, interval: float) -> None:
    """
    Mark each log that grew since its last mark, that mark being at least
    ``interval`` old, at its last index: the records a burst stored after
    its first commit's mark are then pruned in time too, even if the log
    grows no more. (They were stored by ``now``: never early.)
    """
    txn.execute("BEGIN IMMEDIATE")
    for db in ("main", "peer"):
        txn.execute(
            f"INSERT OR REPLACE INTO {db}.log_marks (origin, epoch, entry_index, stored_at) "
            f"SELECT p.origin, p.epoch, p.last_index, ? FROM {db}.log_positions p "
            f"WHERE p.last_index >= p.first_index AND NOT EXISTS (SELECT 1 FROM {db}.log_marks m "
            f"WHERE m.origin = p.origin AND m.epoch = p.epoch "
            f"AND (m.entry_index >= p.last_index OR m.stored_at > ?))",
            (now, now - interval),
        )


def stored_by(txn, cutoff: float) -> list:
    """
    How far each log was held by ``cutoff`` (Unix time), from the marks:
    ``[(db, origin, epoch, index)]``, each log's records up to ``index``
    stored at or before then.
    """
    found = []
    for db in ("main", "peer"):
        found.extend(
            (db, *row)
            for row in txn.execute(
                f"SELECT origin, epoch, max(entry_index) FROM {db}.log_marks "
                f"WHERE stored_at <= ? GROUP BY origin, epoch",
                (cutoff,),
            ).fetchall()
        )
    return found


def reusable_bytes(txn) -> tuple[int, int]:
    """
    The bytes of free pages inside each file (main, peer), which SQLite
    reuses before it grows the file.
    """
    sizes = []
    for db in ("main", "peer"):
        (pages,) = txn.execute(f"PRAGMA {db}.freelist_count").fetchone()
        (size,) = txn.execute(f"PRAGMA {db}.page_size").fetchone()
        sizes.append(pages * size)
    return sizes[0], sizes[1]
