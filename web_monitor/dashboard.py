"""
What the page shows, made from a poll snapshot: the server rows, the
replication matrix, the latest readings and the chart series.

It is plain JSON-ready data: the page's template lays it out, and
``/api/servers`` returns it as it is for the page's script to lay out again.
"""

from __future__ import annotations

import zlib
from typing import Callable, Optional

from . import charts
from .exports import export_cells
from .health import health
from .history import BUCKET_S, SPAN_S, History
from .matrix import matrix
from .poller import SYNCING, INITIALIZING, RUNNING, ServerResult, Snapshot
from .texts import age, duration, number, reading_time, short_id, size_text

# Readings shown per server in its table.
LATEST_SHOWN = 8
# The most recent values a chart shows, per sensor type.
CHART_POINTS = 40


def dashboard(
    snapshot: Snapshot,
    now: float,
    chart_url: Callable[..., str],
    history: Optional[History] = None,
    history_url: Optional[Callable[..., str]] = None,
    origin_url: Optional[Callable[[str], str]] = None,
) -> dict:
    """
    @param now: the monitor's wall clock, to tell how old the data is.
    @param chart_url: makes the URL of a chart from C{server}, C{sensor_type}
        and C{version} keywords.
    @param history: the last hour of each server, for its rate and charts.
    @param history_url: makes the URL of a history chart from C{server},
        C{what} and C{version} keywords.
    @param origin_url: makes the URL of an origin's page from its node id.
    """
    age = None if snapshot.updated_at is None else max(0.0, now - snapshot.updated_at)
    results = snapshot.results
    return {
        "interval": snapshot.interval,
        "timeout": snapshot.timeout,
        "generation": snapshot.generation,
        "updated_at": snapshot.updated_at,
        "age_s": None if age is None else round(age, 1),
        "stale": stale_notice(age, snapshot.interval),
        "counts": _counts(results),
        "health": health(results, snapshot.memory, now, snapshot.updated_at is not None),
        "servers": [
            _server(i, r, now, chart_url, history, history_url) for i, r in enumerate(results)
        ],
        "matrix": matrix(results, origin_url),
    }


def stale_after(interval: float) -> float:
    """
    Data older than this is stale: a cycle starts every interval and ends
    within it, so two intervals (and a second to spare) mean cycles are missed.
    """
    return 2 * interval + 1


def stale_notice(age: Optional[float], interval: float) -> Optional[str]:
    if age is None:
        return "Waiting for the first answers of the servers…"
    if age > stale_after(interval):
        return f"The data is stale: last updated {duration(age)} ago."
    return None


def _counts(results) -> dict:
    up = sum(1 for r in results if r.state in (RUNNING, SYNCING, INITIALIZING))
    return {"monitored": len(results), "answering": up, "not_answering": len(results) - up}


def _server(index: int, result: ServerResult, now: float, chart_url, history=None, history_url=None) -> dict:
    status = result.status
    node_id = status.node_id if status else result.last_node_id
    row = {
        "index": index,
        "address": result.address.text,
        "state": result.state,
        "badge": _badge(result.state),
        "message": result.message,
        "answered": status is not None,
        "node_id": node_id,
        "node_short": short_id(node_id),
        "version": status.version if status else None,
        "uptime": duration(status.uptime_s) if status and status.uptime_s is not None else None,
        "own_readings": status.own_readings if status else None,
        "held_for_others": status.held_for_others if status else None,
        "sensors_connected": status.sensors_connected if status else None,
        "sensors_unterminated": status.sensors_unterminated if status else None,
        "rejected_lines": status.sensors_rejected if status else None,
        "disk": _disk_use(status) if status else None,
        # The same in pieces that do not break inside: the used, "of" the budget.
        "disk_parts": _disk_parts(status) if status else [],
        "disk_left": _disk_left(status) if status else None,
        "disk_full": bool(status and status.disk_full),
        "exports": export_cells(status.exports) if status and status.exports else None,
        "links_up": status.links_up if status else None,
        "links_down": status.links_down if status else None,
        "links_gone": len(status.peers_gone) if status else 0,
        "links_trouble": len(status.peers_in_trouble) if status else 0,
        "lag": _worst_lag(status.peers) if status and status.peers else None,
        # A peer's last_seen is on the node's clock, which may differ from ours.
        "peers": [_peer(p, status.time if status.time is not None else now) for p in status.peers]
        if status and status.peers else [],
        "sensor_names": _names(status.sensor_names) if status and status.sensor_names else None,
        "rate": None,
        "history": [],
        "trouble": _trouble(status.peers_in_trouble) if status else None,
        "warnings": _warnings(status) if status else [],
        "last_answer": None,
        "readings": [],
        "readings_error": result.readings_error,
        "charts": [],
    }
    if status is None and result.last_answer_at is not None:
        row["last_answer"] = f"last answered {duration(max(0.0, now - result.last_answer_at))} ago"
    if history is not None:
        # Not for a server that does not answer now: its last rate is no rate.
        rate = history.rate(index, now) if status is not None else None
        row["rate"] = None if rate is None else f"{number(round(rate, 1))}/s"
        buckets = history.series(index, now)
        if history_url is not None and buckets:
            row["history"] = _history_charts(index, buckets, now, history_url)
    if status is not None:
        row["readings"] = [
            {"type": r.sensor_type, "data": r.sensor_data, "time": reading_time(r.timestamp)}
            for r in result.readings[:LATEST_SHOWN]
        ]
        for sensor_type, series in chart_series(result).items():
            values = [v for v, _ in series]
            version = format(zlib.crc32(repr(series).encode()), "08x")
            row["charts"].append({
                "type": sensor_type,
                "url": chart_url(server=index, sensor_type=sensor_type, version=version),
                "width": charts.WIDTH,
                "height": charts.HEIGHT,
                "count": len(values),
                "last": series[-1][1],
                "min": number(min(values)),
                "max": number(max(values)),
            })
    return row


