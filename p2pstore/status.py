"""
The status web resources: ``/status`` and ``/readings`` as JSON (and
``/readings`` as CSV), ``/readyz`` and ``/livez`` for service managers and
load balancers, and ``/metrics`` (L{p2pstore.metrics}).

It only serialises what L{Node} says; it holds no state of its own.
"""

from __future__ import annotations

import csv
import io
import json

import attrs
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from .httpauth import TokenRequired
from .metrics import MetricsResource
from .node import RUNNING, Node, NotReady, UnknownOrigin
from .lines import MAX_SENSOR_TYPE
from . import timerange
from .records import Record, is_node_id

DEFAULT_LIMIT = 100
MAX_LIMIT = 10000
NOT_FOUND = "not found: try /status, /metrics, /readings or /readyz"
# What a 503 from /readyz tells a client to wait before it asks again: an
# Initializing node is usually Running within seconds, and a Syncing one
# takes as long as its peers need to send its earlier readings back.
READY_RETRY_AFTER = b"5"


def _json(request, code: int, body: dict) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


class _Error(Resource):
    isLeaf = True

    def __init__(self, code: int, message: str):
        super().__init__()
        self.code = code
        self.message = message

    def render(self, request):
        return _json(request, self.code, {"error": self.message})


class StatusResource(Resource):
    """
    ``GET /status``: the node's status snapshot.
    """

    isLeaf = True

    def __init__(self, node: Node):
        super().__init__()
        self.node = node

    def render_GET(self, request):
        return _json(request, 200, self.node.status_snapshot())


class _Check(Resource):
    """
    A health check's resource: GET, and HEAD answered as GET without the
    body.
    """

    isLeaf = True

    def __init__(self, node: Node):
        super().__init__()
        self.node = node

    def render_HEAD(self, request):
        # twisted.web logs a line for a HEAD it fakes through GET, and for a
        # HEAD answered with a body: health checkers ask every few seconds.
        body = self.render_GET(request)
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        return b""


class ReadyResource(_Check):
    """
    ``GET /readyz``: 200 ``{"state": "Running"}`` once the node is Running;
    503 with its state (Initializing, Syncing) and ``Retry-After`` before.

    A Syncing node takes readings, but its /readings lacks its earlier ones
    until its peers have sent them back: a load balancer in front of
    readers waits for the 200.
    """

    def render_GET(self, request):
        state = self.node.state
        if state == RUNNING:
            return _json(request, 200, {"state": state})
        request.setHeader(b"Retry-After", READY_RETRY_AFTER)
        return _json(request, 503, {"state": state})


class LiveResource(_Check):
    """
    ``GET /livez``: 200 with the node's state in every state, as long as the
    process serves HTTP: for a liveness check, which must not restart a
    node that is only Syncing (a restart would start the recovery again).
    """

    def render_GET(self, request):
        return _json(request, 200, {"state": self.node.state})


