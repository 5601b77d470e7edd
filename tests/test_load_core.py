"""The load package's pure parts: thresholds, options, histogram folding and merging, safety."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_bridgeperf.load.options import LoadOptionError, Request, build_options
from pytest_bridgeperf.load.result import LoadResult, fold_latencies, merge_results
from pytest_bridgeperf.load.safety import LoadTargetError, check_allowed, parse_url
from pytest_bridgeperf.stats import LatencyHistogram
from pytest_bridgeperf.thresholds import (
    ThresholdError,
    evaluate,
    min_samples_for,
    parse_threshold,
)


def result_from(latencies_s: list[float], *, errors: int = 0, elapsed: float = 1.0) -> LoadResult:
    hist = LatencyHistogram()
    for value in latencies_s:
        hist.record(value)
    return LoadResult(
        name="GET /x",
        histogram=hist,
        count=len(latencies_s) + errors,
        errors=errors,
        elapsed=elapsed,
    )


# thresholds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label", "op", "limit"),
    [
        ("p(95) < 50ms", "p(95)", "<", 0.05),
        ("p(99.9)<=2s", "p(99.9)", "<=", 2.0),
        ("  p( 50 )  >  150us ", "p(50)", ">", 150e-6),
        ("p95 < 1ms", "p(95)", "<", 0.001),
        ("p999 < 1ms", "p(99.9)", "<", 0.001),
        ("avg < 10ms", "avg", "<", 0.01),
        ("mean < 10ms", "avg", "<", 0.01),
        ("med <= 3ms", "med", "<=", 0.003),
        ("max < 1s", "max", "<", 1.0),
        ("error_rate < 1%", "error_rate", "<", 0.01),
        ("error_rate <= 0.05", "error_rate", "<=", 0.05),
        ("rps >= 500", "rps", ">=", 500.0),
        ("rps > 2k/s", "rps", ">", 2000.0),
        ("errors == 0", "errors", "==", 0.0),
        ("count >= 1000", "count", ">=", 1000.0),
    ],
)
def test_threshold_parsing(text: str, label: str, op: str, limit: float) -> None:
    t = parse_threshold(text)
    assert (t.label, t.op) == (label, op)
    assert t.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty threshold"),
        ("p(95)", "missing an operator"),
        ("p(95) <", "missing the value"),
        ("p(95) < 50", "needs a unit"),
        ("p(95) < 50 parsecs", "invalid duration"),
        ("p(101) < 1s", "outside 0 < N <= 100"),
        ("p(0) < 1s", "outside 0 < N <= 100"),
        ("p(abc) < 1s", "unknown metric"),
        ("p42 < 1s", r"write it as p\(N\)"),
        ("latency < 1s", "unknown metric 'latency'"),
        ("p(95) => 1s", "did you mean '>='"),
        ("p(95) =< 1s", "did you mean '<='"),
        ("p(95) = 1s", "did you mean '=='"),
        ("p(95) != 1s", "unsupported operator"),
        ("p(95) < 1ms < 2ms", "one comparison per expression"),
        ("error_rate < lots", "invalid percentage"),
        ("rps > fast", "invalid rate"),
        ("count > 1.5", "whole, non-negative count"),
        ("count > ten", "not a number"),
        ("< 5ms", "expected '<metric> <operator> <value>'"),
    ],
)
def test_bad_thresholds_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=message) as info:
        parse_threshold(text)
    if text:
        assert repr(text.strip()) in str(info.value) or repr(text) in str(info.value)


def test_threshold_rejects_non_strings() -> None:
    with pytest.raises(ThresholdError, match="a threshold is a string"):
        parse_threshold(50)  # type: ignore[arg-type]


_metric = st.sampled_from(["p(95)", "p(99)", "p(50)", "avg", "med", "min", "max"])
_op = st.sampled_from(["<", "<=", ">", ">=", "=="])
_unit = st.sampled_from([("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0)])


@given(_metric, _op, st.integers(0, 10**6), _unit, st.text(" ", max_size=3))
def test_threshold_round_trip(
    metric: str, op: str, number: int, unit: tuple[str, float], pad: str
) -> None:
    t = parse_threshold(f"{pad}{metric}{pad}{op}{pad}{number}{unit[0]}{pad}")
    assert t.op == op
    assert t.limit == pytest.approx(number * unit[1])
    assert t.kind == "latency"


@given(st.text(max_size=40))
def test_threshold_parser_only_ever_raises_threshold_error(text: str) -> None:
    with contextlib.suppress(ThresholdError):
        parse_threshold(text)


def test_check_lists_every_threshold_with_marks_and_measured_values() -> None:
    result = result_from([0.001 * (i % 100 + 1) for i in range(1000)], errors=50)
    with pytest.raises(AssertionError) as info:
        result.check("p(95) < 50ms", "error_rate < 1%", "rps >= 500", "p(50) <= 100ms")
    text = str(info.value)
    assert text.startswith("2 of 4 threshold(s) failed for GET /x:")
    assert "✗ p(95) < 50.0 ms  (measured 95.0 ms)" in text
    assert "✗ error_rate < 1.00 %  (measured 4.76 %)" in text
    assert "✓ rps >= 500/s  (measured 1050/s)" in text
    assert "✓ p(50) <= 100 ms" in text
    assert result.check("p(95) < 100ms", "rps > 1000") is result


def test_check_fails_on_zero_samples_and_on_too_few_for_the_percentile() -> None:
    empty = result_from([])
    with pytest.raises(AssertionError, match="no requests completed"):
        empty.check("error_rate < 1%")
    few = result_from([0.001] * 100)
    assert min_samples_for(99) == 500
    assert min_samples_for(95) == 100
    assert min_samples_for(100) == 1
    with pytest.raises(AssertionError, match=r"100 samples are too few to estimate p\(99\)"):
        few.check("p(99) < 1s")
    few.check("p(95) < 1s", "max < 1s")  # enough samples for those
    only_errors = result_from([], errors=10)
    (outcome,) = evaluate(only_errors, ["p(50) < 1s"])
    assert not outcome.passed
    assert "no latency" in outcome.reason
    (rate,) = evaluate(only_errors, ["error_rate <= 100%"])
    assert rate.passed
    with pytest.raises(ThresholdError, match="at least one threshold"):
        few.check()
    with pytest.raises(ThresholdError, match="needs a unit"):  # a bad one raises, not fails
        few.check("p(95) < 1s", "p(99) < 5")


# histogram folding and merging -----------------------------------------------------------------

_latencies_ns = st.lists(st.integers(1, 3600 * 10**9), max_size=300)


def _one_by_one(values: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for v in values:
        hist.record_ns(v)
    return hist


def _same(a: LatencyHistogram, b: LatencyHistogram) -> None:
    assert a.count == b.count
    assert list(a.items()) == list(b.items())
    if a.count:
        assert a.max == b.max
        assert a.min == b.min
        for q in (50, 90, 99, 99.9, 100):
            assert a.percentile(q) == b.percentile(q)


@settings(max_examples=40)
@given(_latencies_ns)
def test_bulk_fold_equals_recording_one_by_one(values: list[int]) -> None:
    folded = LatencyHistogram()
    fold_latencies(folded, array("q", values))
    _same(folded, _one_by_one(values))


def test_bulk_fold_with_numpy_path_equals_recording_one_by_one() -> None:
    import random

    rng = random.Random(3)
    values = [int(rng.lognormvariate(12, 1.5)) + 1 for _ in range(60_000)]  # numpy path
    folded = LatencyHistogram()
    fold_latencies(folded, array("q", values))
    _same(folded, _one_by_one(values))


@settings(max_examples=30)
@given(st.lists(_latencies_ns, min_size=1, max_size=5))
def test_merging_worker_results_is_lossless(parts: list[list[int]]) -> None:
    results = []
    for i, values in enumerate(parts):
        hist = LatencyHistogram()
        fold_latencies(hist, array("q", values))
        r = LoadResult(
            name="x",
            histogram=hist,
            count=len(values) + i,
            errors=i,
            elapsed=1.0,
            status_counts={200: len(values)},
            error_types={"TimeoutError": i} if i else {},
            rounds=[(len(values), 0)] * (i + 1),
        )
        # through the wire format the worker processes use
        results.append(LoadResult.from_dict(r.to_dict()))
    merged = merge_results(results)
    everything = [v for values in parts for v in values]
    _same(merged.histogram, _one_by_one(everything))
    assert merged.count == sum(len(p) for p in parts) + sum(range(len(parts)))
    assert merged.errors == sum(range(len(parts)))
    assert merged.status_counts.get(200, 0) == len(everything)
    assert len(merged.rounds) == 1  # only rounds every worker finished


def test_result_statistics_and_wire_format() -> None:
    r = result_from([0.001, 0.002, 0.003, 0.004], errors=1, elapsed=2.0)
    assert r.count == 5
    assert r.error_rate == pytest.approx(0.2)
    assert r.rps == pytest.approx(2.5)
    assert r.p50 == pytest.approx(0.002, rel=1e-3)
    assert r.max == pytest.approx(0.004, rel=1e-3)
    again = LoadResult.from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict()
    assert "5 requests in 2.00 s" in r.summary()
    assert math.isnan(result_from([]).p95)


# options ---------------------------------------------------------------------------------------


def test_option_defaults_and_models() -> None:
    closed = build_options({}, max_duration=60)
    assert (closed.model, closed.users, closed.duration) == ("closed", 1, 5.0)
    opened = build_options({"rate": "2k/s"}, max_duration=60)
    assert (opened.model, opened.rate, opened.users) == ("open", 2000.0, 32)
    counted = build_options({"requests": 100, "warmup": "1s"}, max_duration=10)
    assert counted.duration is None
    assert counted.run_length == 9
    assert build_options({"workers": 4}, max_duration=60).users == 4


def test_weighted_schedule_follows_the_weights() -> None:
    opts = build_options(
        {"mix": [Request("/a", weight=3), Request("/b"), {"path": "/c", "weight": 6}]},
        max_duration=60,
    )
    order = opts.schedule()
    share = [order.count(i) / len(order) for i in range(3)]
    assert share == pytest.approx([0.3, 0.1, 0.6], abs=0.01)
    # interleaved: every request shows up early, not in blocks
    assert set(order[:10]) == {0, 1, 2}


def test_shared_headers_apply_to_every_request_of_a_mix() -> None:
    opts = build_options(
        {"headers": {"X-Token": "t"}, "mix": [Request("/a", headers={"X-Other": "o"})]},
        max_duration=60,
    )
    assert dict(opts.mix[0].headers) == {"X-Token": "t", "X-Other": "o"}
    with pytest.raises(LoadOptionError, match="mix= replaces path"):
        build_options({"path": "/x", "mix": [Request("/a")]}, max_duration=60)
    with pytest.raises(LoadOptionError, match=r"mix\[0\]: expected a Request"):
        build_options({"mix": ["/b"]}, max_duration=60)


# safety ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/",
        "http://127.3.4.5/x",
        "http://localhost:1/",
        "http://[::1]:8080/",
        "https://127.0.0.1/",
    ],
)
def test_loopback_is_allowed(url: str) -> None:
    check_allowed(parse_url(url), ())


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://example.com/",
        "http://[2001:db8::1]/",
        "http://0.0.0.0:80/",
        "http://127.0.0.1.evil.example/",
    ],
)
def test_other_hosts_need_to_be_listed(url: str) -> None:
    target = parse_url(url)
    with pytest.raises(LoadTargetError, match="perf_allowed_hosts"):
        check_allowed(target, ())
    check_allowed(target, (target.host.upper(),))
    check_allowed(target, (f"{target.host}:{target.port}",))
    with pytest.raises(LoadTargetError):
        check_allowed(target, (f"{target.host}:{target.port + 1}", "other.example"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/", "only http:// and https://"),
        ("127.0.0.1:8080", "only http:// and https://"),
        ("http:///path", "has no host"),
        ("http://user:pw@127.0.0.1/", "credentials"),
        ("http://127.0.0.1:99999/", "not a valid URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(LoadTargetError, match=message):
        parse_url(url)


def test_url_parts() -> None:
    t = parse_url("http://127.0.0.1:8080/api/x?q=1")
    assert (t.host, t.port, t.path, t.host_header) == (
        "127.0.0.1",
        8080,
        "/api/x?q=1",
        "127.0.0.1:8080",
    )
    assert parse_url("http://[::1]/").host_header == "[::1]"


def test_core_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import pytest_bridgeperf.thresholds, pytest_bridgeperf.load\n"
        "import pytest_bridgeperf.load.api, pytest_bridgeperf.load.http1\n"
        "import pytest_bridgeperf.load.aiohttp_engine, pytest_bridgeperf.load.callables\n"
        "import pytest_bridgeperf.load.workers, pytest_bridgeperf.load.record\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
