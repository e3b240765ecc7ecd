"""
An on-path attacker between two real twistd nodes (tests/proxy.py): once
the handshake is done it rewrites, replays or drops peer lines. Every such
line is caught by its seal; the link is closed with the reason in the log
and in /status, nothing it claimed is believed, and the nodes converge once
the path is honest again.
"""

from __future__ import annotations

import json
import random

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from p2pstore.records import Signer

from .nodes import NodeProcess, wait_for
from .proxy import FROM_ACCEPTOR, FROM_DIALLER, LineTamper, Proxy, Tamper
from .test_cluster import (
    CONVERGE,
    cluster_key,
    copy_of,
    epochs,
    feed,
    no_tracebacks,
    own,
    peer_entries,
    sensor_lines,
    verify_rows,
    wait_identical,
)

READINGS = 1500


def message_and_seal(line: bytes) -> tuple[bytes, bytes]:
    """
    A sealed peer line as its message and its seal (``<seq> <mac>``).
    """
    message, seq, mac = line.rsplit(b" ", 2)
    return message, seq + b" " + mac


class LinkIntegrityTests(TestCase):
    """
    Node B dials node A, which holds READINGS readings of its own, through
    a proxy that tampers with what passes once the handshake is done.
    """

    timeout = 120

    @inlineCallbacks
    def start_pair(self, tamper):
        key = cluster_key(self)
        self.a = NodeProcess(self, secret_file=key)
        yield self.a.start()
        yield feed(self, self.a, sensor_lines(READINGS, "a"))
        [self.epoch] = epochs(own(self.a))
        self.proxy = Proxy(self.a.peer_port)
        self.proxy.tamper = tamper
        yield self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.b = NodeProcess(self, secret_file=key, peers=[f"127.0.0.1:{self.proxy.port}"])
        yield self.b.start()

    def claim_all(self, line: bytes) -> list:
        """
        B's HAVE and ACK rewritten to claim it holds all of A's log, the
        seal kept, as an attacker without the link key must.
        """
        if line.startswith(b"HAVE "):
            message = b"HAVE " + json.dumps({self.a.node_id: {self.epoch: READINGS}}).encode()
        elif line.startswith(b"ACK "):
            message = b"ACK " + json.dumps(
                {"origin": self.a.node_id, "epoch": self.epoch, "have": READINGS}
            ).encode()
        else:
            return [line]
        return [message + b" " + message_and_seal(line)[1]]

    @inlineCallbacks
    def a_entry_for_b(self) -> dict:
        entries = yield peer_entries(self.a)
        [entry] = entries.get(self.b.node_id, [{}])
        return entry

    @inlineCallbacks
    def assertNotBelieved(self, kind: str):
        """
        While the tamper lasts, A drops B's links for ``kind``, says so in
        its log and in B's entry of /status, and never believes B holds
        its log (the lag stays at every reading); B stores nothing of A.
        """
        seen = []

        @inlineCallbacks
        def dropped():
            entry = yield self.a_entry_for_b()
            seen[:] = [entry]
            return entry.get("link_errors", 0) >= 2 and kind in entry.get("trouble_counts", {})

        yield wait_for(dropped, CONVERGE, lambda: f"A to drop B's tampered links twice ({seen})")
        entry = yield self.a_entry_for_b()
        self.assertEqual(entry["lag"], {self.a.node_id: READINGS}, entry)
        self.assertIn(kind, entry["trouble"])
        self.assertIn(f"dropping link to {self.b.node_id}", self.a.log_text())
        self.assertIn(kind + ": line", self.a.log_text())
        self.assertEqual(copy_of(self.b, self.a), [])

    @inlineCallbacks
    def assertHeals(self):
        self.proxy.tamper = None
        self.proxy.drop_all()
        rows = yield wait_identical(self.b, self.a)
        self.assertEqual(len(rows), READINGS)

        @inlineCallbacks
        def caught_up():
            entry = yield self.a_entry_for_b()
            return entry.get("authenticated") and entry.get("lag") == {}

        yield wait_for(caught_up, CONVERGE, "A to see B caught up")
        no_tracebacks(self, self.a, self.b)

    @inlineCallbacks
    def test_rewritten_claims(self):
        """
        The issue's attack: B's HAVE and ACK rewritten to claim it holds
        all of A's readings. Each rewritten line fails its MAC.
        """
        yield self.start_pair(lambda direction: LineTamper(
            lambda number, line: self.claim_all(line) if direction == FROM_DIALLER else [line]
        ))
        yield self.assertNotBelieved("bad MAC")
        yield self.assertHeals()

    @inlineCallbacks
    def test_stripped_seal(self):
        """
        The same claims sent without a seal at all are refused as unsealed.
        """
        def strip(line: bytes) -> list:
            [claim] = self.claim_all(line)
            return [message_and_seal(claim)[0] if claim != line else line]

        yield self.start_pair(lambda direction: LineTamper(
            lambda number, line: strip(line) if direction == FROM_DIALLER else [line]
        ))
        yield self.assertNotBelieved("unsealed message")
        yield self.assertHeals()

    @inlineCallbacks
    def test_replayed_and_dropped_lines(self):
        """
        A's lines to B replayed (each sent twice) or B's lines to A dropped
        (every second one after the handshake): the receiver sees the
        sequence broken and closes the link; the copies converge after.
        """
        yield self.start_pair(lambda direction: LineTamper(
            lambda number, line: [line, line] if direction == FROM_ACCEPTOR and number >= 2 else [line]
        ))
        seen = []

        @inlineCallbacks
        def b_dropped():
            entries = yield peer_entries(self.b)
            seen[:] = [entries]
            return any(
                "out of sequence" in e.get("trouble_counts", {})
                for e in entries.get(self.a.node_id, [])
            )

        yield wait_for(b_dropped, CONVERGE, lambda: f"B to drop A's replayed lines ({seen})")
        self.assertIn("out of sequence: line", self.b.log_text())
        self.assertLess(len(copy_of(self.b, self.a)), READINGS)

        self.proxy.tamper = lambda direction: LineTamper(
            lambda number, line: [] if direction == FROM_DIALLER and number >= 2 and number % 2 else [line]
        )
        self.proxy.drop_all()
        yield wait_for(
            lambda: "out of sequence: line" in self.a.log_text(), CONVERGE,
            "A to drop B's link with lines missing",
        )
        yield self.assertHeals()


