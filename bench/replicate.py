#!/usr/bin/env python3
"""
Replication benchmark: how fast an empty node catches up with a full one,
what that costs in memory and in the full node's answer latency, and how
far behind a live stream the copies are, directly and through one hop.

Real ``twistd -n --pidfile= p2pstore`` processes on free loopback ports, in
temporary directories, sharing a 32-byte --secret-file:

1. Node A is pre-loaded with N readings (default 1,000,000). ``--fill
   direct`` (the default) writes them into A's own database while A is
   stopped, with the schema, canonical encoding and HMAC that
   p2pstore.records and p2pstore.storage produce (seconds, not a minute);
   ``--fill sensors`` sends them through A's sensor port instead, pipelined
   over 20 connections. A is then (re)started and must report N readings.
2. Catch-up: a light paced sensor load runs on A (--load-rate readings/s;
   its answer latency is measured first with A alone, then while A serves
   the catch-up). Node B starts empty with ``--peers A``. Measured: records/s
   from B's start (state Running) until it holds A's first N records, and
   from the first record it stored; B's RSS, polled every 20 ms, and its
   VmHWM; the CPU of A, B, this driver and everything else on the machine.
   Then B must hold a copy of A's log identical row for row (count and a
   SHA-256 over every row of both tables), with nothing rejected.
3. Chain: node C starts empty with ``--peers B`` and catches up through B
   (records/s reported); its copy must be identical too.
4. Live lag: paced at --live-rate (2,000) readings/s into A over 10
   connections for --live-duration seconds after a warm-up, the delay from
   the moment A's ``OK <entry_index>`` reaches this driver to the moment
   the record is readable at B and at C (through B): p50/p99/max. "Readable"
   is polled every 2 ms from the node's database file, read-only
   (``log_positions``, moved in the same transaction as the rows), or with
   ``--probe http`` from ``GET /readings?origin=A&limit=1`` every 5 ms.
   Afterwards all three copies must be identical again.

Every node must stop cleanly at the end. A wrong copy, a rejected or
conflicting record, a reading never replicated or an unclean stop prints
FAILED and exits non-zero; a figure short of its target only says so.

    python bench/replicate.py --quick              # 100,000 readings, ~40 s
    python bench/replicate.py                      # 1,000,000 readings
    python bench/replicate.py --profile /tmp/prof  # py-spy of A and B during catch-up
    python bench/replicate.py --json /tmp/replicate.json
"""

from __future__ import annotations

import argparse
import sys
import time
from array import array
from pathlib import Path

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import BenchFailure, sleep
from fill import fill_self_db
from harness import Bench, add_node_options, apply_node_options, conclude, run_bench
from load import Stream
from logread import Timeline, check_hmac_sample, read_epoch, table_digest
from nodes import Node, make_secret, origin_count
from procfs import LoadMeter, RssWatch, memory_mb, outside_load, raise_fd_limit
from pyspy import finish_profiles, start_profiler
from report import fmt, load_line, machine, machine_line, ms_summary, print_table

