"""The drift chart of the MLOps page: drift share over time as inline SVG.

Inline SVG needs no script and no network (the page's CSP allows neither from outside):
a line through the monitoring runs, a dot per run linking to it, and the retraining
threshold as a dashed line.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from mlops.ui.views import DriftPoint

PLAIN = "#2c7fb8"
ALERT = "#c0392b"
"""Colour of the threshold and of the dots at or above it."""


@dataclass(frozen=True)
class _Frame:
    """Where the plot sits in the picture, and how a time and a share map onto it."""

    width: int
    height: int
    t0: float
    t1: float
    left: int = 40
    right: int = 12
    top: int = 10
    bottom: int = 28

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    def x(self, t: float) -> float:
        if self.t1 == self.t0:  # one point, or all at one time: the middle
            return self.left + self.plot_w / 2
        return self.left + (t - self.t0) / (self.t1 - self.t0) * self.plot_w

    def y(self, share: float) -> float:
        share = min(max(share, 0.0), 1.0) if math.isfinite(share) else 0.0
        return self.top + (1 - share) * self.plot_h


def drift_chart_svg(points: list[DriftPoint], threshold: float, width: int = 640, height: int = 180) -> str:
    """Drift share over time as inline SVG; '' when there is nothing to plot."""
    if not points:
        return ""
    times = [p.when.timestamp() for p in points]
    frame = _Frame(width, height, min(times), max(times))
    coords = [(frame.x(t), frame.y(p.drift_share)) for t, p in zip(times, points, strict=True)]
    parts = [
        _open_svg(frame),
        *_share_ticks(frame),
        _threshold_line(frame, threshold),
        _line(coords),
        *(_dot(cx, cy, point, threshold) for (cx, cy), point in zip(coords, points, strict=True)),
        _date_labels(frame, points),
        "</svg>",
    ]
    return "".join(parts)


def _open_svg(frame: _Frame) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="drift-chart" role="img" width="{frame.width}" '
        f'height="{frame.height}" viewBox="0 0 {frame.width} {frame.height}"><title>Drift share over time</title>'
        f'<rect x="{frame.left}" y="{frame.top}" width="{frame.plot_w}" height="{frame.plot_h}" fill="none" '
        'stroke="#ccc"/>'
    )


def _share_ticks(frame: _Frame) -> list[str]:
    return [
        f'<text x="{frame.left - 6}" y="{frame.y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.1f}</text>'
        for tick in (0.0, 0.5, 1.0)
    ]


def _threshold_line(frame: _Frame, threshold: float) -> str:
    ty = frame.y(threshold)
    return (
        f'<line class="threshold" x1="{frame.left}" x2="{frame.left + frame.plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" '
        f'stroke="{ALERT}" stroke-dasharray="4 3"><title>retraining threshold {threshold:g}</title></line>'
    )


def _line(coords: list[tuple[float, float]]) -> str:
    line = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
    return f'<polyline points="{line}" fill="none" stroke="{PLAIN}" stroke-width="2"/>'


def _dot(cx: float, cy: float, point: DriftPoint, threshold: float) -> str:
    """One monitoring run: a dot linking to its MLflow run, its date, share and action as tooltip."""
    label = html.escape(f"{point.when:%Y-%m-%d}: drift share {point.drift_share:.2f} ({point.action or '-'})")
    colour = ALERT if point.drift_share >= threshold else PLAIN
    return (
        f'<a href="{html.escape(point.run_url)}" target="_blank" rel="noopener">'
        f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}">'
        f"<title>{label}</title></circle></a>"
    )


def _date_labels(frame: _Frame, points: list[DriftPoint]) -> str:
    """The first and last window's dates under the plot's two ends."""
    return (
        f'<text x="{frame.left}" y="{frame.height - 8}" font-size="10">{points[0].when:%Y-%m-%d}</text>'
        f'<text x="{frame.left + frame.plot_w}" y="{frame.height - 8}" font-size="10" text-anchor="end">'
        f"{points[-1].when:%Y-%m-%d}</text>"
    )
