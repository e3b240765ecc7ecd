"""
What the benchmarks share: the machine report, the node processes, /proc
readings (CPU, RSS, machine load), HTTP status calls, sensor connections
(pipelined or paced), a direct fill of a node's own database, row-for-row
digests of a log, py-spy profiles, and the run harness (reactor, watchdog,
every node killed however the run ends).

Imported by the scripts in bench/ (run from anywhere: each puts bench/ and
the repository first on sys.path). It never imports the tests.

Nothing here imports the reactor at module level: L{run} installs the epoll
reactor first and hands it to the benchmark's coroutine.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Listening ports outside the kernel's ephemeral range, as the tests pick them.
from p2pstore.testing import free_ports  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SELF_DB = "self_sensor_data.db"
PEER_DB = "peer_sensor_data.db"
# What the node logs once SIGTERM has committed and answered everything.
STOPPED_CLEANLY = "every reading received was stored and answered"
# Nodes still running, killed however the benchmark ends.
LIVE_NODES: set = set()
# Profilers still running, likewise.
LIVE_PROFILERS: set = set()
# The columns of a readings table, in the order digests hash them.
ROW_COLUMNS = (
    "epoch, entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
    "value, unit, reading_id, data_checksum"
)


class BenchFailure(Exception):
    """
    The run went wrong or its result is wrong; the message says how.
    """


# -- the machine -------------------------------------------------------------


# The calibration: per CPU, rounds of lines a round, best round kept; on
# more CPUs than this the process is calibrated without pinning.
CALIBRATION_ROUNDS = 3
CALIBRATION_LINES = 20_000
CALIBRATION_MAX_CPUS = 8


def _calibration_round() -> float:
    from p2pstore.records import Signer, parse_plain_lines

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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LoadMeter:
    """
    CPU over a period: each node's, this driver's, the whole machine's, and
    what is left for everything else (other processes on the machine and
    kernel work charged to nobody), so outside load shows in the report.
    """

    def __init__(self, nodes: Iterable["Node"]):
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


def load_line(load: dict, label: str = "") -> str:
    nodes = ", ".join(f"{k} {v:.2f}" for k, v in load["node_cores"].items())
    return (
        f"{label}cores: nodes {nodes}; driver {load['driver_cores']:.2f}; machine "
        f"{load['machine_busy']:.0%} busy ({load['machine_iowait']:.0%} iowait, "
        f"{load['machine_steal']:.0%} steal); other processes and kernel "
        f"{load['other_cpu_cores']:.2f} cores"
    )


# -- processes -----------------------------------------------------------------


def twistd_command() -> list[str]:
    """
    The twistd of this Python (``python -m twisted.scripts.twistd`` does
    not run it).
    """
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def make_secret(path: Path) -> Path:
    """
    A cluster key file: 32 random bytes, mode 0600.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path


