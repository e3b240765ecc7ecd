#!/usr/bin/env python3
"""
Ingestion benchmark: how many readings per second one p2pstore node
acknowledges, and how fast it answers.

Starts a real ``twistd -n --pidfile= p2pstore`` in a temporary data directory
on free loopback ports, waits for ``GET /status`` to say ``Running``, then
opens N sensor connections from this process (Twisted client protocols on
real sockets). Each connection pipelines seed-format lines
(``Temperature,39C,2026-11-28 10:00:00.123456``, each with its own timestamp),
or with ``--reading-ids`` lines ending in a reading id as the simulator sends
them, keeping a window of W lines unanswered: every answer that comes back
lets one more line go out.

After a warm-up it measures, over --duration seconds:

- acknowledged readings/s (``OK`` answers received in the period),
- answer latency p50/p99 (from a line's send to its ``OK``),
- the node's CPU seconds (utime + stime of /proc/<pid>/stat, all threads;
  also its main, reactor, thread alone), its peak RSS (VmHWM),
- this driver's own CPU and the whole machine's, to tell who was the
  bottleneck.

Then it stops sending, waits for every line to be answered, stops the node
with SIGTERM and checks the SQLite file: every acknowledged line (known by
its timestamp, or its reading_id) is in ``server_id_<node id>`` exactly
once, at the entry_index it was answered with, entry_index runs 1..N without
a gap, nothing unknown was stored, the fields are as sent and a sample of
HMACs verifies under the cluster key. Any failure prints FAILED and exits
non-zero.

    python bench/ingest.py                      # 100 connections, 20 s
    python bench/ingest.py --repeat 3           # medians of 3 runs
    python bench/ingest.py --connections 1000 --json /tmp/ingest.json
    python bench/ingest.py --window 24          # latency near 70,000 readings/s
    python bench/ingest.py --rate 70000         # latency at a paced load
    python bench/ingest.py --peers 1            # with a peer replicating live
    python bench/ingest.py --quick              # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from array import array
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (bench/ first on the path, then this)
    LIVE_NODES,
    BenchFailure,
    Http,
    Node,
    calibrate,
    driver_cpu,
    machine,
    machine_line,
    make_secret,
    machine_cpu,
    peak_rss_mb,
    percentile,
    process_cpu,
    run,
)

SENSOR_LINE = b"Temperature,39C,2026-11-28 10:00:00.123456,"
# Without --reading-ids each line is the seed's, and its timestamp tells the
# check which line it was: line k of connection n is stamped START plus
# k * SPREAD + n microseconds, so that, as with real sensors, every
# connection's readings are near the same time.
START = datetime(2026, 11, 28)
SPREAD = 1000
# How many stored rows get their HMAC checked afterwards.
HMAC_SAMPLE = 2000


# -- the driver -------------------------------------------------------------


def build_driver(reactor):
    """
    The Twisted classes of the driver, made once the reactor is chosen.
    """
    from twisted.internet.protocol import ClientFactory, Protocol

    perf_counter = time.perf_counter

    class Sensor(Protocol):
        """
        One sensor connection pipelining lines, W unanswered at most.
        """

        def __init__(self, run, number: int):
            self.run = run
            self.number = number
            self.prefix = SENSOR_LINE + run.tag + b"-%d-" % number
            self.line = self.id_line if run.args.reading_ids else self.seed_line
            self.sent = 0
            # --rate: lines this connection was due to send so far.
            self.paced = 0
            self.acked = 0
            # [send time, lines of that write still unanswered], oldest first.
            self.writes: deque = deque()
            # The entry_index of each answered line, in order (-1: not OK).
            self.indexes = array("q")
            self.buffer = b""
            self.connected_d = None
            self.lost = False

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)
            d, self.connected_d = self.connected_d, None
            if d is not None:
                d.callback(self)

        def connectionLost(self, reason):
            self.lost = True
            self.run.connection_lost(self, reason)

        def send(self, n: int) -> None:
            run = self.run
            n = min(n, run.budget)
            if n <= 0:
                return
            run.budget -= n
            start = self.sent
            line = self.line
            data = b"".join([line(i) for i in range(start, start + n)])
            self.sent = start + n
            self.writes.append([perf_counter(), n])
            self.transport.write(data)

        def id_line(self, i: int) -> bytes:
            return b"%s%d\n" % (self.prefix, i)

        def seed_line(self, i: int) -> bytes:
            seconds, micro = divmod(i * SPREAD + self.number, 1_000_000)
            minutes, second = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            return b"Temperature,39C,2026-11-28 %02d:%02d:%02d.%06d\n" % (hour, minute, second, micro)

        def dataReceived(self, data: bytes) -> None:
            now = perf_counter()
            lines = (self.buffer + data).split(b"\n")
            self.buffer = lines.pop()
            n = len(lines)
            if not n:
                return
            try:
                values = [int(line[3:]) if line[:3] == b"OK " else -1 for line in lines]
            except ValueError:
                values = [-1] * n
            ok = n
            if -1 in values:
                for line, value in zip(lines, values):
                    if value == -1:
                        ok -= 1
                        self.run.error(self, line)
            self.indexes.extend(values)
            self.acked += n
            run = self.run
            writes = self.writes
            latencies = run.latencies if run.measuring else None
            if run.measuring:
                run.measured_acks += n
            k = n
            while k:
                if not writes:
                    run.error(self, b"(%d answers more than lines sent)" % k)
                    break
                write = writes[0]
                take = write[1] if write[1] <= k else k
                if latencies is not None:
                    latencies.extend([now - write[0]] * take)
                write[1] -= take
                k -= take
                if not write[1]:
                    writes.popleft()
            run.acked += n
            run.ok += ok
            if run.sending and not run.args.rate:
                self.send(n)
            elif self.acked == self.sent:
                run.connection_drained(self)

    class SensorFactory(ClientFactory):
        noisy = False

        def __init__(self, run, number):
            self.run = run
            self.number = number
            self.protocol_instance = None
            self.connected_d = None

        def buildProtocol(self, addr):
            p = Sensor(self.run, self.number)
            p.factory = self
            p.connected_d = self.connected_d
            self.protocol_instance = p
            return p

        def clientConnectionFailed(self, connector, reason):
            d, self.connected_d = self.connected_d, None
            if d is not None:
                d.errback(reason)

    return Sensor, SensorFactory


class Run:
    """
    One benchmark run: a node, N connections, the figures and the check.
    """

    def __init__(self, reactor, args, number: int, classes):
        self.reactor = reactor
        self.args = args
        self.number = number
        self.Sensor, self.SensorFactory = classes
        self.tag = b"r%d%04x" % (number, random.getrandbits(16))
        self.sensors: list = []
        self.latencies = array("d")
        self.measuring = False
        self.sending = False
        self.acked = 0
        # --rate: ticks at which a connection's window held lines back.
        self.held_back = 0
        # Answers that were OK: only those count as acknowledged readings/s.
        self.ok = 0
        self.measured_acks = 0
        self.budget = args.max_readings
        self.errors: list[str] = []
        self.lost_early: list[str] = []
        self.drain_waiter = None
        self.stopping = False
        self.http = Http(reactor)
        self.peer_nodes: list = []

    # Called by the sensors.

    def error(self, sensor, line: bytes) -> None:
        if len(self.errors) < 10:
            self.errors.append(f"connection {sensor.number}: {line[:200]!r}")
        elif len(self.errors) == 10:
            self.errors.append("...")

    def connection_lost(self, sensor, reason) -> None:
        if not self.stopping:
            self.lost_early.append(f"connection {sensor.number}: {reason.getErrorMessage()}")
            self.connection_drained(sensor)

    def connection_drained(self, sensor) -> None:
        if self.drain_waiter is not None and all(
            s.acked == s.sent or s.lost for s in self.sensors
        ):
            d, self.drain_waiter = self.drain_waiter, None
            d.callback(None)

    # The run.

    def sleep(self, seconds: float):
        from twisted.internet.task import deferLater

        return deferLater(self.reactor, seconds, lambda: None)

    async def status(self, node: Node) -> dict:
        return await self.http.status(node)

    async def wait_running(self, node: Node, timeout: float) -> dict:
        return await self.http.wait_running(node, timeout)

    async def connect_all(self, node: Node) -> None:
        from twisted.internet.defer import Deferred, gatherResults

        args = self.args
        # A few at a time, so the node's accept backlog never overflows into
        # SYN retries that would skew the start.
        step = 50
        for first in range(0, args.connections, step):
            waiting = []
            for number in range(first, min(first + step, args.connections)):
                factory = self.SensorFactory(self, number)
                factory.connected_d = Deferred()
                waiting.append(factory.connected_d)
                self.reactor.connectTCP("127.0.0.1", node.sensor_port, factory, timeout=10)
            self.sensors.extend(await gatherResults(waiting, consumeErrors=True))

    async def execute(self) -> dict:
        args = self.args
        workdir = Path(tempfile.mkdtemp(prefix="p2pstore-bench-ingest-", dir=args.tmpdir))
        secret = make_secret(workdir / "cluster.key") if args.peers else None
        node = Node(workdir / "node", args.sync, "node", secret)
        self.peer_nodes = [
            Node(workdir / f"peer{i}", args.sync, f"peer{i}", secret, peers=[node.peer_address])
            for i in range(1, args.peers + 1)
        ]
        try:
            return await self._execute(node)
        finally:
            for each in [node] + self.peer_nodes:
                each.kill()
                LIVE_NODES.discard(each)
            if args.keep:
                print(f"  kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    async def start_peers(self, node: Node) -> None:
        """
        --peers: nodes that dial the measured one and replicate its log live.
        """
        for peer in self.peer_nodes:
            peer.start()
            LIVE_NODES.add(peer)
        for peer in self.peer_nodes:
            await self.wait_running(peer, 60)
        deadline = time.monotonic() + 60
        while True:
            status = await self.status(node)
            linked = sum(1 for p in status["peers"] if p.get("authenticated"))
            if linked == len(self.peer_nodes):
                return
            if time.monotonic() > deadline:
                raise BenchFailure(f"only {linked} of {len(self.peer_nodes)} peers linked in 60 s")
            await self.sleep(0.1)

    async def peers_caught_up(self, node: Node, last_index: int) -> Optional[float]:
        """
        Seconds from now until every peer holds the node's log up to
        ``last_index`` (None: not within 60 s).
        """
        start = time.monotonic()
        while time.monotonic() - start < 60:
            held = []
            for peer in self.peer_nodes:
                origins = (await self.status(peer)).get("origins", {})
                held.append(origins.get(node.node_id, {}).get("last_index", 0))
            if all(h >= last_index for h in held):
                return time.monotonic() - start
            await self.sleep(0.05)
        return None

    async def _execute(self, node: Node) -> dict:
        args = self.args
        # The machine's speed before the node starts and after it stopped
        # (--peers' nodes, idle by then, are stopped only afterwards).
        calibration_before = calibrate()
        node.start()
        LIVE_NODES.add(node)
        await self.wait_running(node, 60)
        if self.peer_nodes:
            await self.start_peers(node)
        if args.pid_file:
            Path(args.pid_file).write_text(f"{node.pid}\n")
        await self.connect_all(node)

        self.sending = True
        pacer = None
        if args.rate:
            from twisted.internet.task import LoopingCall

            pacer = LoopingCall(self.pace, time.perf_counter())
            pacer.clock = self.reactor
            pacer.start(args.tick)
        else:
            for sensor in self.sensors:
                sensor.send(args.window)
        await self.sleep(args.warmup)
        self._check_alive(node)

        # The measured period.
        cpu0, main0 = process_cpu(node.pid)
        drv0 = driver_cpu()
        mach0 = machine_cpu()
        ok0 = self.ok
        t0 = time.perf_counter()
        self.measuring = True
        await self.sleep(args.duration)
        self.measuring = False
        t1 = time.perf_counter()
        ok1 = self.ok
        cpu1, main1 = process_cpu(node.pid)
        drv1 = driver_cpu()
        mach1 = machine_cpu()
        self._check_alive(node)

        # Stop sending; every line in flight must be answered.
        self.sending = False
        if pacer is not None:
            pacer.stop()
        from twisted.internet.defer import Deferred

        self.drain_waiter = Deferred()
        self.connection_drained(None)
        drained = self.drain_waiter
        timeout = self.reactor.callLater(60, lambda: drained.called or drained.errback(
            BenchFailure("lines were still unanswered 60 s after sending stopped")))
        await drained
        if timeout.active():
            timeout.cancel()
        status = await self.status(node)
        rss = peak_rss_mb(node.pid)
        cpu_total, _ = process_cpu(node.pid)
        caught_up = None
        if self.peer_nodes:
            caught_up = await self.peers_caught_up(
                node, status["origins"][node.node_id]["last_index"]
            )

        # Stop the node as a user would, then read what it stored.
        self.stopping = True
        for sensor in self.sensors:
            sensor.transport.loseConnection()
        # SIGTERM, then the exit code and the log must say it stopped cleanly.
        await node.stop(self.reactor, 60)
        calibration_after = calibrate()

        period = t1 - t0
        latencies = sorted(self.latencies)
        mach_total = mach1[0] - mach0[0]
        busy_cores = (
            (1 - ((mach1[1] - mach0[1]) + (mach1[2] - mach0[2])) / mach_total) * (os.cpu_count() or 1)
            if mach_total else 0.0
        )
        result = {
            "connections": args.connections,
            "window": args.window,
            "reading_ids": args.reading_ids,
            "rate": args.rate,
            "window_held_back": self.held_back,
            "sync": args.sync,
            "duration_s": round(period, 3),
            "readings_per_s": round((ok1 - ok0) / period, 1),
            "latency_p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "latency_p99_ms": round(percentile(latencies, 99) * 1000, 3),
            "latency_max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
            "node_cpu_s": round(cpu1 - cpu0, 2),
            "node_cpu_cores": round((cpu1 - cpu0) / period, 3),
            "node_main_thread_cores": round((main1 - main0) / period, 3),
            "node_other_threads_cores": round(((cpu1 - cpu0) - (main1 - main0)) / period, 3),
            "node_cpu_s_whole_run": round(cpu_total, 2),
            "node_peak_rss_mb": round(rss, 1),
            "driver_cpu_cores": round((drv1 - drv0) / period, 3),
            "machine_busy": round(
                1 - ((mach1[1] - mach0[1]) + (mach1[2] - mach0[2])) / mach_total, 3
            ) if mach_total else None,
            "machine_iowait": round((mach1[2] - mach0[2]) / mach_total, 3) if mach_total else None,
            "machine_steal": round((mach1[3] - mach0[3]) / mach_total, 3) if mach_total else None,
            # Everything else: other processes on the machine, kernel work
            # not charged to either process (loopback softirqs, journal).
            "other_cpu_cores": round(busy_cores - (cpu1 - cpu0 + drv1 - drv0) / period, 3),
            "acknowledged_total": self.acked,
            "sent_total": sum(s.sent for s in self.sensors),
            "status_accepted": status["sensors"]["accepted"],
            "status_rejected": status["sensors"]["rejected"],
            "peers": len(self.peer_nodes),
            # --peers: seconds after the last answer until every peer held
            # the whole log (None: not within 60 s).
            "peers_caught_up_s": None if caught_up is None else round(caught_up, 3),
            # The fastest and slowest CPU over the run.
            **calibration_span(calibration_before, calibration_after),
            "calibration_before_us": calibration_before,
            "calibration_after_us": calibration_after,
        }
        result["check"] = self.check(node, result)
        return result

    def pace(self, start: float) -> None:
        """
        --rate: send each connection its share of the lines due by now, as
        far as its window allows (a line held back by the window is late,
        and shows as a rate below the one asked for).
        """
        due = int((time.perf_counter() - start) * self.args.rate / len(self.sensors))
        window = self.args.window
        for sensor in self.sensors:
            owed = due - sensor.paced
            room = window - (sensor.sent - sensor.acked)
            n = min(owed, room)
            if n > 0:
                sensor.send(n)
                sensor.paced += n
            if owed > room:
                self.held_back += 1
                # Not owed later: the node was behind, and catching up in a
                # burst would hide it.
                sensor.paced = max(sensor.paced, due - window)

    def _check_alive(self, node: Node) -> None:
        if not node.alive():
            raise BenchFailure(
                f"the node exited with {node.process.returncode}:\n" + node.log_tail()
            )
        if self.lost_early:
            raise BenchFailure("connections dropped: " + "; ".join(self.lost_early[:5]))

    def check(self, node: Node, result: dict) -> dict:
        """
        What the node stored, against what it acknowledged.
        """
        problems: list[str] = []

        def problem(text: str) -> None:
            if len(problems) < 20:
                problems.append(text)

        if self.errors:
            problem("answers other than OK: " + "; ".join(self.errors))
        if self.lost_early:
            problem("connections dropped: " + "; ".join(self.lost_early[:5]))
        if result["status_accepted"] != result["sent_total"]:
            problem(
                f"/status counts {result['status_accepted']} accepted lines, "
                f"{result['sent_total']} were sent"
            )
        if result["status_rejected"]:
            problem(f"/status counts {result['status_rejected']} rejected lines")
        if result["peers"] and result["peers_caught_up_s"] is None:
            problem("the peers did not hold the node's whole log 60 s after its last answer")

        node_id = node.node_id
        table = f"server_id_{node_id}"
        db = sqlite3.connect(f"file:{node.data_dir / 'self_sensor_data.db'}?mode=ro", uri=True)
        try:
            rows, low, high, distinct, epochs = db.execute(
                f"SELECT count(*), min(entry_index), max(entry_index), "
                f"count(DISTINCT entry_index), count(DISTINCT epoch) FROM {table}"
            ).fetchone()
            if rows and not (low == 1 and high == rows and distinct == rows):
                problem(
                    f"entry_index is not 1..{rows} without gaps: min {low}, max {high}, "
                    f"{distinct} distinct"
                )
            if epochs > 1:
                problem(f"{epochs} epochs in one run")

            sensors = {s.number: s for s in self.sensors}
            # How often each line of each connection was stored.
            seen = {n: bytearray(s.sent) for n, s in sensors.items()}
            sensor_index_of: dict[int, int] = {}
            by_id = self.args.reading_ids
            prefix = self.tag.decode() + "-"
            unknown = 0
            cursor = db.execute(
                f"SELECT reading_id, entry_index, sensor_index, sensor_type, sensor_data, "
                f"timestamp FROM {table}"
            )
            for reading_id, entry_index, sensor_index, s_type, s_data, stamp in cursor:
                line = reading_id if by_id else stamp
                try:
                    number, seq = line_of(line, prefix) if by_id else line_at(stamp)
                    sensor = sensors[number]
                    if not 0 <= seq < sensor.sent:
                        raise ValueError
                except (AttributeError, TypeError, ValueError, KeyError):
                    unknown += 1
                    if unknown <= 3:
                        problem(f"a row nobody sent: reading_id {reading_id!r}, timestamp {stamp!r}")
                    continue
                counts = seen[number]
                if counts[seq] < 255:
                    counts[seq] += 1
                if counts[seq] == 2:
                    problem(f"line {line} stored more than once")
                if seq < sensor.acked and sensor.indexes[seq] != entry_index:
                    problem(
                        f"line {line} was answered OK {sensor.indexes[seq]} "
                        f"but stored at entry_index {entry_index}"
                    )
                sent = sensor.line(seq)[:-1].decode().split(",")
                if [s_type, s_data, stamp] + ([reading_id] if by_id else []) != sent:
                    problem(f"line {line} stored as {s_type!r}, {s_data!r}, {stamp!r}, {reading_id!r}")
                if sensor_index_of.setdefault(number, sensor_index) != sensor_index:
                    problem(f"connection {number} stored under two sensor_index values")
            if unknown:
                problem(f"{unknown} rows nobody sent")
            if len(set(sensor_index_of.values())) != len(sensor_index_of):
                problem("two connections stored under one sensor_index")

            missing = 0
            for number, sensor in sensors.items():
                counts = seen[number]
                acked = sensor.acked
                absent = acked - sum(1 for c in counts[:acked] if c)
                if absent:
                    missing += absent
                    problem(f"connection {number}: {absent} acknowledged readings not stored")
            stored_unacked = rows - unknown - sum(s.acked for s in sensors.values())

            hmac_checked = self._check_hmacs(db, node, table, rows, problem)
        finally:
            db.close()

        return {
            "ok": not problems,
            "rows": rows,
            "acknowledged": sum(s.acked for s in self.sensors),
            "missing": missing,
            "stored_unacknowledged": stored_unacked,
            "hmacs_checked": hmac_checked,
            "problems": problems,
        }

    def _check_hmacs(self, db, node: Node, table: str, rows: int, problem) -> int:
        from p2pstore.records import BadRecord, Record, Signer

        if not rows:
            return 0
        signer = Signer.from_key((node.secret_file or node.data_dir / "cluster.key").read_bytes())
        sample = sorted(random.sample(range(1, rows + 1), min(HMAC_SAMPLE, rows)))
        checked = 0
        for start in range(0, len(sample), 500):
            chunk = sample[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT epoch, entry_index, sensor_index, sensor_type, sensor_data, "
                f"timestamp, reading_id, data_checksum FROM {table} "
                f"WHERE entry_index IN ({marks})",
                chunk,
            ):
                epoch, entry_index, sensor_index, s_type, s_data, stamp, rid, checksum = row
                record = Record(
                    origin=node.node_id, epoch=epoch, entry_index=entry_index,
                    sensor_index=sensor_index, sensor_type=s_type, sensor_data=s_data,
                    timestamp=stamp, reading_id=rid, data_checksum=checksum,
                )
                try:
                    signer.verify(record)
                except BadRecord:
                    problem(f"entry_index {entry_index}: its HMAC does not verify")
                checked += 1
        return checked


def line_of(reading_id: str, prefix: str) -> tuple[int, int]:
    """
    The connection and line number a --reading-ids line's id names.
    """
    tag, number, seq = reading_id.rsplit("-", 2)
    if tag + "-" != prefix:
        raise ValueError(reading_id)
    return int(number), int(seq)


def line_at(timestamp: str) -> tuple[int, int]:
    """
    The connection and line number a seed line's timestamp names.
    """
    line, number = divmod((datetime.fromisoformat(timestamp) - START) // timedelta(microseconds=1), SPREAD)
    return number, line


# -- reporting --------------------------------------------------------------

COLUMNS = [
    ("readings_per_s", "readings/s", "{:,.0f}"),
    ("latency_p50_ms", "p50 ms", "{:.1f}"),
    ("latency_p99_ms", "p99 ms", "{:.1f}"),
    ("node_cpu_s", "node CPU s", "{:.1f}"),
    ("node_cpu_cores", "node cores", "{:.2f}"),
    ("node_main_thread_cores", "reactor thr", "{:.2f}"),
    ("node_other_threads_cores", "db thr", "{:.2f}"),
    ("node_peak_rss_mb", "peak RSS MB", "{:.1f}"),
    ("driver_cpu_cores", "driver cores", "{:.2f}"),
    ("machine_busy", "machine busy", "{:.0%}"),
    ("other_cpu_cores", "other cores", "{:.2f}"),
    ("calibration_fastest_us", "fast cpu us", "{:.2f}"),
    ("calibration_slowest_us", "slow cpu us", "{:.2f}"),
]


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


def print_table(runs: list[dict], median: dict | None) -> None:
    head = ["run"] + [title for _, title, _ in COLUMNS] + ["check"]
    body = []
    for i, r in enumerate(runs, 1):
        body.append(
            [str(i)] + [fmt.format(r[key]) for key, _, fmt in COLUMNS]
            + ["ok" if r["check"]["ok"] else "FAILED"]
        )
    if median is not None and len(runs) > 1:
        body.append(["median"] + [fmt.format(median[key]) for key, _, fmt in COLUMNS] + [""])
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    for row in [head] + body:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


def medians(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Ingestion benchmark of one p2pstore node (see bench/README.md)."
    )
    parser.add_argument("--connections", type=int, default=100, help="sensor connections (100)")
    parser.add_argument("--window", type=int, default=64,
                        help="unanswered lines per connection (64)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before measuring (3)")
    parser.add_argument("--rate", type=float, default=None, metavar="READINGS_PER_S",
                        help="send at this total rate instead of as fast as answers allow "
                             "(the window still caps each connection's unanswered lines): "
                             "the answer latency at that load")
    parser.add_argument("--tick", type=float, default=0.01, metavar="SECONDS",
                        help="with --rate, each connection sends its lines due every SECONDS (0.01)")
    parser.add_argument("--peers", type=int, default=0,
                        help="also run this many nodes that dial the measured one and replicate "
                             "its log while it ingests (0)")
    parser.add_argument("--reading-ids", action="store_true",
                        help="end each line with a reading id, as the simulator does; the node "
                             "then looks each one up to answer a resent reading with its index")
    parser.add_argument("--sync", choices=["full", "normal"], default="full",
                        help="the node's --sync (full)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs, each on a fresh node; medians are reported (1)")
    parser.add_argument("--max-readings", type=int, default=20_000_000,
                        help="stop sending after this many lines in a run (20,000,000)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 connections, 1 s warm-up, 4 s measured")
    parser.add_argument("--tmpdir", default=None,
                        help="where the node's temporary directory goes (the system default)")
    parser.add_argument("--keep", action="store_true", help="keep the node's directory")
    parser.add_argument("--pid-file", metavar="PATH",
                        help="write each node's pid here once it runs (to attach a profiler)")
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.warmup, args.duration, args.repeat = 10, 1.0, 4.0, 1
    for name in ("connections", "window", "repeat", "max_readings"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # 1000 connections need 1000 descriptors here.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if args.connections > SPREAD:
        raise SystemExit(f"--connections: at most {SPREAD}")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    info = machine()
    print(machine_line(info))
    print(
        f"ingest: {args.connections} connections, "
        + (f"{args.rate:,.0f} readings/s paced, " if args.rate else "")
        + f"window {args.window} ({args.connections * args.window} lines in flight at most), "
        f"{'lines with reading ids' if args.reading_ids else 'seed lines'}, --sync {args.sync}, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s measured, {args.repeat} run(s)"
    )
    runs: list[dict] = []
    # Nothing may outlive this: warm-up, period, drain, stop and check of
    # every run, with room for slow starts.
    budget = args.repeat * (args.warmup + args.duration + 300)

    async def all_runs(reactor):
        classes = build_driver(reactor)
        for number in range(1, args.repeat + 1):
            result = await Run(reactor, args, number, classes).execute()
            runs.append(result)
            check = result["check"]
            print(
                f"  run {number}: {result['readings_per_s']:,.0f} readings/s, p99 "
                f"{result['latency_p99_ms']:.1f} ms, calibration "
                f"{result['calibration_fastest_us']:.2f}-{result['calibration_slowest_us']:.2f} us; check "
                f"{'ok' if check['ok'] else 'FAILED'} ({check['rows']:,} rows, "
                f"{check['acknowledged']:,} acknowledged, {check['hmacs_checked']} HMACs)",
                flush=True,
            )
            for p in check["problems"]:
                print(f"    {p}")

    # The reactor, the watchdog, and every node killed however it ends.
    error = run(all_runs, budget)

    median = medians(runs) if runs else None
    if runs:
        print()
        print_table(runs, median)
        if args.peers:
            print(
                f"\n{args.peers} peer(s) replicating live; each held the whole log "
                + ", ".join(
                    "never (60 s)" if r["peers_caught_up_s"] is None else f"{r['peers_caught_up_s']:.2f} s"
                    for r in runs
                )
                + " after the last answer"
            )
        driver = median["driver_cpu_cores"]
        node_cores = median["node_cpu_cores"]
        busy = median["machine_busy"]
        print(
            f"\nnode {node_cores:.2f} cores (reactor thread {median['node_main_thread_cores']:.2f}, "
            f"database thread(s) {median['node_other_threads_cores']:.2f}); driver {driver:.2f} "
            f"cores; machine {busy:.0%} of {info['cores']} cores busy "
            f"({median['machine_iowait']:.0%} iowait, {median['machine_steal']:.0%} steal); "
            f"{median['other_cpu_cores']:.2f} cores used by other processes and the kernel"
        )
        if median["other_cpu_cores"] > 0.3:
            print("warning: other load on the machine during the runs; figures may be low")
        if driver > 0.85:
            verdict = "the driver (it used most of a core): these figures understate the node"
        elif busy > 0.95:
            verdict = "the machine's CPUs (all busy; node and driver share them)"
        elif node_cores > 0.8:
            verdict = (
                "the node: one process near one core while the machine has idle CPU, "
                "i.e. its Python threads are serialised on the GIL"
            )
        else:
            verdict = "the node, waiting (neither it nor the driver is CPU-bound: disk or latency)"
        print(f"bottleneck: {verdict}")
        if args.rate and median["window_held_back"]:
            print(
                f"the node fell behind --rate: the window held lines back "
                f"{median['window_held_back']:.0f} times (connection ticks)"
            )
    ok = error is None and bool(runs) and all(r["check"]["ok"] for r in runs)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "benchmark": "ingest",
                    "machine": info,
                    "config": {
                        k: getattr(args, k)
                        for k in ("connections", "window", "rate", "tick", "reading_ids", "peers",
                                  "duration", "warmup", "sync", "repeat", "max_readings", "quick")
                    },
                    "median": median,
                    "runs": runs,
                    "ok": ok,
                    "error": error,
                },
                indent=2,
            )
            + "\n"
        )
    if error:
        print(f"\nerror: {error}")
    print("\nFAILED" if not ok else "\nOK: every acknowledged reading is stored once, gapless")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
