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

from attrs import define, field

from .lines import Reading
from .records import ENTRY_INDEX, READING_ID, SENSOR_DATA, SENSOR_INDEX, SENSOR_TYPE, TIMESTAMP, Signer, parse_value_unit


@define
class OwnRows:
    """
    Numbers and signs this node's readings in its current epoch.

    @ivar epoch: set once the store is open and knows it.
    """

    node_id: str
    signer: Signer = field(repr=False)
    epoch: Optional[str] = None

    def row(
        self,
        entry_index: int,
        sensor_index: int,
        sensor_type: str,
        sensor_data: str,
        timestamp: str,
        reading_id: Optional[str],
    ) -> tuple:
        """
        The signed row of one reading at ``entry_index``.
        """
        value, unit = parse_value_unit(sensor_data)
        checksum = self.signer.checksum_of(
            self.node_id, self.epoch, entry_index, sensor_index, sensor_type,
            sensor_data, timestamp, reading_id,
        )
        return (
            entry_index, sensor_index, sensor_type, sensor_data, timestamp,
            reading_id, checksum, value, unit, self.epoch,
        )

    def prepare(self, readings: Iterable[Reading], sensor_index: int, first_index: int) -> list:
        """
        The signed rows for readings of one sensor connection, numbered from
        ``first_index`` on.
        """
        row = self.row
        return [
            row(index, sensor_index, reading[0], reading[1], reading[2], reading[3])
            for index, reading in enumerate(readings, first_index)
        ]

    @staticmethod
    def reading_ids(rows: Sequence[tuple]) -> list[str]:
        """
        The reading ids the rows carry, in order.
        """
        return [row[READING_ID] for row in rows if row[READING_ID] is not None]

    @staticmethod
    def continues(rows: Sequence[tuple], last: int) -> bool:
        """
        Do the rows, as prepared, continue a log that ends at ``last``?
        """
        return not rows or rows[0][ENTRY_INDEX] == last + 1

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
                    reading_id,
                )
            fresh.append(row)
            indexes.append(last)
            if reading_id is not None:
                known[reading_id] = last
        return indexes, fresh
