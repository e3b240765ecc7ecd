"""
The ordinals of the logs each database holds (its ``epochs`` table, schema
version 5): a stored row's key is its log's ordinal shifted past its entry
index (L{p2pstore.schema.key_of}), so one log is one range of its origin's
rows table.
"""

from __future__ import annotations

from typing import Optional

from .schema import INDEX_MASK, key_range


class Ordinals:
    """
    The ordinal of each log in each database, read once and then held.

    Used from the writing connection's thread and the read-only one's: each
    step on the dict is atomic. An ordinal given out in a transaction that
    was then rolled back stays held here, and is written again with the
    next rows of its log (L{make}); a new log's ordinal is past every one
    given out, so two logs never share one.
    """

    def __init__(self) -> None:
        # (db, origin, epoch) -> ordinal
        self._known: dict[tuple[str, str, str], int] = {}

    def find(self, txn, db: str, origin: str, epoch: str) -> Optional[int]:
        """
        The ordinal of a log in ``db``, None when it holds no row of it.
        """
        name = (db, origin, epoch)
        ordinal = self._known.get(name)
        if ordinal is None:
            row = txn.execute(
                f"SELECT ordinal FROM {db}.epochs WHERE origin = ? AND epoch = ?", (origin, epoch)
            ).fetchone()
            if row is not None:
                ordinal = self._known[name] = row[0]
        return ordinal

    def make(self, txn, db: str, origin: str, epoch: str) -> int:
        """
        In a writing transaction: the ordinal of a log in ``db``, numbered
        now if it has none, and in ``db``'s epochs table when it commits.
        """
        ordinal = self.find(txn, db, origin, epoch)
        if ordinal is None:
            (top,) = txn.execute(f"SELECT coalesce(max(ordinal), 0) FROM {db}.epochs").fetchone()
            given = [o for (d, _, _), o in list(self._known.items()) if d == db]
            ordinal = max([top, *given]) + 1
            self._known[(db, origin, epoch)] = ordinal
        txn.execute(
            f"INSERT OR IGNORE INTO {db}.epochs (ordinal, origin, epoch) VALUES (?, ?, ?)",
            (ordinal, origin, epoch),
        )
        return ordinal


def span(txn, db: str, origin: str, epoch: str, first: int = 0, last: int = INDEX_MASK) -> tuple:
    """
    The keys of a log's entries ``first``..``last`` in ``db``, for ``key
    BETWEEN ? AND ?``: an empty range for a log ``db`` has no row of. (Read
    from the epochs table: for what runs less often than every commit.)
    """
    row = txn.execute(
        f"SELECT ordinal FROM {db}.epochs WHERE origin = ? AND epoch = ?", (origin, epoch)
    ).fetchone()
    return (1, 0) if row is None else key_range(row[0], first, last)
