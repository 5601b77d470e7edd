"""Confidence intervals of a change: against scipy, by the tests they invert, and by simulated
coverage (seeded, so every run draws the same samples)."""

from __future__ import annotations

import math
import random

import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_bridgeperf import intervals
from pytest_bridgeperf.intervals import (
    Interval,
    change_interval,
    mean_interval,
    min_pairs,
    min_samples,
    paired_interval,
    quantile_interval,
    shift_interval,
    wilcoxon_signed_rank,
)
from pytest_bridgeperf.stats import LatencyHistogram

ALPHA = 0.01


def _w(values: list[float]) -> list[tuple[float, int]]:
    return [(v, 1) for v in values]


def _covers_zero(interval: Interval) -> bool:
    return interval.low <= 0 <= interval.high


# ---------------------------------------------------------------------------------------------
# the distributions behind the intervals


@pytest.mark.parametrize("df", [1, 1.5, 2, 3, 4.7, 10, 30, 100, 1e4])
def test_student_t_matches_scipy(df: float) -> None:
    for p in (0.6, 0.9, 0.975, 0.995, 0.9995):
        assert intervals._t_quantile(p, df) == pytest.approx(scipy.stats.t.ppf(p, df), rel=1e-9)
    for t in (0.0, 0.1, 1.0, 2.5, 6.0, 20.0, -1.5):
        assert intervals._t_sf(t, df) == pytest.approx(scipy.stats.t.sf(t, df), rel=1e-9)


