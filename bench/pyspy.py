"""
py-spy profiles of the nodes (``--profile DIR``): ``py-spy record`` in raw
(collapsed stack) format, per thread, and a summary of where each thread
spent its samples.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from core import sleep

# Profilers still running, killed however the benchmark ends.
LIVE_PROFILERS: set = set()


def start_profiler(pid: int, seconds: float, out: Path, rate: int = 100) -> Optional[subprocess.Popen]:
    """
    ``py-spy record`` of a node, in raw (collapsed stack) format, per thread,
    ending by itself after ``seconds``; None when py-spy is not installed.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and shutil.which("py-spy") is None:
        print("  (py-spy not found: pip install py-spy; no profile taken)")
        return None
    process = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
         "--rate", str(rate), "--format", "raw", "--threads", "--nonblocking",
         "--output", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(str(out) + ".log", "wb"),
    )
    LIVE_PROFILERS.add(process)
    return process


def summarize_profile(path: Path, top: int = 12) -> dict:
    """
    The top entries of a py-spy raw profile: samples per thread, and per
    function its own samples (the leaf frame; time in C code called from it,
    an fsync or an executemany, counts there) and its inclusive ones, over
    all threads and per thread.
    """
    threads: dict = {}
    own: dict = {}
    inclusive: dict = {}
    own_by_thread: dict = {}
    total = 0
    try:
        text = Path(path).read_text()
    except OSError:
        return {"samples": 0, "threads": {}, "self": [], "inclusive": [], "self_by_thread": {}}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        if thread != "?":
            frames = frames[1:]
        thread = _thread_name(thread)
        threads[thread] = threads.get(thread, 0) + n
        if not frames:
            continue
        leaf = _frame(frames[-1])
        own[leaf] = own.get(leaf, 0) + n
        mine = own_by_thread.setdefault(thread, {})
        mine[leaf] = mine.get(leaf, 0) + n
        # Inclusive time of p2pstore's own functions: where to look.
        for name in {_frame(f) for f in frames if "p2pstore/" in f}:
            inclusive[name] = inclusive.get(name, 0) + n

    def ranked(table, limit):
        return [
            (name, count, round(count / total, 3))
            for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        ]

    return {
        "samples": total,
        "threads": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "self": ranked(own, top),
        "inclusive": ranked(inclusive, top),
        "self_by_thread": {t: ranked(table, 8) for t, table in own_by_thread.items()},
    }


def _thread_name(frame: str) -> str:
    # "thread (0x7f...): MainThread" or "thread (1234): PoolThread-...-0".
    name = frame.split(":", 1)[-1].strip()
    if name.startswith("PoolThread"):
        return "database thread"
    if name == "MainThread":
        return "reactor thread"
    return name


def _frame(frame: str) -> str:
    # "function (path/file.py:123)": keep the function and file, drop the line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    return f"{name} ({file})" if file else name


def print_profile(label: str, summary: dict) -> None:
    """
    Shares are of all samples of the process (each thread is sampled while
    it runs Python code or waits in C code called from it).
    """
    print(f"\nprofile of {label}: {summary['samples']} samples")
    print("  " + ", ".join(f"{t} {n}" for t, n in summary["threads"].items()))
    for thread, entries in summary.get("self_by_thread", {}).items():
        print(f"  {thread}, own time (leaf frame):")
        for name, count, share in entries:
            print(f"    {share:6.1%}  {name}")
    print("  inclusive, p2pstore functions:")
    for name, count, share in summary["inclusive"]:
        print(f"    {share:6.1%}  {name}")


async def finish_profiles(reactor, profilers: list, seconds: float, phase: str) -> dict:
    """
    Wait (at most ``seconds`` + 30 s) for the py-spy processes started by
    L{start_profiler}, given as ``(name, process, path)``; print and return
    each one's summary by name.
    """
    deadline = time.monotonic() + seconds + 30
    while any(p.poll() is None for _, p, _ in profilers) and time.monotonic() < deadline:
        await sleep(reactor, 0.2)
    summaries = {}
    for name, _, path in profilers:
        summaries[name] = summarize_profile(path, 15)
        print_profile(f"{name} during {phase} ({path})", summaries[name])
    return summaries
