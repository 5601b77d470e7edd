"""``Metric.to_json`` / ``Metric.from_json``: how a round's metrics cross from a ``--perf-against``
side to the controller."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_bridgeperf.metrics import STATS, UNITS, Metric, Recorder
from pytest_bridgeperf.stats import LatencyHistogram

finite = st.floats(min_value=1e-7, max_value=3000.0, allow_nan=False, allow_infinity=False)
details = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)),
    max_size=3,
)


def assert_same(a: Metric, b: Metric) -> None:
    for name in ("name", "unit", "better", "value", "stat", "noisy", "role", "samples"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.rounds == b.rounds
    assert a.details == b.details
    assert a.distorted == b.distorted
    assert (a.histogram is None) == (b.histogram is None)
    if a.histogram is not None and b.histogram is not None:
        assert list(a.histogram.items()) == list(b.histogram.items())
        assert a.histogram.count == b.histogram.count
    for stat in (*STATS, "value"):
        x, y = a.statistic(stat), b.statistic(stat)
        assert x == y or (math.isnan(x) and math.isnan(y)), stat
    assert a.distribution() == b.distribution()


@given(
    values=st.lists(finite, min_size=1, max_size=60),
    unit=st.sampled_from(sorted(UNITS)),
    better=st.sampled_from(["lower", "higher"]),
    single=st.booleans(),
    stat=st.sampled_from(STATS),
    rounds=st.none() | st.lists(finite, min_size=1, max_size=5),
    extra=details,
    distorted=st.none() | st.just("a memory tracer ran"),
)
def test_round_trip_through_json_text(
    values: list[float],
    unit: str,
    better: Any,
    single: bool,
    stat: str,
    rounds: list[float] | None,
    extra: dict[str, Any],
    distorted: str | None,
) -> None:
    recorder = Recorder()
    if distorted:
        recorder.timing_distortion = distorted
    metric = recorder.record(
        "m",
        values[0] if single else values,
        unit=unit,
        better=better,
        stat=None if single else stat,
        details=extra,
        rounds=rounds,
    )
    text = json.dumps(metric.to_json())  # what any JSON transport does to it
    back = Metric.from_json(json.loads(text))
    assert_same(metric, back)
    assert back.to_json() == metric.to_json()


def test_a_latency_histogram_keeps_its_encoding() -> None:
    hist = LatencyHistogram.from_samples([0.001, 0.002, 0.002, 0.5])
    metric = Recorder().record("latency", hist, role="latency")
    data = metric.to_json()
    assert data["histogram"] == hist.encode()
    assert data["samples"] is None
    back = Metric.from_json(data)
    assert back.histogram is not None
    assert back.statistic("p99") == metric.statistic("p99") > 0.4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "not a serialized metric"),
        ({"unit": "ms"}, "metric 'm': field 'unit' must be one of"),
        ({"better": "more"}, "field 'better' must be 'lower' or 'higher'"),
        ({"stat": "p42"}, "field 'stat' must be 'value' or one of"),
        ({"value": "1"}, "field 'value' must be a number"),
        ({"value": True}, "field 'value' must be a number"),
        ({"histogram": "garbage"}, "field 'histogram' not an HdrHistogram"),
        ({"samples": [1, "x"]}, "field 'samples' must be a list of numbers"),
        ({"details": [1]}, "field 'details' must be a mapping"),
        ({"role": 3}, "field 'role' must be a string or null"),
    ],
)
def test_from_json_says_what_is_wrong(change: dict[str, Any], message: str) -> None:
    data = Recorder().record("m", [1.0, 2.0], unit="count").to_json()
    data.update(change)
    with pytest.raises(ValueError, match=message):
        Metric.from_json(data)
