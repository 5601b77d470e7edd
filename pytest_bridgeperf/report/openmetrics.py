"""The run's results in the OpenMetrics text format (``--perf-openmetrics``).

Metric names follow the Bridge tuning guide where they fit, labelled by ``test`` (node id) and
``metric`` (the recorded metric's name):

* ``bridge_request_duration_seconds`` (histogram) — every latency distribution of the run, with
  buckets folded from its HDR histogram;
* ``bridge_requests_total`` / ``bridge_request_errors_total`` (counters) — requests of load runs;
* ``bridge_db_queries_total`` (counter, by ``query_type``) — SQL statements a test issued;
* ``bridge_memory_usage_bytes`` (gauge, by ``kind``: ``python`` heap or ``rss``) — memory peaks;
* ``bridgeperf_metric_value`` / ``bridgeperf_metric_baseline`` / ``bridgeperf_metric_change_ratio``
  (gauges) and ``bridgeperf_verdict`` (gauge, 1 for the verdict in its label) — every metric.

No timestamps (the Pushgateway refuses them); ``# EOF`` terminated. No pytest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..stats import LatencyHistogram
from .document import fingerprints_of, histogram_of, ordered_tests

__all__ = ["BUCKETS", "render_openmetrics"]

#: Upper bounds (seconds) of the exported duration buckets: 1-2.5-5 steps from 1 µs to 100 s.
BUCKETS: tuple[float, ...] = (
    *(round(m * 10.0**e, 12) for e in range(-6, 2) for m in (1.0, 2.5, 5.0)),
    100.0,
)

_UNITS = {"s": "seconds", "bytes": "bytes", "1/s": "per_second", "ratio": "ratio", "count": "count"}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Family:
    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        self.name, self.kind, self.help, self.unit = name, kind, help, unit
        self.lines: list[str] = []

    def sample(self, suffix: str, labels: Mapping[str, str], value: float) -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")

    def render(self) -> list[str]:
        if not self.lines:
            return []
        head = [f"# TYPE {self.name} {self.kind}"]
        if self.unit:
            head.append(f"# UNIT {self.name} {self.unit}")
        head.append(f"# HELP {self.name} {_escape(self.help)}")
        return head + self.lines


def _buckets(hist: LatencyHistogram) -> Iterable[tuple[float, int]]:
    """Cumulative counts at each bound of :data:`BUCKETS`, then ``+Inf``."""
    values = sorted(hist.items())
    index, cumulative = 0, 0
    for bound in BUCKETS:
        while index < len(values) and values[index][0] <= bound:
            cumulative += values[index][1]
            index += 1
        yield bound, cumulative
    yield math.inf, hist.count


def _query_type(fingerprint: str) -> str:
    # the same rule as pytest_bridgeperf.queries.query_type, without importing SQLAlchemy's side
    word = fingerprint.lstrip("( ").split(None, 1)[0].upper() if fingerprint.strip() else ""
    return word if word.isalpha() else "OTHER"


def _query_durations(details: Any) -> list[tuple[str, LatencyHistogram]]:
    """Statement-duration histograms a ``queries`` row carries (``details["_durations"]``)."""
    raw = details.get("_durations") if isinstance(details, Mapping) else None
    found: list[tuple[str, LatencyHistogram]] = []
    if isinstance(raw, Mapping):
        for query_type, encoded in sorted(raw.items()):
            try:
                hist = LatencyHistogram.decode(str(encoded))
            except ValueError:  # a hand-edited report: skip what cannot be read
                continue
            if hist.count:
                found.append((str(query_type), hist))
    return found


def render_openmetrics(document: Mapping[str, Any]) -> str:
    """The report document as an OpenMetrics text exposition."""
    duration = _Family(
        "bridge_request_duration_seconds",
        "histogram",
        "Latency distribution of this run, per perf test and metric",
        "seconds",
    )
    requests = _Family(
        "bridge_requests", "counter", "Requests sent by load runs (responses and errors)"
    )
    errors = _Family("bridge_request_errors", "counter", "Failed requests of load runs")
    queries = _Family(
        "bridge_db_queries",
        "counter",
        "SQL statements issued, per perf test, metric and query type",
    )
    db_duration = _Family(
        "bridge_db_query_duration_seconds",
        "histogram",
        "Duration of the SQL statements a perf test issued, per query type",
        "seconds",
    )
    memory = _Family(
        "bridge_memory_usage_bytes",
        "gauge",
        "Memory peak of a perf test (Python heap or RSS)",
        "bytes",
    )
    value = _Family(
        "bridgeperf_metric_value",
        "gauge",
        "Compared statistic of each metric in this run (SI units)",
    )
    baseline = _Family(
        "bridgeperf_metric_baseline", "gauge", "Compared statistic of each metric in the baseline"
    )
    change = _Family(
        "bridgeperf_metric_change_ratio",
        "gauge",
        "Relative change against the baseline (0.1 = +10 %)",
    )
    verdict = _Family(
        "bridgeperf_verdict",
        "gauge",
        "1 for each metric's verdict (ok, regressed, improved, new, ...)",
    )
    totals = _Family("bridgeperf_metrics", "gauge", "Metrics of this run by verdict")

    for nodeid, test in ordered_tests(document):
        for row in test.get("metrics", []):
            name = str(row["name"])
            base_labels = {"test": nodeid, "metric": name}
            unit = str(row.get("unit", ""))
            stat_labels = {
                **base_labels,
                "stat": str(row.get("stat") or "value"),
                "unit": _UNITS.get(unit, unit),
            }
            verdict.sample("", {**base_labels, "verdict": str(row["verdict"])}, 1)
            current = row.get("current")
            if current is not None:
                value.sample("", stat_labels, float(current))
            if row.get("baseline") is not None:
                baseline.sample("", stat_labels, float(row["baseline"]))
            if row.get("change") is not None:
                change.sample("", stat_labels, float(row["change"]))

            role = row.get("role")
            hist = histogram_of(row, "hdr")
            if hist is not None and unit == "s":
                for bound, count in _buckets(hist):
                    duration.sample("_bucket", {**base_labels, "le": _le(bound)}, count)
                duration.sample("_count", base_labels, hist.count)
                duration.sample("_sum", base_labels, hist.mean * hist.count)
                details = row.get("details")
                if role == "latency" and isinstance(details, Mapping) and "count" in details:
                    requests.sample("_total", base_labels, float(details["count"]))
                    if "errors" in details:
                        errors.sample("_total", base_labels, float(details["errors"]))
            if role == "queries" and current is not None:
                fps = fingerprints_of(row.get("details"))
                if fps:
                    by_type: dict[str, int] = {}
                    for fp, count in fps.items():
                        by_type[_query_type(fp)] = by_type.get(_query_type(fp), 0) + count
                    for query_type, count in sorted(by_type.items()):
                        queries.sample("_total", {**base_labels, "query_type": query_type}, count)
                else:
                    queries.sample("_total", {**base_labels, "query_type": "ALL"}, float(current))
                for query_type, hist in _query_durations(row.get("details")):
                    labels = {**base_labels, "query_type": query_type}
                    for bound, count in _buckets(hist):
                        db_duration.sample("_bucket", {**labels, "le": _le(bound)}, count)
                    db_duration.sample("_count", labels, hist.count)
                    db_duration.sample("_sum", labels, hist.mean * hist.count)
            if role in ("memory", "rss") and unit == "bytes" and current is not None:
                kind = "rss" if role == "rss" else "python"
                memory.sample("", {**base_labels, "kind": kind}, float(current))

    for name, count in sorted(document.get("totals", {}).items()):
        totals.sample("", {"verdict": str(name)}, float(count))

    lines: list[str] = []
    for family in (
        duration,
        requests,
        errors,
        queries,
        db_duration,
        memory,
        value,
        baseline,
        change,
        verdict,
        totals,
    ):
        lines += family.render()
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
