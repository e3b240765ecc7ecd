#!/usr/bin/env python3
"""
Recovery benchmark: how long a node that lost its own database takes to
hold all its readings again.

Real ``twistd -n --pidfile= p2pstore`` processes on free loopback ports, in
temporary directories, sharing a 32-byte --secret-file:

1. Node B starts empty; node A starts with ``--peers B`` (so that A, on its
   restart, dials B at once rather than waiting for B's redial backoff).
   A is pre-loaded with N readings (default 1,000,000) written directly into
   its own database while it is stopped, with the schema, canonical encoding
   and HMAC that p2pstore.records and p2pstore.storage produce, and B
   replicates them all (its records/s is reported too).
2. A is stopped cleanly (SIGTERM), a SHA-256 over every row of its log is
   taken, and ``self_sensor_data.db`` (with -wal and -shm) is deleted; its
   node.id, key and peer database stay, as after a lost disk.
3. A is started again. Measured from the spawn of the process: when
   ``/status`` first answers, when A's database holds all N old readings
   again (polled every 20 ms from the file, read-only), and when ``/status``
   says ``Running`` with N readings of its own: the recovery time. Also A's
   peak RSS and the CPU of A, B and the rest of the machine meanwhile.
4. Check: A's old epoch is identical row for row to what it held before
   (count and SHA-256), A took a new epoch, it reports Running with no
   recovery left, nothing was rejected or in conflict, and both nodes stop
   cleanly. Otherwise FAILED and a non-zero exit.

    python bench/recover.py --quick              # 100,000 readings, ~30 s
    python bench/recover.py                      # 1,000,000 readings
    python bench/recover.py --profile /tmp/prof  # py-spy of A and B during recovery
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import BenchFailure, sleep
from fill import fill_self_db
from harness import Bench, add_node_options, apply_node_options, conclude, run_bench
from logread import Timeline, read_epoch, table_digest
from nodes import Node, make_secret, origin_count
from procfs import LoadMeter, RssWatch, memory_mb, outside_load, raise_fd_limit
from pyspy import finish_profiles, start_profiler
from report import fmt, load_line, machine, machine_line, print_table

TARGET_SECONDS = 30.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Recovery benchmark (see bench/README.md).")
    parser.add_argument("--readings", type=int, default=1_000_000,
                        help="A's own readings, lost and recovered (1,000,000)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the nodes' --sync (full)")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy record A and B during the recovery into DIR (raw format)")
    parser.add_argument("--profile-seconds", type=float, default=10.0,
                        help="how long each profile runs (10)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 readings")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.readings = min(args.readings, 100_000)
        args.profile_seconds = min(args.profile_seconds, 3.0)
    if args.readings < 1:
        parser.error("--readings must be at least 1")
    return args


class Recover(Bench):
    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        secret = make_secret(self.root / "cluster.key")
        n = args.readings
        slow = max(120.0, n / 2000)

        b = Node(self.root / "b", args.sync, "B", secret)
        b.start()
        await http.wait_running(b)
        a = Node(self.root / "a", args.sync, "A", secret, peers=[b.peer_address])
        a.start()
        await http.wait_running(a)
        origin = a.node_id
        await a.stop(reactor)
        filled = await fill_self_db(reactor, a, n, "own")
        result["fill"] = filled
        old_epoch = filled["epoch"]
        timeline_b = Timeline(reactor, b, origin, old_epoch, 0.02)
        a.start()
        status = await http.wait_running(a, slow)
        t_a = time.perf_counter()
        if origin_count(status, origin) != n:
            raise BenchFailure(f"A reports {origin_count(status, origin)} readings, not {n}")
        timeline_b.start()
        deadline = time.monotonic() + slow
        while timeline_b.last < n:
            b.check_alive()
            a.check_alive()
            if time.monotonic() > deadline:
                raise BenchFailure(f"B held {timeline_b.last:,} of {n:,} after {slow:.0f} s")
            await sleep(reactor, 0.02)
        await timeline_b.stop()
        t_b = timeline_b.when(n)
        result["replication"] = {
            "records_per_s": round(n / (t_b - t_a)),
            "seconds": round(t_b - t_a, 3),
        }
        print(f"A filled with {n:,} readings in {filled['seconds']:.1f} s ({filled['per_s']:,} rows/s, "
              f"through p2pstore.storage); B replicated them in "
              f"{t_b - t_a:.2f} s ({result['replication']['records_per_s']:,} records/s)", flush=True)

        # Lose A's own database.
        await a.stop(reactor)
        before = table_digest(a.db_path(origin), origin)
        if before["rows"] != n:
            raise BenchFailure(f"A held {before['rows']} rows before the loss, not {n}")
        copy = table_digest(b.db_path(origin), origin)
        if copy != before:
            self.problem(f"B's copy differs from A's log before the loss: {copy} vs {before}")
        a.delete_self_db()

        # Restart it and time the recovery.
        timeline_a = Timeline(reactor, a, origin, old_epoch, 0.02)
        a.start()
        t0 = a.started_at
        meter = LoadMeter([a, b])
        watch = RssWatch(reactor, [a, b], 0.02)
        timeline_a.start()
        profilers = []
        if args.profile:
            out = Path(args.profile)
            out.mkdir(parents=True, exist_ok=True)
            for node in (a, b):
                path = out / f"{node.name}-recovery.txt"
                p = start_profiler(node.pid, args.profile_seconds, path)
                if p is not None:
                    profilers.append((node.name, p, path))
        marks: dict = {}
        states = []
        deadline = time.monotonic() + slow
        while True:
            a.check_alive()
            b.check_alive()
            try:
                status = await http.status(a, timeout=5)
            except BenchFailure:
                raise
            except Exception:
                status = None
            now = time.perf_counter()
            if status is not None:
                marks.setdefault("status_answers", now)
                state = status.get("state")
                if not states or states[-1][0] != state:
                    states.append((state, round(now - t0, 3)))
                if state == "Syncing":
                    marks.setdefault("syncing", now)
                if state == "Running" and origin_count(status, origin) >= n:
                    marks["running"] = now
                    break
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"A was not Running with {n:,} readings {slow:.0f} s after its restart "
                    f"(states {states}, last status {status})\n{a.log_tail()}"
                )
            await sleep(reactor, 0.02)
        cpu = meter.stop()
        rss = watch.stop()
        await timeline_a.stop()
        t_rows = timeline_a.when(n)
        a_hwm = memory_mb(a.pid)[1]
        seconds = marks["running"] - t0
        recovery = {
            "readings": n,
            "seconds_to_running": round(seconds, 3),
            "seconds_to_status": round(marks["status_answers"] - t0, 3),
            "seconds_to_all_rows": round(t_rows - t0, 3) if t_rows else None,
            "first_row_s": round(timeline_a.times[0] - t0, 3) if len(timeline_a.times) else None,
            "records_per_s": round(n / seconds),
            "records_per_s_after_first_row": (
                round((n - timeline_a.positions[0]) / (t_rows - timeline_a.times[0]))
                if t_rows and len(timeline_a.times) and t_rows > timeline_a.times[0] else None
            ),
            "states": states,
            "a_peak_rss_mb": round(a_hwm, 1),
            "a_max_polled_rss_mb": rss["A"],
            "b_max_polled_rss_mb": rss["B"],
            "a_rss_timeline": watch.samples["A"],
            "cpu": cpu,
        }
        result["recovery"] = recovery
        print(f"A recovered {n:,} readings: Running {seconds:.2f} s after its restart "
              f"({recovery['records_per_s']:,} records/s); states {states}", flush=True)
        print("  " + load_line(cpu, "recovery "), flush=True)

        if profilers:
            result["profiles"] = await finish_profiles(
                reactor, profilers, args.profile_seconds, "recovery"
            )

        # Check what came back.
        after = table_digest(a.db_path(origin), origin, old_epoch)
        result["check"] = {"before": before, "after": after, "identical": after == before}
        if after != before:
            self.problem(f"A's old epoch after recovery differs: {after} vs {before} before the loss")
        new_epoch = read_epoch(a)
        if new_epoch == old_epoch:
            self.problem("A kept its old epoch after losing its database")
        status = await http.status(a)
        if "recovery" in status:
            self.problem(f"A is Running but still reports recovery {status['recovery']}")
        for node in (a, b):
            totals = (await http.status(node))["replication"]
            if totals["rejected"] or totals["conflicts"] or totals["link_errors"]:
                self.problem(f"{node.name} counts {totals}")
        await a.stop(reactor)
        await b.stop(reactor)
        result["problems"] = self.problems
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    raise_fd_limit(1024)
    before = outside_load(1.0)
    info = machine()
    print(machine_line(info))
    print(f"recover: {args.readings:,} readings of A's own, lost and fetched back from B; "
          f"--sync {args.sync}", flush=True)
    budget = 600 + args.readings / 500
    error, result, problems = run_bench("recover", Recover, args, budget)
    recovery = result.get("recovery")
    if recovery:
        rows = [
            ["recovery: restart → Running with all", fmt(recovery["seconds_to_running"], "{:.2f}"),
             "s", f"< {TARGET_SECONDS:g}",
             "meets" if recovery["seconds_to_running"] < TARGET_SECONDS else "ABOVE target"],
            ["  restart → /status answers", fmt(recovery["seconds_to_status"], "{:.2f}"), "s", "", ""],
            ["  restart → first old row back", fmt(recovery["first_row_s"], "{:.2f}"), "s", "", ""],
            ["  restart → all rows in the file", fmt(recovery["seconds_to_all_rows"], "{:.2f}"), "s", "", ""],
            ["  records/s over the whole", fmt(recovery["records_per_s"], "{:,.0f}"), "records/s", "", ""],
            ["  records/s once rows flow", fmt(recovery["records_per_s_after_first_row"], "{:,.0f}"),
             "records/s", "", ""],
            ["A peak RSS", fmt(recovery["a_peak_rss_mb"]), "MB", "", ""],
            ["B max polled RSS", fmt(recovery["b_max_polled_rss_mb"]), "MB", "", ""],
            ["fill of A (through p2pstore.storage)", fmt(result["fill"]["per_s"], "{:,.0f}"),
             "rows/s", "", ""],
            ["first replication A→B", fmt(result["replication"]["records_per_s"], "{:,.0f}"),
             "records/s", "", ""],
        ]
        print()
        print_table(["figure", "value", "unit", "target", ""], rows)
        print("\n" + load_line(recovery["cpu"], "during recovery, "))
        print(f"outside load before the run: {before['busy_cores']:.2f} busy cores "
              f"(load average {before['loadavg_1m']:.2f})")
        if before["busy_cores"] > 0.3 or recovery["cpu"]["other_cpu_cores"] > 0.3:
            print("warning: other load on the machine during the run; figures may be low")
    ok = error is None and not problems and recovery is not None
    return conclude(args, {
        "benchmark": "recover", "machine": info, "outside_load_before": before,
        "target_seconds": TARGET_SECONDS,
        "target_met": recovery["seconds_to_running"] < TARGET_SECONDS if recovery else None,
        "result": result,
    }, problems, error, ok, "A holds every one of its readings again, identical")


if __name__ == "__main__":
    sys.exit(main())
