"""Report documents for the report tests, built through the real pipeline without a pytest run:
metrics recorded by a ``Recorder``, a baseline written by ``Baseline``, verdicts from ``judge``
and rows from the plugin's ``_row`` — the same code a ``--perf`` run uses."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_bridgeperf.baseline import Baseline, machine_fingerprint, metric_entry
from pytest_bridgeperf.compare import VERDICTS, judge
from pytest_bridgeperf.evaluation import report_row as _row
from pytest_bridgeperf.metrics import Budgets, Recorder, check_budgets
from pytest_bridgeperf.stats import LatencyHistogram

ENV = "default"

API = "tests/test_api.py::test_dashboards"
QUERIES = "tests/test_db.py::test_connectors_queries"
MEMORY = "tests/test_mem.py::test_statistics_memory"
NEW = "tests/test_api.py::test_new_endpoint"
OK = "tests/test_cache.py::test_hit_ratio"
IMPROVED = "tests/test_api.py::test_search"
ODD = 'tests/test_odd.py::test_param[a"b\\c|d]'  # quotes, a backslash and a pipe in the node id

BASE_FPS = {
    "SELECT connectors.id FROM connectors": 1,
    "SELECT * FROM settings WHERE connector_id = ?": 3,
}
CURRENT_FPS = {
    "SELECT connectors.id FROM connectors": 1,
    "SELECT * FROM settings WHERE connector_id = ?": 6,
    "UPDATE connectors SET seen = ? WHERE id = ?": 1,
}


def latency(seed: int, scale: float, n: int = 3000) -> LatencyHistogram:
    rnd = random.Random(seed)
    return LatencyHistogram.from_samples(rnd.lognormvariate(-5, 0.4) * scale for _ in range(n))


Recording = Callable[[Recorder, bool], None]


def _api(r: Recorder, current: bool) -> None:
    r.record(
        "GET /api/v1/dashboards",
        latency(1 if not current else 2, 1.5 if current else 1.0),
        details={"count": 3000, "errors": 3, "model": "closed", "users": 8},  # as perf_load does
    )
    r.record(
        "GET /api/v1/dashboards rps",
        [800.0 + i for i in range(10)] if not current else [520.0 + i for i in range(10)],
        unit="1/s",
        better="higher",
        stat="mean",
        role="rps",
    )
    r.record(
        "GET /api/v1/dashboards error_rate",
        0.001,
        unit="ratio",
        role="error_rate",
        noisy=False,
        details={"count": 5000, "errors": 5},
    )


def _queries(r: Recorder, current: bool) -> None:
    fps = CURRENT_FPS if current else BASE_FPS
    r.record(
        "queries",
        sum(fps.values()),
        unit="count",
        role="queries",
        noisy=False,
        details={"fingerprints": dict(fps), "explain": "1. SELECT connectors.id FROM connectors"},
    )


def _memory(r: Recorder, current: bool) -> None:
    r.record("memory", 30_000_000 if current else 10_000_000, "bytes", role="memory", noisy=False)
    r.record("rss", 50_000_000, "bytes", role="rss", noisy=False)


def _new(r: Recorder, current: bool) -> None:
    if current:
        r.record("GET /api/v1/new", latency(3, 1.0, 500))


def _ok(r: Recorder, current: bool) -> None:
    r.record("cache hit ratio", 0.8, unit="ratio", better="higher")


def _improved(r: Recorder, current: bool) -> None:
    r.record("search", latency(4 if current else 5, 0.5 if current else 1.0))


def _odd(r: Recorder, current: bool) -> None:
    r.record("weird | name", 3, unit="count")


TESTS: dict[str, tuple[Recording, dict[str, Any]]] = {
    API: (_api, {"p99": "20ms", "error_rate": "5%", "rps": 10}),  # p99 over budget when regressed
    QUERIES: (_queries, {"queries": 20}),
    MEMORY: (_memory, {"memory": "64MB"}),
    NEW: (_new, {}),
    OK: (_ok, {}),
    IMPROVED: (_improved, {}),
    ODD: (_odd, {}),
}


def build(tmp_path: Path, *, regress: bool = True, tolerance: float = 0.10) -> dict[str, Any]:
    """A report document (and ``tmp_path / "baseline.json"``): with ``regress`` the API latency
    and throughput, the query count and the memory peak regressed."""
    baseline = Baseline(tmp_path / "baseline.json")
    fingerprint = machine_fingerprint()
    for nodeid, (record, _) in TESTS.items():
        recorder = Recorder()
        record(recorder, False)
        if recorder.metrics:
            entries = {name: metric_entry(m) for name, m in recorder.metrics.items()}
            baseline.set_test(ENV, nodeid, entries, fingerprint)
    baseline.save()
    baseline = Baseline.load(tmp_path / "baseline.json")
    tests: dict[str, Any] = {}
    totals = dict.fromkeys(VERDICTS, 0)
    for nodeid, (record, budget_kwargs) in TESTS.items():
        recorder = Recorder()
        record(recorder, regress or nodeid in (NEW, IMPROVED))
        if not regress and nodeid not in (NEW, IMPROVED):
            recorder = Recorder()
            record(recorder, False)
        budgets = Budgets.parse(budget_kwargs)
        checks = check_budgets(recorder.metrics.values(), budgets)
        base_metrics = baseline.metrics(ENV, nodeid)
        rows = []
        for name, metric in recorder.metrics.items():
            verdict = judge(
                metric,
                base_metrics.get(name),
                tolerance=tolerance,
                min_delta=200e-6,
                alpha=0.01,
                comparable=True,
            )
            rows.append(
                _row(
                    metric, verdict, [c for c in checks if c.metric == name], base_metrics.get(name)
                )
            )
            totals[verdict.verdict] += 1
        tests[nodeid] = {"outcome": "passed", "metrics": rows, "tolerance": tolerance}
    document = {
        "tool": "pytest-bridgeperf",
        "schema": 1,
        "created": "2026-01-01T00:00:00Z",
        "environment": ENV,
        "machine": fingerprint,
        "baseline": str(tmp_path / "baseline.json"),
        "settings": {
            "tolerance": tolerance,
            "min_delta": 200e-6,
            "alpha": 0.01,
            "strict": False,
            "update": False,
        },
        "xdist": False,
        "totals": totals,
        "tests": json.loads(json.dumps(tests)),  # exactly what a report file holds
        "written": [],
        "pruned": [],
    }
    return document


def write(tmp_path: Path, **kwargs: Any) -> tuple[Path, Path]:
    """``(baseline path, report path)`` of :func:`build`."""
    document = build(tmp_path, **kwargs)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tmp_path / "baseline.json", report


def rows_by_name(document: dict[str, Any], nodeid: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in document["tests"][nodeid]["metrics"]}
