"""
The replication matrix: for each origin and each monitored server, how
many of the origin's readings the server holds, how many it lacks, and the
positions it holds of each epoch of the origin's log.
"""

from __future__ import annotations

from typing import Callable, Optional

from .poller import INITIALIZING
from .texts import short_id


def matrix(results, origin_url: Optional[Callable[[str], str]] = None) -> dict:
    """
    For each origin (rows) and each monitored server (columns): how many of
    the origin's readings the server holds, how many it lacks, and the
    positions it holds (a range per epoch of the origin's log).

    An origin's total is the most any answering server holds of it. A server
    that does not answer is a column of unknowns. An origin held by fewer
    servers than are monitored is marked C{short}.
    """
    holders = []
    for index, r in enumerate(results):
        # An Initializing node has not opened its store: what it holds is unknown yet.
        origins = r.status.origins if r.status is not None and r.state != INITIALIZING else None
        node_id = r.status.node_id if r.status is not None else r.last_node_id
        holders.append({
            "index": index,
            "address": r.address.text,
            "node_id": node_id,
            "node_short": short_id(node_id),
            "known": origins is not None,
            "origins": origins or {},
            "logs": (r.status.logs or {}) if origins is not None else {},
        })
    addresses = {h["node_id"]: h["address"] for h in holders if h["node_id"]}
    totals: dict = {}
    for h in holders:
        for origin, count in h["origins"].items():
            totals[origin] = max(totals.get(origin, 0), count)
    # Monitored servers' own origins first, in their order; then the others.
    order = [h["node_id"] for h in holders if h["node_id"] in totals]
    order = list(dict.fromkeys(order)) + sorted(set(totals) - set(order))
    rows = []
    for origin in order:
        total = totals[origin]
        cells, held_by = [], 0
        for h in holders:
            if not h["known"]:
                cells.append({"state": "unknown", "have": None, "lacking": None, "own": False})
                continue
            have = h["origins"].get(origin, 0)
            if have > 0 or total == 0:
                held_by += 1
            state = "full" if have >= total else ("partial" if have > 0 else "none")
            cells.append({
                "state": state,
                "have": have,
                "lacking": max(0, total - have),
                "own": origin == h["node_id"],
                "ranges": _ranges(h["logs"].get(origin, ())),
            })
        rows.append({
            "origin": origin,
            "origin_short": short_id(origin),
            "url": origin_url(origin) if origin_url else None,
            "address": addresses.get(origin),
            "total": total,
            "held_by": held_by,
            "short": held_by < len(holders),
            "cells": cells,
        })
    return {
        "holders": [{k: h[k] for k in ("index", "address", "node_short", "known")} for h in holders],
        "rows": rows,
        "monitored": len(holders),
    }


def _ranges(logs: tuple) -> list:
    """
    The positions held of each epoch of an origin's log, oldest epoch first,
    as "first–last" (and how many are missing in between, if any).
    """
    ranges = []
    for log in logs:
        if log.last < log.first or log.last == 0:
            continue
        text = f"{log.first:,}–{log.last:,}"
        missing = log.last - log.first + 1 - log.held
        if missing > 0:
            text += f" ({missing:,} missing)"
        ranges.append(text)
    return ranges
