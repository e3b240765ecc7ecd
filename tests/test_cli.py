"""
Tests for the C{p2pstore} command's C{status}, C{readings} and C{key new}
(p2pstore.cli, p2pstore.clusterview, p2pstore.nodeclient): the summary
formatted from canned C{/status} documents, and the command run as a user
runs it, against real nodes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore.cli import ReadingsProgress
from p2pstore.clusterview import (
    NodeAnswer,
    attention,
    clock_time,
    combined,
    copies_table,
    duration,
    healthy,
    holdings,
    lag,
    node_block,
    render,
    size,
    verdict,
)
from p2pstore.identity import load_key
from p2pstore.nodeclient import base_url, fetch_status
from p2pstore.testing import free_ports

from .nodes import REPO, NodeProcess, wait_for
from .test_cluster import CONVERGE, cluster_key, feed, mesh, sensor_lines
from .test_verify import p2pstore

A, B, C = ("a" * 32, "b" * 32, "c" * 32)
EPOCH_A, EPOCH_B = ("e" * 32, "f" * 32)
NOW = 1_796_640_000.0


def peer(node_id, linked=True, lag=None, lag_s=None, **extra):
    return {
        "address": "127.0.0.1:1", "node_id": node_id, "connected": linked,
        "authenticated": linked, "last_seen": NOW - 30, "lag": lag or {},
        "lag_s": lag_s or {}, "trouble": None, "full": None, **extra,
    }


def status(node_id, logs, peers=(), state="Running", **extra):
    """
    A /status document as a node answers it, holding ``logs`` (a list of
    ``(origin, epoch, last)``, each held from 1).
    """
    return {
        "node_id": node_id,
        "state": state,
        "uptime_s": 3725.0,
        "sensors": {"connected": 1, "accepted": 10, "rejected": 0, "names": {}},
        "origins": {
            origin: {"count": last, "last_index": last, "self": origin == node_id}
            for origin, _, last in logs
        },
        "logs": [
            {"origin": o, "epoch": e, "first": 1, "last": last, "held": last}
            for o, e, last in logs
        ],
        "peers": list(peers),
        "disk": {"used_bytes": 3 * 1024 ** 2, "free_bytes": 50 * 1024 ** 3,
                 "budget_bytes": None, "full": False, "days_left": None},
        "copies": {"under_copied": []},
        "ack_copies": 1,
        **extra,
    }


def answer(node_id, logs, **kw):
    return NodeAnswer(f"http://{node_id[0]}:8000", status(node_id, logs, **kw))


BOTH = [(A, EPOCH_A, 100), (B, EPOCH_B, 50)]


class VerdictTests(SynchronousTestCase):
    """
    The first line says whether every node runs and every origin has a
    copy on each, or names what does not.
    """

    def test_all_well(self):
        """
        Three nodes Running, each holding all of both origins.
        """
        answers = [answer(n, BOTH, peers=[peer(m) for m in (A, B, C) if m != n]) for n in (A, B, C)]
        self.assertEqual(verdict(answers), "3 nodes Running; every origin on 3 nodes")
        self.assertTrue(healthy(answers))

    def test_unreachable_and_one_copy(self):
        """
        A node that does not answer is named by its URL; an origin only
        one answering node holds all of is named with that count; the
        link to the missing node is named once.
        """
        answers = [
            answer(A, BOTH, peers=[peer(B, lag={A: 10}, lag_s={A: 60}), peer(C, linked=False)]),
            answer(B, [(A, EPOCH_A, 90), (B, EPOCH_B, 50)], peers=[peer(A), peer(C, linked=False)]),
            NodeAnswer("http://c:8000", error="connection refused"),
        ]
        self.assertEqual(
            verdict(answers),
            "node http://c:8000 unreachable; 2 nodes Running; origin aaaaaaaa held by 1 node, "
            "every other origin on 2 nodes; cccccccc not linked with aaaaaaaa, bbbbbbbb; "
            "most behind: bbbbbbbb lacks 10 records (the oldest for 1 min 00 s) that aaaaaaaa holds",
        )
        self.assertFalse(healthy(answers))

    def test_not_running(self):
        """
        A node Syncing (or Initializing) is named, and is not healthy.
        """
        answers = [answer(A, BOTH), answer(B, BOTH, state="Syncing")]
        self.assertEqual(verdict(answers).split("; ")[0], "1 node Running, 1 Syncing (bbbbbbbb)")
        self.assertFalse(healthy(answers))

    def test_one_node(self):
        """
        One node's verdict counts its linked peers and the link most behind.
        """
        answers = [answer(A, BOTH, peers=[peer(B, lag={A: 120}, lag_s={A: 75}), peer(C)])]
        self.assertEqual(
            verdict(answers),
            "1 node Running; 2 of 2 peers linked; most behind: bbbbbbbb lacks 120 records "
            "(the oldest for 1 min 15 s) that aaaaaaaa holds",
        )

    def test_full_disk_and_failing_export(self):
        """
        A full disk and an export that keeps failing are in the verdict.
        """
        doc = status(A, BOTH, exports=[{"url": "http://influx/write", "state": "retrying",
                                        "pending": 10, "last_error": "refused"}])
        doc["disk"]["full"] = True
        self.assertEqual(
            verdict([NodeAnswer("http://a:8000", doc)]),
            "1 node Running; no peers: one copy of each reading; aaaaaaaa disk full; "
            "aaaaaaaa export retrying",
        )


    def test_attention(self):
        """
        Every node Running, but an origin not whole on each, a link down,
        a full disk or an export failing: readings are at risk, and the
        command says so by its exit code (3); a gone peer is none of that.
        """
        well = [answer(n, BOTH, peers=[peer(m) for m in (A, B) if m != n]) for n in (A, B)]
        self.assertFalse(attention(well))
        short_of = [answer(A, BOTH, peers=[peer(B, lag={A: 10}, lag_s={A: 60})]),
                    answer(B, [(A, EPOCH_A, 90), (B, EPOCH_B, 50)], peers=[peer(A)])]
        self.assertTrue(attention(short_of))
        # Records on their way (waited under 5 s) are no risk.
        on_the_way = [answer(A, BOTH, peers=[peer(B, lag={A: 10}, lag_s={A: 0.5})]), short_of[1]]
        self.assertFalse(attention(on_the_way))
        unlinked = [answer(A, BOTH, peers=[peer(B, linked=False)]), answer(B, BOTH, peers=[peer(A)])]
        self.assertTrue(attention(unlinked))
        full = status(A, BOTH)
        full["disk"]["full"] = True
        self.assertTrue(attention([NodeAnswer("http://a:8000", full)]))
        failing = status(A, BOTH, exports=[{"url": "http://influx/write", "state": "misconfigured", "pending": 1}])
        self.assertTrue(attention([NodeAnswer("http://a:8000", failing)]))
        gone = [answer(n, BOTH, peers=[peer(m) for m in (A, B) if m != n] + [gone_peer()]) for n in (A, B)]
        self.assertFalse(attention(gone))


D = "d" * 32


def gone_peer(node_id=D, quiet=14 * 60, **extra):
    """A peer entry of a node gone (p2pstore.departed), last heard ``quiet`` s before NOW."""
    return peer(node_id, linked=False, last_seen=NOW - quiet, gone=True, **extra)


class GoneTests(SynchronousTestCase):
    """
    A gone peer (a node that left) is shown as gone, not as a link down,
    and is neither a node of the cluster nor a missing copy.
    """

    def test_cluster(self):
        """
        Two nodes that both list old node D as gone, D lacking records and
        its own readings held by both: every origin is on the 2 nodes, D is
        named once as gone, neither as not linked nor as most behind.
        """
        logs = BOTH + [(D, EPOCH_A, 30)]
        lacks = {"lag": {A: 40}, "lag_s": {A: 900}}
        answers = [
            answer(A, logs, peers=[peer(B), gone_peer(**lacks)]),
            answer(B, logs, peers=[peer(A), gone_peer(**lacks)]),
        ]
        self.assertEqual(verdict(answers), "2 nodes Running; every origin on 2 nodes; dddddddd gone")
        self.assertTrue(healthy(answers))
        self.assertIn("  dddddddd  30        30        2 nodes", copies_table(answers))

    def test_one_node(self):
        """
        One node's verdict counts only its peers that are not gone, and
        names the gone ones.
        """
        answers = [answer(A, BOTH, peers=[peer(B), gone_peer(lag={A: 40}, lag_s={A: 900})])]
        self.assertEqual(verdict(answers), "1 node Running; 1 of 1 peers linked; dddddddd gone")
        answers = [answer(A, BOTH, peers=[gone_peer()])]
        self.assertEqual(
            verdict(answers), "1 node Running; no peers: one copy of each reading; dddddddd gone"
        )

    def test_block(self):
        """
        In a node's block a gone peer is left out of the links counted, and
        its line says since when it has had no link, as a time of day and
        as an age, and when its entry goes.
        """
        doc = status(A, BOTH, peers=[peer(B), gone_peer(lag={A: 40}), peer(C, linked=False)])
        lines = node_block(NodeAnswer("http://a:8000", doc), NOW)
        self.assertEqual(
            lines[3:7],
            [
                "  peers     1 of 2 linked, 1 gone",
                "    bbbbbbbb  linked, in step",
                f"    dddddddd  gone: no link since {clock_time(NOW - 14 * 60)} (14 min 00 s ago), "
                "its copies not counted; its entry is removed after an hour without a link "
                "(in 46 min 00 s)",
                "    cccccccc  NOT LINKED (last message 30 s ago), in step",
            ],
        )

    def test_block_only_gone(self):
        """A node whose only peer is gone has no links, and says so."""
        doc = status(A, BOTH, peers=[gone_peer(quiet=2 * 3600)])
        lines = node_block(NodeAnswer("http://a:8000", doc), NOW)
        self.assertEqual(lines[3], "  peers     none, 1 gone")
        self.assertTrue(lines[4].endswith("removed after an hour without a link"), lines[4])


class CopiesTests(SynchronousTestCase):
    """
    The copies per origin compare each log's last index across the nodes.
    """

    def test_behind(self):
        """
        A node that lacks the newest records of a log holds an incomplete
        copy; the table shows how many it lacks and on how many nodes the
        origin is complete.
        """
        answers = [answer(A, [(A, EPOCH_A, 100)]), answer(B, [(A, EPOCH_A, 80)]), answer(C, [])]
        found = holdings(answers)
        self.assertEqual((found[A][A].complete, found[A][B].behind), (True, 20))
        self.assertEqual(
            copies_table(answers)[1:],
            [
                "  origin    aaaaaaaa  bbbbbbbb  cccccccc  copies",
                "  aaaaaaaa  *100      80 (-20)  -         1 node",
            ],
        )

    def test_rows_in_column_order(self):
        """
        The answering nodes' own origins come in the order of their
        columns, whatever their ids, so each '*' is on the diagonal; other
        origins follow.
        """
        answers = [answer(C, [(C, EPOCH_A, 5), (B, EPOCH_A, 7), (D, EPOCH_A, 1)]),
                   answer(B, [(C, EPOCH_A, 5), (B, EPOCH_A, 7)])]
        self.assertEqual(
            [row.split()[0] for row in copies_table(answers)[2:]],
            [C[:8], B[:8], D[:8]],
        )

    def test_catching_up(self):
        """
        A copy that lacks only records that have waited less than 5 s (as
        the nodes holding them say) is on its way: it counts, and its lag
        is not in the verdict; one that lacks older records does not.
        """
        answers = [
            answer(A, [(A, EPOCH_A, 100)], peers=[peer(B, lag={A: 3}, lag_s={A: 0.5})]),
            answer(B, [(A, EPOCH_A, 97)], peers=[peer(A)]),
        ]
        self.assertEqual(verdict(answers), "2 nodes Running; every origin on 2 nodes")
        self.assertIn("  aaaaaaaa  *100      97 (-3)   2 nodes", copies_table(answers))
        answers[0] = answer(A, [(A, EPOCH_A, 100)], peers=[peer(B, lag={A: 3}, lag_s={A: 7})])
        self.assertEqual(
            verdict(answers),
            "2 nodes Running; origin aaaaaaaa held by 1 node; most behind: bbbbbbbb lacks "
            "3 records (the oldest for 7 s) that aaaaaaaa holds",
        )

    def test_epochs(self):
        """
        An origin with two epochs (it lost its database) is complete only
        on a node holding the newest of each.
        """
        answers = [
            answer(A, [(A, EPOCH_A, 10), (A, EPOCH_B, 26)]),
            answer(B, [(A, EPOCH_A, 10)]),
        ]
        found = holdings(answers)
        self.assertEqual(found[A][A].held, 36)
        self.assertEqual((found[A][B].held, found[A][B].behind), (10, 26))

    def test_without_logs(self):
        """
        A node whose status has no ``logs`` (an older node) is read from
        its ``origins``.
        """
        old = status(B, [(A, EPOCH_A, 100)])
        del old["logs"]
        answers = [answer(A, [(A, EPOCH_A, 100)]), NodeAnswer("http://b:8000", old)]
        self.assertEqual(verdict(answers), "2 nodes Running; every origin on 2 nodes")


class NodeBlockTests(SynchronousTestCase):
    """
    A node's block: state and uptime, sensors, readings, each peer with its
    lag, disk and exports.
    """

    def test_block(self):
        doc = status(
            A, BOTH,
            peers=[peer(B, lag={A: 1200}, lag_s={A: 9.5}), peer(C, linked=False)],
            exports=[{"url": "http://influx:8086/write?db=s", "state": "retrying", "pending": 3632,
                      "oldest_unexported_age_s": 60.5, "last_error": "Connection refused",
                      "dead_lettered": 0, "taken_over": [C]}],
        )
        doc["sensors"]["names"] = {"temp-1": 1, "hum": 2}
        doc["disk"].update(budget_bytes=10 * 1024 ** 2, days_left=12.25)
        self.assertEqual(
            node_block(NodeAnswer("http://a:8000", doc), NOW),
            [
                "aaaaaaaa  Running, up 1 h 02 min  http://a:8000",
                "  sensors   1 connected (hum x2, temp-1), 10 readings taken since start",
                "  readings  150 stored: 100 its own, 50 of 1 other origin",
                "  peers     1 of 2 linked",
                "    bbbbbbbb  linked, lacks 1,200 records (the oldest for 9 s)",
                "    cccccccc  NOT LINKED (last message 30 s ago), in step",
                "  disk      3.1 MB used of 10.5 MB budget (30%), days left: 12.2, "
                "53.7 GB free on the filesystem",
                "  export    http://influx:8086/write?db=s: retrying, 3,632 pending (oldest 1 min 00 s); "
                "last error: Connection refused; exporting for cccccccc",
            ],
        )

    def test_records_on_their_way(self):
        """
        A peer that lacks only records younger than CATCHING_UP_S is in
        step, with them on their way; older ones are a lag with its age.
        """
        self.assertEqual(lag(peer(B, lag={A: 1}, lag_s={A: 0.2})), "in step (1 on the way)")
        self.assertEqual(lag(peer(B, lag={A: 3}, lag_s={A: 6.0})), "lacks 3 records (the oldest for 6 s)")

    def test_ages_by_the_nodes_clock(self):
        """
        A node that says its time has its peers' ages told by its clock,
        not by the command's.
        """
        doc = status(A, BOTH, peers=[peer(C, linked=False, last_seen=NOW + 3600 - 30)])
        doc["time"] = NOW + 3600
        self.assertIn(
            "    cccccccc  NOT LINKED (last message 30 s ago), in step",
            node_block(NodeAnswer("http://a:8000", doc), NOW),
        )

    def test_odd_times(self):
        """
        Times that are no times (NaN, true, past any calendar) are shown
        as unknown, never a crash; the block is still written.
        """
        for time_value, seen in ((float("nan"), 1e20), (True, float("inf")), (10**400, True)):
            doc = status(A, BOTH, peers=[peer(C, linked=False, last_seen=seen),
                                         peer(B, linked=False, gone=True, last_seen=seen)])
            doc["time"] = time_value
            block = node_block(NodeAnswer("http://a:8000", doc), NOW)
            self.assertIn("    cccccccc  NOT LINKED (never linked), in step", block)
            self.assertIn("    bbbbbbbb  gone (never linked), its copies not counted", block)

    def test_days_left_unknown_at_first(self):
        """
        A node up for less than a minute has no estimate of its days left
        yet: the block says so rather than "not growing".
        """
        doc = status(A, BOTH)
        doc["disk"]["days_left"] = None
        young = dict(doc, uptime_s=20.0)
        old = dict(doc, uptime_s=3600.0)
        [young_disk] = [l for l in node_block(NodeAnswer("http://a:8000", young), NOW) if "disk" in l]
        [old_disk] = [l for l in node_block(NodeAnswer("http://a:8000", old), NOW) if "disk" in l]
        self.assertIn("days left: not known yet (after a minute's growth)", young_disk)
        self.assertIn("days left: not growing", old_disk)

    def test_render(self):
        """
        The whole summary: the verdict, the blocks, the copies table, and
        the nodes that did not answer with their error.
        """
        text = render([answer(A, BOTH), NodeAnswer("http://c:8000", error="connection refused")], NOW)
        lines = text.splitlines()
        self.assertEqual(lines[0], "node http://c:8000 unreachable; 1 node Running; every origin on 1 node")
        self.assertIn("copies per origin (records held; * its own node, -N the newest N it lacks):", lines)
        self.assertEqual(lines[-2:], ["not answering:", "  http://c:8000: connection refused"])

    def test_combined(self):
        """
        --json gives each node's document as it came, or its error.
        """
        doc = combined([answer(A, BOTH), NodeAnswer("http://c:8000", error="connection refused")])
        self.assertEqual(doc["nodes"][0]["status"]["node_id"], A)
        self.assertEqual(doc["nodes"][1], {"url": "http://c:8000", "error": "connection refused"})
        self.assertFalse(doc["healthy"])
        self.assertFalse(doc["attention"])
        json.dumps(doc)

    def test_units(self):
        self.assertEqual(
            [duration(4.9), duration(125), duration(3 * 3600 + 720), duration(2 * 86400 + 4 * 3600)],
            ["4 s", "2 min 05 s", "3 h 12 min", "2 d 04 h"],
        )
        # In powers of 1000, as the node's log and the monitor write them.
        self.assertEqual(
            [size(512), size(110592), size(1.5 * 1024 ** 3), size(None), size(float("nan"))],
            ["512 bytes", "110.6 kB", "1.6 GB", "?", "?"],
        )


class ClientTests(SynchronousTestCase):
    """
    Addresses as users type them, and a node that does not answer.
    """

    def test_base_url(self):
        self.assertEqual(
            [base_url(u) for u in ("10.0.0.1:8000", "http://h:8000/", "https://h/status", " h:1 ")],
            ["http://10.0.0.1:8000", "http://h:8000", "https://h", "http://h:1"],
        )

    def test_refused(self):
        (port,) = free_ports(1)
        found = fetch_status(f"http://127.0.0.1:{port}", timeout=2)
        self.assertEqual(found.error, "connection refused")


class ProgressTests(SynchronousTestCase):
    """
    A long read shows a line every few seconds and a last one; a short one
    shows nothing.
    """

    def test_lines(self):
        now = [0.0]
        out = io.StringIO()
        progress = ReadingsProgress(out, seconds=5, clock=lambda: now[0])
        progress.tick(10_000, 1)
        progress.done(10_000, 1)
        self.assertEqual(out.getvalue(), "")
        progress = ReadingsProgress(out, seconds=5, clock=lambda: now[0])
        now[0] = 6
        progress.tick(20_000, 2)
        progress.tick(30_000, 3)
        now[0] = 7
        progress.done(35_000, 4)
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "p2pstore readings: 20,000 readings so far (2 pages, 6 s)",
                "p2pstore readings: done: 35,000 readings in 4 pages, 7 s",
            ],
        )


class KeyNewTests(SynchronousTestCase):
    """
    ``p2pstore key new FILE`` makes a key as a node does, and never
    overwrites one.
    """

    def test_new(self):
        path = Path(self.mktemp()).resolve()
        done = p2pstore("key", "new", str(path))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        key, made = load_key(path, create=False)
        self.assertEqual((len(key), made), (32, False))
        self.assertIn("--secret-file", done.stdout)

    def test_refuses_overwrite(self):
        path = Path(self.mktemp()).resolve()
        path.write_bytes(b"k" * 32)
        done = p2pstore("key", "new", str(path))
        self.assertEqual(done.returncode, 2)
        self.assertIn(f"p2pstore key new: {path} exists; not overwriting it", done.stderr)
        self.assertEqual(path.read_bytes(), b"k" * 32)

    def test_help(self):
        """
        Each new subcommand has help with examples.
        """
        for command in (["status"], ["readings"], ["key", "new"]):
            done = p2pstore(*command, "--help")
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn("examples:", done.stdout)


@inlineCallbacks
def run(*args: str):
    """
    ``python -m p2pstore ARGS`` without blocking the reactor.

    @return: a Deferred firing with (stdout, stderr, exit code).
    """
    out, err, code = yield getProcessOutputAndValue(
        sys.executable, ["-m", "p2pstore", *args], env=dict(os.environ), path=str(REPO)
    )
    return out.decode("utf-8"), err.decode("utf-8"), code


class StatusNodesTests(TestCase):
    """
    ``p2pstore status`` against two real nodes, then with one stopped.
    """

    timeout = 120

    @inlineCallbacks
    def test_cluster(self):
        key = cluster_key(self)
        nodes = [NodeProcess(self, secret_file=key) for _ in range(2)]
        mesh(nodes)
        for node in nodes:
            yield node.start()
        yield feed(self, nodes[0], sensor_lines(30, "a"))
        yield feed(self, nodes[1], sensor_lines(20, "b"))
        urls = ",".join(f"127.0.0.1:{n.status_port}" for n in nodes)
        seen = []

        @inlineCallbacks
        def settled():
            seen[:] = yield run("status", "--url", urls)
            return seen[0].startswith("2 nodes Running; every origin on 2 nodes\n")

        yield wait_for(settled, CONVERGE, lambda: f"a settled cluster, last seen:\n{seen}", interval=0.5)
        out, err, code = seen
        self.assertEqual(code, 0, err)
        a, b = (n.node_id[:8] for n in nodes)
        self.assertIn(f"  {a}  *30       30        2 nodes\n", out)
        self.assertIn(f"  {b}  20        *20       2 nodes\n", out)

        out, _, code = yield run("status", "--url", urls, "--json")
        self.assertEqual(code, 0)
        self.assertEqual([n["status"]["node_id"] for n in json.loads(out)["nodes"]], [n.node_id for n in nodes])

        yield nodes[1].stop()
        out, err, code = yield run("status", "--url", urls)
        self.assertEqual(code, 1)
        down = f"http://127.0.0.1:{nodes[1].status_port}"
        self.assertTrue(out.startswith(f"node {down} unreachable; 1 node Running; "), out)
        self.assertIn(f"not answering:\n  {down}: connection refused\n", out)


    @inlineCallbacks
    def test_exit_3_when_readings_are_at_risk(self):
        """
        A real node Running whose export fails: the command exits 3, not
        0, so that a cron job sees it; its verdict says why.
        """
        (closed,) = free_ports(1)
        node = NodeProcess(self, extra_args=["--export", f"http://127.0.0.1:{closed}/write?db=x"])
        yield node.start()
        yield feed(self, node, sensor_lines(5, "x"))
        seen = []

        @inlineCallbacks
        def failing():
            seen[:] = yield run("status", "--url", f"127.0.0.1:{node.status_port}")
            return "export retrying" in seen[0].splitlines()[0]

        yield wait_for(failing, CONVERGE, lambda: f"the export to fail, last seen:\n{seen}", interval=0.5)
        self.assertEqual(seen[2], 3, seen[1])


class ReadingsNodesTests(TestCase):
    """
    ``p2pstore readings`` pages through a real node's range: every reading
    once, in CSV and in JSON.
    """

    timeout = 120
    READINGS = 2_500

    @inlineCallbacks
    def setUp(self):
        token = Path(self.mktemp()).resolve()
        token.write_text("t" * 32 + "\n")
        self.token = str(token)
        self.node = NodeProcess(self, extra_args=["--http-token-file", self.token])
        yield self.node.start()
        yield feed(self, self.node, sensor_lines(self.READINGS, "r"))
        self.url = f"127.0.0.1:{self.node.status_port}"

    def readings(self, *args):
        return run("readings", "--url", self.url, "--token-file", self.token, "--page-size", "1000", *args)

    @inlineCallbacks
    def test_csv(self):
        out, err, code = yield self.readings()
        self.assertEqual(code, 0, err)
        rows = list(csv.reader(io.StringIO(out)))
        self.assertEqual(rows[0][:3], ["origin", "epoch", "entry_index"])
        self.assertEqual(sorted(int(r[2]) for r in rows[1:]), list(range(1, self.READINGS + 1)))

    @inlineCallbacks
    def test_json(self):
        out, err, code = yield self.readings("--format", "json")
        self.assertEqual(code, 0, err)
        readings = json.loads(out)
        self.assertEqual(sorted(r["entry_index"] for r in readings), list(range(1, self.READINGS + 1)))
        self.assertEqual({r["origin"] for r in readings}, {self.node.node_id})

    @inlineCallbacks
    def test_limit_and_type(self):
        out, err, code = yield self.readings("--limit", "1500", "--type", "Humidity", "--format", "json")
        self.assertEqual(code, 0, err)
        readings = json.loads(out)
        self.assertEqual(len(readings), self.READINGS // 4)
        self.assertEqual({r["sensor_type"] for r in readings}, {"Humidity"})
        out, err, code = yield self.readings("--limit", "1500")
        self.assertEqual(len(out.splitlines()), 1 + 1500)

    @inlineCallbacks
    def test_errors(self):
        """
        The node's 400 and 401 are one line each, exit code 1.
        """
        out, err, code = yield self.readings("--since", "yesterday")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("/readings: answered 400: since must be ISO-8601", err)
        out, err, code = yield run("readings", "--url", self.url)
        self.assertEqual(code, 1)
        self.assertIn("/readings: answered 401", err)
