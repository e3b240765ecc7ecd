#!/usr/bin/env python3
"""
Compare the nodes of two (or more) checkouts in one sitting: each
benchmark command is run --runs times against each --code directory
(``--node-code``), interleaved (round 1 in the order given, round 2
reversed, ...), each run a fresh process writing --json; then the median,
lowest and highest of each figure per command and checkout.

    python bench/compare.py --code /work/wt-base --code . --runs 3 \\
        --bench "ingest.py" --bench "ingest.py --window 24" --bench "replicate.py"

Every run is bounded by its own script's watchdog; a run that fails is
reported as such and counts in no median.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import core  # noqa: F401  (first: this checkout's p2pstore)
from report import machine, machine_line, print_table

BENCH = Path(__file__).resolve().parent


def _get(document: dict, path: str):
    for key in path.split("."):
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


# Figures per script, as paths into its --json document.
FIGURES = {
    "ingest.py": [
        ("readings/s", "median.readings_per_s", "{:,.0f}"),
        ("p50 ms", "median.latency_p50_ms", "{:.1f}"),
        ("p99 ms", "median.latency_p99_ms", "{:.1f}"),
        ("node cores", "median.node_cpu_cores", "{:.2f}"),
        ("client cores", "median.client_cpu_cores", "{:.2f}"),
        ("other cores", "median.other_cpu_cores", "{:.2f}"),
        ("fast cpu us", "median.calibration_fastest_us", "{:.2f}"),
    ],
    "replicate.py": [
        ("fill rows/s", "result.fill.per_s", "{:,.0f}"),
        ("catch-up rec/s", "result.catchup.records_per_s", "{:,.0f}"),
        ("A cores", "result.catchup.cpu.node_cores.A", "{:.2f}"),
        ("B cores", "result.catchup.cpu.node_cores.B", "{:.2f}"),
        ("driver cores", "result.catchup.cpu.driver_cores", "{:.2f}"),
        ("other cores", "result.catchup.cpu.other_cpu_cores", "{:.2f}"),
        ("B peak MB", "result.catchup.b_peak_rss_mb", "{:.1f}"),
        ("B→C rec/s", "result.chain_catchup.records_per_s", "{:,.0f}"),
        ("lag B p99 ms", "result.live.lag.B.p99_ms", "{:.1f}"),
        ("lag C p99 ms", "result.live.lag.C.p99_ms", "{:.1f}"),
    ],
    "recover.py": [
        ("seconds", "result.recovery.seconds_to_running", "{:.2f}"),
        ("records/s", "result.recovery.records_per_s", "{:,.0f}"),
        ("A peak MB", "result.recovery.a_peak_rss_mb", "{:.1f}"),
    ],
    "diskwear.py": [
        ("write_bytes B/rd", "median.write_bytes_per_reading", "{:,.0f}"),
        ("rd/commit", "median.readings_per_commit", "{:.1f}"),
        ("p99 ms", "median.latency_p99_ms", "{:.1f}"),
        ("node cores", "median.node_cpu_cores", "{:.2f}"),
        ("client cores", "median.client_cpu_cores", "{:.2f}"),
        ("readings/s", "median.readings_per_s", "{:,.0f}"),
    ],
    "idle.py": [
        ("idle RSS MB", "result.x_rss_idle_mb", "{:.1f}"),
        ("peak MB", "result.x_peak_rss_mb", "{:.1f}"),
    ],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Interleaved runs against several checkouts.")
    parser.add_argument("--code", action="append", required=True, metavar="DIR",
                        help="a checkout whose p2pstore the nodes run (give two or more)")
    parser.add_argument("--bench", action="append", required=True, metavar="COMMAND",
                        help="a script of bench/ and its options, e.g. \"ingest.py --window 24\"")
    parser.add_argument("--runs", type=int, default=3, help="runs of each command per checkout (3)")
    parser.add_argument("--json", metavar="PATH", help="write every run's figures as JSON to PATH")
    args = parser.parse_args(argv)
    codes = [str(Path(c).resolve()) for c in args.code]
    print(machine_line(machine()), flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="p2pstore-bench-compare-") as tmp:
        for round_ in range(args.runs):
            order = codes if round_ % 2 == 0 else codes[::-1]
            for command in args.bench:
                words = shlex.split(command)
                script = words[0]
                for code in order:
                    out = Path(tmp) / f"{len(runs)}.json"
                    line = [sys.executable, str(BENCH / script), *words[1:], "--node-code", code,
                            "--json", str(out)]
                    t0 = time.monotonic()
                    done = subprocess.run(line, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                    text = done.stdout.decode(errors="replace")
                    document = json.loads(out.read_text()) if out.exists() else {}
                    figures = {name: _get(document, path) for name, path, _ in FIGURES.get(script, [])}
                    ok = done.returncode == 0 and document.get("ok", False)
                    runs.append({"command": command, "code": code, "round": round_ + 1, "ok": ok,
                                 "seconds": round(time.monotonic() - t0, 1), "figures": figures})
                    shown = ", ".join(
                        f"{name} {fmt.format(figures[name])}" for name, _, fmt in FIGURES.get(script, [])[:5]
                        if figures.get(name) is not None
                    )
                    print(f"round {round_ + 1}: {command} on {code}: {'ok' if ok else 'FAILED'}; "
                          f"{shown}", flush=True)
                    if not ok:
                        print("\n".join("    " + t for t in text.splitlines()[-15:]))
    failed = sum(1 for r in runs if not r["ok"])
    for command in args.bench:
        script = shlex.split(command)[0]
        figures = FIGURES.get(script, [])
        head = ["figure"] + codes
        body = []
        mine = {
            code: [r for r in runs if r["command"] == command and r["code"] == code and r["ok"]]
            for code in codes
        }
        for name, _, fmt in figures:
            row = [name]
            for code in codes:
                values = [r["figures"][name] for r in mine[code] if r["figures"].get(name) is not None]
                row.append(
                    f"{fmt.format(statistics.median(values))} "
                    f"[{fmt.format(min(values))}-{fmt.format(max(values))}]" if values else "-"
                )
            body.append(row)
        body.append(["runs ok"] + [
            f"{len(mine[code])}/{sum(1 for r in runs if r['command'] == command and r['code'] == code)}"
            for code in codes
        ])
        print(f"\n{command}: median [lowest-highest] of the runs")
        print_table(head, body)
    if args.json:
        Path(args.json).write_text(json.dumps({"codes": codes, "runs": runs}, indent=2) + "\n")
    print("\nFAILED" if failed else "\nOK: every run passed its own check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
