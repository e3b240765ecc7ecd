"""
The compiled sensor load client: bench/loadclient.c, built at run time with
``cc -O2`` into a cache directory (``$XDG_CACHE_HOME/p2pstore-bench``, else
``~/.cache/p2pstore-bench``, else a temporary one), named by the source's
hash so an edit rebuilds it, and driven over its stdin and stdout.

L{CompiledStream} offers what bench/ingest.py uses of L{load.Stream}: the
same lines (so the check of stored rows is the same), a window per
connection or a paced rate, latencies and OKs over a recorded period, and
each connection's sent lines and answered indexes afterwards. One C
process with epoll sends the load, so the client's CPU is its own and the
node, not the client, is what saturates.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from array import array
from pathlib import Path
from typing import Optional

from core import BenchFailure
from load import Sent

SOURCE = Path(__file__).resolve().with_name("loadclient.c")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    for where in (Path(base) / "p2pstore-bench", Path(tempfile.gettempdir()) / f"p2pstore-bench-{os.getuid()}"):
        try:
            where.mkdir(parents=True, exist_ok=True)
            if os.access(where, os.W_OK):
                return where
        except OSError:
            continue
    raise OSError("no writable cache directory")


def build() -> tuple[Optional[Path], str]:
    """
    The compiled client, built if needed: ``(path, "")``, or ``(None,
    why)`` when there is no C compiler or the build failed.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler (cc or gcc) on PATH"
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + compiler.encode()).hexdigest()[:16]
    try:
        cache = _cache_dir()
    except OSError as e:
        return None, str(e)
    binary = cache / f"loadclient-{digest}"
    if binary.exists():
        return binary, ""
    partial = cache / f".loadclient-{digest}-{os.getpid()}"
    done = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        return None, f"{compiler} failed: {done.stdout.decode(errors='replace')[-500:]}"
    partial.rename(binary)
    return binary, ""


def _protocol(stream: "CompiledStream"):
    from twisted.internet.protocol import ProcessProtocol

    class ClientProcess(ProcessProtocol):
        def __init__(self):
            self.buffer = b""

        def outReceived(self, data: bytes) -> None:
            lines = (self.buffer + data).split(b"\n")
            self.buffer = lines.pop()
            for line in lines:
                stream.reported(line.decode("utf-8", "replace"))

        def errReceived(self, data: bytes) -> None:
            stream.stderr += data.decode("utf-8", "replace")

        def processEnded(self, reason) -> None:
            stream.ended(reason)

    return ClientProcess()


class CompiledStream:
    """
    ``connections`` sensor connections to a node from one loadclient
    process (see L{load.Stream} for the meaning of each call).
    """

    kind = "c"

    def __init__(self, reactor, node, connections: int, tag: str, binary: Path,
                 lines: str = "ids", window: int = 64, time_limit: float = 600.0):
        self.reactor = reactor
        self.node = node
        self.connections = connections
        self.tag = tag.encode()
        self.lines = lines
        self.binary = binary
        self.window = window
        self.time_limit = time_limit
        self.errors: list[str] = []
        self.lost_early: list[str] = []
        self.latencies = array("d")
        self.held_back = 0
        # Answers "ERR copies: ..." (--ack-copies), counted by the client.
        self.err_copies = 0
        self.stderr = ""
        self.process = None
        self._out = None
        self._waiting: dict = {}
        self._ended = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    # From the process.

    def reported(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "error":
            if len(self.errors) < 10:
                number, _, text = rest.partition(" ")
                self.errors.append(f"connection {number}: {text[:200]!r}")
            return
        if word == "lost":
            number, _, why = rest.partition(" ")
            self.lost_early.append(f"connection {number}: {why}")
            return
        if word == "fatal":
            self._fail(BenchFailure(f"the load client failed: {rest} {self.stderr[-300:]}"))
            return
        waiter = self._waiting.pop(word, None)
        if waiter is not None:
            waiter.callback(rest)

    def ended(self, reason) -> None:
        self._fail(BenchFailure(
            f"the load client exited ({reason.getErrorMessage()}) {self.stderr[-300:]}"))
        d, self._ended = self._ended, None
        if d is not None:
            d.callback(None)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(error)

    async def _ask(self, command: Optional[str], answer: str, timeout: float) -> str:
        from twisted.internet.defer import Deferred

        d = self._waiting[answer] = Deferred()
        d.addTimeout(timeout, self.reactor)
        if command is not None:
            self.process.write(command.encode() + b"\n")
        try:
            return await d
        except BenchFailure:
            raise
        except Exception:
            raise BenchFailure(f"the load client did not answer {command!r} within {timeout:.0f} s") from None

    # Driving.

    async def connect(self) -> None:
        from twisted.internet.defer import Deferred

        self._outdir = Path(tempfile.mkdtemp(prefix="p2pstore-bench-client-"))
        self._out = self._outdir / "client"
        self._ended = Deferred()
        args = [str(self.binary), str(self.node.sensor_port), str(self.connections),
                str(self.window), "seed" if self.lines == "seed" else "ids", self.tag.decode(),
                str(int(self.time_limit)), str(self._out)]
        connected = self._ask(None, "connected", 60)
        from twisted.internet.defer import ensureDeferred

        connected = ensureDeferred(connected)
        self.process = self.reactor.spawnProcess(_protocol(self), args[0], args, env=dict(os.environ))
        await connected

    def pipeline(self, window: int, budget: int) -> None:
        self.process.write(b"pipeline %d %d\n" % (window, budget))

    def pace(self, rate: float, tick: float = 0.002, window: int = 0, budget: int = 0) -> None:
        self.process.write(b"pace %r %r %d %d\n" % (rate, tick, window or self.window,
                                                   budget or 2 ** 62))

    async def start_recording(self) -> None:
        self.process.write(b"record\n")

    async def stop_recording(self) -> int:
        ok, _ = (await self._ask("unrecord", "recorded", 30)).split()
        return int(ok)

    async def drain(self, timeout: float, stop: bool = True) -> None:
        _, _, held, err_copies = (await self._ask("stop", "drained", timeout)).split()
        self.held_back = int(held)
        self.err_copies = int(err_copies)

    async def finish(self) -> list:
        """
        Close the connections and end the client; what each connection
        sent and got back, and the recorded latencies.
        """
        await self._ask("close", "closed", 60)
        if self._ended is not None:
            await self._ended
        sent = []
        data = memoryview(Path(str(self._out) + ".idx").read_bytes())
        at = 0
        while at < len(data):
            head = array("q", data[at : at + 24].tobytes())
            at += 24
            record = Sent(head[0], self.lines, self.tag)
            record.sent, record.acked = head[1], head[2]
            record.indexes = array("q", data[at : at + 8 * head[2]].tobytes())
            at += 8 * head[2]
            sent.append(record)
        self.latencies = array("d", Path(str(self._out) + ".lat").read_bytes())
        shutil.rmtree(self._outdir, ignore_errors=True)
        return sent

    async def abort(self) -> None:
        if self.process is not None and self.process.pid is not None:
            try:
                self.process.signalProcess("KILL")
            except Exception:
                pass
        if self._out is not None:
            shutil.rmtree(self._outdir, ignore_errors=True)

    def problems(self) -> list[str]:
        out = []
        if self.errors:
            out.append(f"answers other than OK from {self.node.name}: " + "; ".join(self.errors))
        if self.lost_early:
            out.append(f"sensor connections to {self.node.name} dropped: " + "; ".join(self.lost_early[:5]))
        return out
