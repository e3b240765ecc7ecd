"""
This node's own rows: the one place its readings are numbered and signed.

A reading becomes a row (p2pstore.schema.ROW_COLUMNS) with the next
entry_index of this node's log and the HMAC of the record under the cluster
key. Pure: no Twisted, no SQL. The ingestor numbers readings as they
arrive, in the reactor thread, while the database thread commits the batch
before them, so the two overlap; the numbers are a guess, which the commit
checks (L{OwnRows.renumber}, inside the transaction) and corrects when a
resent reading was answered with its stored index instead.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from attrs import define, field, frozen

from .lines import Reading
from .records import CHECKSUM, ENTRY_INDEX, READING_ID, SENSOR_DATA, SENSOR_INDEX, SENSOR_TYPE, TIMESTAMP, Signer, parse_value_unit
from .schema import sensor_name_of


def reading_ids(rows: Sequence[tuple]) -> list[str]:
    """
    The reading ids the rows carry, in order.
    """
    return [row[READING_ID] for row in rows if row[READING_ID] is not None]


def continues(rows: Sequence[tuple], last: int) -> bool:
    """
    Do the rows, as numbered, continue a log that ends at ``last``?
    """
    return not rows or rows[0][ENTRY_INDEX] == last + 1


@frozen
class Appended:
    """
    The outcome of one group commit.

    @ivar origin: the node whose log was appended to (this node).
    @ivar indexes: the entry_index answered for each reading, in order;
        a reading whose reading_id was already stored gets the stored index.
    @ivar rows: the rows this commit added (p2pstore.schema.ROW_COLUMNS).
    @ivar last_index: how far the log runs after this commit.
    """

    origin: str
    indexes: Sequence[int]
    rows: list
    last_index: int

    def entries(self) -> list[tuple]:
        """
        The records this commit added as RECORDS entries (see
        L{p2pstore.wire.Records}), built on demand: only replication needs
        them, and only when there are peers.
        """
        return [row[: CHECKSUM + 1] for row in self.rows]


@define
class OwnRows:
    """
    Numbers and signs this node's readings in its current epoch.

    The numbers handed out run ahead of the log: L{number} gives each
    reading the index it will have if every reading before it is stored;
    L{committed} and L{failed} say where the log really ends, and L{batch}
    numbers again what was numbered on a guess that turned out wrong.

    @ivar epoch: set by L{opened}, once the store knows it.
    """

    node_id: str
    signer: Signer = field(repr=False)
    epoch: Optional[str] = None
    # The entry_index the log gives its next reading, as the commits so far
    # tell.
    _log_next: int = field(default=1, init=False)
    # The entry_index the next reading numbered gets.
    _next: int = field(default=1, init=False)

    def opened(self, epoch: str, last_index: int, waiting: int) -> None:
        """
        The store is open: the log of ``epoch`` ends at ``last_index``, and
        ``waiting`` readings that arrived meanwhile are not numbered yet.
        """
        self.epoch = epoch
        self._log_next = last_index + 1
        self._next = self._log_next + waiting

    def number(
        self, readings: Sequence[Reading], sensor_index: int, sensor_name: Optional[str] = None
    ) -> list:
        """
        The signed rows of readings just arrived, numbered after every
        reading numbered before them.
        """
        rows = self.prepare(readings, sensor_index, self._next, sensor_name)
        self._next += len(readings)
        return rows

    def batch(
        self, parts: Iterable[tuple[Sequence[Reading], int, Optional[str], Optional[list]]]
    ) -> list:
        """
        The rows of a batch about to commit, numbered on from where the log
        ends: each part is ``(readings, sensor_index, sensor_name, rows)``,
        its rows as L{number} made them, numbered again when that was on
        another guess of where the log would end (or C{None}, read before
        the store opened).
        """
        index = self._log_next
        rows: list = []
        for readings, sensor_index, sensor_name, numbered in parts:
            if numbered is None or numbered[0][ENTRY_INDEX] != index:
                numbered = self.prepare(readings, sensor_index, index, sensor_name)
            rows.extend(numbered)
            index += len(readings)
        return rows

    def committed(self, last_index: int, waiting: int) -> None:
        """
        A commit ended the log at ``last_index``; ``waiting`` readings are
        numbered after it.
        """
        self._log_next = last_index + 1
        self._next = self._log_next + waiting

    def failed(self, waiting: int) -> None:
        """
        A commit failed: its numbers were not used, and the ``waiting``
        readings after it take them.
        """
        self._next = self._log_next + waiting

    def row(
        self,
        entry_index: int,
        sensor_index: int,
        sensor_type: str,
        sensor_data: str,
        timestamp: str,
        reading_id: Optional[str],
        sensor_name: Optional[str] = None,
    ) -> tuple:
        """
        The signed row of one reading at ``entry_index``; ``sensor_name``,
        the name its sensor authenticated with, is stored but not signed
        (a row without one ends before it).
        """
        value, unit = parse_value_unit(sensor_data)
        checksum = self.signer.checksum_of(
            self.node_id, self.epoch, entry_index, sensor_index, sensor_type,
            sensor_data, timestamp, reading_id,
        )
        if sensor_name is None:
            return (
                entry_index, sensor_index, sensor_type, sensor_data, timestamp,
                reading_id, checksum, value, unit, self.epoch,
            )
        return (
            entry_index, sensor_index, sensor_type, sensor_data, timestamp,
            reading_id, checksum, value, unit, self.epoch, sensor_name,
        )

    def prepare(
        self,
        readings: Iterable[Reading],
        sensor_index: int,
        first_index: int,
        sensor_name: Optional[str] = None,
    ) -> list:
        """
        The signed rows for readings of one sensor connection, numbered from
        ``first_index`` on.
        """
        row = self.row
        return [
            row(index, sensor_index, *reading, sensor_name)
            for index, reading in enumerate(readings, first_index)
        ]

    def renumber(self, rows: Sequence[tuple], last: int, known: dict) -> tuple[list, list]:
        """
        Number rows on from ``last``, answering a reading_id already stored
        (``known``: reading_id to entry_index) or earlier in the batch with
        its index instead of storing it again; a row whose number changes is
        signed again.

        @return: the index answered for each row, and the rows to store.
        """
        indexes, fresh = [], []
        for row in rows:
            reading_id = row[READING_ID]
            stored = known.get(reading_id) if reading_id is not None else None
            if stored is not None:
                indexes.append(stored)
                continue
            last += 1
            if row[ENTRY_INDEX] != last:
                row = self.row(
                    last, row[SENSOR_INDEX], row[SENSOR_TYPE], row[SENSOR_DATA], row[TIMESTAMP],
                    reading_id, sensor_name_of(row),
                )
            fresh.append(row)
            indexes.append(last)
            if reading_id is not None:
                known[reading_id] = last
        return indexes, fresh
