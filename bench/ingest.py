#!/usr/bin/env python3
"""
Ingestion benchmark: how many readings per second one p2pstore node
acknowledges, and how fast it answers.

Starts a real ``twistd -n --pidfile= p2pstore`` in a temporary data directory
on free loopback ports, waits for ``GET /status`` to say ``Running``, then
opens N sensor connections (bench/load.py: from this process, or from the
compiled client of bench/cload.py). Each connection pipelines seed-format lines
(``Temperature,39C,2026-11-28 10:00:00.123456``, each with its own timestamp),
or with ``--reading-ids`` lines ending in a reading id as the simulator sends
them, keeping a window of W lines unanswered: every answer that comes back
lets one more line go out.

After a warm-up it measures, over --duration seconds:

- acknowledged readings/s (``OK`` answers received in the period),
- answer latency p50/p99 (from a line's send to its ``OK``),
- the node's CPU seconds (utime + stime of /proc/<pid>/stat, all threads;
  also its main, reactor, thread alone), its peak RSS (VmHWM),
- the client's CPU (the process sending the lines), this script's own and
  the whole machine's, to tell who was the bottleneck.

Then it stops sending, waits for every line to be answered, stops the node
with SIGTERM and checks the SQLite file: every acknowledged line (known by
its timestamp, or its reading_id) is in ``server_id_<node id>`` exactly
once, at the entry_index it was answered with, entry_index runs 1..N without
a gap, nothing unknown was stored, the fields are as sent and a sample of
HMACs verifies under the cluster key. Any failure prints FAILED and exits
non-zero.

``--ack-copies 1,2`` measures each K in turn within each repeat, every run
on fresh nodes with the measured node started with ``--ack-copies K`` and
the same max(--peers, K - 1) peers replicating live, and compares the
rates; at K > 1 every line answered OK must also be in the peer database
of K - 1 peers, at its index, read as soon as the answers are all in.

    python bench/ingest.py                      # 100 connections, 20 s
    python bench/ingest.py --repeat 3           # medians of 3 runs
    python bench/ingest.py --connections 1000 --json /tmp/ingest.json
    python bench/ingest.py --window 24          # latency near 70,000 readings/s
    python bench/ingest.py --rate 70000         # latency at a paced load
    python bench/ingest.py --peers 1            # with a peer replicating live
    python bench/ingest.py --ack-copies 1,2     # OK after 1 copy, then after 2, interleaved
    python bench/ingest.py --quick              # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import core  # noqa: F401  (first: this checkout's p2pstore)
from cload import CompiledStream, build
from core import BenchFailure, sleep
from harness import add_node_options, apply_node_options, run
from load import SPREAD, Stream, line_at, line_of
from logread import check_hmac_sample
from nodes import PEER_DB, SELF_DB, Http, Node, make_secret
from procfs import driver_cpu, machine_cpu, peak_rss_mb, process_cpu, raise_fd_limit
from report import calibrate, calibration_span, machine, machine_line, medians, percentile, print_table

from p2pstore.schema import table_name  # noqa: E402

# How many stored rows get their HMAC checked afterwards.
HMAC_SAMPLE = 2000


def choose_client(args) -> None:
    """
    --client: the compiled client (built now if needed) unless there is no
    compiler or ``python`` was asked for; sets ``args.client_binary``.
    """
    args.client_binary = None
    if args.client == "python":
        print("client: python (this process, bench/load.py)")
        return
    binary, why = build()
    if binary is None:
        if args.client == "c":
            raise SystemExit(f"--client c: cannot build bench/loadclient.c: {why}")
        print(f"client: python, because the compiled client cannot be built ({why}); "
              f"its own CPU may limit the figures")
        return
    args.client_binary = binary
    print(f"client: compiled ({binary})")


def open_stream(reactor, args, node: Node, tag: str):
    """
    The sensor connections of one run, from the client --client chose.
    """
    lines = "ids" if args.reading_ids else "seed"
    if args.client_binary is not None:
        return CompiledStream(reactor, node, args.connections, tag, args.client_binary, lines=lines,
                              window=args.window, time_limit=args.warmup + args.duration + 240)
    return Stream(reactor, node, args.connections, tag, lines=lines, keep_indexes=True)


class Run:
    """
    One benchmark run: a node, N connections, the figures and the check.
    """

    def __init__(self, reactor, args, number: int, copies: int = 1):
        self.reactor = reactor
        self.args = args
        self.number = number
        self.copies = copies
        self.tag = "r%d%04x" % (number, random.getrandbits(16))
        self.stream = None
        self.sensors: list = []
        self.http = Http(reactor)
        self.peer_nodes: list = []

    async def execute(self) -> dict:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="p2pstore-bench-ingest-", dir=args.tmpdir))
        secret = make_secret(workdir / "cluster.key") if args.peers else None
        node = Node(workdir / "node", args.sync, "node", secret,
                    extra_args=["--ack-copies", str(self.copies)])
        self.peer_nodes = [
            Node(workdir / f"peer{i}", args.sync, f"peer{i}", secret, peers=[node.peer_address])
            for i in range(1, args.peers + 1)
        ]
        try:
            return await self._execute(node)
        finally:
            if self.stream is not None:
                await self.stream.abort()
            for each in [node] + self.peer_nodes:
                each.kill()
            if args.keep:
                print(f"  kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    async def start_peers(self, node: Node) -> None:
        """
        --peers: nodes that dial the measured one and replicate its log live.
        """
        for peer in self.peer_nodes:
            peer.start()
        for peer in self.peer_nodes:
            await self.http.wait_running(peer, 60)
        deadline = time.monotonic() + 60
        while True:
            status = await self.http.status(node)
            linked = sum(1 for p in status["peers"] if p.get("authenticated"))
            if linked == len(self.peer_nodes):
                return
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {linked} of {len(self.peer_nodes)} peers linked in 60 s")
            await sleep(self.reactor, 0.1)

    async def peers_caught_up(self, node: Node, last_index: int) -> Optional[float]:
        """
        Seconds from now until every peer holds the node's log up to
        ``last_index`` (None: not within 60 s).
        """
        start = time.monotonic()
        while time.monotonic() - start < 60:
            held = []
            for peer in self.peer_nodes:
                origins = (await self.http.status(peer)).get("origins", {})
                held.append(origins.get(node.node_id, {}).get("last_index", 0))
            if all(h >= last_index for h in held):
                return time.monotonic() - start
            await sleep(self.reactor, 0.05)
        return None

    def peers_cpu(self) -> float:
        return sum(process_cpu(peer.pid)[0] for peer in self.peer_nodes)

    def client_cpu(self) -> float:
        pid = self.stream.pid
        return driver_cpu() if pid is None else process_cpu(pid)[0]

    async def _execute(self, node: Node) -> dict:
        args = self.args
        # The machine's speed before the node starts and after it stopped
        # (--peers' nodes, idle by then, are stopped only afterwards).
        calibration_before = calibrate()
        node.start()
        await self.http.wait_running(node, 60)
        if self.peer_nodes:
            await self.start_peers(node)
        if args.pid_file:
            Path(args.pid_file).write_text(f"{node.pid}\n")
        stream = self.stream = open_stream(self.reactor, args, node, self.tag)
        await stream.connect()
        if args.rate:
            stream.pace(args.rate, args.tick, window=args.window, budget=args.max_readings)
        else:
            stream.pipeline(args.window, args.max_readings)
        await sleep(self.reactor, args.warmup)
        self._check_alive(node)

        # The measured period.
        cpu0, main0 = process_cpu(node.pid)
        peers0 = self.peers_cpu()
        client0 = self.client_cpu()
        drv0 = driver_cpu()
        mach0 = machine_cpu()
        t0 = time.perf_counter()
        await stream.start_recording()
        await sleep(self.reactor, args.duration)
        ok = await stream.stop_recording()
        t1 = time.perf_counter()
        cpu1, main1 = process_cpu(node.pid)
        peers1 = self.peers_cpu()
        client1 = self.client_cpu()
        drv1 = driver_cpu()
        mach1 = machine_cpu()
        self._check_alive(node)

        # Stop sending; every line in flight must be answered (an ERR
        # copies comes after --ack-timeout).
        await stream.drain(60)
        status = await self.http.status(node)
        rss = peak_rss_mb(node.pid)
        cpu_total, _ = process_cpu(node.pid)
        self.sensors = await stream.finish()
        # --ack-copies K > 1: the peers hold every OK'd line now, before
        # they had time to catch up.
        short = self.short_of_copies(node) if self.copies > 1 else 0
        caught_up = None
        if self.peer_nodes:
            caught_up = await self.peers_caught_up(
                node, status["origins"][node.node_id]["last_index"]
            )

        # Stop the node as a user would, then read what it stored.
        # SIGTERM, then the exit code and the log must say it stopped cleanly.
        await node.stop(self.reactor, 60)
        calibration_after = calibrate()

        period = t1 - t0
        latencies = sorted(stream.latencies)
        mach_total = mach1[0] - mach0[0]
        busy_cores = (
            (1 - ((mach1[1] - mach0[1]) + (mach1[2] - mach0[2])) / mach_total) * (os.cpu_count() or 1)
            if mach_total else 0.0
        )
        # The client's CPU counts once when it is this process.
        outside_driver = (client1 - client0) if stream.pid is not None else 0.0
        result = {
            "client": stream.kind,
            "connections": args.connections,
            "window": args.window,
            "reading_ids": args.reading_ids,
            "rate": args.rate,
            "window_held_back": stream.held_back,
            "sync": args.sync,
            "duration_s": round(period, 3),
            "readings_per_s": round(ok / period, 1),
            "latency_p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "latency_p99_ms": round(percentile(latencies, 99) * 1000, 3),
            "latency_max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
            "latencies_recorded": len(latencies),
            "node_cpu_s": round(cpu1 - cpu0, 2),
            "node_cpu_cores": round((cpu1 - cpu0) / period, 3),
            "node_main_thread_cores": round((main1 - main0) / period, 3),
            "node_other_threads_cores": round(((cpu1 - cpu0) - (main1 - main0)) / period, 3),
            "node_cpu_s_whole_run": round(cpu_total, 2),
            "node_peak_rss_mb": round(rss, 1),
            "client_cpu_cores": round((client1 - client0) / period, 3),
            # --peers: all of them together.
            "peers_cpu_cores": round((peers1 - peers0) / period, 3),
            "driver_cpu_cores": round((drv1 - drv0) / period, 3),
            "machine_busy": round(
                1 - ((mach1[1] - mach0[1]) + (mach1[2] - mach0[2])) / mach_total, 3
            ) if mach_total else None,
            "machine_iowait": round((mach1[2] - mach0[2]) / mach_total, 3) if mach_total else None,
            "machine_steal": round((mach1[3] - mach0[3]) / mach_total, 3) if mach_total else None,
            # Everything else: other processes on the machine, kernel work
            # not charged to the node, its peers, the client or this script
            # (loopback softirqs, journal).
            "other_cpu_cores": round(
                busy_cores - (cpu1 - cpu0 + peers1 - peers0 + drv1 - drv0 + outside_driver) / period,
                3,
            ),
            "ack_copies": self.copies,
            # Answers "ERR copies" as the client counted them, and as the
            # node did (/status copies.copies_timeouts).
            "err_copies": stream.err_copies,
            "node_copies_timeouts": status.get("copies", {}).get("copies_timeouts", 0),
            "ok_short_of_copies": short,
            "acknowledged_total": sum(s.acked for s in self.sensors),
            "sent_total": sum(s.sent for s in self.sensors),
            "status_accepted": status["sensors"]["accepted"],
            "status_rejected": status["sensors"]["rejected"],
            "peers": len(self.peer_nodes),
            # --peers: seconds after the last answer until every peer held
            # the whole log (None: not within 60 s).
            "peers_caught_up_s": None if caught_up is None else round(caught_up, 3),
            # The fastest and slowest CPU over the run.
            **calibration_span(calibration_before, calibration_after),
            "calibration_before_us": calibration_before,
            "calibration_after_us": calibration_after,
            "node_code": node.imported_from(),
        }
        result["check"] = self.check(node, result)
        return result

    def short_of_copies(self, node: Node) -> int:
        """
        The lines answered OK that fewer than K - 1 peers hold at the index
        they were answered with (read-only from each peer's database).
        """
        sensors = {s.number: s for s in self.sensors}
        held = {n: bytearray(s.acked) for n, s in sensors.items()}
        by_id = self.args.reading_ids
        for peer in self.peer_nodes:
            db = sqlite3.connect(f"file:{peer.data_dir / PEER_DB}?mode=ro", uri=True, timeout=10)
            try:
                for reading_id, entry_index, stamp in db.execute(
                    f"SELECT reading_id, entry_index, timestamp FROM {table_name(node.node_id)}"
                ):
                    try:
                        number, seq = line_of(reading_id, self.tag) if by_id else line_at(stamp)
                        if sensors[number].indexes[seq] == entry_index:
                            held[number][seq] += 1
                    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
                        continue
            except sqlite3.OperationalError:
                pass  # no such table: that peer holds nothing of it
            finally:
                db.close()
        return sum(
            1
            for n, s in sensors.items()
            for seq, index in enumerate(s.indexes)
            if index >= 0 and held[n][seq] < self.copies - 1
        )

    def _check_alive(self, node: Node) -> None:
        if not node.alive():
            raise BenchFailure(
                f"the node exited with {node.process.returncode}:\n" + node.log_tail()
            )
        if self.stream.lost_early:
            raise BenchFailure("connections dropped: " + "; ".join(self.stream.lost_early[:5]))

    def check(self, node: Node, result: dict) -> dict:
        """
        What the node stored, against what it acknowledged.
        """
        problems: list[str] = []

        def problem(text: str) -> None:
            if len(problems) < 20:
                problems.append(text)

        for text in self.stream.problems():
            problem(text)
        if result["status_accepted"] != result["sent_total"]:
            problem(
                f"/status counts {result['status_accepted']} accepted lines, "
                f"{result['sent_total']} were sent"
            )
        if result["status_rejected"]:
            problem(f"/status counts {result['status_rejected']} rejected lines")
        if result["peers"] and result["peers_caught_up_s"] is None:
            problem("the peers did not hold the node's whole log 60 s after its last answer")
        if result["err_copies"]:
            problem(f"{result['err_copies']} answers 'ERR copies' (--ack-copies {self.copies})")
        if result["ok_short_of_copies"]:
            problem(
                f"{result['ok_short_of_copies']} lines answered OK were held by fewer than "
                f"{self.copies - 1} peer(s) once every line was answered"
            )

        node_id = node.node_id
        table = table_name(node_id)
        db_path = node.data_dir / SELF_DB
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            rows, low, high, distinct, epochs = db.execute(
                f"SELECT count(*), min(entry_index), max(entry_index), "
                f"count(DISTINCT entry_index), count(DISTINCT epoch) FROM {table}"
            ).fetchone()
            if rows and not (low == 1 and high == rows and distinct == rows):
                problem(
                    f"entry_index is not 1..{rows} without gaps: min {low}, max {high}, "
                    f"{distinct} distinct"
                )
            if epochs > 1:
                problem(f"{epochs} epochs in one run")

            sensors = {s.number: s for s in self.sensors}
            # How often each line of each connection was stored.
            seen = {n: bytearray(s.sent) for n, s in sensors.items()}
            sensor_index_of: dict[int, int] = {}
            by_id = self.args.reading_ids
            unknown = 0
            cursor = db.execute(
                f"SELECT reading_id, entry_index, sensor_index, sensor_type, sensor_data, "
                f"timestamp FROM {table}"
            )
            for reading_id, entry_index, sensor_index, s_type, s_data, stamp in cursor:
                line = reading_id if by_id else stamp
                try:
                    number, seq = line_of(line, self.tag) if by_id else line_at(stamp)
                    sensor = sensors[number]
                    if not 0 <= seq < sensor.sent:
                        raise ValueError
                except (AttributeError, TypeError, ValueError, KeyError):
                    unknown += 1
                    if unknown <= 3:
                        problem(f"a row nobody sent: reading_id {reading_id!r}, timestamp {stamp!r}")
                    continue
                counts = seen[number]
                if counts[seq] < 255:
                    counts[seq] += 1
                if counts[seq] == 2:
                    problem(f"line {line} stored more than once")
                if seq < sensor.acked and sensor.indexes[seq] not in (entry_index, -1):
                    problem(
                        f"line {line} was answered OK {sensor.indexes[seq]} "
                        f"but stored at entry_index {entry_index}"
                    )
                sent = sensor.line(seq)[:-1].decode().split(",")
                if [s_type, s_data, stamp] + ([reading_id] if by_id else []) != sent:
                    problem(f"line {line} stored as {s_type!r}, {s_data!r}, {stamp!r}, {reading_id!r}")
                if sensor_index_of.setdefault(number, sensor_index) != sensor_index:
                    problem(f"connection {number} stored under two sensor_index values")
            if unknown:
                problem(f"{unknown} rows nobody sent")
            if len(set(sensor_index_of.values())) != len(sensor_index_of):
                problem("two connections stored under one sensor_index")

            missing = 0
            for number, sensor in sensors.items():
                counts = seen[number]
                acked = sensor.acked
                absent = acked - sum(1 for c in counts[:acked] if c)
                if absent:
                    missing += absent
                    problem(f"connection {number}: {absent} acknowledged readings not stored")
            stored_unacked = rows - unknown - sum(s.acked for s in sensors.values())
        finally:
            db.close()

        hmac_checked = 0
        if rows:
            key = node.key_file.read_bytes()
            hmac_checked, bad = check_hmac_sample(db_path, node_id, key, HMAC_SAMPLE)
            if bad:
                problem(f"{bad} of {hmac_checked} sampled HMACs do not verify")

        return {
            "ok": not problems,
            "rows": rows,
            "acknowledged": sum(s.acked for s in self.sensors),
            "missing": missing,
            "stored_unacknowledged": stored_unacked,
            "hmacs_checked": hmac_checked,
            "problems": problems,
        }


# -- reporting --------------------------------------------------------------

COLUMNS = [
    ("readings_per_s", "readings/s", "{:,.0f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("node_cpu_s", "node CPU s", "{:.1f}"),
    ("node_cpu_cores", "node cores", "{:.2f}"),
    ("node_main_thread_cores", "reactor thr", "{:.2f}"),
    ("node_other_threads_cores", "db thr", "{:.2f}"),
    ("node_peak_rss_mb", "peak RSS MB", "{:.1f}"),
    ("client_cpu_cores", "client cores", "{:.2f}"),
    ("peers_cpu_cores", "peer cores", "{:.2f}"),
    ("driver_cpu_cores", "driver cores", "{:.2f}"),
    ("machine_busy", "machine busy", "{:.0%}"),
    ("other_cpu_cores", "other cores", "{:.2f}"),
    ("calibration_fastest_us", "fast cpu us", "{:.2f}"),
    ("calibration_slowest_us", "slow cpu us", "{:.2f}"),
]


def print_runs(runs: list[dict], median: dict | None) -> None:
    head = ["run"] + [title for _, title, _ in COLUMNS] + ["check"]
    body = []
    for i, r in enumerate(runs, 1):
        body.append(
            [str(i)] + [fmt.format(r[key]) for key, _, fmt in COLUMNS]
            + ["ok" if r["check"]["ok"] else "FAILED"]
        )
    if median is not None and len(runs) > 1:
        body.append(["median"] + [fmt.format(median[key]) for key, _, fmt in COLUMNS] + [""])
    print_table(head, body, first_left=False)


def bottleneck(median: dict, client: str) -> str:
    client_cores = median["client_cpu_cores"]
    node_cores = median["node_cpu_cores"]
    busy = median["machine_busy"]
    if client_cores > 0.85:
        return (
            f"the client ({client}: it used most of a core): these figures understate the node"
        )
    if busy > 0.95:
        return "the machine's CPUs (all busy; node and client share them)"
    if node_cores > 0.8:
        return (
            "the node: one process near one core while the machine has idle CPU, "
            "i.e. its Python threads are serialised on the GIL"
        )
    return "the node, waiting (neither it nor the client is CPU-bound: disk or latency)"


def print_details(args, info: dict, runs: list[dict], median: dict) -> None:
    """
    The runs of one --ack-copies, their medians, and who was the bottleneck.
    """
    client = runs[0]["client"]
    print()
    print_runs(runs, median)
    if args.peers:
        print(
            f"\n{args.peers} peer(s) replicating live; each held the whole log "
            + ", ".join(
                "never (60 s)" if r["peers_caught_up_s"] is None else f"{r['peers_caught_up_s']:.2f} s"
                for r in runs
            )
            + " after the last answer"
        )
    if any(r["ack_copies"] > 1 or r["err_copies"] for r in runs):
        print(
            "answers 'ERR copies' (client / node count): "
            + ", ".join(f"{r['err_copies']} / {r['node_copies_timeouts']}" for r in runs)
        )
    busy = median["machine_busy"]
    print(
        f"\nnode {median['node_cpu_cores']:.2f} cores (reactor thread "
        f"{median['node_main_thread_cores']:.2f}, database thread(s) "
        f"{median['node_other_threads_cores']:.2f}); client ({client}) "
        f"{median['client_cpu_cores']:.2f} cores; "
        + (f"peers {median['peers_cpu_cores']:.2f} cores; " if args.peers else "")
        + f"this script {median['driver_cpu_cores']:.2f} cores; machine {busy:.0%} of "
        f"{info['cores']} cores busy ({median['machine_iowait']:.0%} iowait, "
        f"{median['machine_steal']:.0%} steal); "
        f"{median['other_cpu_cores']:.2f} cores used by other processes and the kernel"
    )
    if median["other_cpu_cores"] > 0.3:
        print("warning: other load on the machine during the runs; figures may be low")
    print(f"bottleneck: {bottleneck(median, client)}")
    if args.rate and median["window_held_back"]:
        print(
            f"the node fell behind --rate: the window held lines back "
            f"{median['window_held_back']:.0f} times (connection ticks)"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Ingestion benchmark of one p2pstore node (see bench/README.md)."
    )
    parser.add_argument("--connections", type=int, default=100, help="sensor connections (100)")
    parser.add_argument("--window", type=int, default=64,
                        help="unanswered lines per connection (64)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before measuring (3)")
    parser.add_argument("--rate", type=float, default=None, metavar="READINGS_PER_S",
                        help="send at this total rate instead of as fast as answers allow "
                             "(the window still caps each connection's unanswered lines): "
                             "the answer latency at that load")
    parser.add_argument("--tick", type=float, default=0.01, metavar="SECONDS",
                        help="with --rate, the lines due are sent every SECONDS (0.01)")
    parser.add_argument("--peers", type=int, default=0,
                        help="also run this many nodes that dial the measured one and replicate "
                             "its log while it ingests (0)")
    parser.add_argument("--reading-ids", action="store_true",
                        help="end each line with a reading id, as the simulator does; the node "
                             "then looks each one up to answer a resent reading with its index")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the node's --sync (full)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs, each on a fresh node; medians are reported (1)")
    parser.add_argument("--max-readings", type=int, default=20_000_000,
                        help="stop sending after this many lines in a run (20,000,000)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 connections, 1 s warm-up, 4 s measured")
    parser.add_argument("--client", choices=["auto", "c", "python"], default="auto",
                        help="who sends the lines: the compiled bench/loadclient.c (c), this "
                             "Python process (python), or c if it builds (auto, the default)")
    parser.add_argument("--ack-copies", type=copies_list, default=[1], metavar="LIST",
                        help="the measured node's --ack-copies, each K of the comma-separated "
                             "LIST in turn in every repeat (1,2: K=1 run 1, K=2 run 1, K=1 run 2, "
                             "...), each run with max(--peers, K - 1) peers for every K (1)")
    parser.add_argument("--pid-file", metavar="PATH",
                        help="write each node's pid here once it runs (to attach a profiler)")
    add_node_options(parser, "the node's")
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.warmup, args.duration, args.repeat = 10, 1.0, 4.0, 1
    for name in ("connections", "window", "repeat", "max_readings"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    if args.connections > SPREAD:
        parser.error(f"--connections: at most {SPREAD}")
    # The same peers at every K: the only difference is the option.
    args.peers = max(args.peers, max(args.ack_copies) - 1)
    return args


def copies_list(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of distinct numbers of copies, e.g. 1,2")
    return ks


def main(argv=None) -> int:
    args = parse_args(argv)
    # 1000 connections need 1000 descriptors here.
    raise_fd_limit(args.connections + 100)
    apply_node_options(args)
    choose_client(args)

    info = machine()
    print(machine_line(info))
    print(
        f"ingest: {args.connections} connections, "
        + (f"{args.rate:,.0f} readings/s paced, " if args.rate else "")
        + f"window {args.window} ({args.connections * args.window} lines in flight at most), "
        f"{'lines with reading ids' if args.reading_ids else 'seed lines'}, --sync {args.sync}, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured, {args.repeat} run(s)",
        flush=True,
    )
    by_copies: dict[int, list] = {k: [] for k in args.ack_copies}
    several = args.ack_copies != [1]
    if several:
        print(f"--ack-copies {','.join(map(str, args.ack_copies))}, interleaved, each with "
              f"{args.peers} peer(s) replicating live")
    # Nothing may outlive this: warm-up, period, drain, stop and check of
    # every run, with room for slow starts.
    budget = args.repeat * len(args.ack_copies) * (args.warmup + args.duration + 300)

    async def all_runs(reactor):
        for number in range(1, args.repeat + 1):
            for copies in args.ack_copies:
                result = await Run(reactor, args, number, copies).execute()
                by_copies[copies].append(result)
                check = result["check"]
                print(
                    f"  run {number}{f' (--ack-copies {copies})' if several else ''}: "
                    f"{result['readings_per_s']:,.0f} readings/s, p50 {result['latency_p50_ms']:.1f} "
                    f"p99 {result['latency_p99_ms']:.1f} ms, node {result['node_cpu_cores']:.2f} cores, "
                    f"client {result['client_cpu_cores']:.2f} cores, calibration "
                    f"{result['calibration_fastest_us']:.2f}-{result['calibration_slowest_us']:.2f} us; "
                    f"{result['err_copies']} ERR copies; check "
                    f"{'ok' if check['ok'] else 'FAILED'} ({check['rows']:,} rows, "
                    f"{check['acknowledged']:,} acknowledged, {check['hmacs_checked']} HMACs)",
                    flush=True,
                )
                print(f"    the node imported p2pstore from {result['node_code']}")
                for p in check["problems"]:
                    print(f"    {p}")

    # The reactor, the watchdog, and every node killed however it ends.
    error = run(all_runs, budget)

    runs = [r for k in args.ack_copies for r in by_copies[k]]
    median_of = {k: medians(rs) for k, rs in by_copies.items() if rs}
    for copies, median in median_of.items():
        if several:
            print(f"\n--ack-copies {copies}:")
        print_details(args, info, by_copies[copies], median)
    first = args.ack_copies[0]
    ratio = {
        k: round(m["readings_per_s"] / median_of[first]["readings_per_s"], 3)
        for k, m in median_of.items() if first in median_of and median_of[first]["readings_per_s"]
    }
    if len(median_of) > 1:
        print(f"\nmedians of {args.repeat} run(s) each, interleaved:")
        print_table(
            ["--ack-copies", "readings/s", "p50 ms", "p99 ms", "node cores", "client cores",
             "peer cores", "ERR copies", f"rate / K={first}"],
            [
                [str(k), f"{m['readings_per_s']:,.0f}", f"{m['latency_p50_ms']:.1f}",
                 f"{m['latency_p99_ms']:.1f}", f"{m['node_cpu_cores']:.2f}",
                 f"{m['client_cpu_cores']:.2f}", f"{m['peers_cpu_cores']:.2f}",
                 str(sum(r["err_copies"] for r in by_copies[k])),
                 f"{ratio[k]:.2f}" if k in ratio else "-"]
                for k, m in median_of.items()
            ],
            first_left=False,
        )
        if first == 1 and 2 in ratio:
            print(
                f"rate at K=2 / K=1: {ratio[2]:.2f} (target: at least 0.8); answer p50 at K=2: "
                f"{median_of[2]['latency_p50_ms']:.1f} ms"
                + (" (target for one reading at a time: under 10 ms)"
                   if args.connections == 1 and args.window == 1 else "")
            )
    ok = error is None and bool(runs) and all(r["check"]["ok"] for r in runs)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": "ingest",
                    "machine": info,
                    "config": {
                        k: getattr(args, k)
                        for k in ("connections", "window", "rate", "tick", "reading_ids", "peers",
                                  "ack_copies", "duration", "warmup", "sync", "repeat",
                                  "max_readings", "quick", "node_code", "client")
                    },
                    # The first K's (compare.py reads it); every K's beside.
                    "median": median_of.get(first),
                    "median_by_ack_copies": {str(k): m for k, m in median_of.items()},
                    "rate_ratio_by_ack_copies": {str(k): r for k, r in ratio.items()},
                    "runs": runs,
                    "ok": ok,
                    "error": error,
                },
                indent=2,
            )
            + "\n"
        )
    if error:
        print(f"\nerror: {error}")
    print("\nFAILED" if not ok else "\nOK: every acknowledged reading is stored once, gapless")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
