"""
Integration tests of recovery and link stability between real
``twistd -n p2pstore`` processes on loopback: a node that lost its own
database while its peers were down, a node that lost its whole data
directory, a node listing itself, and links that flap or must stay quiet.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import TestCase

from p2pstore.schema import rows_table, times_table

from .nodes import PEER_DB, SELF_DB, NodeProcess, hold_for, send_lines, wait_for
from .test_cluster import (
    CONVERGE,
    Corruptor,
    CorruptingProxy,
    cluster_key,
    copy_of,
    epochs,
    feed,
    log_rows,
    mesh,
    no_tracebacks,
    own,
    peer_entries,
    readings_tables,
    sensor_lines,
    stored_tables,
    wait_identical,
    wait_links_up,
)

# How long a link is watched for reconnects or drops that should not happen.
QUIET = 3.0


# -- what the nodes hold and log ----------------------------------------------------


def copies_of_log(node: NodeProcess, origin: str) -> list[tuple]:
    """
    What ``node`` holds of ``origin``'s logs: its own database when it is
    that origin, its peer database otherwise.
    """
    return log_rows(node, SELF_DB if node.node_id == origin else PEER_DB, origin)


def position_clashes(origin: str, nodes: list[NodeProcess]) -> list[str]:
    """
    Every position ``(epoch, entry_index)`` of ``origin``'s logs held with
    two different contents, by one node or across ``nodes``.
    """
    problems = []
    contents: dict = {}
    for node in nodes:
        rows = copies_of_log(node, origin)
        positions = [(row[9], row[0]) for row in rows]
        if len(positions) != len(set(positions)):
            problems.append(f"{node.node_id} holds a position of {origin} twice")
        for row in rows:
            contents.setdefault((row[9], row[0]), set()).add(row)
    problems += [f"{position}: {sorted(rows)}" for position, rows in contents.items() if len(rows) > 1]
    return problems


def log_lines(node: NodeProcess, text: str) -> int:
    """
    How many lines of the node's log contain ``text``.
    """
    return sum(text in line for line in node.log_text().splitlines())


def authenticated(node: NodeProcess, address: str = "") -> int:
    """
    How many links the node has logged as authenticated (to ``address``
    only, when given: the address the node dialled, for a dialled link).
    """
    return log_lines(node, f" at {address} authenticated" if address else " authenticated")


@inlineCallbacks
def state_is(node: NodeProcess, state: str):
    status = yield node.status()
    return status["state"] == state


@inlineCallbacks
def both_links(node: NodeProcess, other: NodeProcess):
    """
    Whether ``node`` has two links up to ``other``: one each way.
    """
    status = yield node.status()
    return [len(p["links"]) for p in status["peers"] if p["node_id"] == other.node_id] == [2]


@inlineCallbacks
def link_counters(node: NodeProcess):
    """
    What changes whenever a link of ``node`` comes or goes, from /status
    (the log holds back a flapping link's lines): links authenticated per
    peer, link errors and refused links.
    """
    status = yield node.status()
    return {
        "authenticated": {p["node_id"]: p["links_opened"] for p in status["peers"]},
        "link_errors": status["replication"]["link_errors"],
        "refused_links": status["replication"]["refused_links"],
        "connected": sorted(p["node_id"] or p["address"] for p in status["peers"] if p["connected"]),
    }


@inlineCallbacks
def assert_links_quiet(test_case, nodes: list[NodeProcess], duration: float = QUIET, proxies=()):
    """
    Watch ``nodes`` (and the ``proxies`` between them) for ``duration``
    seconds: no link may come up, drop or fail meanwhile.
    """
    before = {}
    for node in nodes:
        before[node.node_id] = yield link_counters(node)
    accepted = [proxy.accepted for proxy in proxies]
    seen = []

    @inlineCallbacks
    def unchanged():
        now = {}
        for node in nodes:
            now[node.node_id] = yield link_counters(node)
        now_accepted = [proxy.accepted for proxy in proxies]
        seen[:] = [now, now_accepted]
        return now == before and now_accepted == accepted

    yield hold_for(
        unchanged,
        duration,
        lambda: f"no link up, down or refused (before {before}, proxy connections {accepted}; "
        f"now {seen[0]}, proxy connections {seen[1]})",
        interval=0.25,
    )


# -- a flapping link ---------------------------------------------------------------


class FlappingProxy(CorruptingProxy):
    """
    A TCP proxy in front of a node's peer port that passes every byte
    untouched, and cuts every connection through it on L{cut}.

    @ivar accepted: how many connections it has accepted.
    @ivar cuts: how many connections it has cut.
    """

    def __init__(self, test_case, target_port: int):
        super().__init__(test_case, target_port, Corruptor([]))
        self.accepted = 0
        self.cuts = 0

    def buildProtocol(self, addr):
        self.accepted += 1
        return super().buildProtocol(addr)

    def cut(self) -> None:
        for connection in list(self.connections):
            self.cuts += 1
            if connection.upstream is not None:
                connection.upstream.transport.abortConnection()
            connection.transport.abortConnection()


# -- the tests -------------------------------------------------------------------


class SelfRecoveryTests(TestCase):
    """
    A node that lost its own database gets its earlier readings back from
    whichever peers hold them, whenever they return, and never gives a
    position of its log two contents.
    """

    timeout = 120

    @inlineCallbacks
    def test_peers_return_one_by_one_first_one_behind(self):
        """
        A node restarted without its own database while none of its peers
        is reachable keeps acknowledging new readings at once (Syncing). The
        first peer to come back holds only part of the node's earlier
        readings: the node gets that part; the second brings the rest. In
        the end the node holds every earlier reading exactly as before (same
        epoch, entry_index and checksum), its new readings in a new epoch,
        and at no point does any node hold two contents for one position of
        the node's logs.
        """
        key = cluster_key(self)
        a, b, c = (NodeProcess(self, secret_file=key) for _ in range(3))
        mesh([a, b, c])
        for node in (a, b, c):
            yield node.start()
        yield feed(self, a, sensor_lines(300, "a"))
        part = yield wait_identical(b, a)
        yield wait_identical(c, a)

        # B goes down first, so only C gets A's last readings.
        yield b.stop()
        yield feed(self, a, sensor_lines(200, "a", start=300))
        old = yield wait_identical(c, a)
        (old_epoch,) = epochs(old)
        self.assertEqual(copy_of(b, a), part)
        self.assertEqual(old[:300], part)
        yield c.stop()
        yield a.stop()
        a.delete_db(SELF_DB)

        status = yield a.start()
        self.assertEqual(status["state"], "Syncing")
        self.assertIn("recovery", status)
        started = reactor.seconds()
        answers = yield send_lines(a.sensor_port, sensor_lines(30, "new"), timeout=5)
        self.assertEqual(answers, [b"OK %d" % i for i in range(1, 31)])
        self.assertLess(reactor.seconds() - started, 5)
        (new_epoch,) = epochs(own(a))
        self.assertNotEqual(new_epoch, old_epoch)
        self.assertEqual((yield a.status())["state"], "Syncing")
        self.assertEqual(position_clashes(a.node_id, [a, b, c]), [])

        def old_part():
            return [row for row in own(a) if row[9] == old_epoch]

        yield b.start()
        yield wait_for(
            lambda: old_part() == part, CONVERGE,
            lambda: f"A to get B's {len(part)} earlier readings back (holds {len(old_part())})",
        )
        self.assertEqual(position_clashes(a.node_id, [a, b, c]), [])
        # docs/recovery.md: Running once it holds its earlier epochs as far
        # as any peer it heard from has reported them.
        yield wait_for(lambda: state_is(a, "Running"), CONVERGE, "A to be Running")
        answers = yield send_lines(a.sensor_port, sensor_lines(20, "new", start=30), timeout=5)
        self.assertEqual(answers, [b"OK %d" % i for i in range(31, 51)])

        yield c.start()
        yield wait_for(
            lambda: old_part() == old, CONVERGE,
            lambda: f"A to get the rest of its {len(old)} earlier readings from C "
            f"(holds {len(old_part())})",
        )
        rows = own(a)
        self.assertEqual([row[0] for row in rows if row[9] == new_epoch], list(range(1, 51)))
        self.assertEqual(len(rows), len(old) + 50)
        for holder in (b, c):
            self.assertEqual((yield wait_identical(holder, a)), rows)
        self.assertEqual(position_clashes(a.node_id, [a, b, c]), [])
        for node in (a, b, c):
            status = yield node.status()
            self.assertEqual(status["state"], "Running")
            self.assertEqual(status["replication"]["conflicts"], 0)
        no_tracebacks(self, a, b, c)


    @inlineCallbacks
    def test_origin_status_agrees_after_recovery(self):
        """
        After a node got its lost database back (26 readings of its old
        epoch, 10 of its new one), its own /status and its peer's say the
        same of its origin: count 36 and the highest position held, 26; both
        list the two epochs under logs, and the node marks the one it numbers
        new readings in.
        """
        key = cluster_key(self)
        a, b = (NodeProcess(self, secret_file=key) for _ in range(2))
        mesh([a, b])
        for node in (a, b):
            yield node.start()
        yield feed(self, a, sensor_lines(26, "a"))
        (old_epoch,) = epochs((yield wait_identical(b, a)))
        yield a.stop()
        a.delete_db(SELF_DB)
        yield a.start()
        yield feed(self, a, sensor_lines(10, "new"))
        yield wait_for(lambda: state_is(a, "Running"), CONVERGE, "A to be Running")
        rows = yield wait_identical(b, a)
        self.assertEqual(len(rows), 36)
        (new_epoch,) = set(epochs(rows)) - {old_epoch}

        mine, theirs = (yield a.status()), (yield b.status())
        self.assertEqual(mine["origins"][a.node_id], {"count": 36, "last_index": 26, "self": True})
        self.assertEqual(theirs["origins"][a.node_id], {"count": 36, "last_index": 26, "self": False})

        def logs_of(status):
            return {
                log["epoch"]: (log["last"], log.get("current"))
                for log in status["logs"]
                if log["origin"] == a.node_id
            }

        self.assertEqual(logs_of(mine), {old_epoch: (26, None), new_epoch: (10, True)})
        self.assertEqual(logs_of(theirs), {old_epoch: (26, None), new_epoch: (10, None)})
        no_tracebacks(self, a, b)


class DataDirLostTests(TestCase):
    """
    A node that lost its whole data directory comes back as a new origin;
    its old origin's readings live on at its peers.
    """

    timeout = 120

    @inlineCallbacks
    def test_whole_data_dir_lost(self):
        """
        A node whose data directory is deleted and which is started again on
        the same ports gets a new node id and is Running at once. Its old
        origin's readings stay on its peers, unchanged, and keep replicating
        among them: a node that joins later, dialling only one peer, receives
        them too, and the new node gets them as a peer table, never in its
        own database.
        """
        key = cluster_key(self)
        a, b, c = (NodeProcess(self, secret_file=key) for _ in range(3))
        mesh([a, b, c])
        for node in (a, b, c):
            yield node.start()
        yield feed(self, a, sensor_lines(200, "a"))
        yield feed(self, b, sensor_lines(50, "b"))
        yield feed(self, c, sensor_lines(50, "c"))
        old = yield wait_identical(b, a)
        yield wait_identical(c, a)
        old_id = a.node_id

        yield a.stop()
        a.delete_data_dir()
        status = yield a.start()
        self.assertNotEqual(a.node_id, old_id)
        self.assertEqual(status["state"], "Running")
        answers = yield feed(self, a, sensor_lines(30, "a-new"))
        self.assertEqual(answers[-1], b"OK 30")

        def old_origin(node: NodeProcess) -> list[tuple]:
            return log_rows(node, PEER_DB, old_id)

        yield wait_for(
            lambda: old_origin(a) == old, CONVERGE,
            lambda: f"the new A to hold the old origin's {len(old)} readings "
            f"(holds {len(old_origin(a))})",
        )
        self.assertEqual(readings_tables(a, SELF_DB), {f"server_id_{a.node_id}"})
        # Nor are the old origin's rows stored under it.
        self.assertEqual(
            stored_tables(a, SELF_DB),
            {f"server_id_{a.node_id}", rows_table(a.node_id), times_table(a.node_id), f"server_id_{a.node_id}_ids"},
        )
        self.assertEqual(len(own(a)), 30)

        d = NodeProcess(self, secret_file=key, peers=[b.peer_address])
        yield d.start()
        yield wait_for(
            lambda: old_origin(d) == old, CONVERGE,
            lambda: f"D to hold the old origin's {len(old)} readings (holds {len(old_origin(d))})",
        )
        for origin in (a, b, c):
            yield wait_identical(d, origin)
        for holder in (b, c):
            self.assertEqual(old_origin(holder), old)
        for node in (a, b, c, d):
            status = yield node.status()
            self.assertEqual(status["origins"][old_id], {"count": 200, "last_index": 200, "self": False})
            self.assertEqual(status["replication"]["conflicts"], 0)
            self.assertEqual(position_clashes(old_id, [node]), [])
        no_tracebacks(self, a, b, c, d)


class LinkTests(TestCase):
    """
    Links come up once and stay up: a node never loops on itself, on a
    peer listed both ways, or after a flapping link.
    """

    timeout = 120

    @inlineCallbacks
    def test_node_lists_itself(self):
        """
        A node given its own address in --peers beside a real peer refuses
        the link to itself with a logged reason ('is this node itself'),
        stops dialling that address (no new refusal over several seconds),
        and replicates with the real peer both ways. Its /status then shows
        every link up: its own address is no peer, so it is not listed as
        one that stays unreachable.
        """
        key = cluster_key(self)
        a, b = NodeProcess(self, secret_file=key), NodeProcess(self, secret_file=key)
        a.peers = [a.peer_address, b.peer_address]
        b.peers = [a.peer_address]
        yield a.start()
        yield b.start()
        yield wait_for(
            lambda: log_lines(a, "is this node itself"), CONVERGE,
            "A to refuse its link to itself, naming why",
        )
        yield feed(self, a, sensor_lines(50, "a"))
        yield feed(self, b, sensor_lines(20, "b"))
        yield wait_identical(b, a)
        yield wait_identical(a, b)

        refusals = log_lines(a, "is this node itself")
        refused = (yield a.status())["replication"]["refused_links"]

        @inlineCallbacks
        def no_new_refusal():
            status = yield a.status()
            return (
                log_lines(a, "is this node itself") == refusals
                and status["replication"]["refused_links"] == refused
            )

        yield hold_for(
            no_new_refusal, QUIET,
            lambda: f"A to stop dialling itself ({refusals} lines and {refused} refused links "
            f"before, now {log_lines(a, 'is this node itself')})",
            interval=0.25,
        )
        # One dial of itself: refused by the side that dialled, by the side
        # that accepted, and the dialler's note that it gives up.
        self.assertLessEqual(refusals, 3, a.log_text())
        self.assertEqual(log_lines(a, "not dialling it again"), 1)
        self.assertEqual(log_lines(b, "is this node itself"), 0)

        entries = yield peer_entries(a)
        self.assertEqual(len(entries[b.node_id]), 1)
        self.assertTrue(entries[b.node_id][0]["connected"])
        self.assertNotIn(a.node_id, entries)
        yield feed(self, a, sensor_lines(10, "a", start=50))
        yield feed(self, b, sensor_lines(10, "b", start=20))
        yield wait_identical(b, a)
        yield wait_identical(a, b)
        yield wait_links_up(b, [a])
        # The links are up already (both copies converged): not a long wait.
        yield wait_links_up(a, [b], timeout=5)
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_flapping_link_settles(self):
        """
        Two nodes that list each other through a link that is cut every half
        second for a few seconds while readings flow: once the cutting stops
        the link comes back up by itself, each node shows one peer entry,
        connected, the copies converge, and the link then stays up with no
        further reconnect, drop or refusal.
        """
        key = cluster_key(self)
        a, b = NodeProcess(self, secret_file=key), NodeProcess(self, secret_file=key)
        to_a, to_b = FlappingProxy(self, a.peer_port), FlappingProxy(self, b.peer_port)
        a.peers, b.peers = [to_b.address], [to_a.address]
        yield a.start()
        yield b.start()
        yield wait_links_up(a, [b])
        yield wait_links_up(b, [a])

        fed = [0]
        flaps = 6

        @inlineCallbacks
        def flap():
            to_a.cut()
            to_b.cut()
            if fed[0] // 25 == flaps:
                loop.stop()
                return
            yield feed(self, a, sensor_lines(25, "a", start=fed[0]))
            yield feed(self, b, sensor_lines(25, "b", start=fed[0]))
            fed[0] += 25

        loop = LoopingCall(flap)
        yield loop.start(0.5)
        self.assertGreaterEqual(to_a.cuts + to_b.cuts, 2, "the proxies never cut a link")
        # Both dialled links come back after their backoff: each node then
        # has two links to the other, the one it dialled and the one it took.
        @inlineCallbacks
        def both_ways():
            return (yield both_links(a, b)) and (yield both_links(b, a))

        yield wait_for(
            both_ways,
            CONVERGE, "both nodes to dial each other again after the flapping",
        )
        rows_a = yield wait_identical(b, a)
        rows_b = yield wait_identical(a, b)
        self.assertEqual((len(rows_a), len(rows_b)), (25 * flaps, 25 * flaps))
        for node, other, proxy in ((a, b, to_b), (b, a, to_a)):
            entries = yield wait_links_up(node, [other])
            self.assertEqual(entries[other.node_id]["address"], proxy.address)
        yield assert_links_quiet(self, [a, b], proxies=[to_a, to_b])
        for node in (a, b):
            status = yield node.status()
            self.assertEqual(status["replication"]["conflicts"], 0)
            self.assertEqual(status["replication"]["rejected"], 0)
        no_tracebacks(self, a, b)

    @inlineCallbacks
    def test_mutual_listing_stays_quiet(self):
        """
        Two nodes that list each other directly link up and then stay
        linked: over several seconds neither drops, refuses or makes a link,
        and readings still replicate both ways.
        """
        key = cluster_key(self)
        a, b = NodeProcess(self, secret_file=key), NodeProcess(self, secret_file=key)
        mesh([a, b])
        yield a.start()
        yield b.start()
        yield wait_for(
            lambda: authenticated(a, b.peer_address) and authenticated(b, a.peer_address),
            CONVERGE, "each node's dialled link to the other to authenticate",
        )
        yield wait_links_up(a, [b])
        yield wait_links_up(b, [a])
        yield assert_links_quiet(self, [a, b], duration=5.0)
        for node in (a, b):
            self.assertEqual(log_lines(node, "dropping link"), 0, node.log_text())
        yield feed(self, a, sensor_lines(20, "a"))
        yield feed(self, b, sensor_lines(20, "b"))
        yield wait_identical(b, a)
        yield wait_identical(a, b)
        no_tracebacks(self, a, b)
