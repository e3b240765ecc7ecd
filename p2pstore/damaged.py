"""
A damaged database found at start: checked with SQLite's ``PRAGMA
quick_check`` before the node opens it, and, when SQLite finds it damaged,
moved aside (never deleted) so the node starts on a new file and fetches
the readings back from its peers, as after a lost database
(docs/recovery.md).

Only damage SQLite itself reports moves a file: a disk that cannot be read,
a file without permission, or a lock leave it in place and stop the start
as before.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from time import gmtime, strftime
from typing import Optional

from attrs import frozen

# SQLite's own words for a damaged file.
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# The problems quick_check lists, at most.
_PROBLEMS = 5


@frozen
class SetAside:
    """
    A damaged database moved aside at start.

    @ivar path: where it was.
    @ivar moved_to: where it is now.
    @ivar problem: what SQLite found wrong.
    """

    path: Path
    moved_to: Path
    problem: str

    def status(self) -> dict:
        return {"file": str(self.path), "moved_to": str(self.moved_to), "problem": self.problem}


def problem_of(path: Path) -> Optional[str]:
    """
    What SQLite's quick_check finds wrong with the database at ``path``, or
    L{None} when it finds nothing (or the file does not exist).

    @raise sqlite3.Error: the file cannot be checked for another reason
        than damage (it cannot be read, say).
    """
    if not path.exists():
        return None
    try:
        # Read-write, so that a WAL left by a crash is recovered first, as
        # the node's own open would.
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)
        try:
            rows = conn.execute(f"PRAGMA quick_check({_PROBLEMS})").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorname", "").startswith(_DAMAGE):
            return str(e)
        raise
    if [row[0] for row in rows] == ["ok"]:
        return None
    # One line: the findings without SQLite's "*** in database main ***".
    problems = [
        line.strip()
        for (text,) in rows
        for line in text.splitlines()
        if line.strip() and not line.startswith("***")
    ]
    return "quick_check: " + "; ".join(problems)


def set_aside(path: Path, problem: str, now: float) -> SetAside:
    """
    Move the database at ``path`` and its WAL and shared-memory files to
    ``<name>.damaged-<UTC time>``, durably.
    """
    stamp = strftime("%Y%m%dT%H%M%SZ", gmtime(now))
    moved_to = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, moved_to.with_name(moved_to.name + suffix))
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return SetAside(path, moved_to, problem)


def check_databases(paths: list[Path], now: float) -> list[SetAside]:
    """
    Check each database and move aside those SQLite finds damaged.
    """
    moved = []
    for path in paths:
        problem = problem_of(path)
        if problem is not None:
            moved.append(set_aside(path, problem, now))
    return moved


def advice(moved: SetAside, own: bool, peers: bool) -> str:
    """
    The start's error line for a database moved aside.
    """
    if own and peers:
        then = (
            "this node's readings are fetched back from its peers (the node is Syncing until "
            "it holds them again); readings no peer held are lost"
        )
    elif own:
        then = (
            "no --peers are given, so this node starts an empty log: its readings are only "
            "in the damaged file now"
        )
    else:
        then = "the other nodes' readings are fetched again from the peers that hold them"
    return (
        f"{moved.path} is damaged ({moved.problem}): moved it aside to {moved.moved_to} "
        f"and started on a new file; {then}. Keep the damaged file for `p2pstore verify` "
        f"or to recover readings by hand, and delete it once the node is Running."
    )
