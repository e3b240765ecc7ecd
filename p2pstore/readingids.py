"""
The reading ids of a node's own log: a resent reading (its answer lost, the
sensor sends it again) is answered with the index it was stored at, not
stored twice.

An index on the readings table would be written by every commit, a page for
each reading: each sensor's ids are a run of their own in it, so the
readings of one commit, from as many sensors, each land on another of its
pages (29,725 bytes written to disk a reading, most of them that index:
bench/README.md, diskwear.py). Instead ``server_id_<node id>_ids`` holds
``(reading_id, entry_index)``, added every L{IDS_BATCH} readings in one
sorted INSERT, so each of its pages is written about once; the ids of the
rows since are held in memory. meta's ``reading_ids_pending`` names those
rows, ``<epoch> <entry_index>``: the rows of that epoch after that index.
Opening the store adds them (a crash loses only memory), so the file alone
always answers.

Own rows that come from peers (a lost database recovered, a record repaired)
have their ids added as they are stored; those pruned are removed with them.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

from .records import ENTRY_INDEX, READING_ID
from .logkeys import span
from .schema import INDEX_MASK, rows_table, table_name

# Own readings whose ids are held in memory before they are added in bulk;
# a few MB of memory at most.
IDS_BATCH = 30_000
PENDING = "reading_ids_pending"


def ids_table(node_id: str) -> str:
    return f"main.{table_name(node_id)}_ids"


def forget(txn, node_id: str, epoch: str, first: int, last: int) -> None:
    """
    In the transaction that deletes own rows ``first``..``last`` of
    ``epoch``, before it does: their ids go too.
    """
    txn.execute(
        f"DELETE FROM {ids_table(node_id)} WHERE (reading_id, entry_index) IN ("
        f"SELECT reading_id, key & {INDEX_MASK} FROM main.{rows_table(node_id)} "
        f"WHERE key BETWEEN ? AND ? AND reading_id IS NOT NULL)",
        span(txn, "main", node_id, epoch, first, last),
    )


class ReadingIds:
    """
    The reading ids of one node's own rows, in its ``_ids`` table and, for
    the newest, in memory.

    The store calls L{open} once, L{known} and L{due} inside each append's
    transaction, L{committed} once it has committed, and L{added} for own
    rows it stores from peers. Appends are one at a time, so memory is
    read in the store's thread only between commits.
    """

    def __init__(self, node_id: str, batch: int = IDS_BATCH):
        self._node_id = node_id
        self._table = f"main.{rows_table(node_id)}"
        self._ids = ids_table(node_id)
        self._batch = batch
        # reading_id -> entry_index of the committed own rows after the
        # pending mark, not in the table of ids yet.
        self._recent: dict[str, int] = {}

    def open(self, txn, epoch: str) -> None:
        """
        In a transaction of its own once the schema exists: add the ids a
        crash (or an older epoch) left pending, and hold none in memory. On
        a disk too full for that they stay pending, held in memory, and the
        next move adds them: the node opens to refuse readings until there
        is room.
        """
        self._recent = {}
        txn.execute("BEGIN IMMEDIATE")
        try:
            self.move(txn, epoch)
            txn.execute("COMMIT")
        except BaseException as e:
            _rollback(txn)
            if getattr(e, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            self._recent = self._pending(txn)

    def _pending(self, txn) -> dict:
        # The ids of the pending rows, as the next move adds them.
        row = txn.execute("SELECT value FROM main.meta WHERE key = ?", (PENDING,)).fetchone()
        if row is None:
            return {}
        pending_epoch, after = row[0].rsplit(" ", 1)
        return dict(
            txn.execute(
                f"SELECT reading_id, key & {INDEX_MASK} FROM {self._table} "
                f"WHERE key BETWEEN ? AND ? AND reading_id IS NOT NULL ORDER BY key",
                span(txn, "main", self._node_id, pending_epoch, int(after) + 1),
            ).fetchall()
        )

    def known(self, txn, lookup, wanted: set) -> dict:
        """
        The entry_index stored for each reading id in ``wanted`` that is
        stored; ``lookup(txn, table, ids)`` reads the table of ids.
        """
        recent = self._recent
        found = {i: recent[i] for i in wanted if i in recent}
        if len(found) < len(wanted):
            found.update(lookup(txn, self._ids, wanted.difference(found)))
        return found

    def due(self, txn, epoch: str, added: int) -> bool:
        """
        In an append's transaction that stored ``added`` rows: once memory
        would hold a batch, add them all to the table of ids.

        @return: whether it did (for L{committed}).
        """
        if len(self._recent) + added < self._batch:
            return False
        self.move(txn, epoch)
        return True

    def move(self, txn, epoch: str) -> None:
        """
        Add the pending ids to the table of ids in their order there, and
        mark every own row of ``epoch`` stored so far as added.
        """
        row = txn.execute("SELECT value FROM main.meta WHERE key = ?", (PENDING,)).fetchone()
        if row is not None:
            pending_epoch, after = row[0].rsplit(" ", 1)
            txn.execute(
                f"INSERT OR IGNORE INTO {self._ids} (reading_id, entry_index) "
                f"SELECT reading_id, key & {INDEX_MASK} FROM {self._table} "
                f"WHERE key BETWEEN ? AND ? AND reading_id IS NOT NULL "
                f"ORDER BY reading_id, key & {INDEX_MASK}",
                span(txn, "main", self._node_id, pending_epoch, int(after) + 1),
            )
        (last,) = txn.execute(
            f"SELECT coalesce(max(key) & {INDEX_MASK}, 0) FROM {self._table} "
            f"WHERE key BETWEEN ? AND ?",
            span(txn, "main", self._node_id, epoch),
        ).fetchone()
        txn.execute(
            "INSERT OR REPLACE INTO main.meta (key, value) VALUES (?, ?)", (PENDING, f"{epoch} {last}")
        )

    def committed(self, rows: Iterable[tuple], moved: bool) -> None:
        """
        An append committed ``rows``: their ids are known from now on (in
        the table of ids already when it ``moved`` them).
        """
        if moved:
            self._recent.clear()
            return
        self._recent.update(
            (row[READING_ID], row[ENTRY_INDEX]) for row in rows if row[READING_ID] is not None
        )

    def added(self, txn, rows: Iterable[tuple]) -> None:
        """
        Own rows stored from a peer: their ids into the table at once.
        """
        ids = [(row[READING_ID], row[ENTRY_INDEX]) for row in rows if row[READING_ID] is not None]
        if ids:
            txn.executemany(
                f"INSERT OR IGNORE INTO {self._ids} (reading_id, entry_index) VALUES (?, ?)", ids
            )


def _rollback(txn) -> None:
    # Undo the transaction, if a failed statement or COMMIT left it open.
    try:
        txn.execute("ROLLBACK")
    except sqlite3.OperationalError:
        pass
