"""Small inline SVG charts: an analysis check's values against its threshold. Pure, no I/O.

Drawn on the server so the page needs no chart library: a polyline of the values seen, a dashed line at the
threshold, the last point marked, and a ``<title>`` that says the same in words for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["sparkline"]

WIDTH = 160
HEIGHT = 40
PAD = 4


def sparkline(values: Sequence[float], threshold: float | None, label: str, failed: bool = False) -> Markup:
    """An SVG of ``values`` (oldest first) with ``threshold`` as a dashed line; ``label`` is its accessible name."""
    if not values and threshold is None:
        return Markup("")
    points = list(values) or [0.0]
    low = min([*points, threshold if threshold is not None else points[0]])
    high = max([*points, threshold if threshold is not None else points[0]])
    if high == low:
        high, low = high + 1.0, low - (1.0 if low else 0.0)
    span = high - low

    def y(v: float) -> float:
        return round(HEIGHT - PAD - (v - low) / span * (HEIGHT - 2 * PAD), 1)

    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)
    coords = [(round(PAD + i * step, 1), y(v)) for i, v in enumerate(points)]
    parts = [
        f'<svg class="spark{" failed" if failed else ""}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    if threshold is not None:
        ty = y(threshold)
        parts.append(f'<line class="threshold" x1="0" y1="{ty}" x2="{WIDTH}" y2="{ty}"/>')
    if values:
        parts.append('<polyline class="values" points="' + " ".join(f"{x},{yy}" for x, yy in coords) + '"/>')
        x, yy = coords[-1]
        parts.append(f'<circle class="last" cx="{x}" cy="{yy}" r="3"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and the escaped label only
