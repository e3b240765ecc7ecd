"""
The p2pstore web monitor: a Flask page showing the nodes of a cluster at a glance.

Run it with ``python web_monitor/views.py --servers HOST[:PORT],...``; tests
build it with L{create_app}.
"""

from __future__ import annotations

import time
from typing import Optional

from flask import Flask

from .addresses import ServerAddress, parse_server
from .poller import DEFAULT_READINGS_LIMIT, Poller

DEFAULTS = {
    # The nodes' status addresses: "HOST[:PORT]" strings or ServerAddress values.
    "SERVERS": [],
    # Seconds between two checks of every server.
    "INTERVAL": 5.0,
    # Seconds one server's check may take; None for a default shorter than the interval.
    "TIMEOUT": None,
    # How many of its newest readings each server is asked for (the charts show them).
    "READINGS_LIMIT": DEFAULT_READINGS_LIMIT,
    # Start checking at once, in the background; tests turn it off and call poll_once().
    "START_POLLER": True,
    # Where the console lines go.
    "CONSOLE": print,
    # The wall clock results are stamped with and the data's age is told by.
    "CLOCK": time.time,
    # The bearer token of nodes run with --http-token-file, or None.
    "TOKEN": None,
}


def create_app(config: Optional[dict] = None) -> Flask:
    """
    Build the monitor: the app, its poller (in C{app.extensions["monitor"]})
    and its views.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    if config:
        app.config.from_mapping(config)
    servers = [
        entry if isinstance(entry, ServerAddress) else parse_server(entry)
        for entry in app.config["SERVERS"]
    ]
    poller = Poller(
        servers,
        interval=float(app.config["INTERVAL"]),
        timeout=app.config["TIMEOUT"],
        readings_limit=int(app.config["READINGS_LIMIT"]),
        console=app.config["CONSOLE"],
        clock=app.config["CLOCK"],
        token=app.config["TOKEN"],
    )
    app.extensions["monitor"] = poller

    # Imported here, not at the top: views.py is also run as a script, and
    # `python -m web_monitor.views` must not find it imported already.
    from . import views

    app.register_blueprint(views.bp)
    if app.config["START_POLLER"]:
        poller.start()
    return app
