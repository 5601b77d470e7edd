"""Recording a :class:`LoadResult` into the test's metrics (and so into the baseline).

Per request name and for the total: ``<name> latency`` (HDR histogram, compared on p95),
``<name> error_rate`` and ``<name> rps``. Throughput and error rate are recorded as per-round
values (one per second, or a tenth of shorter runs), so the significance test has a
distribution to work on rather than one number.
"""

from __future__ import annotations

from ..metrics import Metric, Recorder
from ..thresholds import describe_errors
from .result import LoadResult

__all__ = ["record_result"]


def _unique_base(recorder: Recorder, base: str) -> str:
    if f"{base} latency" not in recorder.metrics and f"{base} rps" not in recorder.metrics:
        return base
    n = 2
    while f"{base} #{n} latency" in recorder.metrics or f"{base} #{n} rps" in recorder.metrics:
        n += 1
    return f"{base} #{n}"


def _record_one(recorder: Recorder, base: str, result: LoadResult, distorted: str | None) -> None:
    details: dict[str, object] = {
        "count": result.count,
        "errors": result.errors,
        "model": result.model,
        "users": result.users,
        "workers": result.workers,
        "elapsed_s": round(result.elapsed, 3),
    }
    if result.target_rate is not None:
        details["target_rate"] = result.target_rate
    # where the server ran and what it and the generator used: shown next to the latency in
    # the terminal and the reports (measure.describe); never compared
    if result.serve is not None:
        details["serve"] = result.serve
    for side, usage in (("server", result.server), ("generator", result.generator)):
        if usage is not None:
            details[side] = {"cpu": round(usage.cpu, 1), "rss_peak": usage.rss_peak}
    recorded: list[Metric] = []
    if result.latency_count:
        latency = recorder.record(
            f"{base} latency",
            result.histogram,
            "s",
            "lower",
            stat="p95",
            role="latency",
            details=details,
        )
        recorded.append(latency)
    if result.count == 0:
        _mark_distorted(recorded, distorted)
        return
    rates = result.round_rates()
    rps = recorder.record(
        f"{base} rps",
        rates if len(rates) >= 2 else result.rps,
        "1/s",
        "higher",
        stat="mean" if len(rates) >= 2 else None,
        role="rps",
        noisy=True,
    )
    error_rates = result.round_error_rates()
    # a failed error_rate budget (or regression) shows which errors, not only how many; the
    # baseline never stores "explain"
    explain = describe_errors(result.error_types, result.status_counts) if result.errors else ""
    error_rate = recorder.record(
        f"{base} error_rate",
        error_rates if len(error_rates) >= 2 else result.error_rate,
        "ratio",
        "lower",
        stat="mean" if len(error_rates) >= 2 else None,
        role="error_rate",
        noisy=True,
        details={"explain": explain} if explain else None,
    )
    recorded += [rps, error_rate]
    _mark_distorted(recorded, distorted)


def _mark_distorted(metrics: list[Metric], distorted: str | None) -> None:
    """A tracer seen by a process that measured (a worker, or this one when the run started)
    makes the run's timings not comparable, even if nothing traces at recording time."""
    if not distorted:
        return
    for metric in metrics:
        if metric.noisy and not metric.distorted:
            metric.distorted = distorted


def record_result(recorder: Recorder, result: LoadResult) -> str:
    """Record ``result`` (total and per request name); returns the metric name prefix used."""
    base = _unique_base(recorder, result.name)
    _record_one(recorder, base, result, result.distorted)
    if result.queries is not None and result.queries.requests:
        # the most statements any measured request issued: deterministic for a deterministic
        # app (a request's code path does not depend on the load), so compared exactly, and
        # what the marker budget queries_per_request= applies to
        recorder.record(
            f"{base} queries_per_request",
            result.queries.max,
            unit="count",
            role="queries_per_request",
            noisy=False,
            details={**result.queries.to_details(), "explain": result.queries.explain()},
        )
    if len(result.by_name) > 1:
        for name, part in result.by_name.items():
            _record_one(recorder, f"{base} [{name}]", part, result.distorted)
    return base
