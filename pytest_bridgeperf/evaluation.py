"""Judging one run of a test: its metrics against the marker's budgets and the baseline.

No pytest here. The plugin evaluates every round of a perf test with :func:`evaluate` and reads
the typed outcome: which failures there are, which of them a confirmation round may overturn,
the rows of the reports and the entries ``--perf-update`` would write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .baseline import BaselineMetric, metric_entry
from .compare import Verdict, judge, verdict_row
from .metrics import BudgetCheck, Budgets, Metric, check_budgets
from .units import format_value

__all__ = ["Evaluation", "Failure", "evaluate", "failure_message", "report_row"]

FailureKind = Literal["budget", "regression", "strict"]

#: Budgets on these roles measure the machine as much as the code (latency statistics, a load's
#: throughput and error rate, the RSS): a breach is confirmed by another round before it fails,
#: like a timing regression. Query counts and Python-heap bytes are exact.
NOISY_BUDGET_ROLES = frozenset({"latency", "rps", "error_rate", "rss"})

#: Exact metrics whose exactness is checked rather than assumed: the Python-heap peak of a code
#: path that builds caches, pools or lazily imported modules may differ between two runs.
VERIFIED_ROLES = frozenset({"memory"})


@dataclass(frozen=True)
class Failure:
    """One reason the test fails."""

    text: str  # one line, e.g. "✗ statistics p50 10.2 ms → 13.2 ms (+29 %, …): regressed"
    metric: str | None
    kind: FailureKind
    #: another round may overturn it: noisy metrics and budgets, and exact metrics whose
    #: determinism is verified (heap bytes)
    confirmable: bool


@dataclass
class Evaluation:
    """The outcome of judging one round's metrics."""

    rows: list[dict[str, Any]]
    failures: list[Failure]
    explain: dict[str, str]
    entries: dict[str, dict[str, Any]]  # what --perf-update writes (distorted timings left out)
    kept: list[str]  # distorted timings: their stored entry (if any) stays as it was
    tolerance: float
    notes: list[str] = field(default_factory=list)
    #: noisy verdicts more data would decide (their interval spans the tolerance)
    undecided: list[str] = field(default_factory=list)

    @property
    def confirmable(self) -> bool:
        """Every failure may be a fluke of the machine: worth another round. A run without
        failures whose timings stayed undecided gets the same second look."""
        if not self.failures:
            return bool(self.undecided)
        return all(f.confirmable for f in self.failures)

    def message(self) -> str:
        """The failure message (see :func:`failure_message`)."""
        return failure_message(self.failures, self.notes, self.explain)

    def payload(self, machine: Mapping[str, Any], worker: bool) -> dict[str, Any]:
        """What travels with the test's report (to the xdist controller too), JSON-able."""
        return {
            "metrics": self.rows,
            "entries": self.entries,
            "kept": self.kept,
            "machine": dict(machine),
            "worker": worker,
            "tolerance": self.tolerance,
            "notes": list(self.notes),  # what the rounds did, for the summary and reports
        }


def failure_message(
    failures: Sequence[Failure], notes: Sequence[str], explain: Mapping[str, str]
) -> str:
    """The failure message: the most useful line first (what ``-rA`` and the short test summary
    show), the notes on how the verdict was reached, every failure, then the explanations."""
    if not failures:
        return ""
    parts = [f"perf: {failures[0].text.removeprefix('✗ ')}"]
    parts.extend(f"  ({note})" for note in notes)
    if len(failures) > 1:
        parts.extend("  " + failure.text for failure in failures)
    for name, text in explain.items():
        if text:
            parts.append(f"\n{name}:\n{text}")
    return "\n".join(parts)


