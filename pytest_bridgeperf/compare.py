"""Verdicts: one measured metric against its baseline entry. No pytest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .baseline import BaselineMetric
from .metrics import Metric
from .stats import compare_distributions, compare_exact
from .units import format_change, format_value

__all__ = ["VERDICTS", "Verdict", "judge", "verdict_row"]

VERDICTS = ("ok", "regressed", "improved", "new", "not comparable", "missing")


@dataclass(frozen=True)
class Verdict:
    name: str
    verdict: str
    unit: str
    stat: str
    current: float | None
    baseline: float | None
    change: float | None = None
    p_value: float | None = None
    basis: str = ""
    tolerance: float | None = None

    def describe(self) -> str:
        """``p95 12.1 ms → 16.0 ms (+32 %, tolerance 10 %, p = 0.0003)``."""
        label = self.name if self.stat in ("value", "") else f"{self.name} {self.stat}"
        if self.current is None:
            return f"{label}: baseline {format_value(self.baseline or 0, self.unit)}, not measured"
        if self.baseline is None:
            return (
                f"{label} {format_value(self.current, self.unit)} ({self.basis or 'no baseline'})"
            )
        text = (
            f"{label} {format_value(self.baseline, self.unit)} → "
            f"{format_value(self.current, self.unit)}"
        )
        inner = ", ".join(x for x in (format_change(self.change), self.basis) if x)
        return f"{text} ({inner})" if inner else text


def judge(
    current: Metric,
    base: BaselineMetric | None,
    *,
    tolerance: float,
    min_delta: float,
    alpha: float,
    comparable: bool,
) -> Verdict:
    """The verdict for ``current``. ``comparable`` is False when the baseline entry was measured
    on a machine with another fingerprint: noisy metrics are then not judged."""
    if base is None or base.unit != current.unit or base.better != current.better:
        # a metric whose unit or direction changed starts afresh, like one never measured
        basis = "no baseline yet" if base is None else f"baseline was {base.unit}/{base.better}"
        return Verdict(
            current.name, "new", current.unit, current.stat, current.value, None, basis=basis
        )
    stat = base.stat if base.stat == current.stat or current.stat == "value" else current.stat
    cur_value = current.statistic(stat) if stat != "value" else current.value
    base_value = base.statistic(stat)
    if base_value is None:  # the stored entry lacks the statistic we compare on
        stat, cur_value, base_value = base.stat, current.statistic(base.stat), base.value
    if current.noisy and current.distorted:
        return Verdict(
            current.name,
            "not comparable",
            current.unit,
            stat,
            cur_value,
            base_value,
            basis=current.distorted,
            tolerance=tolerance,
        )
    if current.noisy and not comparable:
        return Verdict(
            current.name,
            "not comparable",
            current.unit,
            stat,
            cur_value,
            base_value,
            basis="baseline from another machine",
            tolerance=tolerance,
        )
    if current.noisy:
        comparison = compare_distributions(
            base_value,
            cur_value,
            base.distribution(),
            current.distribution(),
            better=current.better,
            tolerance=tolerance,
            floor=min_delta if current.unit == "s" else 0.0,
            alpha=alpha,
        )
    else:
        comparison = compare_exact(
            base_value, cur_value, better=current.better, tolerance=tolerance
        )
    return Verdict(
        current.name,
        comparison.verdict,
        current.unit,
        stat,
        cur_value,
        base_value,
        change=comparison.change,
        p_value=comparison.p_value,
        basis=comparison.basis,
        tolerance=tolerance,
    )


def verdict_row(verdict: Verdict, base: BaselineMetric | None) -> dict[str, Any]:
    """The verdict's part of a report row (JSON-able), with what the baseline stored."""
    change = verdict.change
    row: dict[str, Any] = {
        "name": verdict.name,
        "unit": verdict.unit,
        "stat": verdict.stat,
        "verdict": verdict.verdict,
        "current": verdict.current,
        "baseline": verdict.baseline,
        "change": None if change is None or math.isinf(change) else change,  # JSON has no ∞
        "p_value": verdict.p_value,
        "basis": verdict.basis,
    }
    if base is not None:
        row["baseline_summary"] = base.summary
        if base.hdr:
            row["baseline_hdr"] = base.hdr
        if base.details:
            row["baseline_details"] = base.details
    return row
