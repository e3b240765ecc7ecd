"""
How the page writes figures: durations, ages, sizes, numbers, node ids and
sensors' timestamps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

# Durations and sizes are written as p2pstore status and the node's log write them.
from p2pstore.clusterview import duration
from p2pstore.disk import size_text

__all__ = ["age", "duration", "number", "reading_time", "short_id", "size_text"]


def age(seconds: float) -> str:
    # Coarse: how long a reading has waited, in the unit that matters.
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def short_id(node_id: Optional[str]) -> Optional[str]:
    return node_id[:8] if node_id else None


def reading_time(timestamp: str) -> str:
    """
    A sensor's timestamp to the second, or as it came if it does not parse.
    """
    try:
        parsed = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    text = parsed.strftime("%Y-%m-%d %H:%M:%S")
    return text + parsed.strftime(" %z") if parsed.tzinfo else text


def number(value: float) -> str:
    return f"{value:.6g}"
