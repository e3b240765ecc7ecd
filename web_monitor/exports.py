"""
The Export column: per --export destination of a node, how far behind it
is and what is wrong, as the page writes it.
"""

from __future__ import annotations

import json
import re
from typing import Optional
from urllib.parse import urlsplit

from .texts import age

# Characters of an export's error the page shows; its title has it whole.
EXPORT_ERROR_SHOWN = 80
# Export states that are no trouble: the first write is yet to come, or the
# last one went through.
EXPORT_FINE = ("ok", "starting")


def export_cells(exports: tuple) -> list:
    """
    Per --export destination: how far behind it is, and what is wrong.
    """
    return [
        {
            "url": e.url,
            "name": _destination_name(e.url),
            "state": e.state,
            "backlog": _backlog(e),
            "trouble": None if e.state in EXPORT_FINE else f"{e.state}: {_export_error(e.last_error)}",
            "error": None if e.state in EXPORT_FINE else e.last_error,
            "note": e.state if e.state != "ok" and e.state in EXPORT_FINE else None,
            "dead_letters": _dead_letters(e.dead_lettered),
        }
        for e in exports
    ]


def _destination_name(url: str) -> str:
    # Its host and port, to tell destinations apart at a glance.
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url
    if not host:
        return url
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def _backlog(export) -> str:
    if export.pending == 0:
        return "up to date"
    if export.oldest_age_s is None:
        return f"{export.pending:,} behind"
    return f"{export.pending:,} behind, oldest {age(export.oldest_age_s)}"


def _export_error(error: Optional[str]) -> str:
    if not error:
        return "no answer yet"
    # Twisted says it at length ("Connection was refused by other side:
    # 111: Connection refused."); the page says it as it does for a node.
    if "connection refused" in error.lower():
        return "connection refused"
    error = _database_answer(error)
    if len(error) > EXPORT_ERROR_SHOWN:
        return error[: EXPORT_ERROR_SHOWN - 1] + "…"
    return error


_ANSWER = re.compile(r"([0-9]{3}) (\{.*\})")


def _database_answer(error: str) -> str:
    # "404 {"error":"database not found: \"x\""} (advice)" from InfluxDB 1.x,
    # or {"code": ..., "message": ...} from 2.x: the status and the message.
    match = _ANSWER.match(error)
    if match:
        try:
            answer = json.loads(match.group(2))
        except (ValueError, RecursionError):
            return error
        message = (answer.get("error") or answer.get("message")) if isinstance(answer, dict) else None
        if isinstance(message, str) and message:
            return f"{match.group(1)} {message}"
    return error


def _dead_letters(count: Optional[int]) -> Optional[str]:
    if not count:
        return None
    return f"{count:,} dead letter" + ("" if count == 1 else "s")
