"""The Recorder every fixture records through, marker budgets and their checks."""

from __future__ import annotations

import math
import re

import pytest

from pytest_bridgeperf.metrics import BUDGET_KEYS, Budgets, Recorder, check_budgets
from pytest_bridgeperf.stats import LatencyHistogram

MS = 1e-3


# ---------------------------------------------------------------------------------------------
# Recorder.record


def test_single_value() -> None:
    rec = Recorder()
    metric = rec.record("hit_ratio", 0.72, unit="ratio", better="higher")
    assert metric.value == 0.72
    assert metric.stat == "value"
    assert metric.noisy is False
    assert metric.role is None
    assert metric.count == 1
    assert metric.histogram is None
    assert metric.samples is None
    assert metric.summary() == {}
    assert metric.distribution() == [(0.72, 1)]
    assert rec.metrics == {"hit_ratio": metric}


def test_timing_samples_become_a_histogram() -> None:
    rec = Recorder()
    samples = [i * MS for i in range(1, 21)]
    metric = rec.record("latency", samples)
    assert metric.unit == "s"
    assert metric.noisy is True
    assert metric.role == "latency"
    assert metric.histogram is not None
    assert metric.samples is None
    assert metric.count == 20
    assert metric.stat == "p50"
    assert metric.value == pytest.approx(10 * MS, rel=1e-3)
    assert metric.statistic("p95") == pytest.approx(19 * MS, rel=1e-3)
    assert metric.statistic("max") == pytest.approx(20 * MS, rel=1e-3)
    assert metric.statistic("min") == pytest.approx(1 * MS, rel=1e-3)
    assert metric.statistic("mean") == pytest.approx(10.5 * MS, rel=1e-3)
    assert set(metric.summary()) == {"mean", "min", "p50", "p90", "p95", "p99", "p999", "max"}


def test_non_timing_samples_become_a_sorted_reservoir() -> None:
    rec = Recorder()
    metric = rec.record("rows", [5, 1, 3, 2, 4], unit="count", stat="max")
    assert metric.samples == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert metric.histogram is None
    assert metric.value == 5.0
    assert metric.statistic("p50") == 3.0
    assert metric.statistic("mean") == 3.0
    assert metric.count == 5
    assert metric.distribution() == [(float(i), 1) for i in range(1, 6)]


def test_reservoir_is_thinned() -> None:
    metric = Recorder().record("sizes", list(range(5000)), unit="bytes")
    assert metric.samples is not None
    assert len(metric.samples) == 1000
    assert metric.samples[0] == 0
    assert metric.samples[-1] == 4999


def test_histogram_value() -> None:
    hist = LatencyHistogram.from_samples([0.001, 0.002, 0.003])
    metric = Recorder().record("lat", hist, stat="max")
    assert metric.histogram is hist
    assert metric.value == pytest.approx(0.003, rel=1e-3)


def test_accepts_generators_and_tuples() -> None:
    rec = Recorder()
    assert rec.record("a", (x * MS for x in (1, 2, 3))).count == 3
    assert rec.record("b", (1, 2), unit="count").count == 2


@pytest.mark.parametrize("unit", ["s", "1/s", "bytes", "count", "ratio"])
def test_noisy_defaults_by_unit(unit: str) -> None:
    metric = Recorder().record("m", 1.0, unit=unit)
    assert metric.noisy is (unit in ("s", "1/s"))
    assert metric.role == ("latency" if unit == "s" else None)


def test_explicit_role_and_noisy() -> None:
    metric = Recorder().record("rss", 10_000_000, unit="bytes", role="rss", noisy=True)
    assert metric.role == "rss"
    assert metric.noisy is True


def test_details_are_copied() -> None:
    details = {"explain": "1. SELECT 1"}
    metric = Recorder().record("queries", 3, unit="count", details=details)
    details["explain"] = "changed"
    assert metric.details == {"explain": "1. SELECT 1"}