def evaluate(
    metrics: Mapping[str, Metric],
    budgets: Budgets,
    base_metrics: Mapping[str, BaselineMetric],
    *,
    tolerance: float,
    min_delta: float,
    alpha: float,
    comparable: bool,
    strict: bool = False,
    update: bool = False,
    accept: bool = False,
) -> Evaluation:
    """Budgets and baseline verdicts of one round's ``metrics``.

    ``comparable`` is False when the baseline entries were measured on another machine (noisy
    metrics are then not judged). ``update``/``accept`` are ``--perf-update``/``--perf-accept``.
    """
    checks = check_budgets(metrics.values(), budgets)
    failures: list[Failure] = []
    explain: dict[str, str] = {}
    for check in checks:
        if check.passed:
            continue
        metric = metrics[check.metric]
        failures.append(
            Failure(
                _budget_line(check, base_metrics.get(check.metric), tolerance),
                check.metric,
                "budget",
                _confirmable(metric, check.budget),
            )
        )
        explain[check.metric] = str(metric.details.get("explain", ""))
    rows: list[dict[str, Any]] = []
    undecided: list[str] = []
    for name, metric in metrics.items():
        base = base_metrics.get(name)
        verdict = judge(
            metric,
            base,
            tolerance=tolerance,
            min_delta=min_delta,
            alpha=alpha,
            comparable=comparable,
        )
        fails = (verdict.verdict == "regressed" and not accept) or (
            strict and not update and verdict.verdict in ("improved", "new")
        )
        if fails:
            line = f"✗ {verdict.describe()}: {verdict.verdict}"
            if verdict.verdict == "improved":
                line += " (baseline is stale: run --perf-update)"
            elif verdict.verdict == "new":
                line += " (no baseline entry; --perf-strict: run --perf-update)"
            regression = verdict.verdict == "regressed"
            failures.append(
                Failure(
                    line,
                    name,
                    "regression" if regression else "strict",
                    regression and _confirmable(metric, None),
                )
            )
            extra = "\n".join(
                x for x in (diff_details(metric, base), metric.details.get("explain", "")) if x
            )
            if extra:
                explain[name] = extra
        if verdict.verdict == "undecided" and metric.noisy and not update:
            # --perf-update stores this run whatever the verdict: no second look needed
            undecided.append(f"{verdict.describe()}: undecided")
        rows.append(report_row(metric, verdict, [c for c in checks if c.metric == name], base))
    for name, base in base_metrics.items():
        if name in metrics:
            continue
        verdict = Verdict(
            name, "missing", base.unit, base.stat, None, base.value, basis="not recorded"
        )
        rows.append(report_row(None, verdict, [], base))
        if strict and not update:
            failures.append(
                Failure(f"✗ {verdict.describe()}: missing (--perf-strict)", name, "strict", False)
            )
    # budget failures first: they are absolute, and what the test author wrote down
    failures.sort(key=lambda f: f.kind != "budget")
    entries = {
        name: metric_entry(metric)
        for name, metric in metrics.items()
        if not (metric.noisy and metric.distorted)
    }
    kept = [name for name, metric in metrics.items() if metric.noisy and metric.distorted]
    return Evaluation(rows, failures, explain, entries, kept, tolerance, undecided=undecided)


def _confirmable(metric: Metric, budget: str | None) -> bool:
    if metric.role in VERIFIED_ROLES:
        return True
    if budget is not None:
        return metric.role in NOISY_BUDGET_ROLES or metric.noisy
    return metric.noisy


def _budget_line(check: BudgetCheck, base: BaselineMetric | None, tolerance: float) -> str:
    line = check.describe()
    if base is not None:
        baseline = format_value(base.value, base.unit)
        line += f" — baseline {baseline}, tolerance {tolerance * 100:g} %"
    return line


def diff_details(metric: Metric, base: BaselineMetric | None) -> str:
    """Extra explanation of a regression that compares stored details (query fingerprints)."""
    if base is None or metric.role != "queries":
        return ""
    try:
        from .queries import fingerprint_diff
    except ImportError:
        return ""
    try:
        return str(fingerprint_diff(base.details, metric.details))
    except Exception:  # a diff is a courtesy; never let it mask the verdict
        return ""


def report_row(
    metric: Metric | None,
    verdict: Verdict,
    checks: list[BudgetCheck],
    base: BaselineMetric | None,
) -> dict[str, Any]:
    """One metric's line of the report: what reports and the summary need, JSON-able."""
    row = verdict_row(verdict, base)
    row["budgets"] = [
        {"budget": c.budget, "limit": c.limit, "measured": c.measured, "passed": c.passed}
        for c in checks
    ]
    if metric is not None:
        row.update(
            better=metric.better,
            n=metric.count,
            noisy=metric.noisy,
            summary=metric.summary(),
            distorted=metric.distorted,
            role=metric.role,
            details=metric.details,
        )
        if metric.histogram is not None:
            row["hdr"] = metric.histogram.encode()
        if metric.samples is not None:  # lets `bridgeperf compare` recompute the interval
            row["samples"] = list(metric.samples)
        if metric.rounds is not None:  # ... on the same distribution the plugin judged
            row["rounds"] = list(metric.rounds)
    return row
