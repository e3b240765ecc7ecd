"""
Serves the monitor's Flask app with twisted.web's WSGI container, a server
meant for production (Flask's own is for development only).
"""

from __future__ import annotations

import sys
from typing import TextIO

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.http import Request
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource


class QuietSite(Site):
    """
    A site that logs only the requests that failed: the page asks for its
    data every interval, and a line for each would bury the monitor's own
    lines.
    """

    def __init__(self, resource, log_to: TextIO = sys.stderr, **kwargs):
        super().__init__(resource, **kwargs)
        self._log_to = log_to

    def log(self, request: Request) -> None:
        if request.code >= 400:
            print(self._logFormatter(self._logDateTime, request), file=self._log_to, flush=True)


def endpoint_description(host: str, port: int) -> str:
    """
    The server endpoint string listening on C{host} (an IPv4 or IPv6
    address, or a name) at C{port}.
    """
    interface = host.replace("\\", "\\\\").replace(":", "\\:")
    return f"tcp:{port}:interface={interface}"


def listen(reactor, app, host: str, port: int) -> "Deferred[IListeningPort]":
    """
    Serve the WSGI C{app} on C{host}:C{port}, each request in the reactor's
    thread pool.
    """
    resource = WSGIResource(reactor, reactor.getThreadPool(), app)
    site = QuietSite(resource, reactor=reactor)
    return serverFromString(reactor, endpoint_description(host, port)).listen(site)