TARGETS = {
    "catchup_records_per_s": 50_000,
    "b_peak_rss_mb": 150,
    "lag_b_p99_ms": 100,
    "lag_c_p99_ms": 200,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Replication benchmark (see bench/README.md).")
    parser.add_argument("--readings", type=int, default=1_000_000,
                        help="readings pre-loaded into A (1,000,000)")
    parser.add_argument("--fill", choices=["direct", "sensors"], default="direct",
                        help="write A's database directly while it is stopped (direct), "
                             "or send through its sensor port (sensors)")
    parser.add_argument("--load-rate", type=float, default=500.0,
                        help="paced readings/s into A during catch-up, for its latency (500)")
    parser.add_argument("--load-connections", type=int, default=5,
                        help="sensor connections of that load (5)")
    parser.add_argument("--baseline", type=float, default=3.0,
                        help="seconds of that load before B starts (3)")
    parser.add_argument("--no-chain", action="store_true", help="no node C")
    parser.add_argument("--live-rate", type=float, default=2000.0,
                        help="paced readings/s into A for the live lag (2,000)")
    parser.add_argument("--live-connections", type=int, default=10,
                        help="sensor connections of the live load (10)")
    parser.add_argument("--live-duration", type=float, default=20.0,
                        help="measured seconds of live load (20)")
    parser.add_argument("--live-warmup", type=float, default=2.0,
                        help="seconds of live load before measuring (2)")
    parser.add_argument("--probe", choices=["db", "http"], default="db",
                        help="how 'readable at B' is seen: B's database file every 2 ms "
                             "(db), or GET /readings every 5 ms (http)")
    parser.add_argument("--probe-interval", type=float, default=None,
                        help="seconds between probes (0.002 db, 0.005 http)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the nodes' --sync (full)")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy record A and B during catch-up into DIR (raw format)")
    parser.add_argument("--profile-seconds", type=float, default=10.0,
                        help="how long each profile runs (10; cut to the catch-up's length)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100,000 readings, 1 s baseline, 4 s live")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.readings = min(args.readings, 100_000)
        args.baseline, args.live_warmup, args.live_duration = 1.0, 1.0, 4.0
        args.profile_seconds = min(args.profile_seconds, 3.0)
    if args.readings < 1 or args.live_rate <= 0 or args.load_rate < 0:
        parser.error("--readings and --live-rate must be positive, --load-rate not negative")
    if args.load_connections < 1 or args.live_connections < 1:
        parser.error("connections must be at least 1")
    if args.probe_interval is None:
        args.probe_interval = 0.002 if args.probe == "db" else 0.005
    return args


class Replicate(Bench):
    def __init__(self, reactor, args, root: Path):
        super().__init__(reactor, args, root)
        self.secret = root / "cluster.key"

    async def wait_position(self, timeline: Timeline, node: Node, target: int, timeout: float,
                            what: str) -> float:
        deadline = time.monotonic() + timeout
        while timeline.last < target:
            node.check_alive()
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"{node.name} held {timeline.last:,} of {target:,} records of A after "
                    f"{timeout:.0f} s ({what})\n{node.log_tail()}"
                )
            await sleep(self.reactor, 0.02)
        return timeline.when(target)

    def compare(self, label: str, a_digest: dict, node: Node, origin: str) -> dict:
        copy = table_digest(node.db_path(origin), origin)
        same = copy == a_digest
        if not same:
            self.problem(
                f"{label}: {node.name}'s copy of A differs: {copy['rows']:,} rows, "
                f"sha256 {copy['sha256']}, A has {a_digest['rows']:,}, {a_digest['sha256']}"
            )
        return {"rows": copy["rows"], "identical": same}

    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        make_secret(self.secret)
        key = self.secret.read_bytes()
        n = args.readings
        slow = max(120.0, n / 2000)  # a bound on anything that scales with N

        # -- A, pre-loaded --------------------------------------------------
        a = Node(self.root / "a", args.sync, "A", self.secret)
        a.start()
        await http.wait_running(a)
        origin = a.node_id
        t0 = time.perf_counter()
        if args.fill == "direct":
            await a.stop(reactor)
            filled = await fill_self_db(reactor, a, n, "pre")
            a.start()
            status = await http.wait_running(a, slow)
        else:
            fill = Stream(reactor, a, 20, "pre")
            await fill.connect()
            fill.pipeline(64, n)
            await fill.drain(slow, stop=False)
            fill.close()
            self.problems.extend(fill.problems())
            filled = {"rows": fill.acked, "seconds": round(time.perf_counter() - t0, 2)}
            status = await http.status(a)
        epoch = read_epoch(a)
        filled.update(how=args.fill, per_s=round(n / max(filled["seconds"], 1e-9)))
        result["fill"] = filled
        print(f"A holds {origin_count(status, origin):,} readings ({args.fill} fill in "
              f"{filled['seconds']:.1f} s: {filled['per_s']:,} rows/s)", flush=True)
        if origin_count(status, origin) != n:
            raise BenchFailure(f"A reports {origin_count(status, origin)} readings, not {n}")
        checked, bad = check_hmac_sample(a.db_path(origin), origin, key)
        if bad:
            self.problem(f"{bad} of {checked} sampled HMACs in A's database do not verify")

        # -- catch-up ---------------------------------------------------------
        load = Stream(reactor, a, args.load_connections, "load")
        await load.connect()
        if args.load_rate > 0:
            load.pace(args.load_rate)
        # A's first second after a restart onto a big database is slower
        # (a stall of ~170 ms was seen): not part of the baseline.
        await sleep(reactor, 1.0)
        load.recording = True
        await sleep(reactor, args.baseline)
        baseline = ms_summary(load.latencies)
        load.latencies = array("d")

        b = Node(self.root / "b", args.sync, "B", self.secret, peers=[a.peer_address])
        timeline_b = Timeline(reactor, b, origin, epoch, 0.02)
        b.start()
        watch = RssWatch(reactor, [a, b], 0.02)
        await http.wait_running(b)
        meter = LoadMeter([a, b])
        t_running = time.perf_counter()
        timeline_b.start()
        profilers = []
        if args.profile:
            out = Path(args.profile)
            out.mkdir(parents=True, exist_ok=True)
            seconds = args.profile_seconds
            for node in (a, b):
                p = start_profiler(node.pid, seconds, out / f"{node.name}-catchup.txt")
                if p is not None:
                    profilers.append((node.name, p, out / f"{node.name}-catchup.txt"))
        t_done = await self.wait_position(timeline_b, b, n, slow, "catch-up")
        cpu = meter.stop()
        during = ms_summary(load.latencies)
        load.latencies = array("d")
        rss_max = watch.stop()
        _, b_hwm = memory_mb(b.pid)
        _, a_hwm = memory_mb(a.pid)
        t_first = timeline_b.times[0] if len(timeline_b.times) else t_done
        first_pos = timeline_b.positions[0] if len(timeline_b.positions) else 0
        catchup = {
            "records": n,
            "seconds_from_running": round(t_done - t_running, 3),
            "seconds_from_spawn": round(t_done - b.started_at, 3),
            "records_per_s": round(n / (t_done - t_running)),
            "records_per_s_after_first": round((n - first_pos) / max(t_done - t_first, 1e-9)),
            "b_peak_rss_mb": round(b_hwm, 1),
            "b_max_polled_rss_mb": rss_max["B"],
            "a_peak_rss_mb": round(a_hwm, 1),
            "b_rss_timeline": watch.samples["B"],
            "a_latency_baseline": baseline,
            "a_latency_during": during,
            "load_rate": args.load_rate,
            "cpu": cpu,
        }
        result["catchup"] = catchup
        print(
            f"B caught up {n:,} records in {t_done - t_running:.2f} s from Running: "
            f"{catchup['records_per_s']:,} records/s; B peak RSS {b_hwm:.1f} MB; A p99 "
            f"{fmt(during['p99_ms'])} ms during (baseline {fmt(baseline['p99_ms'])} ms)",
            flush=True,
        )
        print("  " + load_line(cpu, "catch-up "), flush=True)
        if profilers:
            result["profiles"] = await finish_profiles(
                reactor, profilers, args.profile_seconds, "catch-up"
            )

        # Stop the light load; B must then hold A's whole log, identical.
        await load.drain(60)
        self.problems.extend(load.problems())
        status_a = await http.status(a)
        target = status_a["origins"][origin]["last_index"]
        await self.wait_position(timeline_b, b, target, 60, "after the load stopped")
        await timeline_b.stop()
        a_digest = table_digest(a.db_path(origin), origin)
        if a_digest["rows"] != target:
            self.problem(f"A holds {a_digest['rows']} rows but reports {target}")
        checks = {"after_catchup_b": self.compare("after catch-up", a_digest, b, origin)}

        # -- C through B ---------------------------------------------------------
        nodes = [a, b]
        c = None
        if not args.no_chain:
            c = Node(self.root / "c", args.sync, "C", self.secret, peers=[b.peer_address])
            timeline_c = Timeline(reactor, c, origin, epoch, 0.02)
            c.start()
            await http.wait_running(c)
            t_c = time.perf_counter()
            timeline_c.start()
            t_c_done = await self.wait_position(timeline_c, c, target, slow, "catch-up through B")
            await timeline_c.stop()
            result["chain_catchup"] = {
                "records": target,
                "seconds_from_running": round(t_c_done - t_c, 3),
                "records_per_s": round(target / (t_c_done - t_c)),
                "c_peak_rss_mb": round(memory_mb(c.pid)[1], 1),
            }
            print(f"C caught up through B: {result['chain_catchup']['records_per_s']:,} records/s",
                  flush=True)
            checks["after_catchup_c"] = self.compare("after catch-up through B", a_digest, c, origin)
            nodes.append(c)

        # -- live lag --------------------------------------------------------------
        live = Stream(reactor, a, args.live_connections, "live", lag=True)
        await live.connect()
        probes = {b.name: Timeline(reactor, b, origin, epoch, args.probe_interval, args.probe, http)}
        if c is not None:
            probes[c.name] = Timeline(reactor, c, origin, epoch, args.probe_interval, args.probe, http)
        for timeline in probes.values():
            timeline.start()
        live.pace(args.live_rate)
        await sleep(reactor, args.live_warmup)
        meter = LoadMeter(nodes)
        live.recording = True
        t_live = time.perf_counter()
        await sleep(reactor, args.live_duration)
        live.recording = False
        period = time.perf_counter() - t_live
        cpu = meter.stop()
        await live.drain(60)
        self.problems.extend(live.problems())
        status_a = await http.status(a)
        target = status_a["origins"][origin]["last_index"]
        for name, timeline in probes.items():
            node = b if name == "B" else c
            await self.wait_position(timeline, node, target, 60, "after the live load")
            await timeline.stop()
        lags = {}
        for name, timeline in probes.items():
            values = array("d")
            from_send = array("d")
            missing = 0
            for index, t_ok, latency in zip(live.ok_indexes, live.ok_times, live.latencies):
                seen = timeline.when(index)
                if seen is None:
                    missing += 1
                else:
                    values.append(seen - t_ok)
                    from_send.append(seen - (t_ok - latency))
            if missing:
                self.problem(f"{missing} live readings never seen at {name}")
            if not values:
                self.problem(f"no live reading's lag at {name} was measured")
            summary = ms_summary(values)
            summary["min_ms"] = round(min(values) * 1000, 2) if values else None
            # From the line's send instead: includes A's own commit and answer.
            summary["from_send"] = ms_summary(from_send)
            summary["polls"] = timeline.polls
            summary["probe_errors"] = timeline.errors
            lags[name] = summary
        result["live"] = {
            "rate_target": args.live_rate,
            "rate_acknowledged": round(len(live.ok_times) / period, 1),
            "measured_s": round(period, 3),
            "probe": args.probe,
            "probe_interval_ms": args.probe_interval * 1000,
            "a_latency": ms_summary(live.latencies),
            "lag": lags,
            "cpu": cpu,
        }
        print(
            "live: " + "; ".join(f"lag at {k} p50 {fmt(v['p50_ms'])} ms, p99 {fmt(v['p99_ms'])} ms"
                                 for k, v in lags.items()),
            flush=True,
        )
        print("  " + load_line(cpu, "live "), flush=True)

        # -- final state -----------------------------------------------------------------
        a_digest = table_digest(a.db_path(origin), origin)
        if a_digest["rows"] != target:
            self.problem(f"A holds {a_digest['rows']} rows but reports {target}")
        expected = n + load.acked + live.acked
        if args.fill == "sensors":
            expected = filled["rows"] + load.acked + live.acked
        if a_digest["rows"] != expected:
            self.problem(f"A holds {a_digest['rows']:,} rows; {expected:,} readings were acknowledged")
        for node in nodes[1:]:
            checks[f"final_{node.name}"] = self.compare("at the end", a_digest, node, origin)
        for node in nodes:
            status = await http.status(node)
            totals = status["replication"]
            if totals["rejected"] or totals["conflicts"] or totals["link_errors"]:
                self.problem(f"{node.name} counts {totals}")
        result["b_peak_rss_mb_whole_run"] = round(memory_mb(b.pid)[1], 1)
        result["final_rows"] = a_digest["rows"]
        result["checks"] = checks
        live.close()
        load.close()
        for node in reversed(nodes):
            await node.stop(reactor)
        result["problems"] = self.problems
        return result