class NoisyTamper(Tamper):
    """
    Flips one random bit in about every C{every} bytes that pass.
    """

    def __init__(self, rng: random.Random, every: int):
        self.rng = rng
        self.every = every

    def data(self, data: bytes) -> bytes:
        data = bytearray(data)
        for i in range(len(data)):
            if self.rng.randrange(self.every) == 0:
                data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)


# How long the noisy path may take to carry half of A's log to B: about
# 25 s on a 2-core machine alone; a clean-clone CI run with other work on
# the machine reached 989 of the 1,000 in 60 s.
NOISY_FOR = 100


class NoisyLinkTests(TestCase):
    """
    A path that damages the bytes it carries, as a bad radio link would.
    """

    timeout = 180

    @inlineCallbacks
    def test_noisy_link(self):
        """
        A path that flips about one bit in 2,000 bytes both ways: B still
        gets half of A's 2,000 records through it (each damaged line costs
        one link, redialled at once, and the valid prefix of every batch is
        kept); every row B holds all along checks against the key and equals
        A's; B's status names the trouble (links dropped for bad MACs) while
        it lasts; once the path is clean B catches up by itself.
        """
        key = cluster_key(self)
        signer = Signer.from_key(key.read_bytes())
        a = NodeProcess(self, secret_file=key)
        yield a.start()
        yield feed(self, a, sensor_lines(2000, "a"))
        rng = random.Random(2000)
        proxy = Proxy(a.peer_port)
        proxy.tamper = lambda direction: NoisyTamper(rng, 2000)
        yield proxy.start()
        self.addCleanup(proxy.stop)
        b = NodeProcess(self, secret_file=key, peers=[f"127.0.0.1:{proxy.port}"])
        yield b.start()
        started = reactor.seconds()
        troubles = set()
        held = []
        # About 25 s on this machine alone (2 cores); the suite runs beside it.
        while len(held) < 1000 and reactor.seconds() - started < NOISY_FOR:
            yield deferLater(reactor, 1, lambda: None)
            entries = yield peer_entries(b)
            for entry in entries.get(a.node_id, []):
                troubles.update(entry["trouble_counts"])
            held = copy_of(b, a)
            self.assertEqual(verify_rows(signer, a.node_id, held), [])
            self.assertEqual(held, own(a)[: len(held)])
        self.assertGreaterEqual(len(held), 1000, "B's share of A's log through the noisy path")
        self.assertIn("bad MAC", troubles)
        proxy.tamper = None
        proxy.drop_all()
        rows = yield wait_identical(b, a)
        self.assertEqual(len(rows), 2000)
        no_tracebacks(self, a, b)
