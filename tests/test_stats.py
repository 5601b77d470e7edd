"""HDR histograms, percentiles, the Mann-Whitney U test and the verdict rules."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_bridgeperf.stats import (
    Comparison,
    Interval,
    LatencyHistogram,
    compare_distributions,
    compare_exact,
    compare_paired,
    interval_verdict,
    mann_whitney,
    percentile,
    regression_margin,
    thin_samples,
)

# one nanosecond .. one minute, in seconds
durations = st.floats(min_value=1e-9, max_value=60.0, allow_nan=False, allow_infinity=False)
sample_lists = st.lists(durations, min_size=1, max_size=200)
HDR_REL = 1e-3  # three significant digits


def _hist(samples: list[float]) -> LatencyHistogram:
    return LatencyHistogram.from_samples(samples)


# ---------------------------------------------------------------------------------------------
# LatencyHistogram


def test_empty_histogram() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert math.isnan(hist.percentile(50))
    assert math.isnan(hist.mean)
    assert math.isnan(hist.max)
    assert math.isnan(hist.min)
    assert list(hist.items()) == []


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_range(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        _hist([0.1]).percentile(q)
    with pytest.raises(ValueError, match="percentile"):
        percentile([0.1], q)


def test_record_refuses_out_of_range_values_instead_of_clamping() -> None:
    """A negative duration became 1 ns and ten hours ~3601 s, silently."""
    hist = LatencyHistogram()
    for bad, problem in [
        (-1.0, "finite and non-negative, got -1.0 s"),
        (math.nan, "finite and non-negative"),
        (math.inf, "finite and non-negative"),
        (10 * 3600.0, "duration 36000 s is longer than 3600 s (1 h)"),
        (3600.0 + 1e-6, "is longer than 3600 s"),
        ("0.5", "must be a number of seconds"),
        (True, "must be a number of seconds"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            hist.record(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sample count"):
        hist.record(0.1, count=0)
    assert hist.count == 0
    hist.record(0.0)  # a zero duration is stored as zero, not raised to 1 ns
    hist.record(3600.0)  # the longest stored duration
    assert hist.count == 2
    assert hist.min == 0.0
    assert hist.max == pytest.approx(3600.0, rel=HDR_REL)


def test_record_ns_with_count() -> None:
    hist = LatencyHistogram()
    hist.record_ns(5_000_000, count=10)
    hist.record(0.010, count=10)
    assert hist.count == 20
    assert hist.percentile(50) == pytest.approx(0.005, rel=HDR_REL)
    assert hist.percentile(100) == pytest.approx(0.010, rel=HDR_REL)
    assert sum(c for _, c in hist.items()) == 20


@settings(max_examples=25)
@given(sample_lists)
def test_encode_decode_round_trip(samples: list[float]) -> None:
    hist = _hist(samples)
    text = hist.encode()
    assert text.isascii()
    back = LatencyHistogram.decode(text)
    assert back.count == hist.count
    assert list(back.items()) == list(hist.items())
    assert back.encode() == text


@pytest.mark.parametrize("garbage", ["", "not base64!", "SGVsbG8gd29ybGQ=", "HISTFAAAA" + "A" * 40])
def test_decode_rejects_garbage(garbage: str) -> None:
    with pytest.raises(ValueError, match="HdrHistogram"):
        LatencyHistogram.decode(garbage)


@settings(max_examples=25)
@given(st.lists(sample_lists, min_size=1, max_size=4))
def test_merge_equals_recording_all(parts: list[list[float]]) -> None:
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(_hist(part))
    everything = _hist([s for part in parts for s in part])
    assert merged.count == everything.count
    assert list(merged.items()) == list(everything.items())
    for q in (0, 50, 90, 99, 100):
        assert merged.percentile(q) == everything.percentile(q)


@settings(max_examples=80)
@given(sample_lists, st.sampled_from([0.0, 1.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]))
def test_percentile_matches_exact_nearest_rank(samples: list[float], q: float) -> None:
    exact = percentile(sorted(samples), q)
    # HDR keeps 3 significant digits of the integer nanoseconds (values are rounded to ns first)
    assert _hist(samples).percentile(q) == pytest.approx(exact, rel=2 * HDR_REL, abs=1e-9)


@settings(max_examples=40)
@given(sample_lists)
def test_summary_statistics_within_precision(samples: list[float]) -> None:
    hist = _hist(samples)
    assert hist.count == len(samples)
    assert hist.min == pytest.approx(min(samples), rel=2 * HDR_REL, abs=1e-9)
    assert hist.max == pytest.approx(max(samples), rel=2 * HDR_REL, abs=1e-9)
    assert hist.mean == pytest.approx(math.fsum(samples) / len(samples), rel=2 * HDR_REL, abs=1e-9)


def test_exact_percentile_nearest_rank() -> None:
    data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 10) == 1.0
    assert percentile(data, 11) == 2.0
    assert percentile(data, 50) == 5.0
    assert percentile(data, 95) == 10.0
    assert percentile(data, 100) == 10.0
    assert math.isnan(percentile([], 50))


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3000))
def test_thin_samples(samples: list[float]) -> None:
    thinned = thin_samples(samples, limit=100)
    assert thinned == sorted(thinned)
    assert len(thinned) == min(len(samples), 100)
    if samples:
        assert thinned[0] == min(samples)
        assert thinned[-1] == max(samples)
        assert set(thinned) <= set(samples)


# ---------------------------------------------------------------------------------------------
# Mann-Whitney U against scipy


def _scipy_p(a: list[float], b: list[float]) -> float:
    # small samples without ties get the exact null distribution, like scipy's method="exact"
    exact = len(set(a) | set(b)) == len(a) + len(b) and len(a) * len(b) <= 2500
    result = scipy.stats.mannwhitneyu(
        a,
        b,
        alternative="two-sided",
        method="exact" if exact else "asymptotic",
        use_continuity=True,
    )
    return float(result.pvalue)


def _weights(samples: list[float]) -> list[tuple[float, int]]:
    return [(s, 1) for s in samples]


@pytest.mark.parametrize("seed", range(12))
def test_mann_whitney_matches_scipy_continuous(seed: int) -> None:
    rng = random.Random(seed)
    shift = rng.choice([0.0, 0.05, 0.2, 0.5])
    a = [rng.lognormvariate(0, 0.3) for _ in range(rng.randint(5, 80))]
    b = [rng.lognormvariate(shift, 0.3) for _ in range(rng.randint(5, 80))]
    p, effect = mann_whitney(_weights(a), _weights(b))
    assert p == pytest.approx(_scipy_p(a, b), rel=1e-6, abs=1e-12)
    u_b = sum((y > x) + 0.5 * (y == x) for x in a for y in b)
    assert effect == pytest.approx(u_b / (len(a) * len(b)))


@pytest.mark.parametrize("seed", range(12))
def test_mann_whitney_matches_scipy_with_ties(seed: int) -> None:
    rng = random.Random(1000 + seed)
    levels = rng.randint(2, 6)
    a = [float(rng.randint(0, levels)) for _ in range(rng.randint(5, 60))]
    b = [float(rng.randint(0, levels) + rng.choice([0, 0, 1])) for _ in range(rng.randint(5, 60))]
    if len(set(a + b)) == 1:
        pytest.skip("all values equal: scipy returns nan")
    p, _ = mann_whitney(_weights(a), _weights(b))
    assert p == pytest.approx(_scipy_p(a, b), rel=1e-6, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=2, max_size=40),
    st.lists(st.integers(0, 20), min_size=2, max_size=40),
)
def test_mann_whitney_weighted_equals_expanded(a: list[int], b: list[int]) -> None:
    """Counting repeated values (histogram buckets) gives the same test as listing them."""
    wa: dict[float, int] = {}
    for x in a:
        wa[float(x)] = wa.get(float(x), 0) + 1
    p_weighted, e_weighted = mann_whitney(wa.items(), [(float(y), 1) for y in b])
    p_listed, e_listed = mann_whitney(_weights([float(x) for x in a]), _weights(map(float, b)))
    assert p_weighted == pytest.approx(p_listed)
    assert e_weighted == pytest.approx(e_listed)
    if len(set(a) | set(b)) > 1:
        assert p_weighted == pytest.approx(
            _scipy_p([float(x) for x in a], [float(y) for y in b]), rel=1e-6, abs=1e-12
        )


def test_mann_whitney_exact_small_samples() -> None:
    """Five rounds against five, fully separated: the exact p (2/252) is below α = 0.01, where the
    normal approximation (0.012) would never let five rounds count as significant."""
    p, effect = mann_whitney(
        [(float(x), 1) for x in range(5)], [(float(x + 10), 1) for x in range(5)]
    )
    assert p == pytest.approx(2 / 252)
    assert effect == 1.0
    p, _ = mann_whitney([(float(x), 1) for x in range(5)], [(x + 0.5, 1) for x in range(5)])
    assert p > 0.5


def test_mann_whitney_degenerate() -> None:
    assert mann_whitney([(1.0, 1)], [(2.0, 5)]) == (1.0, 0.5)
    p, effect = mann_whitney([(1.0, 5)], [(1.0, 5)])
    assert p == 1.0
    assert effect == 0.5
    p, effect = mann_whitney([(1.0, 30)], [(2.0, 30)])
    assert p < 1e-6
    assert effect == 1.0


def test_mann_whitney_on_histograms() -> None:
    rng = random.Random(7)
    base = _hist([rng.gauss(0.010, 0.0005) for _ in range(2000)])
    same = _hist([rng.gauss(0.010, 0.0005) for _ in range(2000)])
    slower = _hist([rng.gauss(0.0105, 0.0005) for _ in range(2000)])
    p_same, _ = mann_whitney(base.items(), same.items())
    p_slow, effect = mann_whitney(base.items(), slower.items())
    assert p_same > 0.001
    assert p_slow < 1e-10
    assert effect > 0.7


# ---------------------------------------------------------------------------------------------
# verdict rules


@pytest.mark.parametrize(
    ("baseline", "current", "better", "verdict"),
    [
        (10, 10, "lower", "ok"),
        (10, 11, "lower", "ok"),  # +10 % is within a 10 % tolerance
        (10, 12, "lower", "regressed"),
        (10, 8, "lower", "improved"),
        (10, 12, "higher", "improved"),
        (10, 8, "higher", "regressed"),
        (0, 0, "lower", "ok"),
        (0, 1, "lower", "regressed"),
        (0, 1, "higher", "improved"),
    ],
)
def test_compare_exact(baseline: float, current: float, better: str, verdict: str) -> None:
    result = compare_exact(baseline, current, better=better, tolerance=0.10)
    assert result.verdict == verdict
    assert result.p_value is None
    assert "tolerance 10 %" in result.basis


@given(
    st.floats(min_value=1, max_value=1e6),
    st.floats(min_value=0, max_value=1e6),
    st.floats(min_value=0, max_value=2),
    st.sampled_from(["lower", "higher"]),
)
def test_compare_exact_direction(base: float, cur: float, tol: float, better: str) -> None:
    result = compare_exact(base, cur, better=better, tolerance=tol)
    worse = (cur - base) / base if better == "lower" else (base - cur) / base
    assert result.change == pytest.approx((cur - base) / base)
    expected = "regressed" if worse > tol else "improved" if -worse > tol else "ok"
    assert result.verdict == expected


def _samples(center: float, n: int, seed: int, spread: float = 0.02) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    return [(center * (1 + rng.gauss(0, spread)), 1) for _ in range(n)]


def _compare(base: float, cur: float, **kw: Any) -> Comparison:
    args: dict[str, Any] = {"better": "lower", "tolerance": 0.10, "floor": 200e-6}
    args.update(kw)
    return compare_distributions(base, cur, _samples(base, 50, 1), _samples(cur, 50, 2), **args)


def test_distribution_regression_needs_the_interval_beyond_tolerance_and_floor() -> None:
    slow = _compare(0.010, 0.013)
    assert slow.verdict == "regressed"
    assert slow.interval is not None
    assert 0.10 < slow.interval.low < 0.30 < slow.interval.high
    assert slow.p_value is not None
    assert slow.p_value < 0.01
    assert "99 % CI of the shift +" in slow.basis
    assert "p = " in slow.basis
    # within tolerance: significant but only +5 %, and the whole interval within ±10 %
    within = _compare(0.010, 0.0105)
    assert within.verdict == "ok"
    assert within.p_value is not None
    assert within.p_value < 0.01
    # +30 % but the absolute change (3 µs) is below the 200 µs floor
    tiny = _compare(10e-6, 13e-6)
    assert tiny.verdict == "ok"
    assert "absolute floor 200 µs (2000 %)" in tiny.basis
    # the same change above a smaller floor is a regression
    assert _compare(10e-6, 13e-6, floor=1e-6).verdict == "regressed"


def test_distribution_too_noisy_is_undecided() -> None:
    # +20 % in the median, but six overlapping samples each cannot tell +20 % from -20 %
    noisy_base = [(ms / 1000, 1) for ms in (5, 7, 9, 11, 13, 15)]
    noisy_cur = [(ms / 1000, 1) for ms in (6, 8, 10, 12, 14, 16)]
    result = compare_distributions(
        0.010, 0.012, noisy_base, noisy_cur, better="lower", tolerance=0.10, floor=0.0
    )
    assert result.verdict == "undecided"
    assert result.interval is not None
    assert result.interval.low < -0.10
    assert result.interval.high > 0.10
    assert "the interval spans the tolerance: more samples or rounds would decide" in result.basis
    # with a tolerance wider than the interval it is ok
    assert result.interval.high < 3.0
    wide = compare_distributions(
        0.010, 0.012, noisy_base, noisy_cur, better="lower", tolerance=3.0, floor=0.0
    )
    assert wide.verdict == "ok"


def test_distribution_improved_and_better_higher() -> None:
    assert _compare(0.010, 0.007).verdict == "improved"
    # throughput: higher is better, so a drop is a regression and a rise an improvement
    assert _compare(1000.0, 700.0, better="higher", floor=0.0).verdict == "regressed"
    assert _compare(1000.0, 1300.0, better="higher", floor=0.0).verdict == "improved"
    assert _compare(1000.0, 1050.0, better="higher", floor=0.0).verdict == "ok"


def test_distribution_single_values_use_tolerance_alone() -> None:
    result = compare_distributions(
        1.0, 1.5, [(1.0, 1)], [(1.5, 1)], better="lower", tolerance=0.1, floor=0.0
    )
    assert result.verdict == "regressed"
    assert result.p_value is None
    assert result.interval is None
    assert "single value" in result.basis


@pytest.mark.parametrize("seed", range(5))
def test_distribution_same_data_is_ok(seed: int) -> None:
    dist = _samples(0.01, 40, seed)
    result = compare_distributions(
        0.01, 0.01, dist, dist, better="lower", tolerance=0.10, floor=0.0
    )
    assert result.verdict == "ok"
    assert result.p_value == pytest.approx(1.0)
    assert result.interval is not None
    assert result.interval.low <= 0 <= result.interval.high


def test_statistics_without_an_interval_keep_the_earlier_rule() -> None:
    """min and max have no distribution-free interval: tolerance, floor and Mann-Whitney."""
    base, slow = _samples(0.010, 50, 1), _samples(0.013, 50, 2)
    result = compare_distributions(
        0.0096, 0.0125, base, slow, better="lower", tolerance=0.1, floor=0.0, stat="min"
    )
    assert result.verdict == "regressed"
    assert result.interval is None
    assert "no interval for min" in result.basis
    # a p95 from 50 samples cannot be bounded (it needs 104): the earlier rule, said so
    p95 = compare_distributions(
        0.0104, 0.0135, base, slow, better="lower", tolerance=0.1, floor=0.0, stat="p95"
    )
    assert p95.verdict == "regressed"
    assert "no interval: the baseline's 50 sample(s) are too few" in p95.basis
    assert "it needs 104" in p95.basis


def test_a_median_jumping_between_modes_is_undecided() -> None:
    """A cache hitting 55 % of the time, then 45 %: the median jumps from the hits (1 ms) to the
    misses (3 ms) while the bulk of the distribution hardly moves. The shift interval says
    "no change", the median says +200 %: they disagree, so neither ok nor regressed."""
    base = [(0.001, 110), (0.003, 90)]
    cur = [(0.001, 90), (0.003, 110)]
    result = compare_distributions(
        0.001, 0.003, base, cur, better="lower", tolerance=0.1, floor=0.0, stat="p50"
    )
    assert result.interval is not None
    assert result.interval.low <= 0.10  # the bulk did not shift by more than the tolerance
    assert result.verdict == "undecided"
    assert "the statistic itself changed by more than the margin" in result.basis


@pytest.mark.parametrize(
    ("low", "high", "better", "verdict"),
    [
        (0.15, 0.30, "lower", "regressed"),
        (0.05, 0.30, "lower", "undecided"),
        (-0.50, 0.50, "lower", "undecided"),
        (-0.05, 0.08, "lower", "ok"),
        (-0.40, 0.10, "lower", "ok"),  # nothing worse than the tolerance is plausible
        (-0.40, -0.15, "lower", "improved"),
        (-0.40, -0.15, "higher", "regressed"),  # throughput down by 15-40 %
        (0.15, 0.30, "higher", "improved"),
        (-0.30, 0.05, "higher", "undecided"),
        (math.inf, math.inf, "lower", "regressed"),  # an error rate rising from 0
    ],
)
def test_interval_verdict(low: float, high: float, better: str, verdict: str) -> None:
    interval = Interval((low + high) / 2, low, high, 0.99, "test")
    assert interval_verdict(interval, better=better, margin=0.10) == verdict


def test_regression_margin() -> None:
    assert regression_margin(0.10, 0.0, 5.0) == 0.10
    assert regression_margin(0.10, 1e-3, 0.005) == pytest.approx(0.20)  # 1 ms of 5 ms
    assert regression_margin(0.10, 1e-3, 0.100) == 0.10
    assert regression_margin(0.10, 1e-3, 0.0) == math.inf


# ---------------------------------------------------------------------------------------------
# the same-job comparison: paired rounds


def _rounds(center: float, n: int, seed: int, spread: float = 0.03) -> list[float]:
    rng = random.Random(seed)
    return [center * rng.lognormvariate(0, spread) for _ in range(n)]


def test_paired_rounds_verdicts() -> None:
    base = _rounds(0.010, 10, 1)
    slower = [b * 1.3 for b in _rounds(0.010, 10, 1)]
    result = compare_paired(base, slower, better="lower", tolerance=0.1, floor=0.0)
    assert result.verdict == "regressed"
    assert result.change == pytest.approx(0.3)
    assert "99 % CI of the paired change +30 % … +30 %" in result.basis
    same = compare_paired(base, _rounds(0.010, 10, 2), better="lower", tolerance=0.1, floor=0.0)
    assert same.verdict == "ok"
    assert compare_paired(slower, base, better="lower", tolerance=0.1, floor=0.0).verdict == (
        "improved"
    )
    # throughput falling by 30 % in every pair
    assert (
        compare_paired(
            base, [b * 0.7 for b in base], better="higher", tolerance=0.1, floor=0.0
        ).verdict
        == "regressed"
    )


def test_paired_rounds_too_few_is_undecided() -> None:
    base = _rounds(0.010, 5, 1)
    result = compare_paired(base, [b * 2 for b in base], better="lower", tolerance=0.1, floor=0.0)
    assert result.verdict == "undecided"
    assert "5 round(s) are too few for a 99 % interval: it needs 8" in result.basis
    assert result.change == pytest.approx(1.0)
    # a deterministic value measured every round: identical is ok, whatever the count
    same = compare_paired([3.0, 3.0], [3.0, 3.0], better="lower", tolerance=0.1, floor=0.0)
    assert same.verdict == "ok"


def test_paired_rounds_respect_the_floor() -> None:
    base = _rounds(100e-6, 10, 1)
    result = compare_paired(
        base, [b * 1.5 for b in base], better="lower", tolerance=0.1, floor=1e-3
    )
    assert result.verdict == "ok"  # +50 µs is below the 1 ms floor
    assert "absolute floor 1.00 ms" in result.basis


@settings(max_examples=25)
@given(sample_lists)
def test_fast_items_and_mean_match_hdrh(samples: list[float]) -> None:
    """items() and mean skip hdrh's slow iterator; they must agree with it exactly."""
    for hist in (_hist(samples), LatencyHistogram.decode(_hist(samples).encode())):
        expected = [
            (item.value_iterated_to / 1e9, int(item.count_at_value_iterated_to))
            for item in hist.hdr.get_recorded_iterator()
        ]
        assert list(hist.items()) == expected
        assert hist.mean == hist.hdr.get_mean_value() / 1e9
