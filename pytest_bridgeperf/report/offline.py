"""Verdicts after the fact: a saved ``--perf-report`` judged against a baseline file.

What ``bridgeperf compare`` runs. Every metric of the report is rebuilt from its row (value,
histogram or samples, unit, direction) and judged by :func:`pytest_bridgeperf.compare.judge`
exactly as the plugin judges it during a run. The result is a report document of the same shape,
so every writer (Markdown, HTML, OpenMetrics) works on it. No pytest.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..baseline import Baseline, BaselineMetric, machine_id
from ..compare import VERDICTS, Verdict, judge, verdict_row
from ..metrics import STATS, UNITS, Metric
from .document import histogram_of

__all__ = ["OfflineOptions", "metric_from_row", "recompare"]


@dataclass(frozen=True)
class OfflineOptions:
    env: str | None = None  # None: the report's environment
    tolerance: float | None = None  # None: each test's tolerance as recorded in the report
    min_delta: float | None = None
    alpha: float | None = None
    strict: bool = False
    select: Callable[[str], bool] = field(default=lambda nodeid: True)


def metric_from_row(row: Mapping[str, Any]) -> Metric | None:
    """The measured metric behind a report row; None when the row holds no measurement."""
    unit = row.get("unit")
    current = row.get("current")
    if unit not in UNITS or not isinstance(current, (int, float)) or isinstance(current, bool):
        return None
    better = row.get("better", "lower")
    if better not in ("lower", "higher"):
        return None
    stat = row.get("stat") or "value"
    if stat != "value" and stat not in STATS:
        stat = "value"
    histogram = histogram_of(row, "hdr") if unit == "s" else None
    raw_samples = row.get("samples")
    samples = None
    if histogram is None and isinstance(raw_samples, list) and raw_samples:
        samples = sorted(
            float(s)
            for s in raw_samples
            if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
        )
    if histogram is None and not samples:
        samples = None
        if stat != "value" and not row.get("summary"):
            stat = "value"
    raw_rounds = row.get("rounds")
    rounds = None
    if isinstance(raw_rounds, list) and raw_rounds:
        rounds = [
            float(r)
            for r in raw_rounds
            if isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r)
        ]
    noisy = row.get("noisy")
    details = row.get("details")
    distorted = row.get("distorted")
    metric = Metric(
        name=str(row["name"]),
        unit=str(unit),
        better=better,
        value=float(current),
        stat=stat if (histogram is not None or samples) else "value",
        noisy=UNITS[str(unit)] if not isinstance(noisy, bool) else noisy,
        role=row.get("role") if isinstance(row.get("role"), str) else None,
        samples=samples,
        histogram=histogram,
        details=dict(details) if isinstance(details, Mapping) else {},
        distorted=distorted if isinstance(distorted, str) else None,
        rounds=rounds or None,
    )
    if histogram is not None or samples:
        metric.value = metric.statistic(metric.stat)
    return metric


def _row(
    original: Mapping[str, Any], verdict: Verdict, base: BaselineMetric | None
) -> dict[str, Any]:
    row = {
        k: v
        for k, v in original.items()
        if not k.startswith("baseline")
        and k not in ("verdict", "change", "p_value", "basis", "interval")
    }
    row.update(verdict_row(verdict, base))
    return row


def _missing_row(base: BaselineMetric, basis: str) -> dict[str, Any]:
    verdict = Verdict(base.name, "missing", base.unit, base.stat, None, base.value, basis=basis)
    row = _row({"budgets": []}, verdict, base)
    row["role"] = base.role
    return row


def recompare(
    report: Mapping[str, Any], baseline: Baseline, options: OfflineOptions
) -> dict[str, Any]:
    """``report`` judged against ``baseline``: a new report document."""
    env = options.env or str(report.get("environment") or "default")
    settings: Mapping[str, Any] = report.get("settings", {})
    min_delta = (
        options.min_delta if options.min_delta is not None else settings.get("min_delta", 1e-3)
    )
    alpha = options.alpha if options.alpha is not None else settings.get("alpha", 0.01)
    default_tolerance = settings.get("tolerance", 0.10)
    machine = report.get("machine")
    run_machine = machine_id(machine) if isinstance(machine, Mapping) and machine else None

    tests: dict[str, Any] = {}
    for nodeid, test in sorted(report.get("tests", {}).items()):
        if not options.select(nodeid):
            continue
        base_metrics = baseline.metrics(env, nodeid)
        base_machine = baseline.machine_of(env, nodeid)
        comparable = (
            base_machine is None or run_machine is None or machine_id(base_machine) == run_machine
        )
        tolerance = options.tolerance
        if tolerance is None:
            tolerance = test.get("tolerance", default_tolerance)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for original in test.get("metrics", []):
            metric = metric_from_row(original)
            if metric is None:
                continue
            seen.add(metric.name)
            base = base_metrics.get(metric.name)
            verdict = judge(
                metric,
                base,
                tolerance=float(tolerance),
                min_delta=float(min_delta),
                alpha=float(alpha),
                comparable=comparable,
            )
            rows.append(_row(original, verdict, base))
        for name, base in base_metrics.items():
            if name not in seen:
                rows.append(_missing_row(base, "not recorded"))
        outcome = test.get("outcome", "passed")
        if not seen:
            outcome = "missing"
        tests[nodeid] = {"outcome": outcome, "metrics": rows, "tolerance": tolerance}

    not_in_report = sorted(
        nodeid for nodeid in baseline.tests(env) if nodeid not in tests and options.select(nodeid)
    )
    totals = dict.fromkeys(VERDICTS, 0)
    for test in tests.values():
        for row in test["metrics"]:
            totals[row["verdict"]] += 1
    document = copy.deepcopy(dict(report))
    document.update(
        environment=env,
        baseline=str(baseline.path),
        tests=tests,
        totals=totals,
        not_in_report=not_in_report,
        written=[],
        pruned=[],
    )
    document["settings"] = {
        **dict(settings),
        "tolerance": options.tolerance if options.tolerance is not None else default_tolerance,
        "min_delta": min_delta,
        "alpha": alpha,
        "strict": options.strict,
        "update": False,
    }
    return document


def failed(document: Mapping[str, Any], strict: bool = False) -> bool:
    """Whether a (re)compared document fails: a regression, or with ``strict`` also improved,
    new and missing metrics."""
    totals: Mapping[str, int] = document.get("totals", {})
    bad = ("regressed", "improved", "new", "missing") if strict else ("regressed",)
    return any(totals.get(verdict, 0) for verdict in bad)