def test_timing_distortion_marks_noisy_metrics_only() -> None:
    rec = Recorder()
    rec.timing_distortion = "memray tracer was running"
    timing = rec.record("lat", [MS, 2 * MS])
    heap = rec.record("heap", 1024, unit="bytes")
    rec.timing_distortion = None
    later = rec.record("lat2", [MS, 2 * MS])
    assert timing.distorted == "memray tracer was running"
    assert heap.distorted is None
    assert later.distorted is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "", "value_or_samples": 1}, ValueError, "non-empty"),
        ({"name": "   ", "value_or_samples": 1}, ValueError, "non-empty"),
        ({"name": 5, "value_or_samples": 1}, ValueError, "non-empty"),
        ({"name": "m", "value_or_samples": 1, "unit": "ms"}, ValueError, "unknown unit 'ms'"),
        ({"name": "m", "value_or_samples": 1, "better": "up"}, ValueError, "'lower' or 'higher'"),
        ({"name": "m", "value_or_samples": [1], "stat": "p42"}, ValueError, "unknown stat 'p42'"),
        ({"name": "m", "value_or_samples": math.nan}, ValueError, "not a finite number"),
        ({"name": "m", "value_or_samples": math.inf}, ValueError, "not a finite number"),
        ({"name": "m", "value_or_samples": [1.0, -math.inf]}, ValueError, "not a finite"),
        ({"name": "m", "value_or_samples": []}, ValueError, "no samples"),
        ({"name": "m", "value_or_samples": "12"}, TypeError, "got str"),
        ({"name": "m", "value_or_samples": b"12"}, TypeError, "got bytes"),
        ({"name": "m", "value_or_samples": None}, TypeError, "got NoneType"),
        ({"name": "m", "value_or_samples": True}, TypeError, "got bool"),
        (
            {"name": "m", "value_or_samples": LatencyHistogram()},
            ValueError,
            "holds no samples",
        ),
        (
            {"name": "m", "value_or_samples": LatencyHistogram.from_samples([1]), "unit": "bytes"},
            ValueError,
            "unit 's'",
        ),
    ],
)
def test_record_rejects(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    rec = Recorder()
    with pytest.raises(error, match=match):
        rec.record(**kwargs)  # type: ignore[arg-type]
    assert rec.metrics == {}


def test_error_names_the_metric() -> None:
    with pytest.raises(ValueError, match="metric 'latency'"):
        Recorder().record("latency", math.nan)


def test_names_must_be_unique() -> None:
    rec = Recorder()
    rec.record("m", 1)
    with pytest.raises(ValueError, match="already recorded"):
        rec.record("m", 2)
    assert rec.metrics["m"].value == 1


def test_bad_samples_inside_a_sequence() -> None:
    # was "could not convert string to float: 'fast'", without the metric
    with pytest.raises(TypeError, match=r"^metric 'x': sample 0 is 'fast' \(str\), expected a"):
        Recorder().record("x", ["fast"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("value", "unit", "error", "message"),
    [
        (-0.001, "s", ValueError, "metric 'm': value -0.001 is negative; a duration cannot be"),
        ([0.1, -0.2], "s", ValueError, "metric 'm': sample 1 -0.2 is negative"),
        (-3, "count", ValueError, "value -3 is negative; a count cannot be"),
        ([1, 2, -1], "count", ValueError, "sample 2 -1 is negative; a count"),
        (-1, "bytes", ValueError, "a size cannot be"),
        (-0.5, "ratio", ValueError, "a ratio cannot be"),
        (-10, "1/s", ValueError, "a rate cannot be"),
        (["1.5", 2], "s", TypeError, "sample 0 is '1.5' (str), expected a number"),
        ([1, "2"], "count", TypeError, "sample 1 is '2' (str)"),
        ([True, False], "count", TypeError, "sample 0 is True (bool)"),
        ([0.1, None], "s", TypeError, "sample 1 is None (NoneType)"),
        ([0.1, math.nan], "s", ValueError, "sample 1 nan is not a finite number"),
        ([0.1, 4000.0], "s", ValueError, "metric 'm': duration 4000 s is longer than 3600 s"),
        ([[0.1]], "s", TypeError, "sample 0 is [0.1] (list)"),
    ],
)
def test_record_refuses_impossible_values_naming_the_metric(
    value: object, unit: str, error: type[Exception], message: str
) -> None:
    rec = Recorder()
    with pytest.raises(error, match=re.escape(message)):
        rec.record("m", value, unit)  # type: ignore[arg-type]
    assert rec.metrics == {}


def test_rounds_are_checked_like_samples() -> None:
    with pytest.raises(ValueError, match=re.escape("metric 'm': round 1 -0.1 is negative")):
        Recorder().record("m", [0.1, 0.2], rounds=[0.1, -0.1])
    with pytest.raises(TypeError, match=re.escape("metric 'm': round 0 is '0.1' (str)")):
        Recorder().record("m", [0.1, 0.2], rounds=["0.1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="metric 'm': rounds is empty"):
        Recorder().record("m", [0.1, 0.2], rounds=[])
    with pytest.raises(TypeError, match="rounds must be a sequence of numbers, got float"):
        Recorder().record("m", [0.1, 0.2], rounds=0.1)  # type: ignore[arg-type]


def test_values_are_stored_exactly_zero_and_beyond_the_histogram() -> None:
    """Nothing is clamped: zero stays zero, and a single duration beyond the histogram's hour
    is stored as given (it needs no histogram)."""
    from fractions import Fraction

    rec = Recorder()
    assert rec.record("zero", 0.0).value == 0.0
    assert rec.record("zeros", [0.0, 0.0, 0.0]).value == 0.0
    assert rec.record("long", 5 * 3600.0).value == 5 * 3600.0
    assert rec.record("hour", [3600.0]).value == pytest.approx(3600.0, rel=1e-3)
    assert rec.record("fraction", Fraction(1, 4), unit="ratio").value == 0.25
    assert rec.record("count", [0, 1, 2], unit="count").value == 1


# ---------------------------------------------------------------------------------------------
# Budgets


def test_budgets_parse_every_keyword() -> None:
    budgets = Budgets.parse(
        {
            "p50": "10ms",
            "p90": "20ms",
            "p95": "50ms",
            "p99": "100ms",
            "p999": "1s",
            "max": "2s",
            "mean": "150us",
            "error_rate": "1%",
            "rps": "2k/s",
            "queries": 5,
            "queries_per_request": "4",
            "memory": "64MiB",
            "rss": "1GB",
            "tolerance": "20%",
        }
    )
    assert budgets.p95 == pytest.approx(0.05)
    assert budgets.mean == pytest.approx(150e-6)
    assert budgets.error_rate == pytest.approx(0.01)
    assert budgets.rps == 2000
    assert budgets.queries == 5
    assert budgets.queries_per_request == 4
    assert budgets.memory == 64 * 2**20
    assert budgets.rss == 10**9
    assert budgets.tolerance == pytest.approx(0.2)
    assert {k for k, _ in budgets.items()} == set(BUDGET_KEYS)


def test_empty_budgets() -> None:
    assert Budgets.parse({}).items() == []


@pytest.mark.parametrize(
    ("kwargs", "keyword"),
    [
        ({"p95": "fast"}, "p95"),
        ({"p50": -1}, "p50"),
        ({"max": True}, "max"),
        ({"mean": "5 parsecs"}, "mean"),
        ({"error_rate": "lots"}, "error_rate"),
        ({"rps": "-5"}, "rps"),
        ({"queries": 2.5}, "queries"),
        ({"queries": "-1"}, "queries"),
        ({"memory": "64 furlongs"}, "memory"),
        ({"rss": None}, "rss"),
        ({"tolerance": "-10%"}, "tolerance"),
        ({"p95": "50ms", "memory": "big"}, "memory"),
    ],
)
def test_budget_errors_name_the_keyword(kwargs: dict[str, object], keyword: str) -> None:
    with pytest.raises(ValueError, match=rf"^budget {keyword}=") as info:
        Budgets.parse(kwargs)
    assert repr(kwargs[keyword]) in str(info.value)


def test_unknown_budget_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown budget p42='1ms'; valid budgets: p50, p90"):
        Budgets.parse({"p42": "1ms"})


# ---------------------------------------------------------------------------------------------
# check_budgets


def _metrics() -> Recorder:
    rec = Recorder()
    rec.record("latency", [i * MS for i in range(1, 101)])  # 1..100 ms
    rec.record("errors", 0.02, unit="ratio", role="error_rate")
    rec.record("throughput", 800.0, unit="1/s", better="higher", role="rps")
    rec.record("queries", 7, unit="count", role="queries")
    rec.record("heap", 50 * 2**20, unit="bytes", role="memory")
    rec.record("rss", 300 * 10**6, unit="bytes", role="rss", noisy=True)
    rec.record("unrelated", 1e9, unit="count")  # no role: no budget applies
    return rec


def test_latency_budgets_apply_to_latency_metrics() -> None:
    rec = Recorder()
    rec.record("a", [i * MS for i in range(1, 101)])
    rec.record("b", [MS] * 10)
    checks = check_budgets(rec.metrics.values(), Budgets.parse({"p95": "50ms", "max": "1s"}))
    by_key = {(c.metric, c.budget): c for c in checks}
    assert set(by_key) == {("a", "p95"), ("a", "max"), ("b", "p95"), ("b", "max")}
    assert not by_key["a", "p95"].passed
    assert by_key["a", "p95"].measured == pytest.approx(95 * MS, rel=1e-3)
    assert by_key["a", "max"].passed
    assert by_key["b", "p95"].passed


@pytest.mark.parametrize(
    ("budget", "value", "metric", "passed"),
    [
        ("p50", "60ms", "latency", True),
        ("p50", "40ms", "latency", False),
        ("mean", "51ms", "latency", True),
        ("mean", "49ms", "latency", False),
        ("p99", "99ms", "latency", False),
        ("p999", "99.5ms", "latency", False),
        ("p999", "101ms", "latency", True),
        ("error_rate", "5%", "errors", True),
        ("error_rate", "1%", "errors", False),
        ("rps", 500, "throughput", True),
        ("rps", 1000, "throughput", False),
        ("queries", 7, "queries", True),
        ("queries", 6, "queries", False),
        ("memory", "64MiB", "heap", True),
        ("memory", "50MB", "heap", False),
        ("rss", "1GB", "rss", True),
        ("rss", "200MB", "rss", False),
    ],
)
def test_check_budgets_by_role(budget: str, value: object, metric: str, passed: bool) -> None:
    checks = check_budgets(_metrics().metrics.values(), Budgets.parse({budget: value}))
    assert [(c.metric, c.budget, c.passed) for c in checks] == [(metric, budget, passed)]
    check = checks[0]
    assert check.minimum is (budget == "rps")
    text = check.describe()
    assert text.startswith("✓" if passed else "✗")
    assert metric in text
    assert budget in text
    assert ("≥" if budget == "rps" else "≤") in text


def test_budget_description_names_measured_and_limit() -> None:
    rec = Recorder()
    rec.record("latency", [0.0121] * 10)
    (check,) = check_budgets(rec.metrics.values(), Budgets.parse({"p95": "10ms"}))
    # the limit is quoted as the test wrote it
    assert check.describe() == "✗ latency: p95 12.1 ms (budget ≤ 10ms)"
    (check,) = check_budgets(rec.metrics.values(), Budgets.parse({"p95": 0.01}))
    assert check.describe() == "✗ latency: p95 12.1 ms (budget ≤ 10.0 ms)"


def test_size_budget_quoted_as_written() -> None:
    rec = Recorder()
    rec.record("heap", 6_000_000, unit="bytes", role="memory")
    (check,) = check_budgets(rec.metrics.values(), Budgets.parse({"memory": "5MB"}))
    assert not check.passed
    assert check.describe() == "✗ heap: memory 5.72 MiB (budget ≤ 5MB)"


def test_tolerance_is_not_a_check() -> None:
    assert check_budgets(_metrics().metrics.values(), Budgets.parse({"tolerance": "5%"})) == []