def _names(names: dict) -> str:
    # The names connected sensors go by, with how many share each.
    return ", ".join(name if count == 1 else f"{name} ({count})" for name, count in sorted(names.items()))


# Records that have waited less than this for a peer are on their way (as
# p2pstore status judges them): no lag to report.
ON_THE_WAY_S = 5.0


def _lag_text(records: Optional[int], seconds: Optional[float]) -> str:
    if not records:
        return "caught up"
    if seconds is not None and seconds < ON_THE_WAY_S:
        return f"caught up ({records:,} on the way)"
    text = f"{records:,} " + ("record" if records == 1 else "records")
    return text + (f", {age(seconds)}" if seconds else "")


def _worst_lag(peers: tuple) -> Optional[str]:
    # The connected peer furthest behind, when any is.
    behind = [
        p for p in peers
        if p.connected and p.lag_records and (p.lag_seconds is None or p.lag_seconds >= ON_THE_WAY_S)
    ]
    if not behind:
        return None
    worst = max(behind, key=lambda p: (p.lag_seconds or 0.0, p.lag_records))
    who = worst.address or short_id(worst.node_id) or "a peer"
    return f"{who} lacks {_lag_text(worst.lag_records, worst.lag_seconds)}"


def _peer(peer, now: float) -> dict:
    """
    One peer of a server, for its card: its link, and what it lacks.
    """
    if peer.connected:
        state = "up"
    elif peer.gone:
        state = "gone"
    else:
        state = "down"
    seen = None
    if peer.last_seen is not None and not peer.connected:
        seen = f"last seen {age(max(0.0, now - peer.last_seen))} ago"
    return {
        "name": peer.address or short_id(peer.node_id) or "?",
        # Under the address (one address can have two ids); a peer never
        # reached by address is named by its id alone.
        "node_short": short_id(peer.node_id) if peer.address else None,
        "state": state,
        "lag": _lag_text(peer.lag_records, peer.lag_seconds) if peer.connected and peer.lag is not None else "—",
        "seen": seen,
    }


