"""Inline SVG plots for the HTML report: latency percentile curves and memory bars.

The percentile curve is drawn as HdrHistogram's plotter draws it: the x axis is the percentile on
a log scale of ``1 / (1 - q)`` (0 %, 90 %, 99 %, 99.9 %, … equally spaced), so the tail — where
regressions hide — gets as much room as the median. Pure string building; no pytest, no network.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ..stats import LatencyHistogram
from ..units import format_duration, format_size

__all__ = ["Curve", "memory_bars_svg", "percentile_curve", "percentile_plot_svg"]

#: Where each latency budget sits on the percentile axis (``max`` is drawn at the right edge).
BUDGET_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
MAX_NINES = 5  # the axis ends at 99.999 %

_W, _H = 560, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 34, 30, 44


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[tuple[float, float]]  # (x = log10(1 / (1 - q)), latency in seconds)
    css: str  # class of the line: "baseline" or "current <verdict>"
    count: int


def nines(count: int) -> int:
    """How far along the axis a histogram of ``count`` values has information: past
    ``1 - 1/count`` every percentile is the maximum."""
    if count <= 1:
        return 2
    return max(2, min(MAX_NINES, math.ceil(math.log10(count))))


def percentile_curve(
    hist: LatencyHistogram, x_max: float, steps: int = 200
) -> list[tuple[float, float]]:
    """Points of the percentile curve of ``hist`` for ``x`` in ``0 .. x_max`` (nearest rank,
    as :meth:`LatencyHistogram.percentile`); the last point is the maximum."""
    values: list[float] = []
    cumulative: list[int] = []
    seen = 0
    for value, count in hist.items():
        if count <= 0:
            continue
        seen += count
        values.append(value)
        cumulative.append(seen)
    if not values:
        return []
    points = []
    for i in range(steps + 1):
        x = x_max * i / steps
        q = 1 - 10**-x
        rank = max(1, math.ceil(q * seen - 1e-9)) if i < steps else seen  # ends at the max
        index = min(bisect_left(cumulative, rank), len(values) - 1)
        points.append((x, values[index]))
    return points


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def _axis_label(q_nines: int) -> str:
    if q_nines == 0:
        return "0%"
    percent = 100 * (1 - 10**-q_nines)
    return f"{percent:.{max(0, q_nines - 2)}f}%"


def _fmt(number: float) -> str:
    return f"{number:.1f}".rstrip("0").rstrip(".")


def percentile_plot_svg(
    curves: Sequence[Curve],
    *,
    title: str,
    budgets: Sequence[tuple[str, float]] = (),
) -> str:
    """An SVG percentile plot of ``curves`` with the latency ``budgets`` (``(key, seconds)``)
    marked where they apply."""
    if not curves or not any(c.points for c in curves):
        return ""
    x_max = max(c.points[-1][0] for c in curves if c.points)
    y_data = max(y for c in curves for _, y in c.points)
    shown_budgets = [
        (k, v) for k, v in budgets if v <= y_data * 2 and (k in BUDGET_QUANTILES or k == "max")
    ]
    y_top = max([y_data, *(v for _, v in shown_budgets)]) * 1.08 or 1e-6
    step = _nice_step(y_top)
    y_top = math.ceil(y_top / step) * step
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + pw * x / x_max

    def sy(y: float) -> float:
        return _TOP + ph * (1 - y / y_top)

    out = [
        f'<svg class="plot percentiles" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}"/>',
    ]
    # y grid and labels
    tick = 0.0
    while tick <= y_top * (1 + 1e-9):
        y = sy(tick)
        out.append(
            f'<line class="grid" x1="{_LEFT}" y1="{_fmt(y)}" x2="{_LEFT + pw}" y2="{_fmt(y)}"/>'
        )
        out.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{_fmt(y + 4)}" text-anchor="end">'
            f"{escape(format_duration(tick))}</text>"
        )
        tick += step
    # x grid: one line per "nine"
    for n in range(math.floor(x_max) + 1):
        x = sx(n)
        out.append(
            f'<line class="grid" x1="{_fmt(x)}" y1="{_TOP}" x2="{_fmt(x)}" y2="{_TOP + ph}"/>'
        )
        out.append(
            f'<text class="tick" x="{_fmt(x)}" y="{_TOP + ph + 16}" text-anchor="middle">'
            f"{_axis_label(n)}</text>"
        )
    out.append(
        f'<text class="axis" x="{_LEFT + pw / 2}" y="{_H - 6}" text-anchor="middle">'
        "percentile</text>"
    )
    out.append(
        f'<text class="axis y" x="14" y="{_TOP + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + ph / 2})">latency</text>'
    )
    # budgets: a short mark at the percentile each one bounds
    for key, limit in shown_budgets:
        y = sy(limit)
        x = sx(x_max if key == "max" else min(x_max, -math.log10(1 - BUDGET_QUANTILES[key])))
        x0, x1 = max(_LEFT, x - 40), min(_LEFT + pw, x + 6)
        text = f"{escape(key)} ≤ {escape(format_duration(limit))}"
        out.append(
            f'<line class="budget" x1="{_fmt(x0)}" y1="{_fmt(y)}" x2="{_fmt(x1)}" '
            f'y2="{_fmt(y)}"><title>budget {text}</title></line>'
        )
        right_half = x > _LEFT + pw / 2
        anchor, tx = ("end", x1) if right_half else ("start", x0)
        out.append(
            f'<text class="budget-label" x="{_fmt(tx)}" y="{_fmt(y - 4)}" text-anchor="{anchor}">'
            f"{text}</text>"
        )
    # curves
    for curve in curves:
        if not curve.points:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{_fmt(sx(x))},{_fmt(sy(y))}"
            for i, (x, y) in enumerate(curve.points)
        )
        out.append(
            f'<path class="curve {escape(curve.css)}" d="{path}">'
            f"<title>{escape(curve.label)} ({curve.count} values)</title></path>"
        )
    # legend
    lx = _LEFT + 10
    for i, curve in enumerate(curves):
        y = _TOP + 14 + i * 16
        out.append(
            f'<line class="curve {escape(curve.css)}" x1="{lx}" y1="{y - 4}" '
            f'x2="{lx + 22}" y2="{y - 4}"/>'
        )
        out.append(f'<text class="legend" x="{lx + 28}" y="{y}">{escape(curve.label)}</text>')
    out.append("</svg>")
    return "".join(out)


def memory_bars_svg(
    bars: Sequence[tuple[str, float, str]], *, title: str, budget: float | None = None
) -> str:
    """Horizontal bars (``(label, bytes, css class)``) with an optional budget line."""
    if not bars:
        return ""
    height = 26 * len(bars) + 34
    left, right = 90, 90
    pw = _W - left - right
    top = max([b for _, b, _ in bars] + ([budget] if budget else [])) * 1.1 or 1.0
    out = [
        f'<svg class="plot bars" viewBox="0 0 {_W} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value, css) in enumerate(bars):
        y = 8 + i * 26
        width = max(1.0, pw * value / top)
        out.append(
            f'<text class="tick" x="{left - 8}" y="{y + 14}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        out.append(
            f'<rect class="bar {escape(css)}" x="{left}" y="{y}" width="{_fmt(width)}" height="18">'
            f"<title>{escape(label)}: {escape(format_size(value))}</title></rect>"
        )
        out.append(
            f'<text class="value" x="{_fmt(left + width + 4)}" y="{y + 14}">'
            f"{escape(format_size(value))}</text>"
        )
    if budget:
        x = left + pw * budget / top
        y_end = 8 + len(bars) * 26
        out.append(f'<line class="budget" x1="{_fmt(x)}" y1="4" x2="{_fmt(x)}" y2="{y_end}"/>')
        out.append(
            f'<text class="budget-label" x="{_fmt(x)}" y="{y_end + 16}" text-anchor="middle">'
            f"budget {escape(format_size(budget))}</text>"
        )
    out.append("</svg>")
    return "".join(out)
