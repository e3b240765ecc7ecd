#!/usr/bin/env python3
"""
Export benchmark: how fast a node that holds N readings of its own exports
them to a real InfluxDB on loopback (``--export``), beside how fast a peer
catches up with the same N readings by replication, interleaved in one run.

Real ``twistd -n --pidfile= p2pstore`` processes and Debian's ``influxd``
(1.x) on free loopback ports, in temporary directories:

1. A node's own database is filled with N readings (default 1,000,000)
   while it is stopped (``bench/fill.py``, through p2pstore.storage), once;
   every run below starts from a copy of that data directory, so no run
   finds anything exported or replicated already.
2. Export run: influxd starts in its own directory (its own config, on a
   loopback port) with an empty database ``sensors``; then the node E
   starts on a copy of the filled directory with ``--export
   http://127.0.0.1:PORT/write?db=sensors``. Measured: records/s from E's
   ``Running`` (and from its spawn) until its ``/status`` ``exports`` entry
   says ``pending`` 0 with ``sent`` N, polled every ``--poll`` s (0.1); E's
   CPU (all threads, and its main thread, the reactor) and influxd's over
   that period. Checks: E's ``export_cursors`` row is N, and InfluxDB holds
   N points: ``SELECT count(*) FROM /.*/``, per measurement and field,
   equal to what the fill stored (each sensor type, ``value`` for a numeric
   reading, ``data`` otherwise), else FAILED.
3. Replication run: node A starts on a copy of the filled directory, then
   an empty node B with ``--peers A``; records/s from B's ``Running`` until
   B's database holds A's N records (bench/replicate.py's measure, through
   its ``Replicate.wait_position`` and ``Replicate.compare``, without its
   light sensor load); B's copy must be identical to A's log.

Runs alternate (export 1, replication 1, export 2, ...) so that both rates
meet the same machine; the report gives each run, the medians of
``--repeat`` (3) and the ratio of the medians.

    python bench/export.py --quick                 # 50,000 readings, one run of each
    python bench/export.py --repeat 3              # 1,000,000 readings, 3 runs of each
    python bench/export.py --profile /tmp/prof     # also py-spy of E during its first export
    python bench/export.py --json /tmp/export.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import BenchFailure, sleep
from fill import fill_self_db
from harness import add_node_options, apply_node_options, conclude, run_bench
from logread import Timeline, read_epoch, table_digest
from nodes import LIVE_NODES, Node, make_secret, origin_count
from procfs import LoadMeter, memory_mb, outside_load, raise_fd_limit
from pyspy import finish_profiles, start_profiler
from replicate import Replicate
from report import fmt, load_line, machine, machine_line, print_table

from p2pstore.records import parse_value_unit  # noqa: E402
from p2pstore.schema import SELF_DB, table_name  # noqa: E402
from p2pstore.testing import free_ports  # noqa: E402

DATABASE = "sensors"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export benchmark (see bench/README.md).")
    parser.add_argument("--readings", type=int, default=1_000_000,
                        help="readings in the node's own database before export starts (1,000,000)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of each, interleaved (3; 1 with --quick)")
    parser.add_argument("--poll", type=float, default=0.1,
                        help="seconds between GET /status of the exporting node (0.1)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the nodes' --sync (full)")
    parser.add_argument("--influxd", default=shutil.which("influxd") or "/usr/bin/influxd",
                        help="the influxd binary (InfluxDB 1.x)")
    parser.add_argument("--no-replication", action="store_true",
                        help="export runs only")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy record the exporting node during its first export into DIR")
    parser.add_argument("--profile-seconds", type=float, default=10.0,
                        help="how long the profile runs (10)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50,000 readings, one run of each")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.readings = min(args.readings, 50_000)
        args.profile_seconds = min(args.profile_seconds, 3.0)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.readings < 1 or args.repeat < 1 or not 0.01 <= args.poll <= 5:
        parser.error("--readings and --repeat must be positive, --poll within 0.01-5 s")
    if not Path(args.influxd).exists():
        parser.error(f"no influxd at {args.influxd} (Debian's influxdb package; scripts/install-tsdb)")
    return args


class Influx:
    """
    One ``influxd`` (InfluxDB 1.x) in its own directory, with a config of
    its own, listening on 127.0.0.1 only; killed with the nodes however
    the benchmark ends (it is in LIVE_NODES, which only calls ``kill``).
    """

    name = "influxd"

    def __init__(self, workdir: Path, binary: str):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port, self.bind_port = free_ports(2)
        self.log_path = self.workdir / "influxd.log"
        self.process = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_url(self, db: str) -> str:
        return f"{self.base}/write?db={db}"

    def start(self) -> None:
        data = self.workdir / "data"
        config = self.workdir / "influxdb.conf"
        config.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.bind_port}"\n'
            f'[meta]\n  dir = "{data}/meta"\n'
            f'[data]\n  dir = "{data}/data"\n  wal-dir = "{data}/wal"\n'
            "  query-log-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-config", str(config)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        LIVE_NODES.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchFailure(f"influxd exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=30)
        LIVE_NODES.discard(self)

    def request(self, method: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        # Blocking, from the reactor thread: only while nothing is measured.
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def query(self, q: str, method: str = "GET", timeout: float = 120.0) -> dict:
        params = {"q": q}
        if method == "GET":
            params["db"] = DATABASE
        code, body = self.request(method, "/query?" + urlencode(params), timeout)
        if code != 200:
            raise BenchFailure(f"influxd answered {code} to {q!r}: {body[:500]!r}")
        answer = json.loads(body)
        for result in answer.get("results", []):
            if "error" in result:
                raise BenchFailure(f"influxd: {q!r}: {result['error']}")
        return answer

    async def wait_up(self, reactor, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                code, _ = self.request("GET", "/ping", timeout=1.0)
                if code in (200, 204):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchFailure(f"influxd did not answer /ping within {timeout:.0f} s\n"
                                   + self.log_tail())
            await sleep(reactor, 0.1)

    def counts(self) -> dict:
        """
        Points by measurement and field: ``{measurement: {field: count}}``.
        """
        answer = self.query("SELECT count(*) FROM /.*/")
        counts: dict = {}
        for result in answer.get("results", []):
            for series in result.get("series", []):
                fields = counts.setdefault(series["name"], {})
                for row in series["values"]:
                    for column, value in zip(series["columns"], row):
                        if column.startswith("count_") and value:
                            field = column[len("count_"):]
                            fields[field] = fields.get(field, 0) + value
        return counts

    async def stop(self, reactor, timeout: float = 30.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                await sleep(reactor, 0.05)
        self.kill()


def expected_points(db_path: Path, origin: str) -> dict:
    """
    What an export of the whole log must leave in InfluxDB: points by
    measurement (the sensor type) and field (``value`` when the reading
    is a number, else ``data``), counted from the node's database.
    """
    db = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            f"SELECT sensor_type, sensor_data, count(*) FROM {table_name(origin)} "
            "GROUP BY sensor_type, sensor_data"
        ).fetchall()
    finally:
        db.close()
    expected: dict = {}
    for sensor_type, sensor_data, count in rows:
        field = "data" if parse_value_unit(sensor_data)[0] is None else "value"
        fields = expected.setdefault(sensor_type, {})
        fields[field] = fields.get(field, 0) + count
    return expected


def export_cursor(db_path: Path, origin: str, epoch: str) -> int:
    db = sqlite3.connect(f"{db_path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT max(exported) FROM export_cursors WHERE origin = ? AND epoch = ?",
            (origin, epoch),
        ).fetchone()
    finally:
        db.close()
    return row[0] or 0


def thread_split(cpu: dict, name: str) -> dict:
    total = cpu["node_cores"].get(name, 0.0)
    main = cpu["node_main_thread_cores"].get(name, 0.0)
    return {"cores": total, "reactor_cores": main, "other_threads_cores": round(total - main, 3)}


class ExportBench(Replicate):
    """
    Replicate's helpers (``wait_position``, ``compare``), with the export
    runs beside its catch-up.
    """

    def __init__(self, reactor, args, root: Path):
        super().__init__(reactor, args, root)
        self.template = root / "filled"

    def copy_filled(self, node: Node) -> None:
        if node.data_dir.exists():
            shutil.rmtree(node.data_dir)
        shutil.copytree(self.template, node.data_dir)

    def discard(self, *workdirs: Path) -> None:
        if not self.args.keep:
            for workdir in workdirs:
                shutil.rmtree(workdir, ignore_errors=True)

    async def export_run(self, k: int, n: int, origin: str, epoch: str, expected: dict) -> dict:
        args, reactor, http = self.args, self.reactor, self.http
        slow = max(120.0, n / 1000)
        influx = Influx(self.root / f"influx-{k}", args.influxd)
        influx.start()
        await influx.wait_up(reactor)
        influx.query(f'CREATE DATABASE "{DATABASE}"', method="POST")
        url = influx.write_url(DATABASE)
        e = Node(self.root / f"e-{k}", args.sync, "E", self.secret, extra_args=["--export", url])
        self.copy_filled(e)
        e.start()
        status = await http.wait_running(e, slow)
        t_running = time.perf_counter()
        meter = LoadMeter([e, influx])
        if origin_count(status, origin) != n:
            raise BenchFailure(f"E reports {origin_count(status, origin)} readings, not {n}")
        profilers = []
        if args.profile and k == 1:
            out = Path(args.profile)
            out.mkdir(parents=True, exist_ok=True)
            p = start_profiler(e.pid, args.profile_seconds, out / "E-export.txt")
            if p is not None:
                profilers.append(("E", p, out / "E-export.txt"))
        deadline = time.monotonic() + slow
        polls = 0
        progress = []
        said = None
        t_done = None
        while True:
            e.check_alive()
            influx.check_alive()
            status = await http.status(e)
            t = time.perf_counter()
            polls += 1
            exports = status.get("exports") or []
            if len(exports) != 1:
                raise BenchFailure(f"E's /status has {len(exports)} exports, not 1: {exports}")
            x = exports[0]
            if polls % max(1, round(1 / args.poll)) == 1:
                progress.append((round(t - t_running, 2), x["sent"], x["pending"]))
            if x["state"] != "ok" and x["state"] != said:
                said = x["state"]
                print(f"  E's export is {x['state']}: {x.get('last_error')}", flush=True)
            if x["pending"] == 0 and x["sent"] >= n:
                t_done = t
                break
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"E exported {x['sent']:,} of {n:,} readings in {slow:.0f} s "
                    f"(pending {x['pending']:,}, state {x['state']}, {x.get('last_error')})\n"
                    + e.log_tail()
                )
            await sleep(reactor, args.poll)
        cpu = meter.stop()
        seconds = t_done - t_running
        _, e_hwm = memory_mb(e.pid)
        _, influx_hwm = memory_mb(influx.pid)
        if profilers:
            self.result.setdefault("profiles", {}).update(
                await finish_profiles(reactor, profilers, args.profile_seconds, "export"))
        run = {
            "records": n,
            "seconds_from_running": round(seconds, 3),
            "seconds_from_spawn": round(t_done - e.started_at, 3),
            "records_per_s": round(n / seconds),
            "e_cores": thread_split(cpu, "E"),
            "influxd_cores": round(cpu["node_cores"].get("influxd", 0.0), 3),
            "other_cores": cpu["other_cpu_cores"],
            "e_peak_rss_mb": round(e_hwm, 1),
            "influxd_peak_rss_mb": round(influx_hwm, 1),
            "sent": x["sent"],
            "dead_lettered": x["dead_lettered"],
            "errors": x.get("errors", {}),
            "polls": polls,
            "progress": progress,
            "cpu": cpu,
        }
        # -- checks --------------------------------------------------------------
        cursor = export_cursor(e.data_dir / SELF_DB, origin, epoch)
        run["cursor"] = cursor
        if cursor != n:
            self.problem(f"export run {k}: E's export_cursors row says {cursor:,}, not {n:,}")
        if x["dead_lettered"] or x["sent"] != n:
            self.problem(f"export run {k}: E sent {x['sent']:,} readings and dead-lettered "
                         f"{x['dead_lettered']:,}; it holds {n:,}")
        await e.stop(reactor)
        got = influx.counts()
        points = sum(sum(f.values()) for f in got.values())
        run["influx_points"] = points
        run["influx_counts"] = got
        if got != expected:
            self.problem(f"export run {k}: InfluxDB holds {points:,} points, {got}; the node "
                         f"holds {n:,}: {expected}")
        await influx.stop(reactor)
        print(
            f"export {k}: {n:,} readings in {seconds:.2f} s from Running: {run['records_per_s']:,} "
            f"records/s; InfluxDB holds {points:,} points; cursor {cursor:,}",
            flush=True,
        )
        print("  " + load_line(cpu, "export "), flush=True)
        self.discard(e.workdir, influx.workdir)
        return run

    async def replication_run(self, k: int, n: int, origin: str, epoch: str,
                              a_digest: dict) -> dict:
        args, reactor, http = self.args, self.reactor, self.http
        slow = max(120.0, n / 2000)
        a = Node(self.root / f"a-{k}", args.sync, "A", self.secret)
        self.copy_filled(a)
        a.start()
        status = await http.wait_running(a, slow)
        if origin_count(status, origin) != n:
            raise BenchFailure(f"A reports {origin_count(status, origin)} readings, not {n}")
        b = Node(self.root / f"b-{k}", args.sync, "B", self.secret, peers=[a.peer_address])
        timeline = Timeline(reactor, b, origin, epoch, 0.02)
        b.start()
        await http.wait_running(b)
        meter = LoadMeter([a, b])
        t_running = time.perf_counter()
        timeline.start()
        t_done = await self.wait_position(timeline, b, n, slow, "catch-up")
        cpu = meter.stop()
        await timeline.stop()
        seconds = t_done - t_running
        run = {
            "records": n,
            "seconds_from_running": round(seconds, 3),
            "seconds_from_spawn": round(t_done - b.started_at, 3),
            "records_per_s": round(n / seconds),
            "a_cores": thread_split(cpu, "A"),
            "b_cores": thread_split(cpu, "B"),
            "other_cores": cpu["other_cpu_cores"],
            "b_peak_rss_mb": round(memory_mb(b.pid)[1], 1),
            "cpu": cpu,
        }
        run["copy"] = self.compare(f"replication run {k}", a_digest, b, origin)
        for node in (a, b):
            totals = (await http.status(node))["replication"]
            if totals["rejected"] or totals["conflicts"] or totals["link_errors"]:
                self.problem(f"replication run {k}: {node.name} counts {totals}")
        await b.stop(reactor)
        await a.stop(reactor)
        print(f"replication {k}: B caught up {n:,} records in {seconds:.2f} s from Running: "
              f"{run['records_per_s']:,} records/s", flush=True)
        print("  " + load_line(cpu, "catch-up "), flush=True)
        self.discard(a.workdir, b.workdir)
        return run

    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        make_secret(self.secret)
        n = args.readings

        # -- the filled directory, once --------------------------------------
        t = Node(self.root / "fill", args.sync, "F", self.secret)
        t.start()
        await http.wait_running(t)
        origin = t.node_id
        await t.stop(reactor)
        filled = await fill_self_db(reactor, t, n, "pre")
        epoch = read_epoch(t)
        shutil.move(str(t.data_dir), str(self.template))
        result["fill"] = filled
        print(f"filled {n:,} readings in {filled['seconds']:.1f} s ({filled['per_s']:,} rows/s)",
              flush=True)
        expected = expected_points(self.template / SELF_DB, origin)
        result["expected_points"] = expected
        a_digest = None if args.no_replication else table_digest(self.template / SELF_DB, origin)
        if a_digest is not None and a_digest["rows"] != n:
            raise BenchFailure(f"the filled log holds {a_digest['rows']:,} rows, not {n:,}")

        # -- interleaved runs ----------------------------------------------------
        result["export_runs"] = []
        result["replication_runs"] = []
        for k in range(1, args.repeat + 1):
            result["export_runs"].append(await self.export_run(k, n, origin, epoch, expected))
            if not args.no_replication:
                result["replication_runs"].append(
                    await self.replication_run(k, n, origin, epoch, a_digest))
        result["problems"] = self.problems
        return result


def summarize(result: dict) -> dict:
    exports = result.get("export_runs") or []
    reps = result.get("replication_runs") or []

    def median(runs, get):
        values = [get(r) for r in runs]
        return statistics.median(values) if values else None

    summary = {
        "export_records_per_s": median(exports, lambda r: r["records_per_s"]),
        "export_seconds": median(exports, lambda r: r["seconds_from_running"]),
        "e_cores": median(exports, lambda r: r["e_cores"]["cores"]),
        "e_reactor_cores": median(exports, lambda r: r["e_cores"]["reactor_cores"]),
        "influxd_cores": median(exports, lambda r: r["influxd_cores"]),
        "replication_records_per_s": median(reps, lambda r: r["records_per_s"]),
        "replication_seconds": median(reps, lambda r: r["seconds_from_running"]),
        "a_cores": median(reps, lambda r: r["a_cores"]["cores"]),
        "b_cores": median(reps, lambda r: r["b_cores"]["cores"]),
    }
    if summary["export_records_per_s"] and summary["replication_records_per_s"]:
        summary["export_over_replication"] = round(
            summary["export_records_per_s"] / summary["replication_records_per_s"], 3)
    else:
        summary["export_over_replication"] = None
    return summary


def print_report(result: dict, summary: dict, before: dict) -> None:
    exports = result.get("export_runs") or []
    reps = result.get("replication_runs") or []
    if not exports:
        return
    print()
    head = ["run", "export records/s", "s", "E cores (reactor / other threads)", "influxd cores",
            "other", "replication records/s", "s", "A / B cores", "other"]
    body = []
    for k, x in enumerate(exports):
        r = reps[k] if k < len(reps) else None
        ec = x["e_cores"]
        body.append([
            str(k + 1), f"{x['records_per_s']:,}", f"{x['seconds_from_running']:.2f}",
            f"{ec['cores']:.2f} ({ec['reactor_cores']:.2f} / {ec['other_threads_cores']:.2f})",
            f"{x['influxd_cores']:.2f}", f"{x['other_cores']:.2f}",
            f"{r['records_per_s']:,}" if r else "-",
            f"{r['seconds_from_running']:.2f}" if r else "-",
            f"{r['a_cores']['cores']:.2f} / {r['b_cores']['cores']:.2f}" if r else "-",
            f"{r['other_cores']:.2f}" if r else "-",
        ])
    s = summary
    body.append([
        "median", fmt(s["export_records_per_s"], "{:,.0f}"), fmt(s["export_seconds"], "{:.2f}"),
        f"{fmt(s['e_cores'], '{:.2f}')} ({fmt(s['e_reactor_cores'], '{:.2f}')} reactor)",
        fmt(s["influxd_cores"], "{:.2f}"), "",
        fmt(s["replication_records_per_s"], "{:,.0f}"), fmt(s["replication_seconds"], "{:.2f}"),
        f"{fmt(s['a_cores'], '{:.2f}')} / {fmt(s['b_cores'], '{:.2f}')}", "",
    ])
    print_table(head, body)
    if s["export_over_replication"] is not None:
        print(f"\nexport / replication catch-up rate (medians): {s['export_over_replication']:.2f}")
    print(f"outside load before the run: {before['busy_cores']:.2f} busy cores "
          f"(load average {before['loadavg_1m']:.2f})")
    if before["busy_cores"] > 0.3 or any(
            r["other_cores"] > 0.3 for r in exports + reps):
        print("warning: other load on the machine during the run; figures may be low")


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    raise_fd_limit(1024)
    before = outside_load(1.0)
    info = machine()
    print(machine_line(info))
    print(f"export: {args.readings:,} readings in the node's own database (direct fill), "
          f"--sync {args.sync}, to influxd ({args.influxd}) on loopback; {args.repeat} run(s) of "
          f"export and {'no' if args.no_replication else args.repeat} of replication catch-up, "
          f"interleaved", flush=True)
    budget = 300 + args.readings / 10_000 + args.repeat * (2 * max(120, args.readings / 1000) + 60)
    error, result, problems = run_bench("export", ExportBench, args, budget)
    summary = summarize(result)
    print_report(result, summary, before)
    ok = error is None and not problems and bool(result.get("export_runs"))
    return conclude(args, {
        "benchmark": "export", "machine": info, "outside_load_before": before,
        "summary": summary, "result": result,
    }, problems, error, ok, "InfluxDB holds every exported reading"
       + ("" if args.no_replication else ", and B's copies are identical"))


if __name__ == "__main__":
    sys.exit(main())
