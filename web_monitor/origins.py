"""
The page of one origin: which servers hold its readings (its row of the
replication matrix) and its latest readings by type, asked when the page is
opened of a server that holds them, the origin's own first.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Optional

from . import charts
from .answers import decode_json, parse_readings
from .dashboard import LATEST_SHOWN
from .matrix import matrix
from .poller import INITIALIZING, MAX_READINGS_BYTES, Check, classify
from .texts import number, reading_time, short_id

# The newest readings of the origin asked for: enough for a chart per type.
ORIGIN_READINGS = 300
# Servers asked, one after the other, all within one timeout: the origin
# itself, then the holder with the most.
MAX_SOURCES = 2
# Origin pages being read at once; the others wait at most a timeout, so
# that reloads cannot take every thread of the page's server.
MAX_AT_ONCE = 2
_at_once = threading.BoundedSemaphore(MAX_AT_ONCE)

_NODE_ID = re.compile(r"[0-9a-f]{32}\Z")


def sources(results, origin: str) -> list:
    """
    The results of the servers that can be asked for C{origin}'s readings,
    best first: the origin itself, then those that hold the most of it.
    """
    holders = [
        r for r in results
        if r.status is not None and r.state != INITIALIZING and (r.status.origins or {}).get(origin, 0) > 0
    ]
    return sorted(holders, key=lambda r: (r.status.node_id != origin, -r.status.origins[origin]))


def by_type(readings: tuple) -> list:
    """
    Per sensor type (in order of name), its newest reading, its newest few
    and the chart of its numeric values, from C{readings} newest first.
    """
    types: dict = {}
    for reading in readings:
        types.setdefault(reading.sensor_type, []).append(reading)
    shown = []
    for sensor_type, newest in sorted(types.items()):
        values = [r.value for r in reversed(newest) if r.value is not None]
        shown.append({
            "type": sensor_type,
            "latest": newest[0].sensor_data,
            "time": reading_time(newest[0].timestamp),
            "count": len(newest),
            "chart": charts.chart(values) if values else None,
            "min": number(min(values)) if values else None,
            "max": number(max(values)) if values else None,
            "rows": [{"data": r.sensor_data, "time": reading_time(r.timestamp)} for r in newest[:LATEST_SHOWN]],
        })
    return shown


def _own_server(results, origin: str) -> str:
    """
    What the page says of the origin's own server: answering, not
    answering (and since when it was last seen), or none monitored runs as
    it now.
    """
    for result in results:
        if result.status is not None and result.status.node_id == origin:
            return f"Its own server, {result.address.text}, is {result.state}."
    for result in results:
        if result.status is None and result.last_node_id == origin:
            return (
                f"Its own server, {result.address.text}, does not answer "
                f"({result.state.lower()}): its readings here are the copies other servers hold."
            )
    return (
        "No monitored server runs as this origin now (a node that lost its data directory starts "
        "again under a new id, or it is not monitored): its readings here are the copies other "
        "servers hold."
    )


def origin_page(poller, origin: str) -> Optional[dict]:
    """
    What the origin's page shows, or C{None} when C{origin} is no node id
    or no monitored server has heard of it.
    """
    if not _NODE_ID.match(origin):
        return None
    results = poller.snapshot().results
    row = next((r for r in matrix(results)["rows"] if r["origin"] == origin), None)
    if row is None:
        return None
    page = {
        "origin": origin,
        "origin_short": short_id(origin),
        "address": row["address"],
        "holders": [
            {"address": result.address.text, **cell}
            for result, cell in zip(results, row["cells"])
        ],
        "row": row,
        "own": _own_server(results, origin),
        "source": None,
        "error": None,
        "types": [],
    }
    errors = []
    # The whole page within the poller's timeout, however many are asked.
    deadline = time.monotonic() + poller.timeout
    if not _at_once.acquire(timeout=poller.timeout):
        page["error"] = "The monitor is busy reading other origins' pages: reload in a moment."
        return page
    try:
        for result in sources(results, origin)[:MAX_SOURCES]:
            if time.monotonic() >= deadline:
                errors.append(f"{result.address.text}: not asked, no time left")
                break
            check = Check(result.address, deadline, poller.timeout, ORIGIN_READINGS, poller.token)
            try:
                body = check.fetch(f"/readings?origin={origin}&limit={ORIGIN_READINGS}", MAX_READINGS_BYTES)
                readings = parse_readings(decode_json(body))
            except Exception as e:
                errors.append(f"{result.address.text}: {classify(e, poller.timeout)[1]}")
                continue
            page["source"] = result.address.text
            page["types"] = by_type(readings)
            break
    finally:
        _at_once.release()
    if page["source"] is None and page["error"] is None:
        page["error"] = (
            "No server answering holds its readings."
            if not errors else "Its readings could not be read: " + "; ".join(errors)
        )
    return page
