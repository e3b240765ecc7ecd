"""
The monitor's command line: parse the options, start the polling, serve the page.
"""

from __future__ import annotations

import argparse
import errno
import math
import sys
from typing import Callable

from twisted.python.failure import Failure

from . import create_app
from .addresses import parse_servers

# What --help prints; without --servers the command says first what is missing.
HELP = """\
Usage: python web_monitor/views.py --servers <IP1[:PORT],IP2[:PORT],...,IPn[:PORT]>
Available options:
--servers   the nodes to monitor, comma-separated (each node's status port, 8000 when omitted)
--host      the address to serve the page on (127.0.0.1)
--port      the port to serve the page on (5000)
--interval  seconds between two refreshes (5)
--token-file  a file holding the token of nodes run with --http-token-file"""
USAGE = "You must specify the servers to monitor.\n" + HELP


class _OneLineParser(argparse.ArgumentParser):
    """
    Report a bad value as one line on stderr, naming its option; an option
    that does not exist (a misspelled one) with the usage after it.
    """

    def error(self, message: str):
        usage = f"{HELP}\n" if message.startswith("unrecognized arguments") else ""
        self.exit(2, f"{self.prog}: error: {message}\n{usage}")


def _option_type(convert: Callable, valid: Callable, expected: str):
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, not {text!r}")
        return value

    return parse


def parse_args(argv: list) -> argparse.Namespace:
    parser = _OneLineParser(prog="web_monitor/views.py", add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--servers")
    parser.add_argument(
        "--host",
        type=_option_type(str, lambda host: bool(host.strip()), "an address"),
        default="127.0.0.1",
    )
    parser.add_argument(
        "--port",
        type=_option_type(int, lambda port: 1 <= port <= 65535, "a port number from 1 to 65535"),
        default=5000,
    )
    parser.add_argument(
        "--interval",
        type=_option_type(
            float, lambda s: math.isfinite(s) and 0.5 <= s <= 3600, "a number of seconds from 0.5 to 3600"
        ),
        default=5.0,
    )
    parser.add_argument("--token-file")
    return parser.parse_args(argv)


def read_token(path: str) -> str:
    """
    The token in a token file: its one line that is not blank or a ``#``
    comment, as the node reads its --http-token-file.

    @raise ValueError: the file cannot be read or holds no single token.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1 or len(lines[0].split()) != 1:
        raise ValueError(f"{path} must hold one line: the token")
    return lines[0]


def main(argv: list) -> int:
    """
    Run the monitor until interrupted.

    @param argv: the arguments, without the program name.
    @return: the exit status.
    """
    options = parse_args(argv)
    servers = parse_servers(options.servers or "")
    if options.help:
        print(HELP)
        return 0
    if not servers:
        print(USAGE)
        return 1
    token = None
    if options.token_file is not None:
        try:
            token = read_token(options.token_file)
        except ValueError as e:
            print(f"web_monitor/views.py: error: --token-file: {e}", file=sys.stderr)
            return 2
    app = create_app(
        {
            "SERVERS": servers,
            "INTERVAL": options.interval,
            "CONSOLE": _print_now,
            "START_POLLER": False,
            "TOKEN": token,
        }
    )
    # Imported here: importing the reactor installs it, which the tests of
    # this module's other parts need not do.
    from twisted.internet import reactor

    from .wsgi import listen

    # Listen first: a port in use ends the command before any polling starts.
    listening = []
    listen(reactor, app, options.host, options.port).addCallbacks(listening.append, listening.append)
    if isinstance(listening[0], Failure):
        print(
            f"web_monitor/views.py: error: cannot serve the page on {options.host}:{options.port}: "
            f"{_why(listening[0].value)}",
            file=sys.stderr,
        )
        return 1
    # Said before the refresh thread starts: its lines go to stdout, these to
    # stderr, and written at once they ran into each other on a terminal.
    print(f" * Running on http://{_url_host(options.host)}:{options.port}", file=sys.stderr, flush=True)
    print("Press CTRL+C to quit", file=sys.stderr, flush=True)
    poller = app.extensions["monitor"]
    poller.start()
    try:
        # Until SIGINT (CTRL+C) or SIGTERM stops the reactor.
        reactor.run()
    finally:
        poller.stop()
    return 0


def _why(error: Exception) -> str:
    """
    Why the page could not be served, in words, and the option to change:
    "address already in use; choose another port with --port".
    """
    reason = getattr(error, "socketError", None) or error
    words = (getattr(reason, "strerror", None) or str(reason)).lower()
    if getattr(reason, "errno", None) in (errno.EADDRINUSE, errno.EACCES):
        return f"{words}; choose another port with --port"
    return f"{words}; check --host"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _print_now(line: str) -> None:
    print(line, flush=True)
