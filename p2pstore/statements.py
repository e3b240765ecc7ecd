"""
The statements of the store's hot paths, sized to SQLite's limit on host
parameters and reused, so that a handful of statement texts serve every
batch size and stay prepared: INSERTs of many rows, and reading_id lookups.
"""

from __future__ import annotations

from itertools import chain

from . import timeblocks
from .logkeys import Ordinals
from .records import CHECKSUM, ENTRY_INDEX
from .schema import EPOCH, SENSOR_NAME, STORED_COLUMNS, key_of, rows_table

# Placeholders per "WHERE reading_id IN (...)" query, at most (fewer if
# SQLite allows fewer host parameters): a batch of 5,000 readings is looked
# up in one query.
_LOOKUP_CHUNK = 8192

# Rows per INSERT statement, at most (fewer if SQLite allows fewer host
# parameters). executemany() steps SQLite once per row and gives up the GIL
# at every step; while the reactor thread is busy each step then waits for
# the GIL again, and a batch of 1,000 rows could take seconds. One
# statement of many rows steps once, and SQLite does the work of all of
# them without the GIL.
_ROWS_PER_INSERT = 512
# Stored rows with a sensor name, and rows without (which end before it).
_WIDTHS = (len(STORED_COLUMNS), len(STORED_COLUMNS) - 1)
_TIMESTAMP = STORED_COLUMNS.index("timestamp")
_COLUMNS = {width: ", ".join(STORED_COLUMNS[:width]) for width in _WIDTHS}
_MARKS = {width: "(" + ", ".join("?" * width) + ")" for width in _WIDTHS}


class Statements:
    """
    Batched statements for a connection allowing ``limit`` host parameters
    per statement.
    """

    def __init__(self, limit: int = 32766):
        rows = _ROWS_PER_INSERT
        while rows > 1 and rows * len(STORED_COLUMNS) > limit:
            rows //= 2
        self.rows_per_insert = rows
        chunk = _LOOKUP_CHUNK
        while chunk > limit:
            chunk //= 2
        self.lookup_chunk = chunk
        self._insert_sql: dict = {}
        self.ordinals = Ordinals()

    def insert(self, txn, db: str, origin: str, rows: list) -> None:
        """
        Insert rows (L{p2pstore.schema.ROW_COLUMNS}) of one origin in
        ``db``, stored as L{p2pstore.schema.STORED_COLUMNS}, in as few
        statements as the parameter limit allows: a batch of n rows takes
        one statement per power of two in n up to the largest (1000 rows:
        512, 256, 128, 64, 32, 8), so a handful of statement texts serve
        every batch size and stay prepared.

        Rows without a sensor name bind no parameter for it; a batch that
        mixes the two has the short rows padded. The block index of the
        table's times covers them in the same transaction
        (L{p2pstore.timeblocks}).
        """
        if not rows:
            return
        ordinals = {
            epoch: self.ordinals.make(txn, db, origin, epoch) for epoch in {row[EPOCH] for row in rows}
        }
        rows = [_stored(row, ordinals[row[EPOCH]]) for row in rows]
        table = rows_table(origin)
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            width = len(STORED_COLUMNS)
            rows = [row + (None,) * (width - len(row)) for row in rows]
        size = self.rows_per_insert
        start, count = 0, len(rows)
        while start < count:
            while size > count - start:
                size //= 2
            sql = self._insert_sql.get((db, table, size, width))
            if sql is None:
                sql = self._insert_sql[db, table, size, width] = (
                    f"INSERT INTO {db}.{table} ({_COLUMNS[width]}) VALUES "
                    + ", ".join([_MARKS[width]] * size)
                )
            txn.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size
        timeblocks.note(txn, db, origin, [(row[0], row[_TIMESTAMP]) for row in rows])

    def reading_ids(self, txn, table: str, reading_ids: set) -> dict:
        """
        The entry_index stored for each of these reading ids that is stored.
        """
        wanted = list(reading_ids)
        found = {}
        for start in range(0, len(wanted), self.lookup_chunk):
            chunk = wanted[start : start + self.lookup_chunk]
            # Padded with its last id to a power of two, so that a few
            # statement texts serve every batch and stay prepared.
            size = 1 << (len(chunk) - 1).bit_length()
            chunk += chunk[-1:] * (size - len(chunk))
            found.update(
                txn.execute(
                    f"SELECT reading_id, entry_index FROM {table} "
                    f"WHERE reading_id IN ({', '.join('?' * size)})",
                    chunk,
                ).fetchall()
            )
        return found


def _stored(row: tuple, ordinal: int) -> tuple:
    # A row (ROW_COLUMNS) as it is stored (STORED_COLUMNS): the entry index
    # in the key, the checksum as bytes, no epoch.
    return (
        key_of(ordinal, row[ENTRY_INDEX]),
        *row[ENTRY_INDEX + 1 : CHECKSUM],
        bytes.fromhex(row[CHECKSUM]),
        *row[CHECKSUM + 1 : EPOCH],
        *row[SENSOR_NAME : SENSOR_NAME + 1],
    )
