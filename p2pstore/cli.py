"""
The C{p2pstore} command: tools for an operator beside C{twistd p2pstore},
as argparse subcommands (C{p2pstore verify DATA_DIR}; more are added with
L{add_command}).

Exit codes: 0 when all is well, 1 when something is wrong with what was
checked, 2 when it could not be checked (a usage error, a node running on
the directory, no key).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from .identity import KEY_FILE, load_key, share_data_dir
from .settings import ConfigError
from .verify import Progress, verify

OK, PROBLEMS, USAGE = 0, 1, 2


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_command(
    commands, name: str, run: Callable[[argparse.Namespace], int], help: str, description: str
) -> argparse.ArgumentParser:
    """
    A subcommand of C{p2pstore}, run by ``run(args)``, which returns the exit
    code or raises L{UsageError}.
    """
    parser = commands.add_parser(name, help=help, description=description)
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
    return top


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
