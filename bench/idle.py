#!/usr/bin/env python3
"""
Footprint benchmark: the resident memory of one node holding 1,000 idle
sensor connections and 10 peer links.

Real ``twistd -n --pidfile= p2pstore`` processes on free loopback ports, in
temporary directories, sharing a 32-byte --secret-file:

1. Node X starts alone; its RSS (VmRSS) is read after a short settle.
2. 10 other nodes start with ``--peers X`` (they dial it: 11 processes in
   all), each takes --readings-per-peer readings from a sensor of this
   driver, and X must hold them all (and relays them to the others). X's
   RSS again.
3. 1,000 sensor connections to X, each sending one reading and, once it is
   answered, nothing more. After --idle seconds (15, beyond one 10 s peer
   keep-alive round) X's RSS again, polled every 50 ms meanwhile; its VmHWM
   (peak) too. That is the figure against the target (under 80 MB).

Check: every reading was answered OK and stored once (X's log gapless
1..1000), /status counts 1,000 connected sensors and 10 authenticated
peers, X holds every peer's readings, nothing was rejected, and every node
stops cleanly. Otherwise FAILED and a non-zero exit.

    python bench/idle.py --quick     # same counts, 2 s idle, ~15 s
    python bench/idle.py             # 10 peers, 1,000 connections
    python bench/idle.py --json /tmp/idle.json
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import sleep
from harness import Bench, add_node_options, apply_node_options, conclude, run_bench
from load import Stream
from nodes import SELF_DB, Node, make_secret, origin_count
from procfs import LoadMeter, RssWatch, memory_mb, outside_load, raise_fd_limit
from report import fmt, load_line, machine, machine_line, print_table

from p2pstore.schema import table_name  # noqa: E402

TARGET_MB = 80.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Footprint benchmark (see bench/README.md).")
    parser.add_argument("--connections", type=int, default=1000, help="idle sensor connections (1000)")
    parser.add_argument("--peers", type=int, default=10, help="peer nodes dialling X (10)")
    parser.add_argument("--readings-per-peer", type=int, default=1000,
                        help="readings each peer stores, replicated to X (1000)")
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds the connections stay idle before X's RSS is read (15)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds before each other RSS reading (2)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the nodes' --sync (full)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s idle, 1 s settles (~15 s)")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        # Full counts (they start in seconds); only the waits are cut.
        args.idle, args.settle = 2.0, 1.0
    if args.connections < 1 or args.peers < 0 or args.readings_per_peer < 0:
        parser.error("--connections must be positive, --peers and --readings-per-peer not negative")
    return args


class Idle(Bench):
    def rss(self, node: Node) -> float:
        return round(memory_mb(node.pid)[0], 1)

    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        from twisted.internet.defer import Deferred, gatherResults

        secret = make_secret(self.root / "cluster.key")
        x = Node(self.root / "x", args.sync, "X", secret)
        x.start()
        await http.wait_running(x)
        await sleep(reactor, args.settle)
        result["x_rss_alone_mb"] = self.rss(x)
        print(f"X alone: {result['x_rss_alone_mb']:.1f} MB", flush=True)

        # Peers dialling X, each with readings of its own.
        peers = [
            Node(self.root / f"p{i}", args.sync, f"P{i}", secret, peers=[x.peer_address])
            for i in range(1, args.peers + 1)
        ]
        t0 = time.perf_counter()
        for p in peers:
            p.start()
        await gatherResults(
            [Deferred.fromCoroutine(http.wait_running(p, 120)) for p in peers], consumeErrors=True
        )
        result["peers_start_s"] = round(time.perf_counter() - t0, 2)
        feeds = []
        for p in peers:
            if args.readings_per_peer:
                feed = Stream(reactor, p, 1, f"feed{p.name}")
                await feed.connect()
                feed.pipeline(64, args.readings_per_peer)
                feeds.append(feed)
        for feed in feeds:
            await feed.drain(60, stop=False)
            self.problems.extend(feed.problems())
            feed.close()
        ids = {p.name: p.node_id for p in peers}

        def all_peers(status: dict) -> bool:
            linked = [q for q in status["peers"] if q["authenticated"]]
            return len(linked) == len(peers) and all(
                origin_count(status, i) == args.readings_per_peer for i in ids.values()
            )

        try:
            await http.wait(x, all_peers, 60, f"to link with {len(peers)} peers and hold their readings")
        except Exception:
            status = await http.status(x)
            print(f"  X's origins: {status['origins']}; peers: "
                  f"{[(q['node_id'], q['authenticated']) for q in status['peers']]}", flush=True)
            raise
        await sleep(reactor, args.settle)
        result["x_rss_with_peers_mb"] = self.rss(x)
        print(f"X with {len(peers)} peers: {result['x_rss_with_peers_mb']:.1f} MB", flush=True)

        # Idle sensors: one reading each, then silence.
        sensors = Stream(reactor, x, args.connections, "idle")
        t0 = time.perf_counter()
        await sensors.connect()
        sensors.pipeline(1, args.connections)
        await sensors.drain(60, stop=False)
        result["sensors_connect_s"] = round(time.perf_counter() - t0, 2)
        status = await http.status(x)
        if status["sensors"]["connected"] != args.connections:
            self.problem(f"X counts {status['sensors']['connected']} connected sensors, "
                         f"not {args.connections}")
        meter = LoadMeter([x] + peers)
        watch = RssWatch(reactor, [x], 0.05)
        await sleep(reactor, args.idle)
        polled = watch.stop()
        cpu = meter.stop()
        rss, hwm = memory_mb(x.pid)
        status = await http.status(x)
        result.update(
            x_rss_idle_mb=round(rss, 1),
            x_rss_idle_max_polled_mb=polled["X"],
            x_peak_rss_mb=round(hwm, 1),
            peers_rss_mb_median=round(statistics.median(self.rss(p) for p in peers), 1) if peers else None,
            x_connected_sensors=status["sensors"]["connected"],
            x_authenticated_peers=sum(1 for q in status["peers"] if q["authenticated"]),
            x_fds=len(list(Path(f"/proc/{x.pid}/fd").iterdir())),
            cpu_idle=cpu,
        )
        print(f"X with {len(peers)} peers and {args.connections} idle sensors: {rss:.1f} MB "
              f"(peak {hwm:.1f} MB)", flush=True)

        # Check.
        self.problems.extend(sensors.problems())
        if sensors.acked != args.connections:
            self.problem(f"{sensors.acked} of {args.connections} readings answered")
        if status["sensors"]["connected"] != args.connections:
            self.problem(f"after idling X counts {status['sensors']['connected']} sensors")
        if result["x_authenticated_peers"] != len(peers):
            self.problem(f"after idling X has {result['x_authenticated_peers']} of {len(peers)} peers")
        if not all_peers(status):
            self.problem("X lost track of a peer's readings")
        db = sqlite3.connect(f"{(x.data_dir / SELF_DB).absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows, low, high, distinct, ids_ = db.execute(
                f"SELECT count(*), min(entry_index), max(entry_index), count(DISTINCT entry_index), "
                f"count(DISTINCT reading_id) FROM {table_name(x.node_id)}"
            ).fetchone()
        finally:
            db.close()
        if not (rows == args.connections == high == distinct == ids_ and low == 1):
            self.problem(f"X stored {rows} rows, indexes {low}..{high} ({distinct} distinct), "
                         f"{ids_} reading ids, for {args.connections} readings")
        for node in [x] + peers:
            totals = (await http.status(node))["replication"]
            if totals["rejected"] or totals["conflicts"] or totals["link_errors"]:
                self.problem(f"{node.name} counts {totals}")
        sensors.close()
        for node in peers + [x]:
            await node.stop(reactor)
        result["problems"] = self.problems
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    raise_fd_limit(args.connections + 200)
    before = outside_load(1.0)
    info = machine()
    print(machine_line(info))
    print(f"idle: node X with {args.peers} peers dialling it ({args.readings_per_peer} readings "
          f"each) and {args.connections} idle sensor connections; --sync {args.sync}", flush=True)
    budget = 300 + args.idle + 10 * args.peers
    error, result, problems = run_bench("idle", Idle, args, budget)
    if "x_rss_idle_mb" in result:
        idle_ok = result["x_rss_idle_mb"] < TARGET_MB
        rows = [
            ["X alone", fmt(result["x_rss_alone_mb"]), "MB", "", ""],
            [f"X + {args.peers} peers", fmt(result["x_rss_with_peers_mb"]), "MB", "", ""],
            [f"X + {args.peers} peers + {args.connections} idle sensors", fmt(result["x_rss_idle_mb"]),
             "MB", f"< {TARGET_MB:g}", "meets" if idle_ok else "ABOVE target"],
            ["  max polled while idle", fmt(result["x_rss_idle_max_polled_mb"]), "MB", "", ""],
            ["  X peak (VmHWM)", fmt(result["x_peak_rss_mb"]), "MB", "", ""],
            ["  X open descriptors", str(result["x_fds"]), "", "", ""],
            ["each peer (median)", fmt(result["peers_rss_mb_median"]), "MB", "", ""],
        ]
        print()
        print_table(["figure", "RSS", "unit", "target", ""], rows)
        print("\n" + load_line(result["cpu_idle"], "while idle, "))
        print(f"outside load before the run: {before['busy_cores']:.2f} busy cores "
              f"(load average {before['loadavg_1m']:.2f})")
    ok = error is None and not problems and "x_rss_idle_mb" in result
    return conclude(args, {
        "benchmark": "idle", "machine": info, "outside_load_before": before,
        "target_mb": TARGET_MB,
        "target_met": result["x_rss_idle_mb"] < TARGET_MB if "x_rss_idle_mb" in result else None,
        "result": result,
    }, problems, error, ok, "every idle sensor and peer stayed connected; every reading stored once")


if __name__ == "__main__":
    sys.exit(main())
