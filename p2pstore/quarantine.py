"""
The quarantine's transactions (run by L{p2pstore.storage.Store}): a
record that failed its check on disk moves to the ``quarantine`` table,
out of its log, until a good copy from a peer puts it back
(L{p2pstore.scrub} finds them and asks for the copies).

Each function takes the writing or reading transaction it runs in.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from .records import ENTRY_INDEX
from .logkeys import span
from .schema import SENSOR_NAME, row_sql, rows_table


def quarantine(txn, db: str, origin: str, epoch: str, index: int, row: Optional[tuple],
               reason: str, found_at: str) -> bool:
    """
    Move the row at one position of a log (C{row}, as it was read; C{None}
    when there was none) to the quarantine, unless it changed since it was
    read or the position is in quarantine already.

    @return: whether it was quarantined.
    """
    table = rows_table(origin)
    txn.execute("BEGIN IMMEDIATE")
    if _pending_row(txn, origin, epoch, index):
        return False
    where = f"FROM {db}.{table} WHERE key BETWEEN ? AND ?"
    keys = span(txn, db, origin, epoch, index, index)
    now = txn.execute(f"SELECT {row_sql(db)} {where}", keys).fetchone()
    if (tuple(now) if now else None) != (tuple(row) if row else None):
        return False
    if now is not None:
        txn.execute(f"DELETE {where}", keys)
    txn.execute(
        "INSERT INTO main.quarantine (found_at, db, origin, epoch, entry_index, reason, row) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (found_at, db, origin, epoch, index, reason, json.dumps(row, default=_as_json)),
    )
    return True


def pending(txn) -> tuple:
    """
    The positions in quarantine, not repaired yet, as
    C{[(origin, epoch, index)]}, and how many were repaired.
    """
    waiting = txn.execute(
        "SELECT origin, epoch, entry_index FROM main.quarantine "
        "WHERE repaired_at IS NULL ORDER BY id"
    ).fetchall()
    (repaired,) = txn.execute(
        "SELECT count(*) FROM main.quarantine WHERE repaired_at IS NOT NULL"
    ).fetchone()
    return [tuple(p) for p in waiting], repaired


def repair(txn, db: str, origin: str, epoch: str, entries: list, repaired_at: str,
           put_back: Callable[[tuple], None]) -> list:
    """
    Put back the rows of a log that are in quarantine, from C{entries}
    (C{(entry, row)} pairs, already checked against their HMACs), by
    C{put_back(row)}; entries for any other position are ignored.

    @return: the indexes repaired.
    """
    table = rows_table(origin)
    txn.execute("BEGIN IMMEDIATE")
    repaired = []
    for entry, row in entries:
        index = entry[ENTRY_INDEX]
        saved = _pending_row(txn, origin, epoch, index)
        if not saved:
            continue
        held = txn.execute(
            f"SELECT 1 FROM {db}.{table} WHERE key BETWEEN ? AND ?",
            span(txn, db, origin, epoch, index, index),
        ).fetchone()
        if not held:
            name = _quarantined_name(saved[0])
            put_back((*row, name) if name is not None else row)
        txn.execute(
            "UPDATE main.quarantine SET repaired_at = ? WHERE origin = ? AND epoch = ? "
            "AND entry_index = ? AND repaired_at IS NULL",
            (repaired_at, origin, epoch, index),
        )
        repaired.append(index)
    return repaired


def _pending_row(txn, origin: str, epoch: str, index: int) -> Optional[tuple]:
    # The saved row of a position in quarantine and not repaired yet.
    return txn.execute(
        "SELECT row FROM main.quarantine WHERE origin = ? AND epoch = ? "
        "AND entry_index = ? AND repaired_at IS NULL",
        (origin, epoch, index),
    ).fetchone()


def _quarantined_name(saved: Optional[str]) -> Optional[str]:
    # The sensor name of a quarantined row, kept through its repair: peers'
    # copies hold none. Like every sensor name it is not signed.
    try:
        row = json.loads(saved) if saved else None
    except ValueError:
        return None
    if not isinstance(row, list) or len(row) <= SENSOR_NAME:
        return None
    name = row[SENSOR_NAME]
    return name if isinstance(name, str) else None


def _as_json(value):
    # What json cannot hold of a row another program changed: bytes.
    return value.hex() if isinstance(value, bytes) else repr(value)
