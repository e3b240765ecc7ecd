#!/usr/bin/env python3
"""
Scrub benchmark: what checking stored records again costs a node, and how
long its start takes on a large database.

One real ``twistd -n --pidfile= p2pstore`` node, its own database filled
with N readings (default 1,000,000) through p2pstore.storage while it is
stopped (bench/fill.py). Then, for each ``--rates`` value (records a
second; 0 first, as the baseline):

1. The node is started with ``--scrub-rate R``; the time from the spawn to
   ``/status`` saying Running is the start time (SQLite's quick_check of
   both files, the schema, the check of the newest 1,000 rows of each
   table).
2. After ``--settle`` seconds, its CPU is measured over ``--duration``
   seconds with nothing else to do, and how many records its scrub
   checked meanwhile (``/status`` ``scrub.checked``).
3. It is stopped.

The cost of the default rate is taken from the difference between the
highest rate and 0, per record (the default's own CPU is too small to
measure beside the idle node's); the time a pass of 1,000,000 records
takes at the default rate follows. Check: each rate checked within 25% of
R records a second, and nothing failed its check.

    python bench/scrub.py --quick      # 100,000 readings, short windows
    python bench/scrub.py              # 1,000,000 readings
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import sleep
from fill import fill_self_db
from harness import Bench, add_node_options, apply_node_options, conclude, run_bench
from nodes import Node, make_secret
from procfs import LoadMeter, outside_load
from report import fmt, machine, machine_line, print_table

DEFAULT_RATE = 50
DAY = 86400.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Scrub benchmark (see bench/README.md).")
    parser.add_argument("--readings", type=int, default=1_000_000, help="the node's readings (1,000,000)")
    parser.add_argument("--rates", default="0,50,2000", help="scrub rates to run, records/s (0,50,2000)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of CPU measured per rate (30)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after Running before measuring (3)")
    parser.add_argument("--repeat", type=int, default=3, help="starts per rate; medians are quoted (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 readings, 8 s windows, once")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.readings = min(args.readings, 100_000)
        args.duration = min(args.duration, 8.0)
        args.repeat = 1
    args.rate_list = sorted({int(r) for r in args.rates.split(",")} | {0})
    return args


class Scrub(Bench):
    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        secret = make_secret(self.root / "cluster.key")
        node = Node(self.root / "a", "full", "A", secret)
        node.start()
        await http.wait_running(node)
        await node.stop(reactor)
        filled = await fill_self_db(reactor, node, args.readings, "scrub")
        result["fill"] = filled
        print(f"filled with {args.readings:,} readings in {filled['seconds']:.1f} s", flush=True)
        db = node.data_dir / "self_sensor_data.db"
        t0 = time.perf_counter()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        conn.execute("PRAGMA quick_check").fetchall()
        conn.close()
        result["quick_check_s"] = round(time.perf_counter() - t0, 3)
        result["file_mb"] = round(db.stat().st_size / 1e6, 1)
        slow = max(60.0, args.readings / 5000)
        runs: dict = {}
        for rate in args.rate_list:
            for run in range(args.repeat):
                node.extra_args = ["--scrub-rate", str(rate)]
                node.start()
                await http.wait_running(node, slow)
                started = time.perf_counter() - node.started_at
                await sleep(reactor, args.settle)
                before = (await http.status(node))["scrub"]["checked"]
                meter = LoadMeter([node])
                await sleep(reactor, args.duration)
                cpu = meter.stop()
                status = await http.status(node)
                checked = status["scrub"]["checked"] - before
                if status["scrub"]["found"]:
                    self.problem(f"rate {rate}: the scrub found {status['scrub']['found']} bad records")
                per_s = checked / cpu["period_s"]
                if rate and not 0.75 * rate <= per_s <= 1.25 * rate:
                    self.problem(f"rate {rate}: checked {per_s:.0f} records/s")
                runs.setdefault(rate, []).append({
                    "start_s": round(started, 3), "cores": cpu["node_cores"]["A"],
                    "checked_per_s": round(per_s, 1), "cpu": cpu,
                })
                print(f"  --scrub-rate {rate}: Running {started:.2f} s after the spawn; "
                      f"{cpu['node_cores']['A']:.4f} cores, {per_s:.0f} records/s checked "
                      f"(driver {cpu['driver_cores']:.3f} cores, others {cpu['other_cpu_cores']:.3f})",
                      flush=True)
                await node.stop(reactor)
        result["runs"] = {str(k): v for k, v in runs.items()}
        med = {rate: {key: statistics.median(r[key] for r in rs) for key in ("start_s", "cores", "checked_per_s")}
               for rate, rs in runs.items()}
        result["medians"] = {str(k): v for k, v in med.items()}
        top = max(args.rate_list)
        if top:
            per_record = max(med[top]["cores"] - med[0]["cores"], 0.0) / med[top]["checked_per_s"]
            result["core_seconds_per_record"] = per_record
            result["default_rate_cores"] = per_record * DEFAULT_RATE
            result["pass_of_1m_at_default_h"] = round(1_000_000 / DEFAULT_RATE / 3600, 2)
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    before = outside_load(1.0)
    info = machine()
    print(machine_line(info))
    print(f"scrub: {args.readings:,} readings; rates {args.rate_list}; {args.repeat} start(s) each", flush=True)
    budget = 300 + args.readings / 1000 + len(args.rate_list) * args.repeat * (args.duration + 60)
    error, result, problems = run_bench("scrub", Scrub, args, budget)
    med = result.get("medians")
    if med:
        rows = [["quick_check of the own file (%s MB), in this process" % result["file_mb"],
                 fmt(result["quick_check_s"], "{:.2f}"), "s"]]
        for rate, m in sorted(med.items(), key=lambda kv: int(kv[0])):
            rows.append([f"--scrub-rate {rate}: spawn → Running", fmt(m["start_s"], "{:.2f}"), "s"])
            rows.append([f"--scrub-rate {rate}: node CPU", fmt(m["cores"], "{:.4f}"), "cores"])
        if "default_rate_cores" in result:
            rows.append(["CPU per record checked", fmt(result["core_seconds_per_record"] * 1e6, "{:.1f}"), "µs"])
            rows.append([f"CPU at the default {DEFAULT_RATE}/s (from the top rate)",
                         fmt(result["default_rate_cores"] * 100, "{:.3f}"), "% of a core"])
            rows.append(["a pass of 1,000,000 at the default", fmt(result["pass_of_1m_at_default_h"], "{:.1f}"), "h"])
        print()
        print_table(["figure", "value", "unit"], rows)
        print(f"outside load before the run: {before['busy_cores']:.2f} busy cores")
    ok = error is None and not problems and bool(med)
    return conclude(args, {"benchmark": "scrub", "machine": info, "outside_load_before": before,
                           "result": result}, problems, error, ok,
                    "every rate checked what it should, nothing failed its check")


if __name__ == "__main__":
    sys.exit(main())