@pytest.mark.parametrize("n", [1, 10, 104, 1000, 5000, 30_000])
@pytest.mark.parametrize("q", [0.5, 0.95, 0.999])
def test_binomial_cdf_matches_scipy(n: int, q: float) -> None:
    for k in {0, n // 3, max(0, int(n * q) - 2), int(n * q), n - 1, n}:
        expected = scipy.stats.binom.cdf(k, n, q)
        # exact up to 20 000 trials; beyond, the normal approximation (to ±1 rank)
        tolerance = 1e-10 if n <= 20_000 else 0.02
        assert intervals._binom_cdf(k, n, q) == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize("n", [8, 20, 104, 500, 5000, 50_000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_rank_bounds_cover_the_quantile(n: int, q: float) -> None:
    """[X_(l), X_(u)] holds the true quantile with probability P(l <= B <= u-1) >= 1 - α, and
    neither bound can move inwards without dropping below it."""
    low, high = intervals._rank_bounds(n, q, ALPHA)
    binom = scipy.stats.binom(n, q)

    def coverage(lo: int, hi: int) -> float:
        return float(binom.cdf(hi - 1) - binom.cdf(lo - 1))

    if low < 1 or high > n:
        assert n < min_samples(q, ALPHA)
        return
    slack = 1e-3 if n > 20_000 else 1e-12  # the normal approximation beyond 20 000
    assert coverage(low, high) >= 1 - ALPHA - slack
    assert binom.cdf(low - 1) <= ALPHA / 2 + slack
    assert binom.sf(high - 1) <= ALPHA / 2 + slack
    if n <= 20_000:
        assert binom.cdf(low) > ALPHA / 2  # l + 1 would be too high
        assert binom.sf(high - 2) > ALPHA / 2  # u - 1 would be too low


def test_min_samples_and_pairs() -> None:
    assert [min_samples(q, 0.01) for q in (0.5, 0.95, 0.99, 0.999)] == [8, 104, 528, 5296]
    assert min_samples(0.95, 0.05) == 72
    for alpha in (0.001, 0.01, 0.05, 0.1):
        n = min_pairs(alpha)
        # n pairs all one way is significant at α, n - 1 pairs are not (exact signed-rank test)
        assert scipy.stats.wilcoxon([1.0 + i for i in range(n)]).pvalue <= alpha
        assert scipy.stats.wilcoxon([1.0 + i for i in range(n - 1)]).pvalue > alpha
    assert min_pairs(0.01) == 8


# ---------------------------------------------------------------------------------------------
# Wilcoxon signed-rank against scipy


@pytest.mark.parametrize("seed", range(12))
def test_wilcoxon_matches_scipy(seed: int) -> None:
    """Where scipy is exact (no ties up to 50; ties up to 13, by permutation) or asymptotic
    (beyond 50), the p-values agree."""
    rng = random.Random(seed)
    if seed % 3 == 0:  # ties: scipy permutes up to 13 differences, approximates beyond 50
        n = rng.choice([6, 9, 13, 60, 120])
        d = [float(rng.choice([-3, -1, 1, 2, 2, 3, 4, 5])) for _ in range(n)]
    else:
        d = [rng.gauss(0.2, 1.0) for _ in range(rng.choice([5, 9, 20, 49, 60, 120]))]
    expected = scipy.stats.wilcoxon(d).pvalue
    assert wilcoxon_signed_rank(d) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [14, 30, 50])
def test_wilcoxon_exact_with_ties_matches_a_full_permutation(n: int) -> None:
    """Between 14 and 50 tied differences scipy falls back to the normal approximation; the
    exact distribution here matches scipy's permutation test run over every sign pattern."""
    rng = random.Random(n)
    d = [float(rng.choice([-2, -1, 1, 1, 2, 3])) for _ in range(n)]
    if n > 20:  # 2^n patterns: compare with the normal approximation instead (loosely)
        approx = scipy.stats.wilcoxon(d, method="asymptotic").pvalue
        assert wilcoxon_signed_rank(d) == pytest.approx(approx, rel=0.25)
        return
    permuted = scipy.stats.wilcoxon(
        d, method=scipy.stats.PermutationMethod(n_resamples=2**n + 1)
    ).pvalue
    assert wilcoxon_signed_rank(d) == pytest.approx(permuted, rel=1e-9)


def test_wilcoxon_degenerate() -> None:
    assert wilcoxon_signed_rank([]) == 1.0
    assert wilcoxon_signed_rank([0.0, 0.0]) == 1.0
    assert wilcoxon_signed_rank([1.0] * 8) == pytest.approx(2 / 2**8)
    assert wilcoxon_signed_rank([1.0] * 7 + [0.0]) == pytest.approx(2 / 2**7)


# ---------------------------------------------------------------------------------------------
# each interval is the inversion of its test


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.5, 2.0), min_size=3, max_size=30, unique=True),
    st.lists(st.floats(0.5, 2.0), min_size=3, max_size=30, unique=True),
    st.floats(0.0, 0.5),
)
def test_shift_interval_inverts_mann_whitney(a: list[float], b: list[float], lift: float) -> None:
    """Shifting the current sample (on the log scale) by a value inside Moses' interval leaves
    the exact Mann-Whitney test at p > α; just outside either end, p <= α."""
    b = [x * math.exp(lift) for x in b]
    if len(set(a) | set(b)) < len(a) + len(b):
        return  # the exact distribution assumes no ties
    result = shift_interval(_w(a), _w(b), alpha=ALPHA)
    if not result.bounded:
        assert result.note
        return
    low, high = math.log1p(result.low), math.log1p(result.high)
    la, lb = [math.log(x) for x in a], [math.log(y) for y in b]

    def p_at(shift: float) -> float:
        moved = [y - shift for y in lb]
        return float(scipy.stats.mannwhitneyu(moved, la, method="exact").pvalue)

    eps = 1e-9
    assert p_at(low - eps) <= ALPHA + 1e-12
    assert p_at(high + eps) <= ALPHA + 1e-12
    assert p_at(low + eps) > ALPHA or low == high
    assert p_at(high - eps) > ALPHA or low == high
    assert low <= math.log1p(result.estimate) <= high


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.5, 2.0), min_size=8, max_size=30, unique=True),
    st.floats(-0.3, 0.3),
    st.integers(0, 2**32 - 1),
)
def test_paired_interval_inverts_wilcoxon(base: list[float], lift: float, seed: int) -> None:
    rng = random.Random(seed)
    current = [b * math.exp(lift + rng.gauss(0, 0.1)) for b in base]
    result = paired_interval(base, current, alpha=ALPHA)
    assert result.bounded
    diffs = [math.log(c) - math.log(b) for b, c in zip(base, current, strict=True)]
    walsh = {(diffs[i] + diffs[j]) / 2 for i in range(len(diffs)) for j in range(i, len(diffs))}
    if len(walsh) < len(diffs) * (len(diffs) + 1) // 2:
        return  # coinciding Walsh averages: the inversion is exact only without them
    low, high = math.log1p(result.low), math.log1p(result.high)

    def p_at(shift: float) -> float:
        return float(scipy.stats.wilcoxon([d - shift for d in diffs], method="exact").pvalue)

    eps = 1e-9
    assert p_at(low - eps) <= ALPHA + 1e-12
    assert p_at(high + eps) <= ALPHA + 1e-12
    assert p_at(low + eps) > ALPHA
    assert p_at(high - eps) > ALPHA
    assert result.p_value == pytest.approx(scipy.stats.wilcoxon(diffs).pvalue)


