"""
C{p2pstore verify DATA_DIR}: check a stopped node's files offline, read
only, and report every problem with what to do about it.

It checks SQLite's own integrity of both databases, every record's HMAC
under the cluster key (L{p2pstore.checking}), that each log holds its
entries without a gap, that C{log_positions} agrees with the rows, that
the block index of each table's times covers its rows (schema version 6,
L{p2pstore.timeblocks}), and that C{node.id} is readable. It never writes
to the files.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

import attrs
from attrs import define, frozen

from .checking import BAD_CHECKSUM, row_problem
from .identity import NODE_ID_FILE
from .records import Signer, is_node_id
from . import timeblocks
from .schema import (
    EPOCH,
    INDEX_BITS,
    INDEX_MASK,
    PEER_DB,
    ROW_COLUMNS,
    ROW_SQL,
    SELF_DB,
    TABLES_SQL,
    origin_of,
    row_sql,
)

# Detail lines printed per table and kind of problem; the rest are counted.
SHOWN = 20

MOVE_ASIDE = (
    "move the file aside and start the node with its peers: it fetches the records back "
    "(or restore the file from a backup)"
)

# A row that fails its check in a file SQLite still reads whole: the node's
# scrub finds it and puts a peer's good copy in its place.
REPAIRS = (
    "start the node with its peers: it quarantines the row and puts a peer's good copy in "
    "its place (first check that --secret-file is the cluster's key)"
)


@frozen
class Problem:
    """
    One thing wrong in a data directory: where it is, what it is, and what
    to do about it.
    """

    where: str
    what: str
    todo: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.todo}"


@define
class Progress:
    """
    A line on C{stderr} every ``every`` records or ``seconds`` seconds,
    whichever comes first, so a long check shows it is moving.
    """

    out: Optional[TextIO]
    every: int = 100_000
    seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _next_count: int = 0
    _next_time: float = 0.0

    def start(self, what: str, total: int) -> None:
        self._next_count = self.every
        self._next_time = self.clock() + self.seconds
        self.say(f"checking {what}: {total:,} records")

    def tick(self, done: int, total: int, what: str) -> None:
        if done >= self._next_count or self.clock() >= self._next_time:
            self._next_count = done + self.every
            self._next_time = self.clock() + self.seconds
            self.say(f"  {what}: {done:,} of {total:,} records checked")

    def say(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)


@define
class Report:
    """
    What a check found: the problems, one line each, and the counts for the
    summary.
    """

    out: TextIO
    problems: int = 0
    records: int = 0
    bad_checksums: int = 0
    logs: int = 0
    databases: int = 0
    _shown: dict = attrs.Factory(dict)

    def add(self, problem: Problem, kind: Optional[str] = None) -> None:
        """
        Print a problem; of each ``kind`` (per table), only the first
        L{SHOWN} are printed and the rest counted for L{finish}.
        """
        self.problems += 1
        if kind is not None:
            seen = self._shown[kind] = self._shown.get(kind, 0) + 1
            if seen > SHOWN:
                return
        print(problem, file=self.out)

    def finish(self, key_path: str) -> None:
        for kind, seen in self._shown.items():
            if seen > SHOWN:
                print(f"{kind}: {seen - SHOWN} more like the above", file=self.out)
        found = f"{self.problems} problem{'s' if self.problems != 1 else ''}"
        print(
            f"checked {self.records:,} records in {self.logs} logs of {self.databases} "
            f"databases: {found if self.problems else 'no problems'}",
            file=self.out,
        )
        if self.records and self.bad_checksums == self.records:
            print(
                f"every record failed its checksum: is {key_path} this cluster's key? "
                f"(give another with --secret-file)",
                file=self.out,
            )


def check_node_id(data_dir: Path, report: Report) -> Optional[str]:
    """
    The node id in C{node.id}, or C{None} after reporting why not.
    """
    path = data_dir / NODE_ID_FILE
    try:
        node_id = path.read_bytes().decode("ascii", "replace").strip()
    except OSError as e:
        report.add(
            Problem(
                str(path), f"cannot be read ({e.strerror})",
                "the node adopts the id of its database's table at its next start; "
                "restore the file if the database is gone too",
            )
        )
        return None
    if not is_node_id(node_id):
        report.add(
            Problem(
                str(path), "does not hold a node id (32 lowercase hex characters)",
                "restore it, or remove it so the node adopts its database's id",
            )
        )
        return None
    return node_id


def _connect(path: Path) -> sqlite3.Connection:
    """
    A read-only connection that leaves the directory as it was: a stopped
    node left no write-ahead log (its last connection checkpointed it), so
    the file is opened immutable, and SQLite makes no C{-wal} or C{-shm}
    beside it. After a crash the log is there, and read with the file.
    """
    from .opening import read_only

    wal = path.with_name(path.name + "-wal")
    uri = read_only(path)
    if not (wal.exists() and wal.stat().st_size):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True)


def check_integrity(conn: sqlite3.Connection, name: str, report: Report) -> bool:
    """
    SQLite's C{PRAGMA integrity_check}: every page, index and constraint.
    """
    try:
        results = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as e:
        results = [str(e)]
    bad = [text for text in results if text != "ok"]
    for text in bad:
        report.add(Problem(name, f"integrity check: {text}", MOVE_ASIDE), kind=f"{name} integrity")
    return not bad


def _quarantined(conn: sqlite3.Connection, db: str) -> dict:
    # {(origin, epoch, index): reason} of the records waiting for repair.
    try:
        rows = conn.execute(
            "SELECT origin, epoch, entry_index, reason FROM main.quarantine "
            "WHERE db = ? AND repaired_at IS NULL",
            (db,),
        ).fetchall()
    except sqlite3.DatabaseError:
        # No quarantine yet, or the node's own file is damaged (reported
        # as it is checked).
        return {}
    return {(origin, epoch, index): reason for origin, epoch, index, reason in rows}


def _positions(conn: sqlite3.Connection) -> dict:
    try:
        rows = conn.execute("SELECT origin, epoch, last_index FROM log_positions").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {(origin, epoch): last for origin, epoch, last in rows}


def _pruned(conn: sqlite3.Connection) -> dict:
    # The ranges each log no longer holds (schema version 3), by design.
    try:
        rows = conn.execute("SELECT origin, epoch, first_index, last_index FROM pruned").fetchall()
    except sqlite3.OperationalError:
        return {}
    pruned: dict = {}
    for origin, epoch, first, last in rows:
        pruned.setdefault((origin, epoch), []).append((first, last))
    return pruned


def _is_pruned(pruned: dict, log: tuple, index: int) -> bool:
    return any(first <= index <= last for first, last in pruned.get(log, ()))


def _ranges(indexes: list[int]) -> Iterator[tuple[int, int]]:
    # Consecutive runs of sorted indexes, as (first, last).
    start = previous = None
    for index in indexes:
        if previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            yield start, previous
        start = previous = index
    if start is not None:
        yield start, previous


def _entries(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first} to {last}"


@define
class _Log:
    """
    What the rows of one log showed as they went by.
    """

    first: int
    last: int
    missing: list = attrs.Factory(list)


def _rows_in_order(conn, table: str) -> str:
    # The query of a table's rows (ROW_COLUMNS) in log order: by key from
    # the rows under the view (schema version 5), else by the old table's
    # primary key.
    stored = f"{table}_rows"
    if conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (stored,)
    ).fetchone():
        return f"SELECT {row_sql('main')} FROM {stored} ORDER BY key"
    return f"SELECT {ROW_SQL} FROM {table} ORDER BY epoch, entry_index"


def check_table(conn, signer, name, table, origin, quarantined, report, progress, pruned=None) -> dict:
    """
    Check every row of one readings table, in log order; what ``pruned``
    (L{_pruned}) says is gone is no gap.

    @return: what each log of the table holds, ``{epoch: _Log}``.
    """
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if not set(ROW_COLUMNS) <= columns:
        lacking = ", ".join(sorted(set(ROW_COLUMNS) - columns))
        report.add(Problem(f"{name} {table}", f"lacks the columns {lacking}", MOVE_ASIDE))
        return {}
    (total,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    progress.start(f"{name} {table}", total)
    logs: dict = {}
    done = 0
    for row in conn.execute(_rows_in_order(conn, table)):
        done += 1
        report.records += 1
        epoch, index = row[EPOCH], row[0]
        where = f"{name} {table} log {origin}/{epoch} entry {index}"
        wrong = row_problem(signer, origin, row)
        if wrong is not None:
            if wrong == BAD_CHECKSUM:
                report.bad_checksums += 1
                wrong += " (the row was changed after it was stored, or the key is not this cluster's)"
            report.add(Problem(where, wrong, REPAIRS), kind=f"{name} {table} records")
        if type(index) is int:
            log = logs.get(epoch)
            if log is None:
                logs[epoch] = _Log(first=index, last=index)
            else:
                if index > log.last + 1:
                    log.missing.extend(range(log.last + 1, index))
                log.last = index
        progress.tick(done, total, f"{name} {table}")
    for epoch, log in logs.items():
        log.missing = [i for i in log.missing if not _is_pruned(pruned or {}, (origin, epoch), i)]
        waiting = [i for i in log.missing if (origin, epoch, i) in quarantined]
        lost = [i for i in log.missing if (origin, epoch, i) not in quarantined]
        for first, last in _ranges(lost):
            report.add(
                Problem(
                    f"{name} {table} log {origin}/{epoch}",
                    f"{_entries(first, last)} missing (the log is held from {log.first} to "
                    f"{log.last})",
                    MOVE_ASIDE,
                ),
                kind=f"{name} {table} gaps",
            )
        for index in waiting:
            report.add(
                Problem(
                    f"{name} {table} log {origin}/{epoch} entry {index}",
                    f"quarantined ({quarantined[(origin, epoch, index)]}) and not repaired yet",
                    "start the node with its peers: it fetches the record again",
                ),
                kind=f"{name} {table} quarantined",
            )
    return logs


def check_times(conn, name, table, origin, report, progress) -> None:
    """
    The block index of a table's times (schema version 6) covers every
    row of the table with a time: a row it misses is left out of every
    C{/readings?since=} answer.
    """
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (f"{table}_times",)
    ).fetchone():
        return
    (total,) = conn.execute(f"SELECT count(*) FROM {table}_rows").fetchone()
    what = f"{name} {table} times"
    progress.start(what, total)
    missed = list(
        timeblocks.uncovered(conn, "main", origin, lambda done: progress.tick(done, total, what))
    )
    if missed:
        (epoch,) = conn.execute(
            "SELECT epoch FROM epochs WHERE ordinal = ?", (missed[0] >> INDEX_BITS,)
        ).fetchone() or (None,)
        report.add(
            Problem(
                f"{name} {table}_times",
                f"does not cover {len(missed):,} rows (the first log {origin}/{epoch} entry "
                f"{missed[0] & INDEX_MASK}): reads of a time range would leave them out",
                MOVE_ASIDE,
            ),
            kind=f"{name} {table} times",
        )


def check_positions(name, positions, held, quarantined, report, pruned=None) -> None:
    """
    C{log_positions} against the rows: each log held as far as it says,
    no further (but for what ``pruned`` says is gone), and every log with
    rows has a position.
    """
    pruned = pruned or {}
    for (origin, epoch), log in held.items():
        position = positions.get((origin, epoch))
        where = f"{name} log_positions {origin}/{epoch}"
        if position is None:
            report.add(
                Problem(where, f"missing, though the table holds entries up to {log.last}", MOVE_ASIDE)
            )
        elif position > log.last:
            tail = [
                i
                for i in range(log.last + 1, position + 1)
                if (origin, epoch, i) in quarantined or _is_pruned(pruned, (origin, epoch), i)
            ]
            if len(tail) < position - log.last:
                report.add(
                    Problem(
                        where,
                        f"says {position} but the rows end at {log.last}: the node would "
                        f"believe it holds records it lacks",
                        MOVE_ASIDE,
                    )
                )
        elif position < log.last:
            report.add(
                Problem(where, f"says {position} but the rows go on to {log.last}", MOVE_ASIDE)
            )
    for (origin, epoch), position in positions.items():
        gone = sum(
            min(last, position) - first + 1
            for first, last in pruned.get((origin, epoch), ())
            if first <= position
        )
        if (origin, epoch) not in held and position > gone:
            report.add(
                Problem(
                    f"{name} log_positions {origin}/{epoch}",
                    f"says {position} but the table holds none of that log",
                    MOVE_ASIDE,
                )
            )


def check_database(path, db, node_id, signer, report, progress, quarantine_from) -> None:
    """
    Check one of a node's databases (``db``: C{main} for its own,
    C{peer} for the copies).
    """
    name = path.name
    if not path.exists():
        report.add(
            Problem(
                str(path), "missing",
                "the node makes it afresh at its next start and fetches the records from its peers",
            )
        )
        return
    report.databases += 1
    conn = _connect(path)
    try:
        try:
            check_integrity(conn, name, report)
            quarantined = _quarantined(quarantine_from or conn, db)
            positions = _positions(conn)
            pruned = _pruned(conn)
            tables = [
                (name_, origin)
                for (name_,) in conn.execute(TABLES_SQL.format(db="main")).fetchall()
                if (origin := origin_of(name_)) is not None
            ]
        except sqlite3.DatabaseError as e:
            report.add(Problem(name, f"cannot be read ({e})", MOVE_ASIDE))
            return
        held: dict = {}
        for table, origin in tables:
            if db == "main" and node_id is not None and origin != node_id:
                report.add(
                    Problem(
                        f"{name} {table}",
                        f"is not the table of this node ({node_id}, from {NODE_ID_FILE})",
                        "put back the node.id that belongs with this database",
                    )
                )
            try:
                logs = check_table(
                    conn, signer, name, table, origin, quarantined, report, progress, pruned
                )
            except sqlite3.DatabaseError as e:
                report.add(Problem(f"{name} {table}", f"cannot be read to the end ({e})", MOVE_ASIDE))
                continue
            held.update({(origin, epoch): log for epoch, log in logs.items()})
            try:
                check_times(conn, name, table, origin, report, progress)
            except sqlite3.DatabaseError as e:
                report.add(Problem(f"{name} {table}", f"cannot be read to the end ({e})", MOVE_ASIDE))
        report.logs += len(held)
        check_positions(name, positions, held, quarantined, report, pruned)
    finally:
        conn.close()


def verify(data_dir: Path, key: bytes, key_path: str, out: TextIO, progress: Progress) -> int:
    """
    Check a stopped node's data directory and print what is wrong.

    @return: how many problems were found.
    """
    report = Report(out)
    signer = Signer.from_key(key)
    node_id = check_node_id(data_dir, report)
    self_path = data_dir / SELF_DB
    # The quarantine of both databases is kept in the node's own.
    quarantine_from = _connect(self_path) if self_path.exists() else None
    try:
        for path, db in ((self_path, "main"), (data_dir / PEER_DB, "peer")):
            check_database(path, db, node_id, signer, report, progress, quarantine_from)
    finally:
        if quarantine_from is not None:
            quarantine_from.close()
    report.finish(key_path)
    return report.problems
