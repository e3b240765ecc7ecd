"""
Integration tests of replication: clusters of real ``twistd -n p2pstore``
processes on loopback ports sharing one cluster key, fed over real sockets,
with a corrupting TCP proxy and hostile clients in the test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Callable, Iterable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import TestCase

from p2pstore.records import BadRecord, Record, Signer
from p2pstore.peer import MAX_LINE
from p2pstore.wire import PROTOCOL_VERSION
from p2pstore.schema import origin_of, rows_table, times_table

from .nodes import (
    PEER_DB,
    SELF_DB,
    Deadline,
    IncompleteAnswers,
    NodeProcess,
    send_lines,
    start_simulator,
    wait_for,
)

# Generous for a loaded CI machine; on a quiet one every wait ends in well
# under a second.
CONVERGE = 30.0
# Readings on A before B starts catching up in the kill -9 test: enough that
# the catch-up lasts a good second, so the kill lands in the middle of it.
CATCH_UP = 50_000
# The handshake deadline of docs/peer-protocol.md: a connection dropped
# sooner than this was dropped for what it sent, not by the timer.
HANDSHAKE_TIMEOUT = 10.0
COLUMNS = (
    "entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
    "value, unit, reading_id, data_checksum, epoch"
)


# -- cluster set-up -------------------------------------------------------------


def cluster_key(test_case) -> Path:
    """
    A file holding a new 32-byte cluster key, in the test's temp dir.
    """
    path = Path(test_case.mktemp()).resolve()
    path.write_bytes(os.urandom(32))
    return path


def mesh(nodes: list[NodeProcess]) -> None:
    """
    Have every node list every other one in --peers.
    """
    for node in nodes:
        node.peers = [other.peer_address for other in nodes if other is not node]


def sensor_lines(count: int, tag: str, start: int = 0) -> list[bytes]:
    """
    ``count`` different readings of several kinds: with and without a
    timestamp or a reading id, a UTC offset, and non-ASCII text, so that
    every column and the canonical encoding are exercised.
    """
    kinds = [
        "Temperature,{t}C,2026-11-28 10:00:00.{i:06d},{tag}-{i}",
        "Atm. Pressure,1.{p:03d} atm,2026-11-28T10:00:00+01:00,{tag}-{i}",
        # No timestamp nor reading id: the node stamps its own time.
        "Humidity,{h}% RH",
        "Température,{t}°C,2026-11-28 10:00:00,{tag}-{i}",
    ]
    return [
        kinds[i % len(kinds)]
        .format(i=i, t=20 + i % 20, p=i % 1000, h=i % 100, tag=tag)
        .encode("utf-8")
        for i in range(start, start + count)
    ]


@inlineCallbacks
def feed(test_case, node: NodeProcess, lines: list[bytes], timeout: float = 30.0):
    """
    Send readings to a node and check that each was stored.
    """
    answers = yield send_lines(node.sensor_port, lines, timeout=timeout)
    test_case.assertEqual([a.split(b" ")[0] for a in answers], [b"OK"] * len(lines), answers[:5])
    return answers


# -- what the nodes hold ---------------------------------------------------------


def log_rows(node: NodeProcess, db_name: str, origin: str) -> list[tuple]:
    """
    Every row and column of ``origin``'s table in one database of ``node``,
    in log order; nothing when the table does not exist (yet).
    """
    try:
        return node.rows(db_name, f"server_id_{origin}", COLUMNS, order_by="epoch, entry_index")
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise


def own(node: NodeProcess) -> list[tuple]:
    """
    A node's own readings, from its self_sensor_data.db.
    """
    return log_rows(node, SELF_DB, node.node_id)


def copy_of(holder: NodeProcess, origin: NodeProcess) -> list[tuple]:
    """
    What ``holder`` holds of ``origin``'s readings, in its peer_sensor_data.db.
    """
    return log_rows(holder, PEER_DB, origin.node_id)


def readings_tables(node: NodeProcess, db_name: str) -> set[str]:
    """
    The names of the readings tables (``server_id_<node id>``) in one
    database of ``node``, as users query them: since schema version 5 each
    is a view over the origin's rows table (a table up to version 4). Not
    the rows tables themselves, nor an own table's reading ids: see
    L{stored_tables} for those.
    """
    return {name for name in stored_tables(node, db_name) if origin_of(name) is not None}


def stored_tables(node: NodeProcess, db_name: str) -> set[str]:
    """
    The names of every table and view named ``server_id_...`` in one
    database of ``node``: the readings tables users query and what stores
    them (``server_id_<node id>_rows``, ``server_id_<node id>_ids``).
    """
    return {
        name
        for (name,) in node.query(
            db_name,
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name LIKE 'server_id_%'",
        )
    }


def epochs(rows: Iterable[tuple]) -> list[str]:
    """
    The epochs of some rows, in order of first appearance.
    """
    return list(dict.fromkeys(row[9] for row in rows))


def verify_rows(signer: Signer, origin: str, rows: list[tuple]) -> list[str]:
    """
    The problems found checking every row's data_checksum under the key.
    """
    problems = []
    for row in rows:
        (entry_index, sensor_index, sensor_type, sensor_data, timestamp,
         _value, _unit, reading_id, checksum, epoch) = row
        record = Record(
            origin=origin, epoch=epoch, entry_index=entry_index, sensor_index=sensor_index,
            sensor_type=sensor_type, sensor_data=sensor_data, timestamp=timestamp,
            reading_id=reading_id, data_checksum=checksum,
        )
        try:
            signer.verify(record)
        except BadRecord as e:
            problems.append(f"{row}: {e}")
    return problems


@inlineCallbacks
def wait_identical(holder: NodeProcess, origin: NodeProcess, timeout: float = CONVERGE):
    """
    Wait until ``holder``'s copy of ``origin``'s readings is, row for row and
    column for column, what ``origin`` holds in its own database.

    @return: those rows.
    """
    seen = []

    def same():
        mine = own(origin)
        theirs = copy_of(holder, origin)
        seen[:] = [len(mine), len(theirs)]
        return mine if mine and mine == theirs else None

    rows = yield wait_for(
        same,
        timeout,
        lambda: f"the copy of {origin.node_id} on {holder.node_id} to equal the original "
        f"(original {seen[0]} rows, copy {seen[1]})",
    )
    return rows


@inlineCallbacks
def replicated_pair(test_case, a_count: int, b_count: int):
    """
    Two meshed nodes sharing a key, A fed ``a_count`` readings and B
    ``b_count``, each holding the other's copy.

    @return: a Deferred firing with ``(a, b, a's rows, b's rows)``.
    """
    key = cluster_key(test_case)
    a, b = NodeProcess(test_case, secret_file=key), NodeProcess(test_case, secret_file=key)
    mesh([a, b])
    yield a.start()
    yield b.start()
    yield feed(test_case, a, sensor_lines(a_count, "a"))
    yield feed(test_case, b, sensor_lines(b_count, "b"))
    rows_a = yield wait_identical(b, a)
    rows_b = yield wait_identical(a, b)
    return a, b, rows_a, rows_b


@inlineCallbacks
def peer_entries(node: NodeProcess) -> dict:
    """
    The node's /status peers, by node id (None for dialled addresses not yet linked).
    """
    status = yield node.status()
    entries: dict = {}
    for entry in status["peers"]:
        entries.setdefault(entry["node_id"], []).append(entry)
    return entries


@inlineCallbacks
def wait_links_up(node: NodeProcess, others: list[NodeProcess], timeout: float = CONVERGE):
    """
    Wait until the node's /status lists exactly one entry per other node,
    each connected and authenticated, none lagging.

    @return: the entries, by node id.
    """
    seen = []
    wanted = {other.node_id for other in others}

    @inlineCallbacks
    def up():
        entries = yield peer_entries(node)
        seen[:] = [entries]
        return entries if (
            set(entries) == wanted
            and all(
                len(e) == 1 and e[0]["connected"] and e[0]["authenticated"] and e[0]["lag"] == {}
                for e in entries.values()
            )
        ) else None

    entries = yield wait_for(
        up, timeout, lambda: f"every link of {node.node_id} up and not lagging ({seen[0]})"
    )
    return {node_id: e[0] for node_id, e in entries.items()}


def no_tracebacks(test_case, *nodes: NodeProcess) -> None:
    """
    Check that no node logged an unexpected error.
    """
    for node in nodes:
        test_case.assertNotIn("Traceback", node.log_text())


# -- a corrupting proxy ------------------------------------------------------------


def _records_payload(line: bytes) -> dict:
    # A sealed line: "RECORDS <json> <seq> <mac>".
    verb, _, body = line.rsplit(b" ", 2)[0].partition(b" ")
    assert verb == b"RECORDS", line[:20]
    return json.loads(body)


def _records_line(payload: dict, like: bytes) -> bytes:
    # As p2pstore.wire writes it, with the seal of the line it replaces, so
    # only the changed character differs.
    seal = like.rsplit(b" ", 2)[1:]
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b" ".join([b"RECORDS", body, *seal])


def _one_byte_changed(before: bytes, after: bytes) -> bytes:
    differing = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert len(before) == len(after) and len(differing) == 1, "not a one-byte change"
    return after


def flip_sensor_data(rng: random.Random) -> Callable[[bytes], bytes]:
    """
    A mutation of a RECORDS line: one ASCII letter or digit of one record's
    sensor_data changed to a neighbour (``3`` -> ``2``, ``C`` -> ``B``), one
    flipped bit, so the line stays a well-formed message and only that
    record's HMAC can tell.
    """

    def mutate(line: bytes) -> bytes:
        payload = _records_payload(line)
        record = rng.choice(payload["records"])
        text = record[3]
        i = rng.choice([i for i, c in enumerate(text) if c.isascii() and c.isalnum()])
        record[3] = text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1 :]
        return _one_byte_changed(line, _records_line(payload, line))

    mutate.what = "a sensor_data character"
    return mutate


def flip_hex_field(field: str) -> Callable[[bytes], bytes]:
    """
    A mutation of a RECORDS line: the last hex digit of its ``origin`` or
    ``epoch`` changed to another one, so the line stays well-formed and
    names a log that does not exist.
    """

    def mutate(line: bytes) -> bytes:
        payload = _records_payload(line)
        digits = "0123456789abcdef"
        value = payload[field]
        payload[field] = value[:-1] + digits[(digits.index(value[-1]) + 1) % 16]
        return _one_byte_changed(line, _records_line(payload, line))

    mutate.what = f"the {field}"
    return mutate


def flip_random_byte(rng: random.Random) -> Callable[[bytes], bytes]:
    """
    A mutation of a line: one byte anywhere in it XORed with a random value
    (which may make it malformed, not UTF-8, or even split it in two).
    """

    def mutate(line: bytes) -> bytes:
        i = rng.randrange(len(line))
        return line[:i] + bytes([line[i] ^ rng.randrange(1, 256)]) + line[i + 1 :]

    mutate.what = "a random byte"
    return mutate


def break_structure(line: bytes) -> bytes:
    """
    A mutation of a RECORDS line: the ``{`` opening its payload turned into
    ``z``, one flipped bit that leaves a line that is not a message at all.
    """
    i = line.index(b"{")
    return line[:i] + bytes([line[i] ^ 1]) + line[i + 1 :]


break_structure.what = "the payload's opening brace"


class Corruptor:
    """
    What a L{CorruptingProxy} does to the lines it forwards from the node
    behind it: the first RECORDS lines go through one mutation each, in the
    order of C{plan}; every other line passes untouched.

    @ivar done: what each mutation made so far changed, in order.
    """

    def __init__(self, plan: list[Callable[[bytes], bytes]]):
        self.plan = list(plan)
        self.done: list[str] = []

    @property
    def finished(self) -> bool:
        return not self.plan

    def line(self, line: bytes) -> bytes:
        if self.plan and line.startswith(b"RECORDS "):
            mutate = self.plan.pop(0)
            self.done.append(mutate.what)
            return mutate(line)
        return line


class _Upstream(Protocol):
    """
    The proxy's connection to the node behind it: its lines go back to the
    client through the corruptor.
    """

    def __init__(self, downstream: "_Downstream"):
        self.downstream = downstream
        self.buffer = b""
        self.lost = Deferred()

    def dataReceived(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        corruptor = self.downstream.proxy.corruptor
        out = b"".join(corruptor.line(line) + b"\n" for line in lines)
        if out:
            self.downstream.transport.write(out)

    def connectionLost(self, reason) -> None:
        self.downstream.transport.loseConnection()
        self.lost.callback(None)


class _Downstream(Protocol):
    """
    A client's connection to the proxy: what it sends goes on untouched.
    """

    def __init__(self, proxy: "CorruptingProxy"):
        self.proxy = proxy
        self.upstream = None
        self.lost = Deferred()

    def connectionMade(self) -> None:
        self.proxy.connections.append(self)
        # Nothing is read until the node behind the proxy answers.
        self.transport.pauseProducing()
        target = TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy.target_port, timeout=5)
        d = connectProtocol(target, _Upstream(self))
        d.addCallbacks(self._connected, lambda _: self.transport.loseConnection())

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        if self.lost.called:
            upstream.transport.loseConnection()
        else:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.upstream.transport.write(data)

    def connectionLost(self, reason) -> None:
        self.proxy.connections.remove(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()
        self.lost.callback(None)


class CorruptingProxy(Factory):
    """
    A TCP proxy on 127.0.0.1 in front of a node's peer port, corrupting
    some of what the node sends through it (see L{Corruptor}). Closed by the
    test's cleanup.
    """

    def __init__(self, test_case, target_port: int, corruptor: Corruptor):
        self.target_port = target_port
        self.corruptor = corruptor
        self.connections: list[_Downstream] = []
        self._port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = self._port.getHost().port
        test_case.addCleanup(self.close)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def buildProtocol(self, addr) -> _Downstream:
        return _Downstream(self)

    def close(self) -> Deferred:
        waits = [self._port.stopListening()]
        for connection in list(self.connections):
            waits.append(connection.lost)
            if connection.upstream is not None:
                waits.append(connection.upstream.lost)
                connection.upstream.transport.abortConnection()
            connection.transport.abortConnection()
        return DeferredList(waits)


# -- a hostile client ------------------------------------------------------------------


class _Probe(Protocol):
    """
    Sends some bytes on connecting and keeps what comes back until the
    connection ends.
    """

    def __init__(self, payload: bytes):
        self.payload = payload
        self.received = b""
        self.closed = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.received)


@inlineCallbacks
def probe(port: int, payload: bytes, timeout: float):
    """
    Connect to 127.0.0.1:``port``, send ``payload``, and wait for the other
    side to close the connection.

    @return: what it sent meanwhile.
    @raise Deadline: it kept the connection open for ``timeout`` seconds.
    """
    client = _Probe(payload)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), client)
    timer = reactor.callLater(timeout, client.transport.abortConnection)
    received = yield client.closed
    if not timer.active():
        raise Deadline(f"the node kept the connection open for {timeout:g} s after {payload[:60]!r}")
    timer.cancel()
    return received


def hello_line(node_id: str, nonce: bytes = b"") -> bytes:
    """
    A well-formed HELLO from ``node_id`` (with a fresh nonce unless one is given).
    """
    return b"HELLO " + json.dumps(
        {"v": PROTOCOL_VERSION, "node": node_id, "nonce": (nonce or os.urandom(32)).hex()}, separators=(",", ":")
    ).encode("ascii")


def auth_proof(key: bytes, prover: str, verifier: str, prover_nonce: bytes, verifier_nonce: bytes) -> str:
    """
    The AUTH proof as docs/peer-protocol.md defines it (written from the
    document, not from p2pstore's code).
    """
    message = b"p2pstore-peer-auth-v1" + prover.encode() + verifier.encode() + prover_nonce + verifier_nonce
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def link_key(key: bytes, sender: str, receiver: str, sender_nonce: bytes, receiver_nonce: bytes) -> bytes:
    """
    The key that seals one direction's lines, as docs/peer-protocol.md
    defines it.
    """
    message = b"p2pstore-link-v2" + sender.encode() + receiver.encode() + sender_nonce + receiver_nonce
    return hmac.new(key, message, hashlib.sha256).digest()


def line_mac(key: bytes, seq: int, message: bytes) -> bytes:
    """
    A sealed line's MAC, as docs/peer-protocol.md defines it.
    """
    return hmac.new(key, seq.to_bytes(8, "big") + message, hashlib.sha256).hexdigest()[:32].encode()


class _FakePeer(LineOnlyReceiver):
    """
    A test peer that holds the cluster key: it dials, authenticates and
    seals its lines as docs/peer-protocol.md says, and once the node's
    first HAVE arrives sends one line of its own choosing, sealed unless
    C{sealed} is false.

    @ivar verified: whether the node's own proof checked.
    @ivar opened: how many of the node's sealed lines checked.
    @ivar verbs: the verbs of the lines the node sent.
    """

    delimiter = b"\n"
    MAX_LENGTH = 8 * 1024 * 1024

    def __init__(self, key: bytes, then: bytes, sealed: bool = True):
        self.key = key
        self.then = then
        self.sealed = sealed
        self.node_id = uuid.uuid4().hex
        self.nonce = os.urandom(32)
        self.verified = False
        self.opened = 0
        self.verbs: list[bytes] = []
        self.closed = Deferred()

    def connectionMade(self) -> None:
        self.sendLine(hello_line(self.node_id, self.nonce))

    def lineReceived(self, line: bytes) -> None:
        if self.verified:
            receiving = link_key(self.key, self.peer_id, self.node_id, self.peer_nonce, self.nonce)
            line, seq, mac = line.rsplit(b" ", 2)
            if int(seq) == self.opened + 1 and hmac.compare_digest(mac, line_mac(receiving, int(seq), line)):
                self.opened += 1
        verb, _, body = line.partition(b" ")
        self.verbs.append(verb)
        payload = json.loads(body)
        if verb == b"HELLO":
            self.peer_id, self.peer_nonce = payload["node"], bytes.fromhex(payload["nonce"])
            proof = auth_proof(self.key, self.node_id, self.peer_id, self.nonce, self.peer_nonce)
            self.sendLine(b'AUTH {"proof":"%s"}' % proof.encode())
        elif verb == b"AUTH":
            expected = auth_proof(self.key, self.peer_id, self.node_id, self.peer_nonce, self.nonce)
            self.verified = hmac.compare_digest(expected, payload["proof"])
        elif verb == b"HAVE" and self.verbs.count(b"HAVE") == 1:
            sending = link_key(self.key, self.node_id, self.peer_id, self.nonce, self.peer_nonce)
            if self.sealed:
                self.sendLine(self.then + b" 1 " + line_mac(sending, 1, self.then))
            else:
                self.sendLine(self.then)

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.verbs)


# -- the tests -------------------------------------------------------------------------


class ConvergenceTests(TestCase):
    """
    Nodes that are linked, directly or through others, end up holding the
    same readings, exactly as their origin stored them.
    """

    timeout = 120

    @inlineCallbacks
    def test_two_nodes_converge(self):
        """
        Two nodes that list each other, each fed readings before and after
        they link, end with identical copies: each node's own table equals
        the other's peer_sensor_data.db table for that origin in every row
        and column, checksums included; /status on each shows the other as
        one peer entry at its listed address, connected, authenticated and
        lagging nothing, with no record rejected and no conflict.
        """
        key = cluster_key(self)
        a, b = NodeProcess(self, secret_file=key), NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield feed(self, a, sensor_lines(300, "a"))
        yield b.start()
        yield feed(self, b, sensor_lines(200, "b"))
        yield feed(self, a, sensor_lines(100, "a", start=300))

        rows_a = yield wait_identical(b, a)
        rows_b = yield wait_identical(a, b)
        self.assertEqual((len(rows_a), len(rows_b)), (400, 200))
        signer = Signer.from_key(key.read_bytes())
        self.assertEqual(verify_rows(signer, a.node_id, copy_of(b, a)), [])
        self.assertEqual(verify_rows(signer, b.node_id, copy_of(a, b)), [])

        for node, other in ((a, b), (b, a)):
            entries = yield wait_links_up(node, [other])
            self.assertEqual(entries[other.node_id]["address"], other.peer_address)
            status = yield node.status()
            self.assertEqual(status["state"], "Running")
            self.assertEqual(
                {k: status["replication"][k] for k in ("rejected", "conflicts", "link_errors")},
                {"rejected": 0, "conflicts": 0, "link_errors": 0},
            )
            self.assertEqual(
                status["origins"][other.node_id],
                {"count": len(own(other)), "last_index": len(own(other)), "self": False},
            )
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_chain_converges_transitively(self):
        """
        In a chain A—B—C (A and C list only B, and never link to each other),
        A's readings reach C and C's reach A through B, identical to their
        originals, and B holds both.
        """
        key = cluster_key(self)
        a, b, c = (NodeProcess(self, secret_file=key) for _ in range(3))
        a.peers = c.peers = [b.peer_address]
        yield b.start()
        yield a.start()
        yield feed(self, a, sensor_lines(150, "a"))
        yield c.start()
        yield feed(self, c, sensor_lines(150, "c"))
        yield feed(self, a, sensor_lines(50, "a", start=150))

        for holder, origin in ((c, a), (a, c), (b, a), (b, c)):
            yield wait_identical(holder, origin)
        yield wait_links_up(a, [b])
        yield wait_links_up(c, [b])
        yield wait_links_up(b, [a, c])
        no_tracebacks(self, a, b, c)


class RecoveryTests(TestCase):
    """
    Nothing is lost or duplicated when a node crashes or loses a database.
    """

    timeout = 120

    @inlineCallbacks
    def test_killed_mid_catch_up(self):
        """
        A node killed with -9 in the middle of catching up a peer's tens of
        thousands of readings, then started again, resumes where it stood:
        its copy ends identical to the original, with every position once
        and no gap, and the peer sends it only what it still lacked.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key)
        yield a.start()
        lines = [
            b"Temperature,%dC,2026-11-28 10:00:00.%06d,c-%d" % (20 + i % 20, i % 10**6, i)
            for i in range(CATCH_UP)
        ]
        yield feed(self, a, lines, timeout=60)
        b = NodeProcess(self, secret_file=key, peers=[a.peer_address])
        yield b.start()

        def held():
            # A count, not the rows: each poll must be quick next to a
            # catch-up that lasts about half a second (reading every row
            # made the first poll late enough to miss it on a fast machine).
            try:
                [(count,)] = b.query(PEER_DB, f"SELECT count(*) FROM server_id_{a.node_id}")
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):
                    return 0
                raise
            return count

        yield wait_for(lambda: held() > 0, CONVERGE, "B to hold some of A's readings", interval=0.005)
        code = yield b.kill()
        self.assertEqual(code, -signal.SIGKILL)
        kept = held()
        self.assertLess(kept, CATCH_UP, "the kill came after the catch-up had finished")

        @inlineCallbacks
        def a_sees_b_down():
            entries = yield peer_entries(a)
            return not entries[b.node_id][0]["connected"]

        yield wait_for(a_sees_b_down, CONVERGE, "A to see its link to B go down")
        sent_before = (yield peer_entries(a))[b.node_id][0]["sent"]

        yield b.start()
        rows = yield wait_identical(b, a)
        self.assertEqual([row[0] for row in rows], list(range(1, CATCH_UP + 1)))
        (positions,) = b.query(
            PEER_DB, f"SELECT count(*) - count(DISTINCT epoch || '/' || entry_index) FROM server_id_{a.node_id}"
        )
        self.assertEqual(positions, (0,), "a position is held twice")

        yield wait_links_up(b, [a])
        status = yield b.status()
        self.assertEqual(status["peers"][0]["received"], CATCH_UP - kept)
        self.assertEqual(status["replication"]["conflicts"], 0)
        entry = (yield peer_entries(a))[b.node_id][0]
        self.assertEqual(
            entry["sent"] - sent_before, CATCH_UP - kept, "A did not resume where B stood"
        )
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def kill_origin_mid_stream(self, sync: str):
        """
        Kill -9 node A (run with ``--sync <sync>``) while a sensor streams
        readings to it and it pushes them live to B; start it again and
        check that nothing acknowledged was lost, B's copy ends identical to
        A's log with no conflict, and new readings go on replicating.

        @return: A's rows before and after the restart.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key, extra_args=["--sync", sync])
        b = NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        total = 20_000
        lines = [
            b"Temperature,%dC,2026-11-28 10:00:00.%06d,k-%d" % (20 + i % 20, i, i) for i in range(total)
        ]
        sending = send_lines(a.sensor_port, lines, timeout=60)
        yield wait_for(
            lambda: len(copy_of(b, a)) > 0, CONVERGE, "B to hold some of A's readings", interval=0.005
        )
        code = yield a.kill()
        self.assertEqual(code, -signal.SIGKILL)
        failure = yield self.assertFailure(sending, IncompleteAnswers)
        acknowledged = [int(answer.split()[1]) for answer in failure.answers]
        before = own(a)
        self.assertLess(len(before), total, "the kill came after the stream had ended")
        self.assertEqual(acknowledged, list(range(1, len(acknowledged) + 1)))
        self.assertLessEqual(len(acknowledged), len(before), "acknowledged readings were lost")
        held = copy_of(b, a)
        self.assertEqual(held, before[: len(held)], "B holds what A does not")

        yield a.start()
        yield wait_identical(b, a)
        yield feed(self, a, sensor_lines(10, "after"))
        after = yield wait_identical(b, a)
        # What A held at the kill, at the same positions and unchanged.
        held_then = {(row[9], row[0]) for row in before}
        self.assertEqual([row for row in after if (row[9], row[0]) in held_then], before)
        for node in (a, b):
            status = yield node.status()
            self.assertEqual(status["replication"]["conflicts"], 0)
        no_tracebacks(self, a, b)
        return before, after

    def test_origin_killed_mid_stream(self):
        """
        A node killed with -9 while it takes a stream of readings and pushes
        them live to a peer, then started again: every reading it
        acknowledged is still there, the peer's copy ends identical with no
        conflict, and the log goes on in the same epoch (``--sync full``).
        """
        d = self.kill_origin_mid_stream("full")

        def check(result):
            before, after = result
            self.assertEqual(epochs(after), epochs(before))
            self.assertEqual([row[0] for row in after], list(range(1, len(after) + 1)))

        return d.addCallback(check)

    def test_origin_killed_mid_stream_sync_normal(self):
        """
        The same with ``--sync normal``: after the unclean stop the node
        closes its epoch and numbers new readings in a new one from 1, so no
        position its peer already holds can get a second content.
        """
        d = self.kill_origin_mid_stream("normal")

        def check(result):
            before, after = result
            (old,) = epochs(before)
            (new,) = set(epochs(after)) - {old}
            self.assertEqual([row[0] for row in after if row[9] == new], list(range(1, 11)))

        return d.addCallback(check)

    @inlineCallbacks
    def test_self_database_lost(self):
        """
        A node whose self_sensor_data.db is deleted while it is down (its
        node.id kept) starts Syncing, takes and acknowledges new readings at
        once even while no peer answers, numbering them in a new epoch; once
        a peer answers it gets its earlier readings back identical (same
        epoch, entry_index and checksums) into self_sensor_data.db and turns
        Running. No position gets two contents, and the peer's copy of the
        old epoch is unchanged.
        """
        a, b, old, _ = yield replicated_pair(self, 400, 100)
        (old_epoch,) = epochs(old)

        code = yield a.stop()
        self.assertEqual(code, -signal.SIGTERM)
        a.delete_db(SELF_DB)
        # Frozen, B still accepts A's connection (the kernel does), but
        # answers nothing: A finds no peer to recover from.
        b.signal(signal.SIGSTOP)
        self.addCleanup(b.signal, signal.SIGCONT)
        status = yield a.start()
        self.assertEqual(status["state"], "Syncing")
        self.assertIn("recovery", status)

        started = reactor.seconds()
        answers = yield send_lines(a.sensor_port, sensor_lines(30, "a2"), timeout=5)
        self.assertEqual(answers, [b"OK %d" % i for i in range(1, 31)])
        self.assertLess(reactor.seconds() - started, 5)
        new = own(a)
        new_epochs = epochs(new)
        self.assertEqual(len(new_epochs), 1)
        self.assertNotEqual(new_epochs[0], old_epoch)
        self.assertEqual((yield a.status())["state"], "Syncing")

        b.signal(signal.SIGCONT)

        @inlineCallbacks
        def running():
            status = yield a.status()
            return status["state"] == "Running"

        yield wait_for(running, CONVERGE, "A to be Running again")
        rows = own(a)
        self.assertEqual([r for r in rows if r[9] == old_epoch], old)
        self.assertEqual([r for r in rows if r[9] != old_epoch], new)
        self.assertEqual(len(rows), len(old) + len(new))
        yield wait_identical(b, a)
        self.assertEqual([r for r in copy_of(b, a) if r[9] == old_epoch], old)
        yield wait_identical(a, b)
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_peer_database_lost(self):
        """
        A node whose peer_sensor_data.db is deleted while it is down gets
        every other node's readings again, identical, once it is back; its
        own readings are untouched.
        """
        a, b, rows_a, rows_b = yield replicated_pair(self, 500, 100)

        code = yield b.stop()
        self.assertEqual(code, -signal.SIGTERM)
        b.delete_db(PEER_DB)
        yield b.start()
        self.assertEqual((yield wait_identical(b, a)), rows_a)
        self.assertEqual(own(b), rows_b)
        self.assertEqual(copy_of(a, b), rows_b)
        yield wait_links_up(b, [a])
        self.assertEqual((yield b.status())["replication"]["received"], len(rows_a))
        no_tracebacks(self, a, b)


class TrustTests(TestCase):
    """
    Only nodes holding the cluster key get records, and only records that
    check are stored.
    """

    timeout = 120

    @inlineCallbacks
    def test_other_cluster_key(self):
        """
        A node with another cluster key, listing and listed by a good node,
        never gets a record: its peer_sensor_data.db has no readings table,
        its /status shows no authenticated peer; the good node counts the
        refused links, logs 'cluster keys differ' naming it, and holds
        nothing of it either.
        """
        a = NodeProcess(self, secret_file=cluster_key(self))
        x = NodeProcess(self, secret_file=cluster_key(self))
        mesh([a, x])
        yield a.start()
        yield feed(self, a, sensor_lines(50, "a"))
        yield x.start()
        yield feed(self, x, sensor_lines(50, "x"))

        def names_in_refusal(refuser: NodeProcess, other: NodeProcess) -> bool:
            return any(
                "cluster keys differ" in line and other.node_id in line
                for line in refuser.log_text().splitlines()
            )

        @inlineCallbacks
        def refused_both_ways():
            # Each refuses the other's proof when the other dials it; A
            # counts both the link it refused and the one X refused.
            status = yield a.status()
            return (
                names_in_refusal(a, x)
                and names_in_refusal(x, a)
                and status["replication"]["refused_links"] >= 2
            )

        yield wait_for(
            refused_both_ways, CONVERGE, "A and X to refuse each other's link, logged and counted"
        )
        self.assertEqual(readings_tables(x, PEER_DB), set())
        self.assertEqual(readings_tables(a, PEER_DB), set())
        # Nor the rows table under one.
        self.assertEqual(stored_tables(x, PEER_DB), set())
        self.assertEqual(stored_tables(a, PEER_DB), set())
        for node in (x, a):
            status = yield node.status()
            self.assertEqual([p for p in status["peers"] if p["authenticated"]], [])
            self.assertEqual(set(status["origins"]), {node.node_id})
            self.assertEqual(status["replication"]["received"], 0)
        no_tracebacks(self, a, x)

    @inlineCallbacks
    def converge_through(self, corruptor: Corruptor, readings: int, timeout: float = CONVERGE):
        """
        Start node A with ``readings`` readings, and node B dialling it
        through a L{CorruptingProxy}; wait until the corruptor has done all it
        was planned to and B's copy equals A's readings (for up to
        ``timeout`` seconds).

        @return: A, B and B's /status entry for A.
        """
        key = cluster_key(self)
        a = NodeProcess(self, secret_file=key)
        yield a.start()
        yield feed(self, a, sensor_lines(readings, "a"))
        proxy = CorruptingProxy(self, a.peer_port, corruptor)
        b = NodeProcess(self, secret_file=key, peers=[proxy.address])
        yield b.start()
        yield wait_for(
            lambda: corruptor.finished, CONVERGE,
            lambda: f"the proxy to make every corruption planned (done: {corruptor.done})",
        )
        rows = yield wait_identical(b, a, timeout)
        self.assertEqual(verify_rows(Signer.from_key(key.read_bytes()), a.node_id, copy_of(b, a)), [])
        entries = yield wait_links_up(b, [a])
        return a, b, rows, entries[a.node_id]

    @inlineCallbacks
    def test_corrupting_link(self):
        """
        Through a proxy that corrupts RECORDS lines on their way from A to B
        (one bit of a reading's sensor_data in two lines, a random byte in
        two others, the JSON structure of one), B stores no corrupted record:
        every row it holds checks against the key and equals A's. Each
        corrupted line fails its MAC, so B drops the link (a ``link_errors``,
        its reason in the peer's troubles) and A redials; of a damaged
        batch B keeps the records before the first that fails its own HMAC,
        and counts that one as ``rejected``. Once the proxy stops
        corrupting, the copies converge by themselves.
        """
        rng = random.Random(1234)
        corruptor = Corruptor(
            [
                flip_sensor_data(rng),
                flip_random_byte(rng),
                break_structure,
                flip_random_byte(rng),
                flip_sensor_data(rng),
            ]
        )
        a, b, rows, entry = yield self.converge_through(corruptor, 2500)
        self.assertEqual(len(rows), 2500)
        # A corrupted line that arrives after one that dropped the link is
        # never read, so only the first of a burst counts.
        self.assertGreaterEqual(entry["rejected"], 1, entry)
        self.assertGreaterEqual(entry["link_errors"], 1, entry)
        self.assertIn("bad MAC", entry["trouble_counts"], entry)
        self.assertLessEqual(set(entry["trouble_counts"]), {"bad MAC", "unsealed message", "refused record"}, entry)
        self.assertEqual(entry["conflicts"], 0)
        self.assertEqual(readings_tables(b, PEER_DB), {f"server_id_{a.node_id}"})
        self.assertEqual(stored_tables(b, PEER_DB), {f"server_id_{a.node_id}", rows_table(a.node_id), times_table(a.node_id)})
        self.assertIn("bad MAC: line", b.log_text())
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_corrupted_epoch_in_last_batch_heals(self):
        """
        A RECORDS batch whose epoch was corrupted in transit (so its line
        fails its MAC, and its records their check, as they name a log that
        does not exist) is sent again once A redials and heals, even when it
        is the last batch the sender has to send: the copies converge
        without any new reading to push them along.
        """
        corruptor = Corruptor([flip_hex_field("epoch")])
        a, b, rows, entry = yield self.converge_through(corruptor, 20, timeout=10)
        self.assertEqual(len(rows), 20)
        self.assertGreaterEqual(entry["rejected"], 1, entry)
        self.assertGreaterEqual(entry["link_errors"], 1, entry)

    @inlineCallbacks
    def test_corrupted_origin_leaves_no_table(self):
        """
        A RECORDS batch whose origin was corrupted in transit leaves no trace
        at the receiver once the copies have converged: no record is stored,
        and no readings table is made for an origin that does not exist.
        """
        corruptor = Corruptor([flip_hex_field("origin")])
        a, b, rows, entry = yield self.converge_through(corruptor, 2500)
        self.assertGreaterEqual(entry["rejected"], 1, entry)
        self.assertEqual(readings_tables(b, PEER_DB), {f"server_id_{a.node_id}"})
        # Nor a rows table for it under the view.
        self.assertEqual(stored_tables(b, PEER_DB), {f"server_id_{a.node_id}", rows_table(a.node_id), times_table(a.node_id)})


class HostileClientTests(TestCase):
    """
    Garbage on the peer port costs the node that connection and nothing
    else.
    """

    timeout = 120

    @inlineCallbacks
    def test_garbage_on_peer_port(self):
        """
        Random bytes, an over-long line, a valid HELLO followed by garbage,
        and a HELLO followed by RECORDS before any proof, each on its own
        connection to the peer port: the node drops each connection at once
        (well before its handshake deadline), sends nothing derived from the
        key, logs and counts each as a refused link, and keeps serving: still
        Running, sensors still acknowledged, its link to its peer still up
        and replicating.
        """
        a, b, _, _ = yield replicated_pair(self, 20, 10)
        before = yield wait_links_up(a, [b])

        rng = random.Random(99)
        stranger = uuid.uuid4().hex
        records = json.dumps(
            {"origin": stranger, "epoch": uuid.uuid4().hex,
             "records": [[1, 1, "Temperature", "39C", "2026-11-28 10:00:00", None, "0" * 64]]},
            separators=(",", ":"),
        ).encode()
        payloads = {
            "random bytes": bytes(rng.randrange(256) for _ in range(4096)) + b"\n",
            "an over-long line": b"x" * (4 * 1024 * 1024 + 1024),
            "HELLO then garbage": hello_line(stranger) + b"\n\x00\xff garbage \xfe\n",
            "HELLO then RECORDS": hello_line(uuid.uuid4().hex) + b"\nRECORDS " + records + b"\n",
        }
        for what, payload in payloads.items():
            started = reactor.seconds()
            received = yield probe(a.peer_port, payload, HANDSHAKE_TIMEOUT - 2)
            self.assertLess(reactor.seconds() - started, HANDSHAKE_TIMEOUT - 2, what)
            # At most the node's own HELLO: no proof, no HAVE, no records.
            for line in received.splitlines():
                self.assertTrue(line.startswith(b"HELLO "), (what, line[:80]))

        status = yield a.status()
        self.assertEqual(status["state"], "Running")
        self.assertEqual(status["replication"]["refused_links"], len(payloads))
        # By reason: the log shows the first and holds back the rest a while.
        self.assertEqual(
            status["replication"]["refused_reasons"],
            {"malformed message": 2, f"sent a line longer than {MAX_LINE} bytes": 1,
             "sent RECORDS before authenticating": 1},
        )
        self.assertEqual(set(status["origins"]), {a.node_id, b.node_id})
        self.assertEqual(readings_tables(a, PEER_DB), {f"server_id_{b.node_id}"})
        self.assertEqual(stored_tables(a, PEER_DB), {f"server_id_{b.node_id}", rows_table(b.node_id), times_table(b.node_id)})
        after = yield wait_links_up(a, [b])
        self.assertEqual(after[b.node_id]["link_errors"], before[b.node_id]["link_errors"])
        answers = yield feed(self, a, sensor_lines(5, "a", start=20))
        self.assertEqual(answers[-1], b"OK 25")
        yield wait_identical(b, a)
        self.assertIn("malformed message", a.log_text())
        no_tracebacks(self, a, b)


    @inlineCallbacks
    def test_bad_message_after_authenticating(self):
        """
        A peer that proves the key and seals its lines (as
        docs/peer-protocol.md describes them) and then sends an unknown
        message, a HELLO again, or a RECORDS line that is not JSON, or a
        line without a seal, loses that link at once; the node
        logs why, counts it in that peer's ``link_errors`` (not as a refused
        link), and keeps serving: Running, sensors acknowledged, its link to
        its real peer up and replicating.
        """
        key = cluster_key(self)
        a, b = NodeProcess(self, secret_file=key), NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield feed(self, a, sensor_lines(20, "a"))
        yield wait_identical(b, a)
        yield wait_links_up(a, [b])

        bad_lines = [
            (b"BOGUS {}", True),
            (hello_line(uuid.uuid4().hex), True),
            (b"RECORDS {not json", True),
            (b"HAVE {}", False),
        ]
        fakes = []
        for line, sealed in bad_lines:
            fake = _FakePeer(key.read_bytes(), line, sealed)
            fakes.append(fake)
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", a.peer_port), fake)
            timer = reactor.callLater(HANDSHAKE_TIMEOUT, fake.transport.abortConnection)
            verbs = yield fake.closed
            self.assertTrue(timer.active(), f"the link stayed up after {line!r}")
            timer.cancel()
            self.assertTrue(fake.verified, "the node's proof does not check as documented")
            self.assertEqual(verbs[:3], [b"HELLO", b"AUTH", b"HAVE"])
            self.assertEqual(fake.opened, len(verbs) - 2, "the node's lines are not sealed as documented")

        entries = yield peer_entries(a)
        for fake in fakes:
            (entry,) = entries[fake.node_id]
            self.assertEqual((entry["connected"], entry["link_errors"]), (False, 1), entry)
        status = yield a.status()
        self.assertEqual(status["state"], "Running")
        self.assertEqual(status["replication"]["refused_links"], 0)
        self.assertEqual(entries[b.node_id][0]["link_errors"], 0)
        self.assertTrue(entries[b.node_id][0]["connected"])
        yield feed(self, a, sensor_lines(5, "a", start=20))
        yield wait_identical(b, a)
        log = a.log_text()
        for reason in ("unknown message", "after authenticating", "not JSON", "unsealed message"):
            self.assertIn(reason, log)
        no_tracebacks(self, a, b)


class ClusterTests(TestCase):
    """
    The issue's "Done when", as a new user would try it.
    """

    timeout = 120

    @inlineCallbacks
    def test_three_node_cluster(self):
        """
        Three nodes, each listing the other two, a simulator on each: each
        node's peer_sensor_data.db soon holds the other two nodes' readings,
        identical, and /status shows every link up. Then one node is
        stopped, its self_sensor_data.db deleted, and it is started again:
        its readings come back identical and it keeps ingesting.
        """
        key = cluster_key(self)
        nodes = [NodeProcess(self, secret_file=key) for _ in range(3)]
        mesh(nodes)
        for node in nodes:
            yield node.start()
        simulators = [
            start_simulator(self, node.sensor_port, 100, sensor=kind, interval=0.01)
            for node, kind in zip(nodes, ("temp", "pressure", "humidity"))
        ]
        for simulator in simulators:
            code = yield simulator.wait_exit(30)
            self.assertEqual(code, 0, simulator.output[-2000:])
        for holder in nodes:
            for origin in nodes:
                if origin is not holder:
                    yield wait_identical(holder, origin, timeout=10)
        for node in nodes:
            yield wait_links_up(node, [other for other in nodes if other is not node])

        first = nodes[0]
        old = own(first)
        code = yield first.stop()
        self.assertEqual(code, -signal.SIGTERM)
        first.delete_db(SELF_DB)
        yield first.start()
        simulator = start_simulator(self, first.sensor_port, 50, sensor="temp", interval=0.01)
        code = yield simulator.wait_exit(30)
        self.assertEqual(code, 0, simulator.output[-2000:])

        @inlineCallbacks
        def running():
            status = yield first.status()
            return status["state"] == "Running"

        yield wait_for(running, CONVERGE, "the first node to be Running again")
        old_epoch = epochs(old)[0]
        rows = own(first)
        self.assertEqual([r for r in rows if r[9] == old_epoch], old)
        self.assertEqual(len([r for r in rows if r[9] != old_epoch]), 50)
        for holder in nodes[1:]:
            yield wait_identical(holder, first)
        for node in nodes:
            yield wait_links_up(node, [other for other in nodes if other is not node])
        no_tracebacks(self, *nodes)
