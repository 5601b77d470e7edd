"""Lines of the terminal summary, as ``(text, markup)`` pieces for pytest's terminal writer.

The writer drops the markup when the output is not a terminal (or with ``--color=no``), so the
same pieces serve a TTY and a CI log. No pytest here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..measure import describe
from ..units import format_change, format_value
from .document import budget_text, metric_label

__all__ = ["Piece", "detail_lines", "metric_pieces", "status_markup", "verdict_markup"]

Piece = tuple[str, dict[str, bool]]

_VERDICT_MARKUP: dict[str, dict[str, bool]] = {
    "regressed": {"red": True, "bold": True},
    "over budget": {"red": True, "bold": True},
    "improved": {"green": True},
    "ok": {"green": True},
    "new": {"yellow": True},
    "not comparable": {"yellow": True},
    "missing": {"yellow": True},
    "undecided": {"yellow": True},
}

_SUMMARY_STATS = ("p50", "p90", "p99", "max")


def verdict_markup(verdict: str) -> dict[str, bool]:
    return dict(_VERDICT_MARKUP.get(verdict, {}))


def status_markup(status: str) -> dict[str, bool]:
    """Markup of a test's node id line: red when it regressed or broke a budget."""
    if status in ("regressed", "over budget"):
        return {"red": True, "bold": True}
    return {"bold": True}


def _value(value: Any, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format_value(value, unit)


def metric_pieces(row: Mapping[str, Any], width: int = 40) -> list[Piece]:
    """The compact one-line summary of a metric, with the verdict and broken budgets coloured:
    ``name stat   baseline → current   change  verdict  budget ✓  (1,000 × 30, cpu)`` — the
    last part, how a timed function was measured, at the end so the columns stay aligned."""
    unit = str(row.get("unit", ""))
    label = metric_label(row)
    base = _value(row.get("baseline"), unit)
    cur = _value(row.get("current"), unit)
    change = format_change(row.get("change"))
    pieces: list[Piece] = [
        (f"{label:<{width}} {base:>10} → {cur:<10} {change:>7}  ", {}),
        (str(row["verdict"]), verdict_markup(str(row["verdict"]))),
    ]
    budgets = row.get("budgets", [])
    if budgets:
        pieces.append(("  budget", {}))
        for check in budgets:
            passed = bool(check.get("passed", True))
            pieces.append((" ✓" if passed else " ✗", {"green": True} if passed else {"red": True}))
    how = describe(row.get("details"))
    if how:
        pieces.append((f"  {how}", {}))
    return pieces


def detail_lines(row: Mapping[str, Any]) -> list[Piece]:
    """``-v``: why the verdict is what it is — the basis, the distributions, each budget."""
    unit = str(row.get("unit", ""))
    lines: list[Piece] = []
    if row.get("basis"):
        lines.append((f"basis: {row['basis']}", {}))
    for key, label in (("summary", "this run"), ("baseline_summary", "baseline")):
        summary = row.get(key)
        if isinstance(summary, Mapping) and summary:
            stats = ", ".join(
                f"{stat} {_value(summary[stat], unit)}"
                for stat in _SUMMARY_STATS
                if stat in summary
            )
            n = f"n = {row['n']}, " if key == "summary" and row.get("n") else ""
            lines.append((f"{label}: {n}{stats}", {}))
    for check in row.get("budgets", []):
        one = budget_text({"unit": unit, "budgets": [check]}, mark=False)
        check_unit = "s" if check["budget"] in _LATENCY else unit
        measured = _value(check.get("measured"), check_unit)
        passed = bool(check.get("passed", True))
        lines.append(
            (
                f"budget {one}: {measured} {'✓' if passed else '✗ over budget'}",
                {} if passed else {"red": True},
            )
        )
    if row.get("distorted"):
        lines.append((f"not stored in the baseline: {row['distorted']}", {"yellow": True}))
    return lines


_LATENCY = frozenset(("p50", "p90", "p95", "p99", "p999", "max", "mean"))
