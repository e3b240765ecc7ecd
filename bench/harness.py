"""
The run harness: the epoll reactor, a watchdog over the whole run, every
node and profiler killed however it ends, a fresh temporary directory per
benchmark, the verdict, and the options every node-starting script shares.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from core import BenchFailure
from nodes import LIVE_NODES, Http, use_node_code
from pyspy import LIVE_PROFILERS
from report import write_json


def add_node_options(parser: argparse.ArgumentParser, what: str = "the nodes'") -> None:
    """
    --json, --tmpdir, --keep and --node-code, for a script that starts nodes.
    """
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--tmpdir", default=None, help=f"where {what} directories go")
    parser.add_argument("--keep", action="store_true", help=f"keep {what} directories")
    parser.add_argument("--node-code", metavar="DIR", default=None,
                        help="run the nodes with the p2pstore package (and twistd plugin) of the "
                             "checkout DIR instead of this one's, e.g. another commit's worktree")


def apply_node_options(args) -> None:
    """
    Act on --node-code (before any node starts) and say which code the
    nodes run.
    """
    if args.node_code:
        try:
            package = use_node_code(args.node_code)
        except BenchFailure as e:
            raise SystemExit(str(e)) from None
        print(f"nodes run the p2pstore of {package.resolve()} (--node-code)")


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
