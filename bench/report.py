"""
What the reports print: the machine line (cores, CPU model, versions, date,
load average, calibration), the calibration itself, CPU lines, latency
percentiles, medians over runs, tables and JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional

import core  # noqa: F401  (this checkout's p2pstore first)


# The calibration: per CPU, rounds of lines a round, best round kept; on
# more CPUs than this the process is calibrated without pinning.
CALIBRATION_ROUNDS = 3
CALIBRATION_LINES = 20_000
CALIBRATION_MAX_CPUS = 8


def _calibration_round() -> float:
    from p2pstore.lines import parse_plain_lines
    from p2pstore.records import Signer

    signer = Signer.from_key(b"\0" * 32)
    origin, epoch = "0" * 32, "1" * 32
    chunk = b"".join(b"Temperature,39C,2026-11-28 10:00:00.%06d\n" % i for i in range(100))
    start = time.perf_counter()
    index = 0
    for _ in range(CALIBRATION_LINES // 100):
        for reading in parse_plain_lines(chunk, str):
            index += 1
            signer.checksum_of(origin, epoch, index, 1, *reading)
    return (time.perf_counter() - start) / CALIBRATION_LINES * 1e6


def calibrate() -> dict[str, float]:
    """
    How fast each CPU of this machine runs the node's Python right now: the
    microseconds one thread pinned to it takes to parse and sign one seed
    line, as a node's reactor does (L{p2pstore.records.parse_plain_lines},
    L{p2pstore.records.Signer}), the best of CALIBRATION_ROUNDS rounds.

    A shared VM's CPUs change speed, each on its own, by a half within
    seconds (another guest busy on the same physical core); figures measured
    at different speeds are compared through this.

    @return: microseconds a line by CPU number (as a string, for JSON), or
        a single figure under C{"any"}, unpinned, when the CPUs are too many
        to go through or this system cannot pin a thread.
    """
    def best() -> float:
        return round(min(_calibration_round() for _ in range(CALIBRATION_ROUNDS)), 3)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus or len(cpus) > CALIBRATION_MAX_CPUS:
        return {"any": best()}
    speeds = {}
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            speeds[str(cpu)] = best()
    except OSError:
        # A CPU gone offline, a cpuset changed, pinning not allowed here.
        speeds = None
    finally:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:
            pass
    return speeds if speeds is not None else {"any": best()}


def calibration_text(speeds: dict[str, float]) -> str:
    each = ", ".join(
        f"{us:.2f} us" + ("" if cpu == "any" else f" on cpu {cpu}") for cpu, us in speeds.items()
    )
    return f"calibration (a line parsed and signed by one thread): {each}"


def machine() -> dict:
    import twisted

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        memory = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": memory,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "loadavg": os.getloadavg(),
        "calibration_us_per_line": calibrate(),
    }


def machine_line(info: dict) -> str:
    return (
        f"machine: {info['cores']} cores, {info['cpu_model']}; Python {info['python']}, "
        f"Twisted {info['twisted']}, SQLite {info['sqlite']}; {info['date']}; "
        f"load average {info['loadavg'][0]:.2f} {info['loadavg'][1]:.2f} {info['loadavg'][2]:.2f}; "
        f"{calibration_text(info['calibration_us_per_line'])}"
    )


def load_line(load: dict, label: str = "") -> str:
    nodes = ", ".join(f"{k} {v:.2f}" for k, v in load["node_cores"].items())
    return (
        f"{label}cores: nodes {nodes}; driver {load['driver_cores']:.2f}; machine "
        f"{load['machine_busy']:.0%} busy ({load['machine_iowait']:.0%} iowait, "
        f"{load['machine_steal']:.0%} steal); other processes and kernel "
        f"{load['other_cpu_cores']:.2f} cores"
    )


def calibration_span(before: dict, after: dict) -> dict:
    # Each CPU's mean of before and after; a CPU (or "any") in only one of
    # them counts as it is.
    means = [
        (before[cpu] + after[cpu]) / 2 if cpu in before and cpu in after
        else before.get(cpu, after.get(cpu))
        for cpu in {**before, **after}
    ]
    return {
        "calibration_fastest_us": round(min(means), 3),
        "calibration_slowest_us": round(max(means), 3),
    }


def percentile(ordered, p: float) -> float:
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def ms_summary(seconds: Iterable[float]) -> dict:
    """
    p50, p99 and max in milliseconds, and the count.
    """
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 2),
        "p99_ms": round(percentile(ordered, 99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def medians(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def print_table(head: list[str], body: list[list[str]], first_left: bool = True) -> None:
    """
    Columns right-aligned, the first one left-aligned unless not
    ``first_left``.
    """
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    for row in [head] + body:
        print("  ".join(cell.ljust(w) if i == 0 and first_left else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))


def fmt(value, spec: str = "{:,.1f}", none: str = "-") -> str:
    return none if value is None else spec.format(value)


def write_json(path: Optional[str], document: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(document, indent=2, default=str) + "\n")