def print_report(info: dict, result: dict, before: dict) -> None:
    catchup = result.get("catchup")
    live = result.get("live")
    rows = []

    def row(what, value, unit, target=None, better="higher"):
        if value is None:
            verdict = ""
        elif target is None:
            verdict = ""
        elif better == "higher":
            verdict = "meets" if value >= target else "BELOW target"
        else:
            verdict = "meets" if value <= target else "ABOVE target"
        rows.append([what, fmt(value, "{:,.1f}"), unit,
                     "" if target is None else f"{'≥' if better == 'higher' else '<'} {target:,}", verdict])

    if "fill" in result:
        f = result["fill"]
        row(f"fill A ({f['how']})", f["per_s"], "readings/s")
    if catchup:
        row("catch-up A→B from B Running", catchup["records_per_s"], "records/s",
            TARGETS["catchup_records_per_s"])
        row("  after B's first record", catchup["records_per_s_after_first"], "records/s")
        row("  time until B holds N", catchup["seconds_from_running"], "s")
        row("B peak RSS (VmHWM)", catchup["b_peak_rss_mb"], "MB", TARGETS["b_peak_rss_mb"], "lower")
        row("  B max polled VmRSS", catchup["b_max_polled_rss_mb"], "MB")
        row("A peak RSS", catchup["a_peak_rss_mb"], "MB")
        row("A answer p50, alone", catchup["a_latency_baseline"]["p50_ms"], "ms")
        row("A answer p99, alone", catchup["a_latency_baseline"]["p99_ms"], "ms")
        row("A answer p50, serving catch-up", catchup["a_latency_during"]["p50_ms"], "ms")
        row("A answer p99, serving catch-up", catchup["a_latency_during"]["p99_ms"], "ms")
        row("A answer max, serving catch-up", catchup["a_latency_during"]["max_ms"], "ms")
    if "chain_catchup" in result:
        row("catch-up B→C", result["chain_catchup"]["records_per_s"], "records/s")
    if live:
        row("live rate acknowledged by A", live["rate_acknowledged"], "readings/s")
        row("A answer p99 at live rate", live["a_latency"]["p99_ms"], "ms")
        for name, target in (("B", TARGETS["lag_b_p99_ms"]), ("C", TARGETS["lag_c_p99_ms"])):
            if name in live["lag"]:
                lag = live["lag"][name]
                row(f"lag A OK → readable at {name} p50", lag["p50_ms"], "ms")
                row(f"lag A OK → readable at {name} p99", lag["p99_ms"], "ms", target, "lower")
                row(f"lag A OK → readable at {name} max", lag["max_ms"], "ms")
                row(f"  sensor send → readable at {name} p99", lag["from_send"]["p99_ms"], "ms")
    print()
    print_table(["figure", "value", "unit", "target", ""], rows)
    if catchup:
        print("\n" + load_line(catchup["cpu"], "during catch-up, "))
    if live:
        print(load_line(live["cpu"], "during live load, "))
    print(f"outside load before the run: {before['busy_cores']:.2f} busy cores "
          f"(load average {before['loadavg_1m']:.2f})")
    others = [x["cpu"]["other_cpu_cores"] for x in (catchup, live) if x]
    if before["busy_cores"] > 0.3 or any(o > 0.3 for o in others):
        print("warning: other load on the machine during the run; figures may be low")


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    raise_fd_limit(1024)
    before = outside_load(1.0)
    info = machine()
    print(machine_line(info))
    print(
        f"replicate: {args.readings:,} readings in A ({args.fill} fill), --sync {args.sync}; "
        f"load {args.load_rate:g}/s during catch-up; live {args.live_rate:g}/s for "
        f"{args.live_duration:g} s (probe {args.probe}, every {args.probe_interval * 1000:g} ms); "
        f"chain {'no' if args.no_chain else 'A—B—C'}",
        flush=True,
    )
    budget = 600 + args.readings / 500 + args.live_duration * 2
    error, result, problems = run_bench("replicate", Replicate, args, budget)
    print_report(info, result, before)
    ok = error is None and not problems
    met = {}
    if "catchup" in result:
        met["catchup_records_per_s"] = result["catchup"]["records_per_s"] >= TARGETS["catchup_records_per_s"]
        met["b_peak_rss_mb"] = result["catchup"]["b_peak_rss_mb"] < TARGETS["b_peak_rss_mb"]
    for name in ("B", "C"):
        lag = result.get("live", {}).get("lag", {}).get(name)
        if lag and lag["p99_ms"] is not None:
            key = f"lag_{name.lower()}_p99_ms"
            met[key] = lag["p99_ms"] < TARGETS[key]
    return conclude(args, {
        "benchmark": "replicate", "machine": info, "outside_load_before": before,
        "targets": TARGETS, "targets_met": met, "result": result,
    }, problems, error, ok, "B and C hold copies of A's log identical row for row")


if __name__ == "__main__":
    sys.exit(main())
