"""
The geometry of a small line chart of recent values, drawn by the
``chart.svg`` template.
"""

from __future__ import annotations

import math

WIDTH = 180
HEIGHT = 72
# Room for the labels: the type above, the range to the left.
TOP = 20
BOTTOM = 6
LEFT = 40
RIGHT = 8


def chart(values: list) -> dict:
    """
    The polyline of C{values} (oldest first), scaled between their minimum
    and maximum, and the labels of that range.
    """
    low, high = min(values), max(values)
    span = high - low
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    step = plot_w / (len(values) - 1) if len(values) > 1 else 0
    points = []
    for n, value in enumerate(values):
        x = LEFT + n * step if len(values) > 1 else LEFT + plot_w / 2
        # A flat series sits in the middle rather than on an edge.
        y = TOP + (plot_h * (high - value) / span if span else plot_h / 2)
        points.append(f"{x:.1f},{y:.1f}")
    last_x, last_y = points[-1].split(",")
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "points": " ".join(points),
        "last_x": last_x,
        "last_y": last_y,
        "high": f"{high:.4g}",
        "low": f"{low:.4g}",
    }


# The history charts: wider, from zero up.
HISTORY_WIDTH = 440
HISTORY_HEIGHT = 64
HISTORY_TOP = 18
HISTORY_BOTTOM = 14


def timeline(points: list, start: float, end: float, step: float) -> dict:
    """
    The lines of C{points} (C{(time, value)}, oldest first; a value of
    C{None} is no value) between the times C{start} and C{end}, scaled from
    zero to their maximum. Points more than C{step} apart are not joined.
    """
    values = [v for _, v in points if v is not None]
    high = nice_ceiling(max(values, default=0))
    plot_w = HISTORY_WIDTH - LEFT - RIGHT
    plot_h = HISTORY_HEIGHT - HISTORY_TOP - HISTORY_BOTTOM
    lines, line, before = [], [], None
    for at, value in points:
        if value is None or (before is not None and at - before > step * 1.5):
            if line:
                lines.append(line)
            line = []
        if value is not None:
            x = LEFT + plot_w * min(1.0, max(0.0, (at - start) / (end - start)))
            y = HISTORY_TOP + plot_h * (1 - value / high)
            line.append(f"{x:.1f},{y:.1f}")
        before = at
    if line:
        lines.append(line)
    return {
        "width": HISTORY_WIDTH,
        "height": HISTORY_HEIGHT,
        "top": HISTORY_TOP,
        "bottom": HISTORY_HEIGHT - HISTORY_BOTTOM,
        "left": LEFT,
        "right": HISTORY_WIDTH - RIGHT,
        # A line of one point is drawn as a dot.
        "lines": [" ".join(line) for line in lines if len(line) > 1],
        "dots": [line[0].split(",") for line in lines if len(line) == 1],
        "high": f"{high:g}",
    }


def nice_ceiling(value: float) -> float:
    """
    The top of an axis from zero that holds C{value}: 1, 2 or 5 times a
    power of ten (1 for nothing to show).
    """
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * scale * (1 + 1e-9):
            return step * scale