class ReadingsResource(Resource):
    """
    ``GET /readings?origin=<id>&type=<sensor_type>&limit=<n>``: the newest
    readings of one origin, newest first.

    With ``since``, ``until`` or ``after``, a time range instead, oldest
    first (L{p2pstore.timerange}): ``since`` inclusive, ``until``
    exclusive, and ``after=<next>`` for the page after an answer whose
    ``next`` was not null. ``format=csv`` answers CSV rather than JSON.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, node: Node):
        super().__init__()
        self.node = node

    def render_GET(self, request):
        args = request.args
        try:
            origin = _single(args, b"origin")
            sensor_type = _single(args, b"type")
            limit = _limit(_single(args, b"limit"))
            answer = _format(_single(args, b"format"))
            time_range = timerange.time_range(
                _single(args, b"since"), _single(args, b"until"), _single(args, b"after")
            )
        except ValueError as e:
            return _json(request, 400, {"error": str(e)})
        if origin is not None and not is_node_id(origin):
            return _json(
                request, 400, {"error": "origin must be a node id (32 lowercase hex characters)"}
            )
        if sensor_type is not None and not 1 <= len(sensor_type) <= MAX_SENSOR_TYPE:
            # No stored reading has such a type: say so rather than answer
            # an empty list that looks like "none yet".
            return _json(
                request, 400, {"error": f"type must be 1 to {MAX_SENSOR_TYPE} characters"}
            )
        try:
            d = self.node.readings(origin, sensor_type, limit, time_range)
        except UnknownOrigin:
            return _json(request, 404, {"error": f"this node holds no readings of origin {origin}"})
        except NotReady:
            request.setHeader(b"Retry-After", b"1")
            return _json(
                request, 503, {"error": "the node is opening its database (Initializing); try again shortly"}
            )

        # A client that hangs up before the query returns must not be
        # written to: finish() would raise, and be logged as a database error.
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def send(found):
            if gone:
                return
            if time_range is None:
                request.write(answer(request, found, None, False))
            else:
                request.write(answer(request, found.records, found.next, True))
            request.finish()

        def failed(failure):
            self.log.failure("could not read readings", failure)
            if gone:
                return
            request.write(_json(request, 500, {"error": "could not read the database; see the node's log"}))
            request.finish()

        d.addCallback(send).addErrback(failed)
        return NOT_DONE_YET


# The columns of a reading in both formats: its record's, then its value
# and unit.
READING_COLUMNS = tuple(field.name for field in attrs.fields(Record)) + ("value", "unit")


def _reading(record: Record) -> dict:
    return attrs.asdict(record) | {"value": record.value, "unit": record.unit}


def _json_readings(request, records, next_key, ranged: bool) -> bytes:
    body: dict = {"readings": [_reading(r) for r in records]}
    if ranged:
        body["next"] = None if next_key is None else timerange.encode_after(next_key)
        _next_header(request, next_key)
    return _json(request, 200, body)


def _csv_readings(request, records, next_key, ranged: bool) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    if ranged:
        _next_header(request, next_key)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(READING_COLUMNS)
    for record in records:
        reading = _reading(record)
        writer.writerow(["" if reading[c] is None else reading[c] for c in READING_COLUMNS])
    return out.getvalue().encode("utf-8")


def _next_header(request, next_key) -> None:
    # The next page's token in both formats; absent at a range's end.
    if next_key is not None:
        request.setHeader(b"Next-After", timerange.encode_after(next_key).encode("ascii"))


_FORMATS = {"json": _json_readings, "csv": _csv_readings}


def _format(text):
    if text is None:
        return _json_readings
    try:
        return _FORMATS[text]
    except KeyError:
        raise ValueError(f"format must be json or csv, not {text!r}") from None


def _single(args: dict, name: bytes):
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"{name.decode()} given more than once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name.decode()} is not UTF-8") from None


def _limit(text) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise ValueError(f"limit must be a whole number, not {text!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


class Root(Resource):
    """
    The status site's root: known paths, and a JSON 404 for the rest.

    With ``token`` (L{p2pstore.tokens.ReloadableFile} of
    ``--http-token-file``), ``/readings`` needs it; ``/status``,
    ``/metrics``, ``/readyz`` and ``/livez``, which hold no readings, stay
    open.
    """

    def __init__(self, node: Node, token=None):
        super().__init__()
        self.putChild(b"status", StatusResource(node))
        # Open like /status, whose figures it holds (no reading, no secret):
        # a Prometheus scrape job then needs no credentials.
        self.putChild(b"metrics", MetricsResource(node))
        self.putChild(b"readings", TokenRequired(ReadingsResource(node), token))
        # Open too: they tell only the state /status shows, and health checks
        # (systemd scripts, load balancers) seldom can send a bearer token.
        self.putChild(b"readyz", ReadyResource(node))
        self.putChild(b"livez", LiveResource(node))

    def getChild(self, path, request):
        return _Error(404, NOT_FOUND)

    def render(self, request):
        return _Error(404, NOT_FOUND).render(request)


class _Site(Site):
    # A monitor polls every few seconds: an access log line per poll would
    # bury everything else in the node's log.
    noisy = False
    displayTracebacks = False

    def log(self, request):
        pass


def status_site(node: Node, token=None) -> Site:
    """
    The twisted.web site serving a node's status.
    """
    return _Site(Root(node, token))