def _history_charts(index: int, buckets: list, now: float, history_url) -> list:
    # The version changes when a bucket does, so that browsers fetch anew.
    version = format(zlib.crc32(repr(buckets).encode() + repr(int(now // 30)).encode()), "08x")
    return [
        {"what": what, "url": history_url(server=index, what=what, version=version),
         "width": charts.HISTORY_WIDTH, "height": charts.HISTORY_HEIGHT, "alt": alt}
        for what, alt in (("rate", "readings per second"), ("lag", "the longest a peer waited for a record"))
    ]


def history_chart(buckets: list, what: str, now: float) -> dict:
    """
    The chart of one server's last hour: its readings per second (C{what}
    is C{"rate"}) or how long its furthest peer waited (C{"lag"}), in seconds.
    """
    middle = BUCKET_S / 2
    if what == "rate":
        points = [(b.start + middle, b.rate) for b in buckets]
        label, unit = "readings/s, last hour", "/s"
    else:
        points = [(b.start + middle, b.lag_s) for b in buckets]
        label, unit = "peer lag (s), last hour", " s"
    chart = charts.timeline(points, now - SPAN_S, now, BUCKET_S)
    last = next((v for _, v in reversed(points) if v is not None), None)
    return {
        "chart": chart,
        "label": label,
        "now": "—" if last is None else f"{number(round(last, 1))}{unit}",
        "title": f"{label}: {len(buckets)} periods of {BUCKET_S:g} s",
        "colour": "#2563eb" if what == "rate" else "#b45309",
    }


# Characters of a peer's trouble line the page shows; the node's /status
# has it whole.
TROUBLE_SHOWN = 200


def _trouble(peers: tuple) -> Optional[str]:
    # The first peer's trouble line, named by its address.
    if not peers:
        return None
    peer = peers[0]
    who = peer.address or short_id(peer.node_id) or "a peer"
    more = f" (and {len(peers) - 1} more)" if len(peers) > 1 else ""
    trouble = peer.trouble
    if len(trouble) > TROUBLE_SHOWN:
        trouble = trouble[: TROUBLE_SHOWN - 1] + "…"
    return f"{who}: {trouble}{more}"


def _warnings(status) -> list:
    """
    What the server says puts its data at risk, one line each.
    """
    warnings = []
    if status.quarantined:
        plural = "record" if status.quarantined == 1 else "records"
        warnings.append(
            f"{status.quarantined} {plural} failed their check on disk, waiting for a good copy from a peer"
        )
    if status.damaged_files:
        plural = "file" if status.damaged_files == 1 else "files"
        warnings.append(f"{status.damaged_files} damaged database {plural} moved aside at start")
    warnings.extend(_disk_warnings(status))
    return warnings


# A disk budget this full, or this few days left, is a warning.
DISK_WARN_SHARE = 0.9
DISK_WARN_DAYS = 7


def _disk_use(status) -> Optional[str]:
    # What the node's databases take, and of what budget.
    if status.disk_used is None:
        return None
    if status.disk_budget is None:
        return size_text(status.disk_used)
    return f"{size_text(status.disk_used)} of {size_text(status.disk_budget)}"


def _disk_parts(status) -> list:
    if status.disk_used is None:
        return []
    if status.disk_budget is None:
        return [size_text(status.disk_used)]
    return [size_text(status.disk_used), f"of {size_text(status.disk_budget)}"]


def _disk_left(status) -> Optional[str]:
    # How long until the budget or the filesystem is full.
    if status.disk_full:
        return "full"
    days = status.disk_days_left
    if days is None:
        return None
    return f"{days:.1f} days left" if days < 10 else f"{days:,.0f} days left"


def _disk_warnings(status) -> list:
    if status.disk_full:
        full = status.disk_full
        if len(full) > TROUBLE_SHOWN:
            full = full[: TROUBLE_SHOWN - 1] + "…"
        return [f"disk {full}"]
    warnings = []
    used, budget = status.disk_used, status.disk_budget
    if used is not None and budget and used >= DISK_WARN_SHARE * budget:
        warnings.append(
            f"disk at {100 * used // budget}% of its --max-disk ({size_text(used)} of {size_text(budget)})"
        )
    if status.disk_days_left is not None and status.disk_days_left < DISK_WARN_DAYS:
        warnings.append(f"disk full in about {status.disk_days_left:.1f} days at the last hour's growth")
    return warnings


def chart_series(result: ServerResult) -> dict:
    """
    Per sensor type, the server's most recent numeric readings (at most
    L{CHART_POINTS}), oldest first, as C{(value, sensor_data)} pairs.
    """
    series: dict = {}
    for reading in result.readings:
        if reading.value is not None:
            values = series.setdefault(reading.sensor_type, [])
            if len(values) < CHART_POINTS:
                values.append((reading.value, reading.sensor_data))
    return {sensor_type: values[::-1] for sensor_type, values in sorted(series.items())}


_BADGES = {
    "Running": "running",
    "Syncing": "syncing",
    "Initializing": "initializing",
    "Timeout": "timeout",
    "Invalid IP address": "invalid",
    "Down": "down",
    "Error": "error",
    "Waiting": "waiting",
}


def _badge(state: str) -> str:
    return _BADGES.get(state, "error")


