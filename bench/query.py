#!/usr/bin/env python3
"""
Query benchmark: a one-hour range of ``/readings`` on a node holding N
readings (default 1,000,000), over real HTTP, and the range's read alone
through the block index of the table's times (schema version 6).

One real ``twistd -n --pidfile= p2pstore`` node, its own database filled
through p2pstore.storage while it is stopped (bench/fill.py), one reading a
second (``--spacing``) from 2026-11-28 00:00 UTC, so 1,000,000 span 11.6
days and an hour holds 3,600. Then, with the node running:

1. The first range query after the start.
2. ``--repeat`` times each, interleaved: the hour in the middle of the log
   as JSON, as CSV, as JSON of one sensor type, and the newest 3,600 as
   today's ``/readings?limit=`` answers them. Medians are quoted.
3. The node is stopped, and the hour's read (p2pstore.rangereads) timed in
   this process on its file, ``--repeat`` times, unless ``--no-sql``.

Check: every answer holds exactly the hour's readings (entry indexes
consecutive, in time order), each type's answer only that type.

    python bench/query.py --quick      # 100,000 readings
    python bench/query.py              # 1,000,000 readings
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import BenchFailure
from fill import fill_self_db
from harness import Bench, add_node_options, apply_node_options, conclude, run_bench
from nodes import Node, make_secret
from report import fmt, machine, machine_line, print_table

BASE = datetime(2026, 11, 28, tzinfo=timezone.utc)
HOUR = 3600


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Query benchmark (see bench/README.md).")
    parser.add_argument("--readings", type=int, default=1_000_000, help="the node's readings (1,000,000)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between readings (1)")
    parser.add_argument("--repeat", type=int, default=9, help="runs of each query; medians are quoted (9)")
    parser.add_argument("--no-sql", action="store_true", help="skip the in-process read of the hour")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100,000 readings, 3 runs")
    add_node_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.readings = min(args.readings, 100_000)
        args.repeat = min(args.repeat, 3)
    if args.readings * args.spacing < 2 * HOUR:
        parser.error("the log must span at least two hours")
    return args


class Query(Bench):
    async def fetch(self, node: Node, query: dict) -> tuple[float, bytes, dict]:
        """
        GET /readings?query: the seconds to the last byte, the body and the
        headers.
        """
        from twisted.web.client import readBody

        url = f"http://127.0.0.1:{node.status_port}/readings?{urlencode(query)}".encode("ascii")
        t0 = time.perf_counter()
        d = self.http.agent.request(b"GET", url)
        d.addTimeout(60, self.reactor)
        response = await d
        body = await readBody(response)
        seconds = time.perf_counter() - t0
        if response.code != 200:
            raise BenchFailure(f"GET {url.decode()} answered {response.code}: {body[:300]!r}")
        return seconds, body, response.headers

    def check(self, what: str, indexes: list[int], first: int, count: int) -> None:
        if indexes != list(range(first, first + count)):
            self.problem(f"{what}: entry indexes {indexes[:3]}...{indexes[-3:]} ({len(indexes)}), "
                         f"not {first}..{first + count - 1}")

    async def queries(self, node: Node, hour_query: dict, first: int, per_hour: int, runs: dict,
                      kinds: tuple) -> None:
        type_query = hour_query | {"type": "Temperature"}
        for kind in kinds:
            if kind == "json":
                seconds, body, _ = await self.fetch(node, hour_query)
                answer = json.loads(body)
                self.check("json", [r["entry_index"] for r in answer["readings"]], first, per_hour)
                if answer["next"] is not None:
                    self.problem("the hour's answer has a next page")
            elif kind == "csv":
                seconds, body, _ = await self.fetch(node, hour_query | {"format": "csv"})
                lines = body.decode("utf-8").splitlines()
                if len(lines) != per_hour + 1:
                    self.problem(f"csv: {len(lines)} lines, not {per_hour + 1}")
            elif kind == "type":
                seconds, body, _ = await self.fetch(node, type_query)
                readings = json.loads(body)["readings"]
                if not readings or {r["sensor_type"] for r in readings} != {"Temperature"}:
                    self.problem(f"type: {len(readings)} readings, types {set(r['sensor_type'] for r in readings)}")
            else:
                seconds, body, _ = await self.fetch(node, {"limit": str(per_hour)})
                newest = [r["entry_index"] for r in json.loads(body)["readings"]]
                self.check("newest", newest[::-1], self.args.readings - per_hour + 1, per_hour)
            runs.setdefault(kind, []).append(seconds)

    def sql_alone(self, db, origin: str, since: datetime, per_hour: int) -> dict:
        """
        The hour read by p2pstore.rangereads in this process, ``--repeat``
        times.
        """
        from p2pstore.rangereads import read_range
        from p2pstore.timerange import TimeRange

        hour = TimeRange(since, since + timedelta(hours=1))
        found: dict = {}
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for _ in range(self.args.repeat):
            t0 = time.perf_counter()
            page = read_range(conn, "main", origin, None, hour, 10000)
            found.setdefault("sql", []).append(time.perf_counter() - t0)
            conn.commit()
            if len(page.records) != per_hour:
                self.problem(f"sql: {len(page.records)} readings, not {per_hour}")
        conn.close()
        return found

    async def execute(self) -> dict:
        args, reactor, http, result = self.args, self.reactor, self.http, self.result
        secret = make_secret(self.root / "cluster.key")
        node = Node(self.root / "a", "full", "A", secret)
        node.start()
        await http.wait_running(node)
        await node.stop(reactor)
        filled = await fill_self_db(reactor, node, args.readings, "query", spacing=args.spacing)
        result["fill"] = filled
        print(f"filled with {args.readings:,} readings in {filled['seconds']:.1f} s", flush=True)
        db = node.data_dir / "self_sensor_data.db"
        result["file_mb"] = round(db.stat().st_size / 1e6, 1)

        # Reading e is stamped BASE + e * spacing: the hour in the middle.
        middle = (args.readings * args.spacing / 2) // HOUR * HOUR
        since = BASE + timedelta(seconds=middle)
        first = int(-(-middle // args.spacing))
        per_hour = len(range(first, int(-(-(middle + HOUR) // args.spacing))))
        hour_query = {
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": (since + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "limit": "10000",
        }
        result["query"] = hour_query | {"readings": per_hour}
        slow = max(60.0, args.readings / 5000)

        node.start()
        await http.wait_running(node, slow)
        runs: dict = {}
        await self.queries(node, hour_query, first, per_hour, runs, ("json",))
        result["first_s"] = runs.pop("json")[0]
        print(f"  first range query after the start: {result['first_s'] * 1000:.1f} ms", flush=True)
        for _ in range(args.repeat):
            await self.queries(node, hour_query, first, per_hour, runs, ("json", "csv", "type", "newest"))
        await node.stop(reactor)
        result["runs"] = runs

        if not args.no_sql:
            # The range's read alone, in this process, on the stopped
            # node's file.
            runs.update(self.sql_alone(db, node.node_id, since, per_hour))
        result["medians_ms"] = {kind: round(statistics.median(s) * 1000, 1) for kind, s in runs.items()}
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_node_options(args)
    info = machine()
    print(machine_line(info))
    print(f"query: {args.readings:,} readings, one each {args.spacing:g} s; {args.repeat} runs of each query",
          flush=True)
    budget = 300 + args.readings / 2000 + args.repeat * 60
    error, result, problems = run_bench("query", Query, args, budget)
    med = result.get("medians_ms")
    if med:
        per_hour = result["query"]["readings"]
        names = {
            "json": f"one hour ({per_hour:,} readings), JSON",
            "csv": "one hour, CSV",
            "type": "one hour, type=Temperature, JSON",
            "newest": f"newest {per_hour:,} (limit=), JSON",
            "sql": "one hour, the SQL alone (rangereads, in-process)",
        }
        rows = [["first range query after the start", fmt(result["first_s"] * 1000), "ms"]]
        rows += [[names[kind], fmt(ms), "ms"] for kind, ms in med.items()]
        print()
        print_table(["query (median over HTTP, to the last byte)", "value", "unit"], rows)
    ok = error is None and not problems and bool(med)
    return conclude(args, {"benchmark": "query", "machine": info, "result": result}, problems, error, ok,
                    "every answer held exactly the hour's readings")


if __name__ == "__main__":
    sys.exit(main())