@pytest.mark.parametrize("seed", range(6))
def test_mean_interval_matches_scipy_welch(seed: int) -> None:
    """On the linear scale (a mean of 0 or below) the interval is Welch's, as scipy has it."""
    rng = random.Random(seed)
    a = [rng.gauss(0.0, 1.0) for _ in range(rng.randint(3, 40))]
    b = [rng.gauss(0.5, 2.0) for _ in range(rng.randint(3, 40))]
    a[0] = -abs(a[0]) - 5  # a negative mean: the linear scale
    ma = sum(a) / len(a)
    result = mean_interval(_w(a), _w(b), alpha=ALPHA)
    welch = scipy.stats.ttest_ind(b, a, equal_var=False)
    ci = welch.confidence_interval(1 - ALPHA)
    assert result.p_value == pytest.approx(welch.pvalue, rel=1e-8)
    assert result.low * abs(ma) == pytest.approx(ci.low, rel=1e-8)
    assert result.high * abs(ma) == pytest.approx(ci.high, rel=1e-8)


def test_mean_interval_log_scale_and_zero_baseline() -> None:
    rng = random.Random(3)
    a = [rng.gauss(100, 5) for _ in range(30)]
    b = [x * 1.3 for x in a]
    result = mean_interval(_w(a), _w(b), alpha=ALPHA)
    assert result.method == "Welch"
    assert result.estimate == pytest.approx(0.3)
    assert 0.2 < result.low < 0.3 < result.high < 0.4
    # an error rate rising from exactly 0: +∞ %, and bounded (the data decided it)
    rising = mean_interval([(0.0, 10)], [(0.01, 10)], alpha=ALPHA)
    assert rising.bounded
    assert rising.low == rising.high == math.inf
    assert mean_interval([(0.0, 10)], [(0.0, 10)], alpha=ALPHA).high == 0.0


# ---------------------------------------------------------------------------------------------
# percentiles: order statistics combined by MOVER


def test_quantile_interval_on_histograms() -> None:
    rng = random.Random(11)
    base = LatencyHistogram.from_samples(
        rng.lognormvariate(math.log(0.01), 0.3) for _ in range(3000)
    )
    slow = LatencyHistogram.from_samples(
        1.3 * rng.lognormvariate(math.log(0.01), 0.3) for _ in range(3000)
    )
    result = quantile_interval(0.95, list(base.items()), list(slow.items()), alpha=ALPHA)
    assert result.method == "order statistics"
    # the estimate is exactly the change of the histograms' own p95
    assert result.estimate == pytest.approx(slow.percentile(95) / base.percentile(95) - 1)
    assert 0.15 < result.low < result.estimate < result.high < 0.45
    assert result.p_value is not None
    assert result.p_value < 1e-10


def test_quantile_interval_needs_samples_beyond_the_percentile() -> None:
    samples = _w([0.001 * (1 + i % 10) for i in range(103)])
    result = quantile_interval(0.95, samples, samples, alpha=ALPHA)
    assert not result.bounded
    assert "103 sample(s) are too few for an interval of p95: it needs 104" in result.note
    assert quantile_interval(
        0.95, [*samples, (0.02, 1)], [*samples, (0.02, 1)], alpha=ALPHA
    ).bounded


def _bimodal(rng: random.Random, n: int, slow_share: float) -> list[tuple[float, int]]:
    # a cache: hits at ~10 ms, misses three times slower
    return [
        (0.01 * (3 if rng.random() < slow_share else 1) * rng.lognormvariate(0, 0.05), 1)
        for _ in range(n)
    ]


@pytest.mark.parametrize("slow_share", [0.04, 0.05, 0.07, 0.10])
def test_quantile_interval_holds_where_the_percentile_falls_in_a_gap(slow_share: float) -> None:
    """Unchanged code whose p95 sits near the gap between a cache's hits and misses: the sample
    p95 jumps between the modes from run to run. A symmetric standard error missed 0 in about
    half of these comparisons (slow_share 0.05); the asymmetric interval must keep its 99 %."""
    rng = random.Random(int(slow_share * 1000))
    reps = 200
    misses = sum(
        not _covers_zero(
            quantile_interval(
                0.95, _bimodal(rng, 150, slow_share), _bimodal(rng, 150, slow_share), alpha=ALPHA
            )
        )
        for _ in range(reps)
    )
    # nominal 1 %: 2 of 200 expected; 8 is far beyond chance (binomial P(>= 8) < 0.001)
    assert misses <= 7