def raise_fd_limit(want: int) -> None:
    """
    Let this process (and the nodes it starts, which inherit the limit) open
    ``want`` descriptors.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


class Node:
    """
    One ``twistd -n --pidfile= p2pstore`` process in its own directory, on
    free loopback ports that stay the same across restarts.
    """

    def __init__(
        self,
        workdir: Path,
        sync: str = "full",
        name: str = "node",
        secret_file: Optional[Path] = None,
        peers: Iterable[str] = (),
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "node.log"
        self.sync = sync
        self.secret_file = secret_file
        self.peers = list(peers)
        self.sensor_port, self.status_port, self.peer_port = free_ports(3)
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def peer_address(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        env = dict(os.environ)
        # The repository's p2pstore and plugin, wherever this runs from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = twistd_command() + [
            "-n", "--pidfile=", "p2pstore",
            "--data-dir", str(self.data_dir),
            "--sensor-port", f"tcp:{self.sensor_port}:interface=127.0.0.1",
            "--status-port", f"tcp:{self.status_port}:interface=127.0.0.1",
            "--peer-port", f"tcp:{self.peer_port}:interface=127.0.0.1",
            "--sync", self.sync,
        ]
        if self.secret_file is not None:
            command += ["--secret-file", str(self.secret_file)]
        if self.peers:
            command += ["--peers", ",".join(self.peers)]
        # Appended to: a restarted node keeps the log of its earlier runs.
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        LIVE_NODES.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=30)
        LIVE_NODES.discard(self)

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchFailure(
                f"node {self.name} exited with {self.process.returncode}:\n" + self.log_tail()
            )

    async def stop(self, reactor, timeout: float = 60.0) -> None:
        """
        SIGTERM, wait for the exit, and check the node stopped cleanly.
        """
        if not self.alive():
            raise BenchFailure(
                f"node {self.name} had already exited ({self.process.returncode}):\n"
                + self.log_tail()
            )
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            await sleep(reactor, 0.05)
        if self.alive():
            raise BenchFailure(f"node {self.name} did not stop within {timeout:.0f} s of SIGTERM")
        LIVE_NODES.discard(self)
        # twistd ends by killing itself with the signal it stopped on.
        if self.process.returncode not in (0, -signal.SIGTERM) or STOPPED_CLEANLY not in self.log_tail(5):
            raise BenchFailure(
                f"node {self.name} did not stop cleanly (exit {self.process.returncode}):\n"
                + self.log_tail()
            )

    @property
    def node_id(self) -> str:
        return (self.data_dir / "node.id").read_text().strip()

    def delete_self_db(self) -> None:
        """
        Lose the node's own database, as a dead disk would (node stopped).
        """
        if self.alive():
            raise BenchFailure("delete a database only while its node is down")
        for suffix in ("", "-wal", "-shm"):
            path = self.data_dir / (SELF_DB + suffix)
            if path.exists():
                path.unlink()

    def db_path(self, origin: str) -> Path:
        """
        The file holding the log of ``origin`` at this node.
        """
        return self.data_dir / (SELF_DB if origin == self.node_id else PEER_DB)


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


# -- reactor helpers -------------------------------------------------------------


def sleep(reactor, seconds: float):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


class Http:
    """
    GET JSON from the nodes' status ports over persistent connections.
    """

    def __init__(self, reactor):
        from twisted.web.client import Agent, HTTPConnectionPool

        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 4
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=5)

    async def get(self, port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
        from twisted.web.client import readBody

        url = f"http://127.0.0.1:{port}{path}".encode("ascii")
        d = self.agent.request(b"GET", url)
        d.addCallback(lambda response: readBody(response).addCallback(
            lambda body: (response.code, json.loads(body))))
        d.addTimeout(timeout, self.reactor)
        return await d

    async def status(self, node: Node, timeout: float = 10.0) -> dict:
        code, body = await self.get(node.status_port, "/status", timeout)
        if code != 200:
            raise BenchFailure(f"GET /status of {node.name} answered {code}: {body}")
        return body

    async def wait(
        self,
        node: Node,
        predicate: Callable[[dict], bool],
        timeout: float,
        what: str,
        interval: float = 0.05,
    ) -> dict:
        """
        Poll /status until ``predicate(status)`` holds; fails after ``timeout``
        seconds or when the node exits.
        """
        deadline = time.monotonic() + timeout
        last = None
        while True:
            node.check_alive()
            try:
                status = await self.status(node, timeout=5)
            except BenchFailure:
                raise
            except Exception as e:  # not listening yet
                last = f"no answer ({e.__class__.__name__})"
            else:
                if predicate(status):
                    return status
                last = f"state {status.get('state')}"
            if time.monotonic() >= deadline:
                raise BenchFailure(
                    f"gave up after {timeout:.0f} s waiting for {node.name} {what} ({last})\n"
                    + node.log_tail()
                )
            await sleep(self.reactor, interval)

    async def wait_running(self, node: Node, timeout: float = 60.0) -> dict:
        return await self.wait(node, lambda s: s.get("state") == "Running", timeout, "to be Running")

    def close(self):
        return self.pool.closeCachedConnections()


def origin_count(status: dict, origin: str) -> int:
    return status.get("origins", {}).get(origin, {}).get("count", 0)


class RssWatch:
    """
    Polls VmRSS of some nodes every ``interval`` seconds: the highest seen,
    and a few samples for a timeline.
    """

    def __init__(self, reactor, nodes: Iterable[Node], interval: float = 0.05):
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


def run(main: Callable, budget: float) -> Optional[str]:
    """
    Install the epoll reactor, run ``await main(reactor)`` with a watchdog of
    ``budget`` seconds, kill every node and profiler still running, and
    return the error (None when ``main`` returned normally).
    """
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    outcome: dict = {}

    def finished(result):
        outcome["result"] = result
        if reactor.running:
            reactor.stop()

    def watchdog():
        outcome["result"] = BenchFailure(f"the benchmark did not finish within {budget:.0f} s")
        reactor.stop()

    def begin():
        d = Deferred.fromCoroutine(main(reactor))
        d.addBoth(finished)

    guard = reactor.callLater(budget, watchdog)
    reactor.callWhenRunning(begin)
    try:
        reactor.run()
    finally:
        for node in list(LIVE_NODES):
            node.kill()
        for process in list(LIVE_PROFILERS):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    if guard.active():
        guard.cancel()
    failure = outcome.get("result")
    if failure is None or not (isinstance(failure, Exception) or hasattr(failure, "getTraceback")):
        return None
    error = getattr(failure, "value", failure)
    if isinstance(error, BenchFailure):
        return str(error)
    if hasattr(failure, "getTraceback"):
        return "".join(failure.getTraceback())
    return repr(error)


# -- figures -------------------------------------------------------------------------



def run_bench(name: str, make: Callable, args, budget: float) -> tuple:
    """
    Run one benchmark object in a fresh temporary directory: ``make(reactor,
    args, root)`` builds it, its ``execute()`` gives the result. The
    directory is removed afterwards unless ``--keep``.

    @return: ``(error, result, problems)``; ``result`` is what was measured
        even when the run failed part way.
    """
    root = Path(tempfile.mkdtemp(prefix=f"p2pstore-bench-{name}-", dir=args.tmpdir))
    holder: dict = {}

    async def main(reactor):
        holder["bench"] = bench = make(reactor, args, root)
        holder["result"] = await bench.execute()

    try:
        error = run(main, budget)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    bench = holder.get("bench")
    result = holder.get("result") or (bench.result if bench else {})
    return error, result, (bench.problems if bench else [])

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


def print_table(head: list[str], body: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    for n, row in enumerate([head] + body):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))


def fmt(value, spec: str = "{:,.1f}", none: str = "-") -> str:
    return none if value is None else spec.format(value)


def write_json(path: Optional[str], document: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(document, indent=2, default=str) + "\n")


class Bench:
    """
    What every benchmark run holds: its reactor, options and temporary
    directory, an HTTP client, what it measured and the problems it found.
    """

    def __init__(self, reactor, args, root: Path):
        self.reactor = reactor
        self.args = args
        self.root = root
        self.http = Http(reactor)
        self.problems: list[str] = []
        self.result: dict = {"config": dict(vars(args))}

    def problem(self, text: str) -> None:
        if len(self.problems) < 30:
            self.problems.append(text)
        print(f"  problem: {text}", flush=True)


def conclude(args, document: dict, problems: list, error, ok: bool, success: str) -> int:
    """
    Write the JSON (with ``problems``, ``ok`` and ``error`` added to
    ``document``), print the problems and the verdict, and return the exit
    status.
    """
    write_json(args.json, {**document, "problems": problems, "ok": ok, "error": error})
    for p in problems:
        print(f"problem: {p}")
    if error:
        print(f"\nerror: {error}")
    print("\nFAILED" if not ok else f"\nOK: {success}")
    return 0 if ok else 1


# -- data ------------------------------------------------------------------------------

_TYPES = (
    ("Temperature", lambda r: f"{r.randint(-20, 45)}C"),
    ("Atm. Pressure", lambda r: f"{r.uniform(0.9, 1.9):.3f} atm"),
    ("Humidity", lambda r: f"{r.randint(0, 100)}% RH"),
)


def fill_self_db(node: Node, n: int, key: bytes, tag: str, sensors: int = 100) -> dict:
    """
    Write ``n`` readings into the node's own log directly, while it is
    stopped: rows as the node's ingestion makes them (same table, entry_index
    1..n in its current epoch, canonical encoding and HMAC from
    p2pstore.records, value and unit parsed as p2pstore.storage does), with
    synchronous=OFF and one transaction per 50,000 rows, so 1,000,000 take
    seconds rather than the minute the sensor port would.

    The node must have run once (so the table and its epoch exist) and have
    stored nothing yet.

    @return: the epoch and how long it took.
    """
    from p2pstore.records import Signer, parse_value_unit

    if node.alive():
        raise BenchFailure("fill a node's database only while it is stopped")
    node_id = node.node_id
    table = f"server_id_{node_id}"
    signer = Signer.from_key(key)
    checksum_of = signer.checksum_of
    rng = random.Random(tag)
    t0 = time.perf_counter()
    db = sqlite3.connect(str(node.data_dir / SELF_DB), isolation_level=None)
    try:
        db.execute("PRAGMA synchronous = OFF")
        (epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        (held,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        if held:
            raise BenchFailure(f"node {node.name} already holds {held} readings")
        (last_sensor,) = db.execute(
            "SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'last_sensor_index'"
        ).fetchone()
        # A pool of values, so rows differ without a random call per row.
        values = []
        for sensor_type, make in _TYPES:
            for _ in range(50):
                data = make(rng)
                values.append((sensor_type, data, *parse_value_unit(data)))
        rng.shuffle(values)
        base = datetime(2026, 11, 28, tzinfo=timezone.utc).timestamp()
        insert = (
            f"INSERT INTO {table} (entry_index, sensor_index, sensor_type, sensor_data, "
            f"timestamp, value, unit, reading_id, data_checksum, epoch) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        chunk = 50_000
        per_sensor = max(1, -(-n // sensors))
        for first in range(1, n + 1, chunk):
            rows = []
            append = rows.append
            for i in range(first, min(first + chunk, n + 1)):
                sensor_type, data, value, unit = values[i % len(values)]
                sensor_index = last_sensor + 1 + (i - 1) // per_sensor
                stamp = datetime.fromtimestamp(base + i * 0.001, timezone.utc).strftime(
                    "%Y-%m-%d %H:%M:%S.%f"
                )
                reading_id = f"{tag}-{i:08d}"
                checksum = checksum_of(node_id, epoch, i, sensor_index, sensor_type, data, stamp, reading_id)
                append((i, sensor_index, sensor_type, data, stamp, value, unit, reading_id, checksum, epoch))
            db.execute("BEGIN")
            db.executemany(insert, rows)
            db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute(
            "INSERT OR REPLACE INTO main.log_positions (origin, epoch, last_index) VALUES (?, ?, ?)",
            (node_id, epoch, n),
        )
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sensor_index', ?)",
            (str(last_sensor + -(-n // per_sensor)),),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return {"epoch": epoch, "rows": n, "seconds": round(time.perf_counter() - t0, 2)}


def read_epoch(node: Node) -> str:
    db = sqlite3.connect(f"{(node.data_dir / SELF_DB).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
    finally:
        db.close()


def table_digest(db_path: Path, origin: str, epoch: Optional[str] = None) -> dict:
    """
    Every row of an origin's table (or of one epoch of it), in log order,
    hashed: two copies are identical when count and digest match. Read
    through a read-only connection of its own (the node may be running).
    """
    table = f"server_id_{origin}"
    db = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        sql = f"SELECT {ROW_COLUMNS} FROM {table}"
        params: tuple = ()
        if epoch is not None:
            sql += " WHERE epoch = ?"
            params = (epoch,)
        sql += " ORDER BY epoch, entry_index"
        digest = hashlib.sha256()
        count = 0
        cursor = db.execute(sql, params)
        while True:
            rows = cursor.fetchmany(20_000)
            if not rows:
                break
            count += len(rows)
            digest.update(repr(rows).encode("utf-8", "surrogatepass"))
        return {"rows": count, "sha256": digest.hexdigest()}
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {"rows": 0, "sha256": None}
        raise
    finally:
        db.close()


def check_hmac_sample(db_path: Path, origin: str, key: bytes, sample: int = 2000) -> tuple[int, int]:
    """
    Verify the HMAC of a random sample of an origin's rows.

    @return: (checked, bad).
    """
    from p2pstore.records import BadRecord, Record, Signer

    signer = Signer.from_key(key)
    table = f"server_id_{origin}"
    db = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        (rows,) = db.execute(f"SELECT max(rowid) FROM {table}").fetchone()
        if not rows:
            return 0, 0
        picks = sorted(random.sample(range(1, rows + 1), min(sample, rows)))
        checked = bad = 0
        for start in range(0, len(picks), 500):
            chunk = picks[start : start + 500]
            for row in db.execute(
                f"SELECT epoch, entry_index, sensor_index, sensor_type, sensor_data, timestamp, "
                f"reading_id, data_checksum FROM {table} WHERE rowid IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                epoch, entry_index, sensor_index, s_type, s_data, stamp, rid, checksum = row
                record = Record(
                    origin=origin, epoch=epoch, entry_index=entry_index, sensor_index=sensor_index,
                    sensor_type=s_type, sensor_data=s_data, timestamp=stamp, reading_id=rid,
                    data_checksum=checksum,
                )
                try:
                    signer.verify(record)
                except BadRecord:
                    bad += 1
                checked += 1
        return checked, bad
    finally:
        db.close()


class PositionProbe:
    """
    How far a node holds one log, read from its database file (read-only,
    WAL: the node is never blocked): ``log_positions`` moves in the same
    transaction as the rows, so it is what ``/readings`` would answer.
    """

    def __init__(self, node: Node, origin: str, epoch: str):
        self.node = node
        self.path: Optional[Path] = None
        self.schema_origin = origin
        self.epoch = epoch
        self._db = None

    def read(self) -> int:
        if self._db is None:
            if self.path is None:
                if not (self.node.data_dir / "node.id").exists():
                    return 0
                self.path = self.node.db_path(self.schema_origin)
            if not self.path.exists():
                return 0
            self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            row = self._db.execute(
                "SELECT last_index FROM log_positions WHERE origin = ? AND epoch = ?",
                (self.schema_origin, self.epoch),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Timeline:
    """
    When a node was first seen holding each position of a log: polled every
    ``interval`` seconds from its database (``kind="db"``), or from its
    ``/readings?origin=..&limit=1`` (``kind="http"``, one request at a time).
    """

    def __init__(self, reactor, node: Node, origin: str, epoch: str, interval: float,
                 kind: str = "db", http: Optional[Http] = None):
        self.reactor = reactor
        self.node = node
        self.origin = origin
        self.epoch = epoch
        self.interval = interval
        self.kind = kind
        self.http = http
        self.times = array("d")
        self.positions = array("q")
        self.last = 0
        self.polls = 0
        self.errors = 0
        self._probe = PositionProbe(node, origin, epoch) if kind == "db" else None
        self._loop = None
        self._running = False
        self._done = None

    def start(self) -> None:
        self._running = True
        if self.kind == "db":
            from twisted.internet.task import LoopingCall

            self._loop = LoopingCall(self._poll_db)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)
        else:
            from twisted.internet.defer import Deferred

            self._done = Deferred.fromCoroutine(self._poll_http())

    def _seen(self, position: int) -> None:
        self.polls += 1
        if position > self.last:
            self.last = position
            self.times.append(time.perf_counter())
            self.positions.append(position)

    def _poll_db(self) -> None:
        self._seen(self._probe.read())

    async def _poll_http(self) -> None:
        path = f"/readings?origin={self.origin}&limit=1"
        while self._running:
            t = time.perf_counter()
            try:
                code, body = await self.http.get(self.node.status_port, path, timeout=5)
            except Exception:
                self.errors += 1
                code, body = None, None
            if code == 200 and body.get("readings"):
                newest = body["readings"][0]
                if newest.get("epoch") == self.epoch:
                    self._seen(newest["entry_index"])
                else:
                    self.polls += 1
            elapsed = time.perf_counter() - t
            await sleep(self.reactor, max(0.0, self.interval - elapsed))

    async def stop(self) -> None:
        self._running = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._done is not None:
            await self._done
        if self._probe is not None:
            self._probe.close()

    def when(self, position: int) -> Optional[float]:
        """
        The first time the node was seen holding ``position``.
        """
        k = bisect_left(self.positions, position)
        return self.times[k] if k < len(self.positions) else None


# -- sensors ------------------------------------------------------------------------------


def sensor_classes():
    """
    The sensor client, made once the reactor is installed.
    """
    from twisted.internet.protocol import Protocol

    perf_counter = time.perf_counter

    class SensorClient(Protocol):
        """
        One sensor connection of a L{Stream}: it remembers each unanswered
        line's send time, and hands every answer to the stream.
        """

        def __init__(self, stream: "Stream", number: int):
            self.stream = stream
            self.number = number
            self.prefix = stream.line_prefix + b"%s-%d-" % (stream.tag, number)
            self.sent = 0
            self.acked = 0
            self.pending: deque = deque()
            self.buffer = b""
            self.lost = False

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)

        def connectionLost(self, reason):
            self.lost = True
            self.stream.lost(self, reason)

        def send(self, n: int) -> None:
            if n <= 0:
                return
            start = self.sent
            prefix = self.prefix
            data = b"".join([b"%s%d\n" % (prefix, i) for i in range(start, start + n)])
            self.sent = start + n
            now = perf_counter()
            self.pending.extend([now] * n)
            self.transport.write(data)

        def dataReceived(self, data: bytes) -> None:
            now = perf_counter()
            lines = (self.buffer + data).split(b"\n")
            self.buffer = lines.pop()
            if not lines:
                return
            pending = self.pending
            stream = self.stream
            for line in lines:
                if not pending:
                    stream.error(self, b"an answer to no line: " + line)
                    continue
                sent = pending.popleft()
                if line[:3] == b"OK ":
                    try:
                        index = int(line[3:])
                    except ValueError:
                        stream.error(self, line)
                        continue
                    stream.answered(index, sent, now)
                else:
                    stream.error(self, line)
            n = len(lines)
            self.acked += n
            stream.acked += n
            stream.after_answers(self, n)

    return SensorClient


class Stream:
    """
    Readings sent to one node over ``connections`` sensor connections:
    pipelined (``window`` unanswered lines per connection, up to ``budget``
    lines in all) or paced (``rate`` readings/s spread over the connections).

    When ``recording``, each answer's latency is kept, and its entry_index
    with the time the OK arrived (for replication lag).
    """

    def __init__(self, reactor, node: Node, connections: int, tag: str,
                 line_prefix: bytes = b"Temperature,39C,2026-11-28 10:00:00.123456,"):
        self.reactor = reactor
        self.node = node
        self.connections = connections
        self.tag = tag.encode()
        self.line_prefix = line_prefix
        self.clients: list = []
        self.acked = 0
        self.errors: list[str] = []
        self.lost_early: list[str] = []
        self.closing = False
        self.recording = False
        self.latencies = array("d")
        self.ok_indexes = array("q")
        self.ok_times = array("d")
        self.max_index = 0
        self.window = 0
        self.budget = 0
        self._pacer = None
        self._drain_waiter = None

    async def connect(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        Client = sensor_classes()
        step = 50
        for first in range(0, self.connections, step):
            waiting = []
            for number in range(first, min(first + step, self.connections)):
                client = Client(self, number)
                endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.node.sensor_port, timeout=10)
                waiting.append(connectProtocol(endpoint, client))
            from twisted.internet.defer import gatherResults

            self.clients.extend(await gatherResults(waiting, consumeErrors=True))

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.clients)

    # From the clients.

    def answered(self, index: int, sent: float, now: float) -> None:
        if index > self.max_index:
            self.max_index = index
        if self.recording:
            self.latencies.append(now - sent)
            self.ok_indexes.append(index)
            self.ok_times.append(now)

    def error(self, client, line: bytes) -> None:
        if len(self.errors) < 10:
            self.errors.append(f"connection {client.number}: {line[:200]!r}")

    def lost(self, client, reason) -> None:
        if not self.closing:
            self.lost_early.append(f"connection {client.number}: {reason.getErrorMessage()}")
        self._maybe_drained()

    def after_answers(self, client, n: int) -> None:
        if self.window and self.budget > 0:
            k = min(n, self.budget)
            self.budget -= k
            client.send(k)
        self._maybe_drained()

    def _maybe_drained(self) -> None:
        if (
            self._drain_waiter is not None
            and (not self.window or self.budget <= 0)
            and all(c.acked == c.sent or c.lost for c in self.clients)
        ):
            d, self._drain_waiter = self._drain_waiter, None
            d.callback(None)

    # Driving.

    def pipeline(self, window: int, budget: int) -> None:
        """
        Keep ``window`` lines unanswered per connection until ``budget``
        lines were sent.
        """
        self.window = window
        self.budget = budget
        for client in self.clients:
            k = min(window, self.budget)
            self.budget -= k
            client.send(k)

    def pace(self, rate: float, tick: float = 0.002) -> None:
        """
        Send ``rate`` readings/s in all, round robin over the connections,
        checked every ``tick`` seconds (a late tick sends what is due).
        """
        from twisted.internet.task import LoopingCall

        t0 = time.perf_counter()
        state = {"sent": 0, "next": 0}
        clients = self.clients

        def tick_():
            due = int(rate * (time.perf_counter() - t0)) - state["sent"]
            if due <= 0:
                return
            state["sent"] += due
            # Spread over the connections, starting where the last tick stopped.
            per, extra = divmod(due, len(clients))
            for k in range(len(clients)):
                n = per + (1 if k < extra else 0)
                if n:
                    clients[(state["next"] + k) % len(clients)].send(n)
            state["next"] = (state["next"] + extra) % len(clients)

        self._pacer = LoopingCall(tick_)
        self._pacer.clock = self.reactor
        self._pacer.start(tick, now=True)

    def stop_sending(self) -> None:
        self.window = 0
        self.budget = 0
        if self._pacer is not None and self._pacer.running:
            self._pacer.stop()

    async def drain(self, timeout: float, stop: bool = True) -> None:
        """
        Wait until every line sent is answered: after stopping the sending
        (``stop``), or once a pipeline's whole budget has been sent.
        """
        from twisted.internet.defer import Deferred

        if stop:
            self.stop_sending()
        elif self._pacer is not None:
            raise ValueError("a paced stream never finishes by itself")
        self._drain_waiter = Deferred()
        waiter = self._drain_waiter
        self._maybe_drained()
        waiter.addTimeout(timeout, self.reactor)
        try:
            await waiter
        except Exception:
            raise BenchFailure(
                f"{self.sent - self.acked} lines to {self.node.name} still unanswered "
                f"{timeout:.0f} s after sending stopped ({self.budget} not sent yet)"
            ) from None

    def close(self) -> None:
        self.closing = True
        for client in self.clients:
            if client.transport is not None:
                client.transport.loseConnection()

    def problems(self) -> list[str]:
        out = []
        if self.errors:
            out.append(f"answers other than OK from {self.node.name}: " + "; ".join(self.errors))
        if self.lost_early:
            out.append(f"sensor connections to {self.node.name} dropped: " + "; ".join(self.lost_early[:5]))
        return out
