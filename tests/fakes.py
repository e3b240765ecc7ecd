"""
Fakes shared by the tests of the sensor protocol (tests.test_sensor) and of
the ingestor behind it (tests.test_ingest): an in-memory store whose commits
the test fires by hand, and test cases with an ingestor over it on a
task.Clock, with sensors connected over StringTransports.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.ingest import Ingestor
from p2pstore.lines import Reading, Rejected, format_utc
from p2pstore.records import READING_ID, SENSOR_DATA, SENSOR_INDEX, SENSOR_TYPE, TIMESTAMP, Record, Signer
from p2pstore.rows import OwnRows
from p2pstore.sensor import SensorFactory, SensorProtocol
from p2pstore.opening import Opened
from p2pstore.rows import Appended

NODE_ID = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
# A Clock starting here makes the node's own timestamps look like the seed's.
START = 1587424818.231325
MAX_LINE = 64

GOOD = b"Temperature,39C,2020-04-20 23:20:18.231325"
SIGNER = Signer.from_key(b"cluster key for the sensor tests")


def opened(last_sensor_index: int = 0) -> Opened:
    return Opened(epoch=EPOCH, count=0, last_index=0, last_sensor_index=last_sensor_index, rejected=0)


@define
class Append:
    """
    One call of L{FakeStore.append}, waiting for the test to fire it.
    """

    rows: list[tuple]
    rejected: list[Rejected]
    last_sensor_index: int
    deferred: Deferred

    @property
    def readings(self) -> list[tuple[Reading, int]]:
        """
        The readings of the rows, each with its sensor_index.
        """
        return [
            (
                Reading(row[SENSOR_TYPE], row[SENSOR_DATA], row[TIMESTAMP], row[READING_ID]),
                row[SENSOR_INDEX],
            )
            for row in self.rows
        ]


@define
class FakeStore:
    """
    An in-memory store with L{p2pstore.storage.Store}'s contract for
    C{append}: each append returns a Deferred that fires with
    L{Appended} once "committed", which here is whenever the test calls
    L{commit}; the rows' numbers are checked then, as the real store does.
    """

    path: str = "memory"
    calls: list[Append] = field(factory=list)
    rows: list[Record] = field(factory=list)
    rejected: list[Rejected] = field(factory=list)
    by_reading_id: dict = field(factory=dict)
    # Batches whose numbers did not continue the log when committed.
    renumbered: int = 0

    def append(self, rows, rejected, last_sensor_index, renumber) -> Deferred:
        d = Deferred()
        self.calls.append(Append(list(rows), list(rejected), last_sensor_index, d))
        return d

    @property
    def waiting(self) -> list[Append]:
        return [call for call in self.calls if not call.deferred.called]

    def commit(self) -> Appended:
        """
        Commit the oldest append still waiting.
        """
        call = self.waiting[0]
        if call.rows and call.rows[0][0] != len(self.rows) + 1:
            self.renumbered += 1
        indexes, added = [], []
        for reading, sensor_index in call.readings:
            if reading.reading_id in self.by_reading_id:
                indexes.append(self.by_reading_id[reading.reading_id])
                continue
            record = Record(
                origin=NODE_ID,
                epoch=EPOCH,
                entry_index=len(self.rows) + 1,
                sensor_index=sensor_index,
                sensor_type=reading.sensor_type,
                sensor_data=reading.sensor_data,
                timestamp=reading.timestamp,
                reading_id=reading.reading_id,
            )
            self.rows.append(record)
            added.append(
                (record.entry_index, sensor_index, *reading[:3], reading.reading_id, "", None, None, EPOCH)
            )
            indexes.append(record.entry_index)
            if reading.reading_id is not None:
                self.by_reading_id[reading.reading_id] = record.entry_index
        self.rejected.extend(call.rejected)
        appended = Appended(origin=NODE_ID, indexes=indexes, rows=added, last_index=len(self.rows))
        call.deferred.callback(appended)
        return appended

    def fail(self, exception: Exception) -> None:
        """
        Fail the oldest append still waiting, as a full disk would.
        """
        self.waiting[0].deferred.errback(exception)


class SensorTestCase(SynchronousTestCase):
    """
    An opened ingestor over a L{FakeStore}, and sensors connected to it.
    """

    max_line = MAX_LINE
    ingestor_options: dict = {}

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = FakeStore()
        self.ingestor = Ingestor(
            self.store, OwnRows(NODE_ID, SIGNER), self.clock, **self.ingestor_options
        )
        self.factory = SensorFactory(self.ingestor, self.max_line, self.now, self.clock)

    def now(self) -> str:
        return format_utc(self.clock.seconds())

    def open_store(self, last_sensor_index: int = 0) -> None:
        self.ingestor.opened(opened(last_sensor_index))

    def connect(self) -> tuple[SensorProtocol, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def turn(self) -> None:
        """
        End the reactor turn: the ingestor starts its commit.
        """
        self.clock.advance(0)

    def commit_all(self) -> None:
        """
        Commit every batch until nothing is left to store.
        """
        self.turn()
        while self.store.waiting:
            self.store.commit()
            self.turn()

    def answers(self, transport: StringTransport) -> list[bytes]:
        data = transport.value()
        self.assertTrue(data == b"" or data.endswith(b"\n"), data)
        return data.splitlines()

    def assertStillServing(self, transport: StringTransport) -> None:
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.producerState, "producing")


class OpenedTestCase(SensorTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.open_store()
        self.protocol, self.transport = self.connect()