@pytest.mark.parametrize(
    ("stat", "n"),
    [("p50", 30), ("p90", 200), ("p95", 200), ("p99", 600), ("mean", 10), ("mean", 40)],
)
def test_coverage_of_unchanged_lognormal_timings(stat: str, n: int) -> None:
    rng = random.Random(f"{stat}-{n}")  # str seeds are stable across processes, unlike hash()
    reps = 200

    def draw() -> list[tuple[float, int]]:
        return _w([rng.lognormvariate(math.log(0.005), 0.4) for _ in range(n)])

    misses = 0
    for _ in range(reps):
        result = change_interval(stat, draw(), draw(), alpha=ALPHA)
        assert result is not None
        assert result.bounded
        misses += not _covers_zero(result)
    assert misses <= 7  # nominal 1 % (2 of 200); see above


def test_shift_interval_is_robust_to_scheduler_outliers() -> None:
    """20 samples of which ~20 % are hit by a slow spell (1.3-2x), 30 % slower code: the shift
    interval finds the regression nearly always; the median's order statistics cannot (its 99 %
    interval runs from the 4th to the 17th of 20 values)."""
    rng = random.Random(5)

    def sleepy(ms: float) -> list[tuple[float, int]]:
        return _w(
            [
                ms
                * (1 + abs(rng.gauss(0, 0.004)))
                * (rng.uniform(1.3, 2) if rng.random() < 0.2 else 1)
                for _ in range(20)
            ]
        )

    found_shift = found_order = 0
    for _ in range(100):
        a, b = sleepy(5.0), sleepy(6.5)
        found_shift += shift_interval(a, b, alpha=ALPHA).low > 0.2
        found_order += quantile_interval(0.5, a, b, alpha=ALPHA).low > 0.2
    assert found_shift >= 75
    assert found_order < found_shift


def test_shift_interval_thins_large_samples() -> None:
    rng = random.Random(2)
    base = LatencyHistogram.from_samples(rng.gauss(0.010, 0.001) for _ in range(20_000))
    slow = LatencyHistogram.from_samples(rng.gauss(0.012, 0.001) for _ in range(20_000))
    result = shift_interval(list(base.items()), list(slow.items()), alpha=ALPHA)
    assert result.bounded
    assert 0.15 < result.low < result.estimate < result.high < 0.25
    assert intervals._expand([(1.0, 3), (2.0, 997)], 500)[:2] == [1.0, 1.0]
    assert len(intervals._expand([(1.0, 3), (2.0, 997)], 500)) == 500


# ---------------------------------------------------------------------------------------------
# which interval for which statistic


def test_change_interval_dispatch() -> None:
    a = _w([0.001 * (1 + i % 13) for i in range(200)])
    b = _w([0.0011 * (1 + i % 13) for i in range(200)])
    methods = {
        stat: getattr(change_interval(stat, a, b, alpha=ALPHA), "method", None)
        for stat in ("p50", "p90", "p95", "p99", "p999", "mean", "min", "max", "value")
    }
    assert methods == {
        "p50": "Hodges-Lehmann",
        "p90": "order statistics",
        "p95": "order statistics",
        "p99": "order statistics",
        "p999": "order statistics",
        "mean": "Welch",
        "min": None,
        "max": None,
        "value": None,
    }
    # beyond 500 samples a side the median has a narrow interval of its own
    big = change_interval("p50", a * 3, b * 3, alpha=ALPHA)
    assert big is not None
    assert big.method == "order statistics"
    rounds = change_interval("max", a[:10], b[:10], alpha=ALPHA, rounds=True)
    assert rounds is not None
    assert rounds.method == "Hodges-Lehmann"
    assert change_interval("p50", [(0.001, 1)], b, alpha=ALPHA) is None


def test_paired_interval_needs_pairs() -> None:
    result = paired_interval([1.0] * 7, [1.5] * 7, alpha=ALPHA)
    assert not result.bounded
    assert "7 round(s) are too few for a 99 % interval: it needs 8" in result.note
    assert result.estimate == pytest.approx(0.5)
    assert paired_interval([1.0] * 8, [1.5] * 8, alpha=ALPHA).low == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pairs: 3 baseline round"):
        paired_interval([1.0] * 3, [1.0] * 4, alpha=ALPHA)


def test_paired_rounds_cancel_the_machine_drift() -> None:
    """Both revisions measured in alternation while the machine slows down 3x over the run: the
    pairs see the same machine, so +10 % code is found; unpaired, the drift swamps it."""
    rng = random.Random(9)
    drift = [1 + 2 * i / 19 for i in range(20)]
    base = [0.010 * d * rng.lognormvariate(0, 0.01) for d in drift]
    current = [0.011 * d * rng.lognormvariate(0, 0.01) for d in drift]
    paired = paired_interval(base, current, alpha=ALPHA)
    assert 0.05 < paired.low < paired.high < 0.15
    unpaired = shift_interval(_w(base), _w(current), alpha=ALPHA)
    assert unpaired.low < 0 < unpaired.high
