"""
The monitor's views: the page, its data as JSON, and the charts.

Also the monitor's command: ``python web_monitor/views.py --servers HOST[:PORT],...``
(or ``python -m web_monitor.views ...``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script, this file's folder heads sys.path and its package is
    # not importable: put the folder's parent there instead.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

# Absolute imports, so that they work in the script too.
from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request, url_for

from web_monitor.charts import chart
from web_monitor.dashboard import chart_series, dashboard, history_chart, stale_after
from web_monitor.origins import origin_page

bp = Blueprint("monitor", __name__)

# The page loads nothing from elsewhere and runs no inline script; this
# makes sure of it even if something slipped through the escaping.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def _poller():
    return current_app.extensions["monitor"]


def _chart_url(server: int, sensor_type: str, version: str) -> str:
    return url_for("monitor.chart_svg", server=server, type=sensor_type, v=version)


def _history_url(server: int, what: str, version: str) -> str:
    return url_for("monitor.history_svg", server=server, what=what, v=version)


def _origin_url(origin: str) -> str:
    return url_for("monitor.origin", origin=origin)


def _dashboard() -> dict:
    poller = _poller()
    return dashboard(
        poller.snapshot(), poller.clock(), _chart_url, poller.history, _history_url, _origin_url
    )


@bp.after_app_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@bp.get("/")
def index():
    data = _dashboard()
    return render_template("index.html", data=data, stale_after=stale_after(data["interval"]))


@bp.get("/api/servers")
def api_servers():
    response = jsonify(_dashboard())
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/chart.svg")
def chart_svg():
    """
    ``/chart.svg?server=<index>&type=<sensor type>``: the chart of one
    server's recent values of one sensor type (``v`` only busts caches).
    """
    results = _poller().snapshot().results
    index = request.args.get("server", type=int)
    sensor_type = request.args.get("type", "")
    if index is None or not 0 <= index < len(results):
        abort(404)
    series = chart_series(results[index]).get(sensor_type)
    if not series:
        abort(404)
    body = render_template(
        "chart.svg",
        chart=chart([value for value, _ in series]),
        sensor_type=sensor_type,
        last=series[-1][1],
        count=len(series),
    )
    return Response(body, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})


@bp.get("/history.svg")
def history_svg():
    """
    ``/history.svg?server=<index>&what=rate|lag``: the last hour of one
    server, its readings per second or its peers' lag.
    """
    poller = _poller()
    index = request.args.get("server", type=int)
    what = request.args.get("what", "")
    if index is None or not 0 <= index < len(poller.servers) or what not in ("rate", "lag"):
        abort(404)
    now = poller.clock()
    body = render_template("history.svg", **history_chart(poller.history.series(index, now), what, now))
    return Response(body, mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})


@bp.get("/origin/<origin>")
def origin(origin: str):
    """
    The page of one origin: who holds its readings, and its latest readings
    by type, asked of a server that holds them.
    """
    poller = _poller()
    page = origin_page(poller, origin)
    if page is None:
        abort(404)
    return render_template("origin.html", page=page)


if __name__ == "__main__":
    from web_monitor.cli import main

    sys.exit(main(sys.argv[1:]))
