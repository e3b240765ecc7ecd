"""
The export cursors and dead letters in the own database: the transactions
L{p2pstore.storage.Store} runs for L{p2pstore.export}.

A cursor moves in the same transaction as the dead letters it steps over,
so a crash leaves both as they were or both moved: a reading is never
skipped without its dead letter, nor dead-lettered twice.
"""

from __future__ import annotations

from typing import Optional

from attrs import frozen


@frozen
class DeadLetter:
    """
    A reading a destination refused, or that cannot be a point: ``line``
    is the point sent (C{None} when none could be made), ``status`` the
    HTTP status (C{None} without an answer), ``answer`` what was said.
    """

    origin: str
    epoch: str
    entry_index: int
    line: Optional[str]
    status: Optional[int]
    answer: str


def load(txn, destination: str) -> tuple[dict, int]:
    """
    The cursors of one destination (C{{(origin, epoch): index}}) and how
    many dead letters it has.
    """
    cursors = {
        (origin, epoch): index
        for origin, epoch, index in txn.execute(
            "SELECT origin, epoch, exported FROM main.export_cursors WHERE destination = ?",
            (destination,),
        ).fetchall()
    }
    (dead,) = txn.execute(
        "SELECT count(*) FROM main.export_dead_letters WHERE destination = ?", (destination,)
    ).fetchone()
    return cursors, dead


def save_heard(txn, destination: str, positions: dict) -> None:
    """
    Cursors peers announced for logs this node does not export (so that
    after a restart it still knows how far the destination holds its
    peers' logs, and that their origins export there: retention keeps the
    rest, see L{p2pstore.takeover.Takeover.retention_limit}).
    """
    txn.executemany(
        "INSERT INTO main.export_cursors (destination, origin, epoch, exported) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (destination, origin, epoch) "
        "DO UPDATE SET exported = max(exported, excluded.exported)",
        [(destination, origin, epoch, index) for (origin, epoch), index in positions.items()],
    )


def save(txn, destination: str, origin: str, epoch: str, index: int, dead, at: float) -> None:
    """
    Move one log's cursor to ``index``, with the dead letters ``dead``
    (L{DeadLetter}s) it steps over.
    """
    txn.executemany(
        "INSERT INTO main.export_dead_letters "
        "(destination, origin, epoch, entry_index, line, status, answer, failed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (destination, d.origin, d.epoch, d.entry_index, d.line, d.status, d.answer, at)
            for d in dead
        ],
    )
    txn.execute(
        "INSERT INTO main.export_cursors (destination, origin, epoch, exported) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (destination, origin, epoch) "
        "DO UPDATE SET exported = max(exported, excluded.exported)",
        (destination, origin, epoch, index),
    )
