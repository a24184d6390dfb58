"""The status page's chart of bytes from origin vs peers over time: inline SVG (pure).

No script and no library: two polylines in a fixed ``viewBox``, scaled to the largest
value shown, with the numbers they draw kept on the elements (``data-at`` and
``data-values``, space-separated) so tests and curious operators can read them back.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Final

from tracker.activity import TrafficPoint

WIDTH: Final = 640
HEIGHT: Final = 180
#: Room for the axis labels (left, top, right, bottom).
PAD: Final = (64, 12, 12, 24)
#: Series: name, colour (Okabe-Ito palette: distinguishable with colour blindness).
SERIES: Final = (("origin", "#d55e00"), ("peers", "#0072b2"))


def _ago(seconds: float) -> str:
    if seconds >= 3600:
        return f"-{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"-{seconds / 60:.0f} min"
    return f"-{seconds:.0f} s"


def traffic_chart(points: Sequence[TrafficPoint], fmt: Callable[[int], str]) -> str:
    """An ``<svg>`` of both counters over ``points`` (oldest first, at least one).

    Args:
        points: Samples, oldest first; the last is "now".
        fmt: Formats a byte count for the axis (``human_bytes``).
    """
    left, top, right, bottom = PAD
    width, height = WIDTH - left - right, HEIGHT - top - bottom
    t0, t1 = points[0].at, points[-1].at
    span = max(t1 - t0, 1e-9)
    peak = max(max(x.bytes_from_origin, x.bytes_from_peers) for x in points) or 1

    def xy(at: float, value: int) -> str:
        x = left + (width * (at - t0) / span if len(points) > 1 else width)
        y = top + height - height * value / peak
        return f"{x:.1f},{y:.1f}"

    at_attr = " ".join(f"{x.at:.3f}" for x in points)
    lines = []
    for name, colour in SERIES:
        values = [x.bytes_from_origin if name == "origin" else x.bytes_from_peers for x in points]
        coords = " ".join(xy(x.at, v) for x, v in zip(points, values, strict=True))
        data = " ".join(str(v) for v in values)
        lines.append(
            f'<polyline class="series" data-series="{name}" data-at="{at_attr}" '
            f'data-values="{data}" points="{coords}" fill="none" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        if len(points) == 1:  # a lone sample: a dot, since a line needs two
            lines.append(f'<circle cx="{left + width}" cy="{xy(t1, values[0]).split(",")[1]}" '
                         f'r="3" fill="{colour}"/>')  # fmt: skip
    axis = (
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" '
        'stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="#999"/>'
        f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{html.escape(fmt(peak))}</text>'
        f'<text x="{left - 4}" y="{top + height}" text-anchor="end">0</text>'
        f'<text x="{left}" y="{HEIGHT - 6}">{html.escape(_ago(t1 - t0))}</text>'
        f'<text x="{left + width}" y="{HEIGHT - 6}" text-anchor="end">now</text>'
    )
    legend = "".join(  # under the plot, between the time labels: never over a line
        f'<text x="{left + width // 2 - 100 + 110 * i}" y="{HEIGHT - 6}" fill="{colour}">'
        f"■ from {name}</text>"
        for i, (name, colour) in enumerate(SERIES)
    )
    return (
        f'<svg class="chart" role="img" aria-label="Bytes from origin vs peers over time" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-size="11" '
        'font-family="system-ui,sans-serif">'
        f"{axis}{''.join(lines)}{legend}</svg>"
    )
