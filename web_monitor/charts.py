"""
The geometry of a small line chart of recent values, drawn by the
``chart.svg`` template.
"""

from __future__ import annotations

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
