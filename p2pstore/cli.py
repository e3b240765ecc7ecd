"""
The C{p2pstore} command: tools for an operator beside C{twistd p2pstore},
as argparse subcommands: C{status} (nodes' C{/status} summed up,
L{p2pstore.clusterview}), C{readings} (a time range of C{/readings}, every
page), C{verify DATA_DIR} (L{p2pstore.verify}) and C{key new FILE}; more
are added with L{add_command}.

Exit codes: 0 when all is well, 1 when something is wrong with what was
checked (a node down or not Running, an error from the node), 2 when it
could not be checked (a usage error, a node running on the directory, no
key), and for C{status} 3 when every node runs but readings are at risk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import clusterview
from .identity import KEY_BYTES, KEY_FILE, load_key, share_data_dir, write_new_key
from .nodeclient import DEFAULT_URL, MAX_PAGE, TIMEOUT, NodeError, base_url, fetch_statuses, readings_pages
from .settings import ConfigError
from .tokens import AccessFileError, parse_http_token
from .verify import Progress, verify

OK, PROBLEMS, USAGE, ATTENTION = 0, 1, 2, 3
# The help's descriptions are wrapped here, so that the examples after them
# keep their lines.
HELP_WIDTH = 79


class UsageError(Exception):
    """
    The command cannot run as given; the message says why and what to do.
    """


def _verify(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir} is not a directory: give a node's data directory")
    key_path = Path(args.secret_file) if args.secret_file else data_dir / KEY_FILE
    if not key_path.exists():
        raise UsageError(
            f"{key_path} does not exist: give the cluster key with --secret-file"
        )
    try:
        lock = share_data_dir(data_dir)
        key, _ = load_key(key_path, create=False)
    except ConfigError as e:
        raise UsageError(e.problem) from None
    try:
        progress = Progress(None if args.quiet else sys.stderr, every=args.progress_every)
        problems = verify(data_dir, key, str(key_path), sys.stdout, progress)
    finally:
        if lock is not None:
            lock.close()
    return PROBLEMS if problems else OK


def _status(args: argparse.Namespace) -> int:
    urls = _urls(args.url or [DEFAULT_URL])
    answers = fetch_statuses(urls, args.timeout)
    if args.json:
        print(json.dumps(clusterview.combined(answers), indent=2))
    else:
        sys.stdout.write(clusterview.render(answers, time.time()))
    if not clusterview.healthy(answers):
        return PROBLEMS
    return ATTENTION if clusterview.attention(answers) else OK


def _urls(given: Sequence[str]) -> list[str]:
    # Each --url may be a comma list; the same node given twice is asked once.
    urls = []
    for text in given:
        for part in text.split(","):
            if part.strip() and base_url(part) not in urls:
                urls.append(base_url(part))
    if not urls:
        raise UsageError("give a node's status address with --url, e.g. --url http://127.0.0.1:8000")
    return urls


class ReadingsProgress:
    """
    A line on C{stderr} every ``seconds`` while readings come, and a last
    one if any was shown: long work shows it is moving, short work stays
    quiet.
    """

    def __init__(self, out, seconds: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.out = out
        self.seconds = seconds
        self.clock = clock
        self.started = clock()
        self._next = self.started + seconds
        self.shown = False

    def tick(self, readings: int, pages: int) -> None:
        if self.out is None or self.clock() < self._next:
            return
        self._next = self.clock() + self.seconds
        self.shown = True
        self._say(f"{readings:,} readings so far ({pages:,} pages, {self._elapsed()})")

    def done(self, readings: int, pages: int) -> None:
        if self.shown:
            self._say(f"done: {readings:,} readings in {pages:,} pages, {self._elapsed()}")

    def _elapsed(self) -> str:
        return clusterview.duration(self.clock() - self.started)

    def _say(self, line: str) -> None:
        print(f"p2pstore readings: {line}", file=self.out, flush=True)


def _readings(args: argparse.Namespace) -> int:
    token = None
    if args.token_file:
        try:
            token = parse_http_token(Path(args.token_file).read_text(encoding="utf-8"), args.token_file)
        except OSError as e:
            raise UsageError(f"cannot read {args.token_file}: {e.strerror}") from None
        except (AccessFileError, UnicodeDecodeError) as e:
            raise UsageError(str(e)) from None
    params = {
        "since": args.since, "until": args.until, "type": args.type, "origin": args.origin,
    }
    out = sys.stdout.buffer
    progress = ReadingsProgress(None if args.quiet else sys.stderr)
    written = pages = 0
    try:
        for page in readings_pages(
            base_url(args.url), params, args.format, args.limit, args.page_size, token
        ):
            if args.format == "csv":
                if pages == 0:
                    out.write(page.csv_header.encode("utf-8"))
                out.write(page.csv_rows.encode("utf-8"))
            else:
                for reading in page.readings:
                    out.write(b"[\n" if written == 0 else b",\n")
                    out.write(json.dumps(reading, ensure_ascii=False).encode("utf-8"))
                    written += 1
            written += len(page.readings) if args.format == "csv" else 0
            pages += 1
            progress.tick(written, pages)
        if args.format == "json":
            out.write(b"\n]\n" if written else b"[]\n")
        out.flush()
    except NodeError as e:
        out.flush()
        got = f" (after {written:,} readings)" if written else ""
        print(f"p2pstore readings: {e}{got}", file=sys.stderr)
        return PROBLEMS
    progress.done(written, pages)
    return OK


def _key_new(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        write_new_key(path)
    except FileExistsError:
        raise UsageError(
            f"{path} exists; not overwriting it (a node with another key is cut off from "
            f"its cluster): remove it first if you mean to replace it"
        ) from None
    except OSError as e:
        raise UsageError(f"cannot create {path}: {e.strerror}") from None
    print(
        f"wrote a new cluster key ({KEY_BYTES} random bytes, mode 0600) to {path}\n"
        f"next: copy it to every node of the cluster, readable only by the user the node\n"
        f"runs as, and start each node with --secret-file naming it, e.g.\n"
        f"  scp -p {path} server:/etc/p2pstore/cluster.key\n"
        f"  twistd -n p2pstore --secret-file /etc/p2pstore/cluster.key ...\n"
        f"Keep it secret: whoever holds it can join the cluster and sign readings."
    )
    return OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _page_size(text: str) -> int:
    value = _positive(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"{value} is more than a node answers a page ({MAX_PAGE})")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not more than 0")
    return value


def add_command(
    commands,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
    epilog: Optional[str] = None,
) -> argparse.ArgumentParser:
    """
    A subcommand of C{p2pstore}, run by ``run(args)``, which returns the exit
    code or raises L{UsageError}. The ``epilog`` (examples) keeps its lines.
    """
    parser = commands.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, HELP_WIDTH),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run, command=name)
    return parser


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="p2pstore",
        description="Tools for p2pstore nodes (run a node with `twistd p2pstore`).",
        epilog="Exit codes: 0 all is well, 1 problems found, 2 usage error or cannot check.",
    )
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)
    check = add_command(
        commands,
        "verify",
        _verify,
        help="check a stopped node's files offline",
        description=(
            "Check a stopped node's data directory, read only: SQLite's integrity check "
            "of both databases, every record's HMAC under the cluster key, logs without "
            "gaps, log_positions against the rows, and node.id. Prints one line per "
            "problem (where, what, what to do) and a summary; exits 0 when all is well, "
            "1 when something is wrong, 2 when it cannot check (a running node holds the "
            "directory, no key)."
        ),
    )
    check.add_argument("data_dir", metavar="DATA_DIR", help="the node's --data-dir")
    check.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"the cluster key [default: DATA_DIR/{KEY_FILE}]",
    )
    check.add_argument(
        "--progress-every",
        metavar="N",
        type=_positive,
        default=100_000,
        help="a progress line on stderr every N records (and every 5 s) [default: 100000]",
    )
    check.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_status(commands)
    _add_readings(commands)
    _add_key(commands)
    return top


def _add_status(commands) -> None:
    status = add_command(
        commands,
        "status",
        _status,
        help="sum up one node's or a cluster's /status",
        description=(
            "Ask each node for its /status (all at once) and sum them up: a one-line "
            "verdict first, then per node its state, uptime, sensors, readings, peers and "
            "each link's lag, disk and exports; with several nodes, the copies of each "
            "origin on each node, and the nodes that did not answer with the error."
        ),
        epilog=(
            "examples:\n"
            "  p2pstore status\n"
            "  p2pstore status --url http://10.0.0.1:8000 --url http://10.0.0.2:8000\n"
            "  p2pstore status --url 10.0.0.1:8000,10.0.0.2:8000,10.0.0.3:8000\n"
            "  p2pstore status --url 10.0.0.1:8000 --json | jq .nodes[0].status.disk\n"
            "  p2pstore status --url ... >/dev/null || alert 'p2pstore cluster needs a look'\n"
            "\n"
            "exit codes: 0 every node answered and is Running, and all is well; 1 a node did\n"
            "not answer or is not Running (Initializing, Syncing); 2 a usage error; 3 every\n"
            "node is Running but readings are at risk: an origin not whole on each node, a\n"
            "link down, a full disk, an export failing (the first line says which)."
        ),
    )
    status.add_argument(
        "--url",
        metavar="URL",
        action="append",
        help=(
            f"a node's status address (its --status-port), http://host:port or host:port; "
            f"give it again or a comma list for a cluster [default: {DEFAULT_URL}]"
        ),
    )
    status.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=TIMEOUT,
        help=f"how long to wait for each node [default: {TIMEOUT:g}]",
    )
    status.add_argument(
        "--json",
        action="store_true",
        help="print the verdict and every node's /status (or its error) as one JSON document",
    )


def _add_readings(commands) -> None:
    readings = add_command(
        commands,
        "readings",
        _readings,
        help="write a time range of readings as CSV or JSON",
        description=(
            "Read a time range of one origin's readings from a node's /readings, oldest "
            "first, following its pages until the range ends (or --limit), and write them "
            "to stdout: CSV with one header row, or one JSON array of readings. Without "
            "--since and --until, every reading the node holds of the origin. Times are "
            "ISO-8601 (2026-11-28, 2026-11-28T10:00, with Z or +02:00 or without an "
            "offset, which means UTC); --since is inclusive, --until exclusive. A long read "
            "shows a progress line on stderr every 5 s."
        ),
        epilog=(
            "examples:\n"
            "  p2pstore readings --url 10.0.0.1:8000 --since 2026-11-28 --until 2026-11-29 > day.csv\n"
            "  p2pstore readings --url 10.0.0.1:8000 --since 2026-11-28T10:00Z --type Temperature \\\n"
            "      --format json | jq '.[].value'\n"
            "  p2pstore readings --url 10.0.0.1:8000 --origin 4f1c... --limit 100\n"
            "  p2pstore readings --url 10.0.0.1:8000 --token-file /etc/p2pstore/http.token\n"
            "\n"
            "exit codes: 0 every reading asked for was written; 1 the node did not answer or\n"
            "answered an error (printed as one line; the readings before it were written);\n"
            "2 a usage error."
        ),
    )
    readings.add_argument(
        "--url", metavar="URL", default=DEFAULT_URL,
        help=f"the node's status address, http://host:port or host:port [default: {DEFAULT_URL}]",
    )
    readings.add_argument("--since", metavar="TIME", help="the first instant, inclusive")
    readings.add_argument("--until", metavar="TIME", help="the instant to stop before")
    readings.add_argument("--type", metavar="TYPE", help="only this sensor type, e.g. Temperature")
    readings.add_argument(
        "--origin", metavar="NODE_ID",
        help="the node whose sensors took the readings [default: the node asked]",
    )
    readings.add_argument(
        "--format", choices=("csv", "json"), default="csv", help="[default: csv]"
    )
    readings.add_argument(
        "--limit", metavar="N", type=_positive, help="stop after N readings [default: all]"
    )
    readings.add_argument(
        "--page-size", metavar="N", type=_page_size, default=MAX_PAGE,
        help=f"readings asked for per request [default and most: {MAX_PAGE}]",
    )
    readings.add_argument(
        "--token-file", metavar="FILE",
        help="a file holding the node's --http-token-file token, sent as a bearer token",
    )
    readings.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_key(commands) -> None:
    key = commands.add_parser(
        "key",
        help="make a cluster key",
        description="Cluster key files (the --secret-file every node of a cluster shares).",
    )
    key_commands = key.add_subparsers(title="commands", metavar="COMMAND", required=True)
    new = add_command(
        key_commands,
        "new",
        _key_new,
        help="write a new cluster key to FILE",
        description=(
            f"Write {KEY_BYTES} random bytes to FILE, readable only by you (mode 0600), as "
            f"a node makes its key on first start. FILE must not exist: a node given "
            f"another key than its cluster's is cut off from it. Copy the file to every "
            f"node and start each with --secret-file pointing at it."
        ),
        epilog=(
            "examples:\n"
            "  p2pstore key new cluster.key\n"
            "  scp -p cluster.key node2:/etc/p2pstore/cluster.key\n"
            "\n"
            "exit codes: 0 written; 2 FILE exists or cannot be made."
        ),
    )
    new.set_defaults(command="key new")
    new.add_argument("file", metavar="FILE", help="where to write the key (a new file)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """
    Run C{p2pstore} with ``argv`` (the process's arguments by default).

    @return: the exit code.
    """
    top = parser()
    args = top.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"p2pstore {args.command}: {e}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:
        # `p2pstore readings ... | head` took what it wanted: stop quietly,
        # and keep Python from failing again on flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
