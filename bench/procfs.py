"""
Process and machine figures from /proc: CPU seconds of a process (all
threads, and its main thread alone), its VmRSS and VmHWM, the machine's
busy, iowait and steal jiffies, and what those add up to over a period.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Iterable

from core import BenchFailure

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_ticks(path: str) -> int:
    # Fields after the command name, which is in parentheses and may hold
    # spaces: utime and stime are fields 14 and 15 of the whole line.
    text = Path(path).read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def process_cpu(pid: int) -> tuple[float, float]:
    """
    CPU seconds (user + system) of a process, all threads, and of its main
    thread alone.
    """
    total = _stat_ticks(f"/proc/{pid}/stat") / CLK_TCK
    main = _stat_ticks(f"/proc/{pid}/task/{pid}/stat") / CLK_TCK
    return total, main


def memory_mb(pid: int) -> tuple[float, float]:
    """
    (VmRSS, VmHWM) of a process in MB: its resident set now, and at its peak.
    """
    rss = hwm = None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024.0
    if rss is None or hwm is None:
        raise BenchFailure(f"no VmRSS/VmHWM in /proc/{pid}/status")
    return rss, hwm


def peak_rss_mb(pid: int) -> float:
    return memory_mb(pid)[1]


def machine_cpu() -> tuple[int, int, int, int]:
    """
    Jiffies of all CPUs: (total, idle, iowait, steal).
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values[:8]), values[3], values[4], values[7]


def driver_cpu() -> float:
    """
    CPU seconds of this process (the benchmark script itself).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit(want: int) -> None:
    """
    Let this process (and the nodes it starts, which inherit the limit) open
    ``want`` descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


class LoadMeter:
    """
    CPU over a period: each node's, this driver's, the whole machine's, and
    what is left for everything else (other processes on the machine and
    kernel work charged to nobody), so outside load shows in the report.
    """

    def __init__(self, nodes: Iterable):
        self.nodes = [n for n in nodes if n.alive()]
        self.t0 = time.perf_counter()
        self.cpu0 = {n.name: process_cpu(n.pid) for n in self.nodes}
        self.drv0 = driver_cpu()
        self.mach0 = machine_cpu()

    def stop(self) -> dict:
        period = time.perf_counter() - self.t0
        mach1 = machine_cpu()
        drv1 = driver_cpu()
        cores = os.cpu_count() or 1
        nodes = {}
        mains = {}
        for n in self.nodes:
            try:
                total, main = process_cpu(n.pid)
            except (OSError, ValueError):
                continue
            nodes[n.name] = (total - self.cpu0[n.name][0]) / period
            mains[n.name] = (main - self.cpu0[n.name][1]) / period
        total = mach1[0] - self.mach0[0]
        idle = (mach1[1] - self.mach0[1]) + (mach1[2] - self.mach0[2])
        busy = 1 - idle / total if total else 0.0
        driver = (drv1 - self.drv0) / period
        return {
            "period_s": round(period, 3),
            "node_cores": {k: round(v, 3) for k, v in nodes.items()},
            "node_main_thread_cores": {k: round(v, 3) for k, v in mains.items()},
            "driver_cores": round(driver, 3),
            "machine_busy": round(busy, 3),
            "machine_iowait": round((mach1[2] - self.mach0[2]) / total, 3) if total else None,
            "machine_steal": round((mach1[3] - self.mach0[3]) / total, 3) if total else None,
            "other_cpu_cores": round(busy * cores - sum(nodes.values()) - driver, 3),
        }


def outside_load(seconds: float = 1.0) -> dict:
    """
    The machine's busy cores while this benchmark runs nothing yet: the load
    others put on it (blocking; call before starting anything).
    """
    m0 = machine_cpu()
    d0 = driver_cpu()
    time.sleep(seconds)
    m1 = machine_cpu()
    d1 = driver_cpu()
    total = m1[0] - m0[0]
    idle = (m1[1] - m0[1]) + (m1[2] - m0[2])
    busy = (1 - idle / total) * (os.cpu_count() or 1) if total else 0.0
    return {
        "seconds": seconds,
        "busy_cores": round(busy - (d1 - d0) / seconds, 3),
        "loadavg_1m": os.getloadavg()[0],
    }


class RssWatch:
    """
    Polls VmRSS of some nodes every ``interval`` seconds: the highest seen,
    and a few samples for a timeline.
    """

    def __init__(self, reactor, nodes: Iterable, interval: float = 0.05):
        from twisted.internet.task import LoopingCall

        self.nodes = list(nodes)
        self.max = {n.name: 0.0 for n in self.nodes}
        self.samples: dict = {n.name: [] for n in self.nodes}
        self.t0 = time.perf_counter()
        self._n = 0
        self._loop = LoopingCall(self._poll)
        self._loop.clock = reactor
        self._loop.start(interval, now=True)

    def _poll(self) -> None:
        self._n += 1
        for n in self.nodes:
            if not n.alive():
                continue
            try:
                rss, _ = memory_mb(n.pid)
            except (OSError, BenchFailure):
                continue
            if rss > self.max[n.name]:
                self.max[n.name] = rss
            if self._n % 20 == 1:
                self.samples[n.name].append((round(time.perf_counter() - self.t0, 2), round(rss, 1)))

    def stop(self) -> dict:
        if self._loop.running:
            self._loop.stop()
        return {k: round(v, 1) for k, v in self.max.items()}

