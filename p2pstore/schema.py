"""
The layout of a node's databases: their file names, the readings tables'
names and columns, and the versioned schema, kept as SQL files in
``p2pstore/db-schemas/``, with the loop that upgrades an older database.

The only module that names tables and columns; the store runs the SQL.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path
from typing import Iterable, Optional

from attrs import frozen

from .records import ENTRY, ENTRY_FIELDS, is_node_id

# The schema version this p2pstore writes (meta's schema_version).
VERSION = 6

SELF_DB = "self_sensor_data.db"
PEER_DB = "peer_sensor_data.db"

# The proof of concept's table names, which users query.
TABLE_PREFIX = "server_id_"

# The columns of a stored row, in the order the store passes rows: a RECORDS
# entry (p2pstore.records.ENTRY, so an entry's named positions hold in a
# row too), then what the row adds. sensor_name (schema version 2) is not
# signed: the name the sensor authenticated with. A row without a name
# leaves it out (the column's NULL), so that the rows of a node without
# sensor tokens bind no more parameters than before: see sensor_name_of.
ROW_COLUMNS = ENTRY_FIELDS + ("value", "unit", "epoch", "sensor_name")
VALUE, UNIT, EPOCH, SENSOR_NAME = range(len(ENTRY_FIELDS), len(ROW_COLUMNS))
ROW_SQL = ", ".join(ROW_COLUMNS)


def sensor_name_of(row: tuple) -> Optional[str]:
    """
    The sensor name of a row, None for a row without one.
    """
    return row[SENSOR_NAME] if len(row) > SENSOR_NAME else None


def _valid_sql(field) -> str:
    if field.name == "entry_index":
        # The key's low bits (an integer in a rows table, its INTEGER
        # PRIMARY KEY).
        return f"typeof(key) = 'integer' AND key & {INDEX_MASK} >= {field.minimum}"
    if field.name == "data_checksum":
        return f"typeof(data_checksum) = 'blob' AND length(data_checksum) = {CHECKSUM_BYTES}"
    if field.kind is int:
        return f"typeof({field.name}) = 'integer' AND {field.name} >= {field.minimum}"
    check = f"typeof({field.name}) = 'text'"
    return f"({field.name} IS NULL OR {check})" if field.optional else check


# How a row is stored (schema version 5), in ``server_id_<node id>_rows``:
# ``key`` (the rowid) is the log's ordinal in the database's ``epochs``
# table shifted past the entry index, so a log is one range of the table's
# own b-tree and there is no index beside it; no epoch column (the ordinal
# names it); the checksum as its 32 bytes. The view ``server_id_<node id>``
# shows the rows with ROW_COLUMNS, as users query them.
INDEX_BITS = 40
INDEX_MASK = (1 << INDEX_BITS) - 1
CHECKSUM_BYTES = 32
STORED_COLUMNS = (
    "key", "sensor_index", "sensor_type", "sensor_data", "timestamp", "reading_id",
    "data_checksum", "value", "unit", "sensor_name",
)


def key_of(ordinal: int, index: int) -> int:
    """
    The key of entry ``index`` (0 to INDEX_MASK) of the log numbered
    ``ordinal``.
    """
    if not 0 <= index <= INDEX_MASK:
        raise ValueError(f"entry index {index} is past what a key holds ({INDEX_MASK})")
    return (ordinal << INDEX_BITS) | index


def key_range(ordinal: int, first: int = 0, last: int = INDEX_MASK) -> tuple[int, int]:
    """
    The keys of entries ``first``..``last`` of the log numbered ``ordinal``,
    for ``key BETWEEN ? AND ?``.
    """
    if first > INDEX_MASK or last < max(first, 0):
        return 1, 0
    return key_of(ordinal, max(first, 0)), key_of(ordinal, min(last, INDEX_MASK))


def _row_expressions(db: str) -> list[str]:
    # ROW_COLUMNS from a rows table in ``db``: the entry index and the
    # epoch from the key, the checksum as hex text.
    return [
        f"key & {INDEX_MASK}", "sensor_index", "sensor_type", "sensor_data", "timestamp",
        "reading_id", "lower(hex(data_checksum))", "value", "unit",
        f"(SELECT epoch FROM {db}.epochs WHERE ordinal = key >> {INDEX_BITS})", "sensor_name",
    ]


def row_sql(db: str) -> str:
    """
    The select list giving ROW_COLUMNS from a readings rows table in ``db``.
    """
    return ", ".join(_row_expressions(db))


# The select list giving ENTRY_FIELDS from a readings rows table.
ENTRY_SQL = ", ".join(_row_expressions("main")[: len(ENTRY_FIELDS)])

# What a record requires of a row (p2pstore.records.ENTRY), checked by
# SQLite as it reads: a row that fails (changed by another program) is left
# out, which leaves a gap.
ENTRY_VALID_SQL = " AND ".join(_valid_sql(field) for field in ENTRY)


class StoreError(Exception):
    """
    The database cannot be used as it is; the message says what to do.
    """


def table_name(node_id: str) -> str:
    """
    The readings table of one origin: ``server_id_<node id>``.
    """
    if not is_node_id(node_id):
        raise ValueError(f"not a node id: {node_id!r}")
    return TABLE_PREFIX + node_id


def rows_table(node_id: str) -> str:
    """
    Where one origin's rows are stored (schema version 5): the table under
    the view ``server_id_<node id>``.
    """
    return table_name(node_id) + "_rows"


def times_table(node_id: str) -> str:
    """
    The block index of one origin's readings times (schema version 6,
    L{p2pstore.timeblocks}).
    """
    return table_name(node_id) + "_times"


def origin_of(table: str) -> Optional[str]:
    """
    The node id a readings table is named for, or None for another table.
    """
    if table.startswith(TABLE_PREFIX) and is_node_id(table[len(TABLE_PREFIX) :]):
        return table[len(TABLE_PREFIX) :]
    return None


# Every readings table of one database (schema "main" or "peer"), for
# origin_of to pick out: tables up to schema version 4, the views over the
# rows tables since.
TABLES_SQL = (
    "SELECT name FROM {db}.sqlite_master WHERE type IN ('table', 'view') AND name LIKE 'server_id_%'"
)


def statements(script: str) -> list[str]:
    """
    The statements of an SQL script, one by one, so that they can run inside
    a transaction of the caller's (``executescript`` commits first).
    """
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        if not pending.strip() and line.lstrip().startswith("--"):
            pending = ""
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an SQL statement is not complete: {pending.strip()[:60]!r}")
    return found


@frozen
class Schema:
    """
    The schema at one version, read from its SQL files: ``v<N>.sql`` (the
    tables besides the readings tables), ``readings-v<N>.sql`` and
    ``own-readings-v<N>.sql`` (one origin's table, for ``{db}`` and
    ``{table}``), and, from version N - 1, ``upgrade-to-v<N>.sql`` and
    ``upgrade-tables-to-v<N>.sql`` (applied to each readings table, for
    ``{db}``, ``{table}`` and ``{origin}``) then, where there is one,
    ``own-upgrade-tables-to-v<N>.sql`` (to a node's own table, in ``main``).

    @ivar directory: where the files are; the package's own unless a test
        gives another.
    """

    version: int = VERSION
    directory: object = resources.files(__package__) / "db-schemas"

    def _read(self, name: str) -> str:
        try:
            return (self.directory / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StoreError(
                f"p2pstore's schema file {name} is missing from {self.directory}: reinstall p2pstore"
            ) from None

    def create(self) -> list[str]:
        """
        The statements that create the tables of a new database, or those a
        database of this version lacks.
        """
        return statements(self._read(f"v{self.version}.sql"))

    def readings_table(self, origin: str, db: str, own: bool) -> list[str]:
        """
        The statements that create one origin's readings table in ``db``
        (``main`` or ``peer``): its rows table and the view over it, and
        what an ``own`` table has besides.
        """
        names = {"db": db, "table": table_name(origin)}
        script = self._read(f"readings-v{self.version}.sql")
        if own:
            script += self._read(f"own-readings-v{self.version}.sql")
        return [statement.format(**names) for statement in statements(script)]

    def upgrades(self, version: int) -> Iterable[tuple[int, list[str]]]:
        """
        The upgraders that bring a database from ``version`` to this one, in
        order: each the version it reaches and its statements.
        """
        for target in range(version + 1, self.version + 1):
            yield target, statements(self._read(f"upgrade-to-v{target}.sql"))

    def table_upgrade(self, target: int, db: str, origin: str) -> list[str]:
        """
        The statements that bring one origin's readings table in ``db``
        (``main`` or ``peer``) from version ``target - 1`` to ``target``.
        """
        names = {"db": db, "table": table_name(origin), "origin": origin}
        script = self._read(f"upgrade-tables-to-v{target}.sql")
        own = f"own-upgrade-tables-to-v{target}.sql"
        if db == "main" and (self.directory / own).is_file():
            script += self._read(own)
        return [statement.format(**names) for statement in statements(script)]


def backup(path: Path, version: int) -> Path:
    """
    Copy a database before it is upgraded, beside it, as
    ``<name>.v<version>.backup``, through SQLite's backup API (consistent
    even with a WAL).
    """
    target = path.with_name(f"{path.name}.v{version}.backup")
    source = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return target
