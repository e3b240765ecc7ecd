"""
Integration tests of C{--ack-copies} between real ``twistd -n p2pstore``
processes on loopback: an OK that promises copies on other nodes, the
``ERR copies`` answer when they cannot be had, the resend that confirms,
copies beyond a relay, and a sensor's own ``ACK <k>``.
"""

from __future__ import annotations

import signal

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from .nodes import SELF_DB, NodeProcess, send_lines, wait_for
from .test_cluster import CONVERGE, cluster_key, copy_of, mesh, no_tracebacks, wait_links_up

# Connections that pipeline readings into the origin at once, and readings each.
CONNECTIONS, EACH = 4, 1000


def lines_with_ids(tag: str, count: int, start: int = 0) -> list[bytes]:
    """
    Readings that carry reading ids, so a resend is recognised.
    """
    return [
        f"Temperature,{20 + i % 15}C,2026-12-06 10:00:00.{i:06d},{tag}-{i}".encode()
        for i in range(start, start + count)
    ]


def ok_indexes(answers: list[bytes]) -> list[int]:
    return [int(a.split(b" ")[1]) for a in answers if a.startswith(b"OK ")]


class AckCopiesTests(TestCase):
    """
    A node A with --ack-copies and its peers.
    """

    timeout = 240

    def nodes(self, count: int, a_args=()) -> list[NodeProcess]:
        """
        ``count`` nodes sharing a key, the first (A) started with ``a_args``.
        """
        key = cluster_key(self)
        return [
            NodeProcess(self, secret_file=key, extra_args=a_args if n == 0 else ())
            for n in range(count)
        ]

    @inlineCallbacks
    def test_every_ok_is_on_the_peer(self):
        """
        With --ack-copies 2, readings pipelined on several connections are
        all answered OK; A is killed with -9 right after the last OK and its
        data directory deleted, and B holds every reading A answered OK,
        with the index A gave it.
        """
        a, b = self.nodes(2, ["--ack-copies", "2"])
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        lines = [lines_with_ids(f"c{c}", EACH) for c in range(CONNECTIONS)]
        results = yield DeferredList(
            [send_lines(a.sensor_port, part, timeout=60) for part in lines], fireOnOneErrback=True
        )
        a_id = a.node_id
        yield a.kill()
        a.delete_data_dir()
        acked = {}
        for part, (_, answers) in zip(lines, results):
            self.assertEqual([x.split(b" ")[0] for x in answers], [b"OK"] * EACH, answers[:3])
            for line, index in zip(part, ok_indexes(answers)):
                acked[index] = line.rsplit(b",", 1)[1].decode()
        held = dict(
            b.query("peer_sensor_data.db", f"SELECT entry_index, reading_id FROM server_id_{a_id}")
        )
        missing = {i: r for i, r in acked.items() if held.get(i) != r}
        self.assertEqual(len(acked), CONNECTIONS * EACH)
        self.assertEqual(missing, {}, f"{len(missing)} acknowledged readings not on B")
        no_tracebacks(self, b)

    @inlineCallbacks
    def test_peer_down_then_resend(self):
        """
        With the peer down, readings are answered 'ERR copies: 1 of 2 (no
        peer connected); kept, send again to confirm' within the timeout,
        and stored on A. Once the peer is back, the same readings sent
        again are answered OK with the indexes they were stored at, and
        each is stored once on each node.
        """
        a, b = self.nodes(2, ["--ack-copies", "2", "--ack-timeout", "1s"])
        mesh([a, b])
        yield a.start()
        lines = lines_with_ids("down", 5)
        answers = yield send_lines(a.sensor_port, lines, timeout=20)
        self.assertEqual(
            answers,
            [b"ERR copies: 1 of 2 (no peer connected); kept, send again to confirm"] * 5,
        )
        status = yield a.status()
        self.assertEqual(status["ack_copies"], 2)
        self.assertEqual(status["copies"]["copies_timeouts"], 5)
        [under] = status["copies"]["under_copied"]
        self.assertEqual((under["origin"], under["first"], under["last"]), (a.node_id, 1, 5))
        self.assertEqual(len(a.rows(SELF_DB, f"server_id_{a.node_id}")), 5)

        yield b.start()
        yield wait_for(lambda: len(copy_of(b, a)) == 5, CONVERGE, "B to hold A's 5 readings")
        again = yield send_lines(a.sensor_port, lines, timeout=20)
        self.assertEqual(again, [b"OK %d" % i for i in range(1, 6)])
        self.assertEqual(len(a.rows(SELF_DB, f"server_id_{a.node_id}")), 5)
        self.assertEqual(sorted(row[0] for row in copy_of(b, a)), [1, 2, 3, 4, 5])
        status = yield a.status()
        self.assertEqual(status["copies"]["under_copied"], [])
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_three_copies_through_a_relay(self):
        """
        In a chain A—B—C, A with --ack-copies 3 answers OK once C holds the
        reading too, which only B can tell it: C holds every reading A
        answered OK at the moment of the answer.
        """
        a, b, c = self.nodes(3, ["--ack-copies", "3"])
        a.peers = [b.peer_address]
        b.peers = [a.peer_address, c.peer_address]
        c.peers = [b.peer_address]
        for node in (a, b, c):
            yield node.start()
        yield wait_links_up(b, [a, c])
        lines = lines_with_ids("relay", 300)
        answers = yield send_lines(a.sensor_port, lines, timeout=60)
        self.assertEqual(answers, [b"OK %d" % i for i in range(1, 301)])
        self.assertEqual(len(copy_of(c, a)), 300)
        status = yield a.status()
        self.assertEqual(status["copies"]["copies_timeouts"], 0)
        no_tracebacks(self, a, b, c)

    @inlineCallbacks
    def test_sensor_asks_for_copies(self):
        """
        On a node with the default of 1 copy and its one peer down, a
        sensor that sends 'ACK 2' first is answered 'OK ack 2' and its
        reading 'ERR copies'; another connection's reading is answered OK
        at once; 'ACK 3' names the cluster's 2 nodes.
        """
        a, b = self.nodes(2, ["--ack-timeout", "500ms"])
        mesh([a, b])
        yield a.start()
        asked = yield send_lines(a.sensor_port, [b"ACK 2", *lines_with_ids("asked", 1)])
        self.assertEqual(
            asked,
            [b"OK ack 2", b"ERR copies: 1 of 2 (no peer connected); kept, send again to confirm"],
        )
        plain = yield send_lines(a.sensor_port, lines_with_ids("plain", 1))
        self.assertEqual(plain, [b"OK 2"])
        too_many = yield send_lines(a.sensor_port, [b"ACK 3"])
        self.assertEqual(too_many, [b"ERR ack: 3 copies asked, but the cluster has 2 nodes"])

    @inlineCallbacks
    def test_no_copy_counted_before_the_peer_commits(self):
        """
        A peer frozen (SIGSTOP) receives A's records in its kernel but
        commits nothing: A answers 'ERR copies ... (peers behind)', since
        the peer's ACK comes only after its commit. Once the peer has been
        killed and started again, it gets the reading and the resend is
        answered OK at the same index.
        """
        a, b = self.nodes(2, ["--ack-copies", "2", "--ack-timeout", "1s"])
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        b.signal(signal.SIGSTOP)
        try:
            lines = lines_with_ids("frozen", 1)
            answers = yield send_lines(a.sensor_port, lines, timeout=20)
        finally:
            b.signal(signal.SIGCONT)
        self.assertEqual(
            answers, [b"ERR copies: 1 of 2 (peers behind); kept, send again to confirm"]
        )
        yield b.kill()
        yield b.start()
        yield wait_for(lambda: len(copy_of(b, a)) == 1, CONVERGE, "B to hold A's reading")
        again = yield send_lines(a.sensor_port, lines, timeout=20)
        self.assertEqual(again, [b"OK 1"])

    @inlineCallbacks
    def test_stop_answers_what_waits(self):
        """
        A node stopped (SIGTERM) while readings wait for copies answers each
        'ERR copies: ... (this node is stopping)' before it closes, and has
        stored them.
        """
        a, b = self.nodes(2, ["--ack-copies", "2", "--ack-timeout", "60s"])
        mesh([a, b])
        yield a.start()
        lines = lines_with_ids("stopping", 3)
        answering = send_lines(a.sensor_port, lines, timeout=30)
        yield wait_for(
            lambda: len(a.rows(SELF_DB, f"server_id_{a.node_id}")) == 3, CONVERGE, "A to store 3"
        )
        yield a.stop()
        answers = yield answering
        self.assertEqual(
            answers,
            [b"ERR copies: 1 of 2 (this node is stopping); kept, send again to confirm"] * 3,
        )
