"""Verdicts: one measured metric against its baseline entry, or — for ``--perf-against`` —
against the same metric measured on another revision in paired rounds. No pytest."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .baseline import BaselineMetric
from .intervals import Interval
from .metrics import Metric
from .stats import LatencyHistogram, compare_distributions, compare_exact, compare_paired
from .units import format_change, format_value

__all__ = ["VERDICTS", "RoundMetric", "Verdict", "judge", "judge_rounds", "verdict_row"]

#: Every verdict. ``undecided``: the confidence interval of a timing change reaches past the
#: tolerance without clearing it — neither a regression nor ok could be shown; never a failure.
VERDICTS = ("ok", "regressed", "improved", "new", "not comparable", "missing", "undecided")


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
    interval: Interval | None = None  # of the relative change, when one decided the verdict

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
        # per-round statistics are the independent units when both sides have them; a side
        # without (a baseline written before rounds) compares samples with samples
        rounds = bool(base.rounds) and bool(current.rounds)
        comparison = compare_distributions(
            base_value,
            cur_value,
            _distribution(base.rounds, base.histogram(), base.samples, base.value, rounds),
            _distribution(
                current.rounds, current.histogram, current.samples, current.value, rounds
            ),
            better=current.better,
            tolerance=tolerance,
            floor=min_delta if current.unit == "s" else 0.0,
            alpha=alpha,
            stat=stat,
            rounds=rounds,
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
        interval=comparison.interval,
    )


def _distribution(
    rounds: Sequence[float] | None,
    histogram: LatencyHistogram | None,
    samples: Sequence[float] | None,
    value: float,
    use_rounds: bool,
) -> list[tuple[float, int]]:
    """Weighted samples for the interval: the rounds, the histogram's buckets, the samples, or
    the single value."""
    if use_rounds and rounds:
        return [(r, 1) for r in rounds]
    if histogram is not None:
        return list(histogram.items())
    if samples is not None:
        return [(s, 1) for s in samples]
    return [(value, 1)]


class RoundMetric(Protocol):
    """What :func:`judge_rounds` reads of one round's metric: a :class:`Metric` or a
    :class:`BaselineMetric` both fit."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def better(self) -> str: ...
    @property
    def stat(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def noisy(self) -> bool: ...


def judge_rounds(
    name: str,
    base: Sequence[RoundMetric],
    current: Sequence[RoundMetric],
    *,
    tolerance: float,
    min_delta: float,
    alpha: float,
    looks: int = 1,
) -> Verdict:
    """The ``--perf-against`` verdict of metric ``name``: ``base[i]`` and ``current[i]`` are
    round i of the reference revision and of the working tree, measured one right after the
    other (alternate which goes first, so neither always gets the warmer machine).

    Timing-like metrics are judged on the paired interval of their per-round values
    (:func:`pytest_bridgeperf.stats.compare_paired`): at α = 0.01 that needs 8 rounds
    (``intervals.min_pairs``), fewer are ``undecided``. Deterministic metrics compare the
    median round exactly against the tolerance. Shown values are the median rounds.

    ``looks``: how many times the caller judges while rounds accumulate, stopping at the first
    decided verdict; each look then uses α/looks (Bonferroni), so looking early does not raise
    the false-alarm rate above α."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    if base and current and len(base) != len(current):
        raise ValueError(
            f"metric {name!r}: paired rounds must come in pairs: {len(base)} round(s) of the "
            f"reference revision, {len(current)} of this one"
        )
    if not current:
        first = base[0]
        base_value = statistics.median(m.value for m in base)
        return Verdict(
            name, "missing", first.unit, first.stat, None, base_value, basis="not recorded"
        )
    last = current[-1]
    cur_value = statistics.median(m.value for m in current)
    if not base or any(m.unit != last.unit or m.better != last.better for m in base):
        basis = "not measured on the reference revision"
        if base:
            basis = f"the reference revision measured it as {base[0].unit}/{base[0].better}"
        return Verdict(name, "new", last.unit, last.stat, cur_value, None, basis=basis)
    base_value = statistics.median(m.value for m in base)
    distorted = next((d for m in current if (d := getattr(m, "distorted", None))), None)
    if last.noisy and distorted:
        return Verdict(
            name,
            "not comparable",
            last.unit,
            last.stat,
            cur_value,
            base_value,
            basis=str(distorted),
            tolerance=tolerance,
        )
    if last.noisy:
        comparison = compare_paired(
            [m.value for m in base],
            [m.value for m in current],
            better=last.better,
            tolerance=tolerance,
            floor=min_delta if last.unit == "s" else 0.0,
            alpha=alpha / looks,
        )
    else:
        comparison = compare_exact(base_value, cur_value, better=last.better, tolerance=tolerance)
    return Verdict(
        name,
        comparison.verdict,
        last.unit,
        last.stat,
        cur_value,
        base_value,
        change=comparison.change,
        p_value=comparison.p_value,
        basis=comparison.basis,
        tolerance=tolerance,
        interval=comparison.interval,
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
        "change": None if change is None or not math.isfinite(change) else change,  # no ∞ in JSON
        "p_value": verdict.p_value,
        "basis": verdict.basis,
    }
    if verdict.interval is not None:
        interval = verdict.interval
        row["interval"] = {
            "low": interval.low if math.isfinite(interval.low) else None,  # JSON has no ∞
            "high": interval.high if math.isfinite(interval.high) else None,
            "confidence": interval.confidence,
            "method": interval.method,
        }
    if base is not None:
        row["baseline_summary"] = base.summary
        if base.hdr:
            row["baseline_hdr"] = base.hdr
        if base.details:
            row["baseline_details"] = base.details
    return row
