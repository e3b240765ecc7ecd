#!/usr/bin/env python3
"""
Disk wear benchmark: the bytes one p2pstore node writes to its disk per
acknowledged reading, at a paced realistic load, with every answer after
fsync.

Starts a real ``twistd -n --pidfile= p2pstore`` with a fresh data directory
(under --tmpdir, which must be on a real disk: the script says which
filesystem the data directory is on), waits for ``Running``, and drives it
from the compiled client of bench/cload.py (or --client python): 100
connections each sending 10 readings/s (1,000/s in all), paced every
--tick (1 ms, so one connection sends each millisecond, as 100 sensors with
their own phase would), each connection keeping at most --window (4) lines
unanswered. The lines end in reading ids, as the simulator sends them
(``Temperature,39C,2026-11-28 10:00:00.123456,<tag>-<connection>-<k>``);
``--lines seed`` sends seed lines instead. After --warmup (10 s) it
measures, over --duration (60 s):

- bytes written to disk per acknowledged reading: the delta of the node's
  ``write_bytes`` in /proc/<pid>/io (the page cache pages the node made
  dirty, i.e. what the kernel will send to the disk for it), also
  ``wchar`` (bytes the node passed to write calls) and the whole disk's
  sectors written (/sys/dev/block, every process and the filesystem's
  journal included);
- the node's write and fsync calls, traced with ``perf record`` on the
  syscall tracepoints (cheap, in the kernel; ``--trace strace`` attaches
  strace instead, which slows every system call): fsyncs/s, commits/s
  (fsyncs of the WAL after new frames), WAL frames per commit, checkpoints
  (fsyncs of the database file), and per file the bytes written and the
  page cache pages dirtied, which should add up to write_bytes;
- answer latency p50/p99, the node's CPU (reactor thread, database
  threads), the client's CPU and this script's.

Then, unless ``--page-sample 0``, strace samples the node for a few seconds
(after the measured period, so it slows nothing measured), recording the
page number in each WAL frame header; once the node has stopped, SQLite's
dbstat of the database names the b-tree (table or index) each page belongs
to: the frames each commit writes, by b-tree.

Finally it stops sending, waits for every answer, stops the node with
SIGTERM and checks its database as bench/ingest.py does: every acknowledged
reading stored exactly once at the index it was answered with, gapless
from 1, a sample of HMACs verified. A wrong result, or write_bytes staying
0 (a filesystem that does not account it), prints FAILED and exits
non-zero; a figure short of the target (at most 600 bytes a reading with
p99 under 50 ms) is only reported as such.

    python bench/diskwear.py --quick                    # smoke run, ~30 s
    python bench/diskwear.py --repeat 3                 # median of 3 runs of 60 s
    python bench/diskwear.py --repeat 3 --node-args "--sync normal"
    python bench/diskwear.py --node-code /tmp/dw --node-args "--commit-interval 20ms"
    python bench/diskwear.py --repeat 3 --json /tmp/diskwear.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import core  # noqa: F401  (first: this checkout's p2pstore)
from core import sleep
from harness import add_node_options, apply_node_options, run
from ingest import Run as IngestRun, choose_client, open_stream
from nodes import PEER_DB, SELF_DB, Node
from procfs import driver_cpu, machine_cpu, peak_rss_mb, process_cpu, raise_fd_limit
from report import calibrate, calibration_span, fmt, machine, machine_line, medians, percentile, print_table

# The target: bytes written a reading, and answer p99.
TARGET_BYTES = 600
TARGET_P99_MS = 50.0
OS_PAGE = 4096
# What a WAL frame header is (then the page follows).
WAL_FRAME_HEADER = 24
WAL_HEADER = 32


# -- the filesystem and the disk ---------------------------------------------

def filesystem_of(path: Path) -> dict:
    """
    The mount holding ``path`` (/proc/mounts, the longest mount point that
    contains it): device, mount point, type and options, and the block
    device's /sys stat file when there is one.
    """
    real = os.path.realpath(path)
    best = None
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mount, fstype, options = fields[:4]
        mount = mount.replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best["mount"])):
            best = {"device": device, "mount": mount, "fstype": fstype, "options": options}
    best = best or {"device": "?", "mount": "?", "fstype": "?", "options": ""}
    st = os.stat(real)
    stat = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    best["block_stat"] = str(stat) if stat.exists() else None
    usage = shutil.disk_usage(real)
    best["size_gb"] = round(usage.total / 1e9, 1)
    best["free_gb"] = round(usage.free / 1e9, 1)
    return best


def filesystem_text(fs: dict) -> str:
    return (f"{fs['fstype']} on {fs['device']} mounted at {fs['mount']} ({fs['options']}; "
            f"{fs['free_gb']:,.0f} of {fs['size_gb']:,.0f} GB free)")


def disk_written(fs: dict) -> Optional[int]:
    """
    Bytes written to the block device holding the data directory so far
    (sectors written x 512), every process and the journal included.
    """
    if not fs.get("block_stat"):
        return None
    try:
        return int(Path(fs["block_stat"]).read_text().split()[6]) * 512
    except (OSError, ValueError, IndexError):
        return None


def process_io(pid: int) -> dict:
    """
    /proc/<pid>/io: rchar, wchar, syscr, syscw, read_bytes, write_bytes,
    cancelled_write_bytes (all threads of the process).
    """
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def open_files(pid: int, known: Optional[dict] = None) -> dict[int, str]:
    """
    The node's descriptors by number: what each names (a file's path,
    ``pipe:[...]``, ``socket:[...]``), added to ``known`` (descriptors seen
    earlier keep what they named then).
    """
    files = dict(known or {})
    base = Path(f"/proc/{pid}/fd")
    for entry in base.iterdir():
        try:
            files.setdefault(int(entry.name), os.readlink(entry))
        except (OSError, ValueError):
            continue
    return files


def file_sizes(files: dict[int, str]) -> dict[int, int]:
    """
    The size of each regular file among ``files`` (where an appending write
    to it lands).
    """
    sizes = {}
    for fd, path in files.items():
        try:
            if path.startswith("/") and os.path.isfile(path):
                sizes[fd] = os.path.getsize(path)
        except OSError:
            continue
    return sizes


def file_role(path: str) -> str:
    """
    What a file of the node is, for the breakdown: main db, its WAL, ...
    """
    if not path.startswith("/"):
        # pipe:[123], socket:[456], anon_inode:[eventfd]: no page cache.
        return path.split(":")[0]
    name = os.path.basename(path)
    for db, short in ((SELF_DB, "self"), (PEER_DB, "peer")):
        for suffix, role in (("", "db"), ("-wal", "wal"), ("-shm", "shm"), ("-journal", "journal")):
            if name == db + suffix:
                return f"{short} {role}"
    if name == "node.log":
        return "node.log"
    return name


# -- the system call trace ---------------------------------------------------

_PERF_LINE = re.compile(
    r"^\s*(\d+)\s+([\d.]+):\s+syscalls:sys_enter_(pwrite64|fdatasync|fsync|write):\s+fd: (0x[0-9a-f]+)"
    r"(?:, buf: 0x[0-9a-f]+, count: (0x[0-9a-f]+)(?:, pos: (0x[0-9a-f]+))?)?"
)
_STRACE_LINE = re.compile(
    r'^(\d+)\s+([\d.]+)\s+(pwrite64|fdatasync|fsync|write)\((\d+)(?:, "((?:[^"\\]|\\.)*)"(?:\.\.\.)?, (\d+)(?:, (\d+))?)?'
)


def perf_usable() -> bool:
    if shutil.which("perf") is None:
        return False
    try:
        done = subprocess.run(
            ["perf", "stat", "-x,", "-e", "syscalls:sys_enter_fdatasync", "true"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and b"not supported" not in done.stderr


class Trace:
    """
    The node's pwrite64/write/fdatasync/fsync calls over a period, from
    ``perf record`` on the syscall tracepoints (``kind="perf"``, its data on
    /dev/shm when it exists, so that the trace writes nothing to the disk
    measured) or from strace (``kind="strace"``, which also records the
    first bytes of each write: the page number of a WAL frame header).
    """

    def __init__(self, kind: str, pid: int, workdir: Path, time_limit: float):
        self.kind = kind
        self.pid = pid
        scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else workdir
        self.path = Path(tempfile.mkstemp(prefix="p2pstore-diskwear-", suffix=f".{kind}", dir=scratch)[1])
        if kind == "perf":
            events = ",".join(f"syscalls:sys_enter_{s}" for s in ("pwrite64", "write", "fdatasync", "fsync"))
            command = ["timeout", "-s", "INT", str(int(time_limit)), "perf", "record", "-q",
                       "-k", "CLOCK_MONOTONIC", "-e", events, "-p", str(pid), "-o", str(self.path)]
        else:
            command = ["timeout", "-s", "INT", str(int(time_limit)), "strace", "-f", "-qq", "-ttt",
                       "-s", "4", "-xx", "-e", "trace=pwrite64,write,fdatasync,fsync",
                       "-e", "signal=none", "-p", str(pid), "-o", str(self.path)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        LIVE_TRACES.add(self)

    def clock(self) -> float:
        # perf's timestamps are CLOCK_MONOTONIC (-k), strace's the wall clock.
        return time.monotonic() if self.kind == "perf" else time.time()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        LIVE_TRACES.discard(self)

    def events(self) -> list[tuple]:
        """
        ``(time, tid, call, fd, count, pos, frame_page)``, in order;
        frame_page is the page number of a WAL frame header (strace only).
        """
        if self.kind == "perf":
            done = subprocess.run(
                ["perf", "script", "-i", str(self.path), "-F", "tid,time,event,trace"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300,
            )
            text = done.stdout.decode("utf-8", "replace")
            out = []
            for line in text.splitlines():
                m = _PERF_LINE.match(line)
                if m:
                    tid, t, call, fd, count, pos = m.groups()
                    out.append((float(t), int(tid), call, int(fd, 16),
                                int(count, 16) if count else 0, int(pos, 16) if pos else None, None))
            return out
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            m = _STRACE_LINE.match(line)
            if not m:
                continue
            tid, t, call, fd, data, count, pos = m.groups()
            page = None
            if data is not None and call == "pwrite64" and int(count) == WAL_FRAME_HEADER:
                raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-f]{2})", data))
                if len(raw) >= 4:
                    page = int.from_bytes(raw[:4], "big")
            out.append((float(t), int(tid), call, int(fd), int(count) if count else 0,
                        int(pos) if pos else None, page))
        out.sort(key=lambda e: e[0])
        return out

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


LIVE_TRACES: set = set()


def analyse(events: list[tuple], files: dict[int, str], sizes: dict[int, int], t0: float,
            t1: float) -> dict:
    """
    What the node wrote between t0 and t1, by file: write calls and bytes,
    fsyncs, and the 4 KiB page cache pages those writes made dirty (a page
    is dirtied again by the first write after an fsync of its file cleaned
    it), which is what write_bytes counts. Commits are the fsyncs of a WAL
    after frames were written to it since its last fsync (a checkpoint
    syncs the WAL without writing frames, and a WAL that starts over syncs
    its header alone first); checkpoints are the fsyncs of a database file.
    """
    per = defaultdict(lambda: {"writes": 0, "bytes": 0, "frames": 0, "syncs": 0, "dirtied_bytes": 0,
                               "commits": 0})
    dirty: dict[int, set] = defaultdict(set)
    framed: dict[int, int] = defaultdict(int)
    frames_per_commit: list[int] = []
    ends = dict(sizes)
    for t, _tid, call, fd, count, pos, _page in events:
        inside = t0 <= t <= t1
        path = files.get(fd)
        if pos is not None and (path is None or not path.startswith("/")):
            # A file opened and closed between the two looks at the
            # descriptors: SQLite's temporary files (a statement journal
            # spilled past 64 KiB, with temp_store=FILE), each written
            # from offset 0, deleted, and then discarded on close
            # (cancelled_write_bytes), though counted in write_bytes. Its
            # descriptor may name a socket by the next look: a socket takes
            # no pwrite.
            path = "/(temporary file)"
            if pos == 0 and call == "pwrite64":
                dirty[fd].clear()
        role = file_role(path) if path is not None else f"fd {fd}"
        path = path or "?"
        entry = per[role]
        if call in ("pwrite64", "write"):
            if count <= 0:
                continue
            new = 0
            if fd in ends or (pos is not None and path.startswith("/")):
                if pos is None:
                    # An appending write (the log) lands at the file's end.
                    pos = ends[fd]
                    ends[fd] += count
                pages = set(range(pos // OS_PAGE, (pos + count - 1) // OS_PAGE + 1))
                new = len(pages - dirty[fd])
                dirty[fd] |= pages
            if role.endswith("wal") and count == WAL_FRAME_HEADER and pos is not None and pos >= WAL_HEADER:
                framed[fd] += 1
                if inside:
                    entry["frames"] += 1
            if inside:
                entry["writes"] += 1
                entry["bytes"] += count
                entry["dirtied_bytes"] += new * OS_PAGE
        else:
            dirty[fd].clear()
            if inside:
                entry["syncs"] += 1
            if role.endswith("wal") and framed[fd]:
                if inside:
                    entry["commits"] += 1
                    frames_per_commit.append(framed[fd])
            framed[fd] = 0
    files_out = {k: dict(v) for k, v in sorted(per.items())}
    commits = sum(v["commits"] for v in per.values())
    return {
        "files": files_out,
        "commits": commits,
        "syncs": sum(v["syncs"] for v in per.values()),
        "fdatasync_or_fsync_by_file": {k: v["syncs"] for k, v in files_out.items() if v["syncs"]},
        "checkpoints": sum(v["syncs"] for k, v in per.items() if k.endswith(" db")),
        "frames": sum(v["frames"] for v in per.values()),
        "frames_per_commit_p50": percentile(sorted(frames_per_commit), 50) if frames_per_commit else None,
        "frames_per_commit_max": max(frames_per_commit) if frames_per_commit else None,
        "dirtied_bytes": sum(v["dirtied_bytes"] for v in per.values()),
        "written_bytes": sum(v["bytes"] for v in per.values()),
    }


def frames_by_btree(events: list[tuple], files: dict[int, str], db_path: Path) -> dict:
    """
    The frames written to the own database's WAL (strace sample), by the
    b-tree their page belongs to in the database as it is now (dbstat), and
    the commits of the sample.
    """
    wal_fds = {fd for fd, p in files.items() if file_role(p) == "self wal"}
    pages = Counter()
    commits = 0
    framed = False
    for _t, _tid, call, fd, count, pos, page in events:
        if fd not in wal_fds:
            continue
        if call in ("pwrite64", "write"):
            if page is not None and pos is not None and pos >= WAL_HEADER:
                pages[page] += 1
                framed = True
        elif framed:
            commits += 1
            framed = False
    owner: dict[int, tuple] = {}
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        for name, pageno, pagetype in db.execute("SELECT name, pageno, pagetype FROM dbstat"):
            owner[pageno] = (name, pagetype)
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    by_tree: Counter = Counter()
    by_kind: Counter = Counter()
    for page, n in pages.items():
        name, pagetype = owner.get(page, ("(page freed or beyond the file)", "?"))
        by_tree[short_tree(name)] += n
        by_kind[f"{short_tree(name)} {pagetype}"] += n
    return {
        "commits": commits,
        "frames": sum(pages.values()),
        "distinct_pages": len(pages),
        "page_size": page_size,
        "frames_by_btree": dict(by_tree.most_common()),
        "frames_by_btree_and_page_type": dict(by_kind.most_common()),
    }


def short_tree(name: str) -> str:
    # server_id_<32 hex>_reading_id -> readings_reading_id
    return re.sub(r"server_id_[0-9a-f]{32}", "readings", name)


# -- one run -----------------------------------------------------------------

class WearRun(IngestRun):
    """
    One node, paced sensor connections, the disk figures, the check
    (bench/ingest.py's).
    """

    def __init__(self, reactor, args, number: int):
        super().__init__(reactor, args, number, 1)
        self.traces: list = []

    async def execute(self) -> dict:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="p2pstore-bench-diskwear-", dir=args.tmpdir))
        node = Node(workdir / "node", args.sync, "node", extra_args=args.node_extra)
        try:
            return await self._run(node, workdir)
        finally:
            for trace in self.traces:
                trace.stop()
                trace.remove()
            if self.stream is not None:
                await self.stream.abort()
            node.kill()
            if args.keep:
                print(f"  kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    async def _run(self, node: Node, workdir: Path) -> dict:
        args = self.args
        calibration_before = calibrate()
        node.start()
        await self.http.wait_running(node, 60)
        fs = filesystem_of(node.data_dir)
        stream = self.stream = open_stream(self.reactor, args, node, self.tag)
        await stream.connect()
        stream.pace(args.rate, args.tick, window=args.window, budget=args.max_readings)
        await sleep(self.reactor, args.warmup)
        self._check_alive(node)

        trace = None
        if args.trace_kind:
            trace = Trace(args.trace_kind, node.pid, workdir, args.duration + 120)
            self.traces.append(trace)
            # perf and strace take a moment to attach to every thread.
            await sleep(self.reactor, 1.0)
        files = open_files(node.pid)
        sizes = file_sizes(files)
        # The measured period.
        io0 = process_io(node.pid)
        disk0 = disk_written(fs)
        cpu0, main0 = process_cpu(node.pid)
        client0 = self.client_cpu()
        drv0 = driver_cpu()
        mach0 = machine_cpu()
        tt0 = trace.clock() if trace else None
        t0 = time.perf_counter()
        await stream.start_recording()
        await sleep(self.reactor, args.duration)
        ok = await stream.stop_recording()
        t1 = time.perf_counter()
        tt1 = trace.clock() if trace else None
        io1 = process_io(node.pid)
        disk1 = disk_written(fs)
        cpu1, main1 = process_cpu(node.pid)
        client1 = self.client_cpu()
        drv1 = driver_cpu()
        mach1 = machine_cpu()
        self._check_alive(node)
        if trace:
            trace.stop()
            # Descriptors opened during the period.
            files = open_files(node.pid, files)

        # The page numbers of the WAL frames, from a short strace sample
        # after the measured period (it slows the node's system calls).
        sample = None
        if args.page_sample > 0 and shutil.which("strace"):
            before = (await self.http.status(node))["sensors"]["accepted"]
            sample = Trace("strace", node.pid, workdir, args.page_sample + 60)
            self.traces.append(sample)
            await sleep(self.reactor, args.page_sample)
            sample.stop()
            sample_files = open_files(node.pid)
            sample_readings = (await self.http.status(node))["sensors"]["accepted"] - before

        await stream.drain(60)
        status = await self.http.status(node)
        rss = peak_rss_mb(node.pid)
        self.sensors = await stream.finish()
        await node.stop(self.reactor, 60)
        calibration_after = calibrate()

        period = t1 - t0
        latencies = sorted(stream.latencies)
        mach_total = mach1[0] - mach0[0]
        busy = 1 - ((mach1[1] - mach0[1]) + (mach1[2] - mach0[2])) / mach_total if mach_total else None
        io = {k: io1[k] - io0[k] for k in io1}
        per_reading = (lambda v: round(v / ok, 1) if ok and v is not None else None)
        result = {
            "client": stream.kind,
            "connections": args.connections,
            "rate": args.rate,
            "tick_s": args.tick,
            "window": args.window,
            "lines": args.lines,
            "reading_ids": args.reading_ids,
            "sync": args.sync,
            "node_args": args.node_extra,
            "filesystem": fs,
            "duration_s": round(period, 3),
            "acknowledged_in_period": ok,
            "readings_per_s": round(ok / period, 1),
            "window_held_back": stream.held_back,
            "io": io,
            "write_bytes_per_reading": per_reading(io["write_bytes"]),
            "cancelled_write_bytes_per_reading": per_reading(io["cancelled_write_bytes"]),
            "wchar_per_reading": per_reading(io["wchar"]),
            "write_calls_per_reading": round(io["syscw"] / ok, 2) if ok else None,
            "disk_bytes_per_reading": per_reading(
                None if disk0 is None or disk1 is None else disk1 - disk0),
            "latency_p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "latency_p99_ms": round(percentile(latencies, 99) * 1000, 3),
            "latency_max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
            "node_cpu_cores": round((cpu1 - cpu0) / period, 3),
            "node_main_thread_cores": round((main1 - main0) / period, 3),
            "node_other_threads_cores": round(((cpu1 - cpu0) - (main1 - main0)) / period, 3),
            "node_peak_rss_mb": round(rss, 1),
            "client_cpu_cores": round((client1 - client0) / period, 3),
            "driver_cpu_cores": round((drv1 - drv0) / period, 3),
            "machine_busy": round(busy, 3) if busy is not None else None,
            "machine_iowait": round((mach1[2] - mach0[2]) / mach_total, 3) if mach_total else None,
            "other_cpu_cores": round(
                (busy or 0) * (os.cpu_count() or 1)
                - (cpu1 - cpu0 + drv1 - drv0 + (client1 - client0 if stream.pid else 0)) / period, 3),
            "trace": args.trace_kind,
            # What ingest.Run.check reads.
            "err_copies": stream.err_copies,
            "ok_short_of_copies": 0,
            "peers": 0,
            "peers_caught_up_s": None,
            "acknowledged_total": sum(s.acked for s in self.sensors),
            "sent_total": sum(s.sent for s in self.sensors),
            "status_accepted": status["sensors"]["accepted"],
            "status_rejected": status["sensors"]["rejected"],
            **calibration_span(calibration_before, calibration_after),
            "node_code": node.imported_from(),
        }
        for key in ("commits_per_s", "readings_per_commit", "frames_per_commit", "fsyncs_per_s",
                    "checkpoints_per_s", "traced_dirtied_per_reading"):
            result[key] = None
        if trace:
            traced = analyse(trace.events(), files, sizes, tt0, tt1)
            result["traced"] = traced
            if traced["commits"]:
                result["commits_per_s"] = round(traced["commits"] / period, 1)
                result["readings_per_commit"] = round(ok / traced["commits"], 2)
                result["frames_per_commit"] = round(traced["frames"] / traced["commits"], 2)
            result["fsyncs_per_s"] = round(traced["syncs"] / period, 1)
            result["checkpoints_per_s"] = round(traced["checkpoints"] / period, 2)
            result["traced_dirtied_per_reading"] = per_reading(traced["dirtied_bytes"])
            result["traced_by_file_per_reading"] = {
                role: {
                    "written": per_reading(v["bytes"]),
                    "dirtied": per_reading(v["dirtied_bytes"]),
                    "syncs_per_s": round(v["syncs"] / period, 1),
                    "frames_per_s": round(v["frames"] / period, 1),
                }
                for role, v in traced["files"].items()
            }
        if sample is not None:
            try:
                result["page_sample"] = frames_by_btree(sample.events(), sample_files, node.data_dir / SELF_DB)
                result["page_sample"]["seconds"] = args.page_sample
                # Accepted while strace ran (it slows the node: its commits
                # are larger than the measured period's).
                result["page_sample"]["readings"] = sample_readings
            except (OSError, sqlite3.Error) as e:
                result["page_sample"] = {"error": str(e)}
        result["check"] = self.check(node, result)
        if ok and io["write_bytes"] == 0:
            result["check"]["ok"] = False
            result["check"]["problems"].append(
                f"write_bytes stayed 0 over {ok:,} acknowledged readings: the data directory's "
                f"filesystem ({fs['fstype']}) does not account it; use --tmpdir on a real disk")
        return result


# -- reporting ---------------------------------------------------------------

COLUMNS = [
    ("readings_per_s", "readings/s", "{:,.0f}"),
    ("write_bytes_per_reading", "write_bytes B/rd", "{:,.0f}"),
    ("wchar_per_reading", "wchar B/rd", "{:,.0f}"),
    ("disk_bytes_per_reading", "disk B/rd", "{:,.0f}"),
    ("cancelled_write_bytes_per_reading", "cancelled B/rd", "{:,.0f}"),
    ("commits_per_s", "commits/s", "{:,.1f}"),
    ("readings_per_commit", "rd/commit", "{:.2f}"),
    ("frames_per_commit", "frames/commit", "{:.2f}"),
    ("fsyncs_per_s", "fsyncs/s", "{:,.1f}"),
    ("checkpoints_per_s", "ckpt/s", "{:.2f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("node_cpu_cores", "node cores", "{:.2f}"),
    ("node_main_thread_cores", "reactor thr", "{:.2f}"),
    ("node_other_threads_cores", "db thr", "{:.2f}"),
    ("client_cpu_cores", "client cores", "{:.2f}"),
    ("driver_cpu_cores", "driver cores", "{:.2f}"),
    ("other_cpu_cores", "other cores", "{:.2f}"),
    ("window_held_back", "held back", "{:,.0f}"),
]


def print_runs(runs: list[dict], median: Optional[dict]) -> None:
    head = ["run"] + [title for _, title, _ in COLUMNS] + ["check"]
    body = [[str(i)] + [fmt(r.get(k), f) for k, _, f in COLUMNS] + ["ok" if r["check"]["ok"] else "FAILED"]
            for i, r in enumerate(runs, 1)]
    if median is not None and len(runs) > 1:
        body.append(["median"] + [fmt(median.get(k), f) for k, _, f in COLUMNS] + [""])
    print_table(head, body, first_left=False)


def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["write_bytes_per_reading"] or 0)
    return ordered[(len(ordered) - 1) // 2]


def print_breakdown(run_: dict) -> None:
    """
    Where the bytes of one run (the median one) went.
    """
    traced = run_.get("traced")
    if not traced:
        print("\n(no system call trace: --trace none, or neither perf nor strace works here)")
        return
    ok = run_["acknowledged_in_period"] or 1
    period = run_["duration_s"]
    print(f"\nwhere the bytes went (run with the median write_bytes, {run_['trace']} trace of the "
          f"measured period), per acknowledged reading:")
    body = []
    for role, v in traced["files"].items():
        if not (v["bytes"] or v["syncs"]):
            continue
        body.append([role, f"{v['writes'] / ok:.2f}", f"{v['bytes'] / ok:,.0f}",
                     f"{v['dirtied_bytes'] / ok:,.0f}", f"{v['syncs'] / period:,.1f}",
                     f"{v['frames'] / period:,.1f}", f"{v['commits'] / period:,.1f}"])
    body.append(["all traced", "", f"{traced['written_bytes'] / ok:,.0f}",
                 f"{traced['dirtied_bytes'] / ok:,.0f}", f"{traced['syncs'] / period:,.1f}",
                 f"{traced['frames'] / period:,.1f}", f"{traced['commits'] / period:,.1f}"])
    body.append(["write_bytes (/proc)", "", "", f"{run_['io']['write_bytes'] / ok:,.0f}", "", "", ""])
    print_table(["file", "writes/rd", "written B/rd", "dirtied B/rd", "fsyncs/s", "frames/s",
                 "commits/s"], body)
    rest = run_["io"]["write_bytes"] - traced["dirtied_bytes"]
    print(f"write_bytes minus the pages the traced writes dirtied: {rest / ok:,.0f} B/reading "
          f"(the -shm file, written through mmap, and whatever else the kernel charged the node)")
    if traced["commits"]:
        print(f"commits: {traced['commits']:,} ({traced['commits'] / period:,.1f}/s, "
              f"{ok / traced['commits']:.2f} readings each); WAL frames a commit: mean "
              f"{traced['frames'] / traced['commits']:.2f}, p50 {traced['frames_per_commit_p50']}, "
              f"max {traced['frames_per_commit_max']}; checkpoints (fsyncs of a database file): "
              f"{traced['checkpoints']:,}")
    sample = run_.get("page_sample")
    if sample and "error" not in sample and sample.get("commits"):
        c = sample["commits"]
        n_read = sample.get("readings") or 0
        print(f"\nWAL frames by b-tree (strace sample of {sample['seconds']:g} s after the measured "
              f"period, which slows the node, so its commits are larger: {c:,} commits of "
              f"{n_read / c:.2f} readings, {sample['frames']:,} frames, "
              f"{sample['distinct_pages']:,} distinct pages, page size {sample['page_size']}):")
        print_table(["b-tree", "frames/commit", "frames/reading", "share"],
                    [[name, f"{n / c:.2f}", f"{n / n_read:.3f}" if n_read else "-",
                      f"{n / sample['frames']:.0%}"]
                     for name, n in sample["frames_by_btree_and_page_type"].items()])
    elif sample and "error" in sample:
        print(f"\npage sample failed: {sample['error']}")


def print_report(args, info: dict, runs: list[dict]) -> Optional[dict]:
    if not runs:
        return None
    median = medians(runs) if len(runs) > 1 else runs[0]
    print()
    print_runs(runs, median)
    fs = runs[0]["filesystem"]
    print(f"\ndata directory on {filesystem_text(fs)}")
    print("write_bytes B/rd: /proc/<node>/io write_bytes over the acknowledged readings of the period; "
          "wchar: bytes the node passed to write calls; disk: the whole device's sectors written "
          "(every process and the filesystem journal)")
    print_breakdown(median_run(runs))
    b, p99 = median["write_bytes_per_reading"], median["latency_p99_ms"]
    print(
        f"\nclient ({runs[0]['client']}) {median['client_cpu_cores']:.2f} cores, node "
        f"{median['node_cpu_cores']:.2f} cores"
        + ("; warning: the client used most of a core, it may have held the rate back"
           if median["client_cpu_cores"] > 0.85 else "")
    )
    if median["other_cpu_cores"] > 0.3:
        print("warning: other load on the machine during the runs")
    if args.sync == "normal" or "normal" in args.node_extra:
        print("note: with --sync normal a commit does not fsync the WAL, so 'commits' here counts "
              "only the WAL fsyncs of checkpoints")
    if median["window_held_back"]:
        print(f"the node fell behind the pace: the window held lines back "
              f"{median['window_held_back']:,.0f} times")
    if b is not None:
        print(
            f"target (at most {TARGET_BYTES} bytes a reading, answer p99 under {TARGET_P99_MS:.0f} ms): "
            f"{b:,.0f} bytes, p99 {p99:.1f} ms: "
            + ("met" if b <= TARGET_BYTES and p99 < TARGET_P99_MS else "not met")
        )
    return median


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Bytes written to disk per acknowledged reading by one p2pstore node "
                    "(see bench/README.md)."
    )
    parser.add_argument("--connections", type=int, default=100, help="sensor connections (100)")
    parser.add_argument("--per-connection", type=float, default=10.0, metavar="READINGS_PER_S",
                        help="readings a second each connection sends (10)")
    parser.add_argument("--tick", type=float, default=0.001, metavar="SECONDS",
                        help="the lines due are sent every SECONDS, round robin over the "
                             "connections (0.001: one connection a millisecond at 1,000/s)")
    parser.add_argument("--window", type=int, default=4,
                        help="unanswered lines a connection may have; a line due beyond it is "
                             "skipped and counted as held back (4)")
    parser.add_argument("--lines", choices=["ids", "seed"], default="ids",
                        help="lines ending in reading ids, as the simulator sends (ids), or seed "
                             "lines without (seed)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load before measuring (10)")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the node's --sync (full)")
    parser.add_argument("--node-args", default="", metavar="ARGS",
                        help="more options for twistd p2pstore, one string (e.g. \"--sync normal\" "
                             "or a prototype's \"--commit-interval 20ms\")")
    parser.add_argument("--trace", choices=["auto", "perf", "strace", "none"], default="auto",
                        help="how the node's writes and fsyncs are counted over the measured "
                             "period: perf (syscall tracepoints, cheap), strace (slows every "
                             "system call of the node), none; auto: perf if it works (auto)")
    parser.add_argument("--page-sample", type=float, default=5.0, metavar="SECONDS",
                        help="after the measured period, strace the node this long to name the "
                             "b-tree of every WAL frame (0: not; needs strace) (5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs, each on a fresh node; medians are reported (1)")
    parser.add_argument("--max-readings", type=int, default=5_000_000,
                        help="stop sending after this many lines in a run (5,000,000)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s warm-up, 10 s measured, 2 s page sample, one run")
    parser.add_argument("--client", choices=["auto", "c", "python"], default="auto",
                        help="who sends the lines: the compiled bench/loadclient.c (c), this "
                             "Python process (python), or c if it builds (auto)")
    add_node_options(parser, "the node's")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.page_sample, args.repeat = 2.0, 10.0, 2.0, 1
    for name in ("connections", "window", "repeat", "max_readings"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.per_connection <= 0 or args.tick <= 0:
        parser.error("--duration, --per-connection and --tick must be positive, --warmup not negative")
    args.rate = args.connections * args.per_connection
    args.reading_ids = args.lines == "ids"
    args.node_extra = shlex.split(args.node_args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.connections + 100)
    apply_node_options(args)
    choose_client(args)
    if args.trace == "auto":
        args.trace_kind = "perf" if perf_usable() else ("strace" if shutil.which("strace") else None)
    else:
        args.trace_kind = None if args.trace == "none" else args.trace
        if args.trace_kind == "perf" and not perf_usable():
            raise SystemExit("--trace perf: perf cannot count syscall tracepoints here")
        if args.trace_kind == "strace" and not shutil.which("strace"):
            raise SystemExit("--trace strace: strace is not installed")
    if args.trace_kind == "strace":
        print("warning: strace traces the measured period: every system call of the node is slowed")

    info = machine()
    print(machine_line(info))
    where = Path(args.tmpdir or tempfile.gettempdir())
    fs = filesystem_of(where)
    print(f"data directories under {where}: {filesystem_text(fs)}")
    if fs["fstype"] in ("tmpfs", "ramfs"):
        print(f"warning: {fs['fstype']} writes nothing to a disk and write_bytes stays 0 there: "
              f"use --tmpdir on a real disk")
    print(
        f"diskwear: {args.connections} connections x {args.per_connection:g} readings/s = "
        f"{args.rate:,.0f} readings/s paced every {args.tick * 1000:g} ms, window {args.window}, "
        f"{'lines with reading ids' if args.reading_ids else 'seed lines'}, --sync {args.sync}"
        + (f", node args {args.node_args!r}" if args.node_args else "")
        + f"; {args.warmup:g} s warm-up + {args.duration:g} s measured, {args.repeat} run(s); "
        f"trace: {args.trace_kind or 'none'}",
        flush=True,
    )
    runs: list[dict] = []
    budget = args.repeat * (args.warmup + args.duration + args.page_sample + 360)

    async def all_runs(reactor):
        for number in range(1, args.repeat + 1):
            result = await WearRun(reactor, args, number).execute()
            runs.append(result)
            check = result["check"]
            print(
                f"  run {number}: {result['readings_per_s']:,.0f} readings/s, write_bytes "
                f"{fmt(result['write_bytes_per_reading'], '{:,.0f}')} B/reading, "
                f"{fmt(result['commits_per_s'], '{:,.1f}')} commits/s, p50 "
                f"{result['latency_p50_ms']:.1f} p99 {result['latency_p99_ms']:.1f} ms, node "
                f"{result['node_cpu_cores']:.2f} cores, client {result['client_cpu_cores']:.2f}; check "
                f"{'ok' if check['ok'] else 'FAILED'} ({check['rows']:,} rows, "
                f"{check['acknowledged']:,} acknowledged, {check['hmacs_checked']} HMACs)",
                flush=True,
            )
            print(f"    the node imported p2pstore from {result['node_code']}")
            for p in check["problems"]:
                print(f"    {p}")

    try:
        error = run(all_runs, budget)
    finally:
        for trace in list(LIVE_TRACES):
            trace.stop()
            trace.remove()
    median = print_report(args, info, runs)
    ok = error is None and len(runs) == args.repeat and all(r["check"]["ok"] for r in runs)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "diskwear",
            "machine": info,
            "config": {k: getattr(args, k) for k in (
                "connections", "per_connection", "rate", "tick", "window", "lines", "duration",
                "warmup", "sync", "node_args", "trace_kind", "page_sample", "repeat", "quick",
                "node_code", "client", "tmpdir")},
            "median": median,
            "runs": runs,
            "ok": ok,
            "error": error,
        }, indent=2, default=str) + "\n")
    if error:
        print(f"\nerror: {error}")
    print("\nFAILED" if not ok else "\nOK: every acknowledged reading is stored once, gapless")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
