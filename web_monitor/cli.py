"""
The monitor's command line: parse the options, start the polling, serve the page.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from werkzeug.serving import WSGIRequestHandler, make_server

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
    """Report a bad option as one line on stderr, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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


class QuietRequestHandler(WSGIRequestHandler):
    """
    Log only the requests that failed: the page asks for its data every
    interval, and a line for each would bury the monitor's own lines.
    """

    def log_request(self, code="-", size="-") -> None:
        if str(code)[:1] not in ("1", "2", "3"):
            super().log_request(code, size)


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
    # Listen first: a port in use ends the command (werkzeug says why)
    # before any polling starts.
    server = make_server(
        options.host, options.port, app, threaded=True, request_handler=QuietRequestHandler
    )
    poller = app.extensions["monitor"]
    poller.start()
    server.log_startup()
    print("Press CTRL+C to quit", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        poller.stop()
        server.server_close()
    return 0


def _print_now(line: str) -> None:
    print(line, flush=True)
