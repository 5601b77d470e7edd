"""Confidence intervals of a change, and the rank tests they are built on.

A timing verdict asks "did the compared statistic change by more than the tolerance?", which a
p-value cannot answer: with a million requests a 0.3 % shift is significant, with six samples a
40 % one is not. An interval of the relative change answers it directly — it lies beyond the
tolerance (regressed or improved), within it (ok), or across it (undecided: more data would tell).

Every estimator here takes weighted samples ``(value, count)`` (HDR histogram buckets, sample
reservoirs, per-round statistics) and returns an :class:`Interval` of the relative change
current/baseline − 1, computed on the log scale when every value is positive (timings change by
factors) and on the linear scale otherwise (error rates of 0):

* :func:`quantile_interval` — a percentile of two independent samples: each side's exact,
  distribution-free interval from its order statistics, combined into an interval of the ratio by
  MOVER (Zou & Donner 2008). Costs one pass over the histogram buckets, so a million-request
  load run costs as much as its bucket count.
* :func:`shift_interval` — medians of up to 500 samples and independent rounds: the
  Hodges-Lehmann shift with Moses' distribution-free interval, the inversion of the Mann-Whitney
  U test.
* :func:`paired_interval` — the same-job A/B comparison: per-round statistics of both revisions
  measured in alternation, the Hodges-Lehmann estimate of the per-pair change with the interval
  that inverts the Wilcoxon signed-rank test. Pairing cancels what the machine did meanwhile.
* :func:`mean_interval` — means: Welch's interval (Student t with Satterthwaite's degrees).

Each also gives a p-value of "no change" for messages: from the test the interval inverts
(Mann-Whitney, Wilcoxon signed-rank, Welch's t), and for percentiles Mann-Whitney's. No pytest,
no numpy: the suite checks these against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

__all__ = [
    "QUANTILES",
    "Interval",
    "change_interval",
    "mann_whitney",
    "mean_interval",
    "min_pairs",
    "min_samples",
    "paired_interval",
    "quantile_interval",
    "shift_interval",
    "wilcoxon_signed_rank",
]

Weighted = Sequence[tuple[float, int]]

#: The compared statistics that are percentiles, and their q (0..1).
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99, "p999": 0.999}

#: Largest n1·n2 for which the exact null distribution of U is used (O(n1·n1·n2) integer ops).
_EXACT_U = 2500
#: Largest number of pairs for which the exact null distribution of the signed-rank sum is used.
_EXACT_T = 50
#: Beyond this many differences (n1·n2) the shift interval thins each side to order statistics.
_MAX_DIFFERENCES = 250_000
#: Medians of up to this many samples a side get the shift interval, larger ones their own.
_SHIFT_MEDIAN_UP_TO = 500

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Interval:
    """A confidence interval of the relative change current/baseline − 1 (+ means larger).

    ``low``/``high`` are ``-inf``/``inf`` when the data cannot bound that side; ``note`` then
    says why and what would bound it."""

    estimate: float
    low: float
    high: float
    confidence: float  # e.g. 0.99
    method: str  # "order statistics", "Hodges-Lehmann", "paired Hodges-Lehmann", "Welch"
    p_value: float | None = None  # of "no change", from the test the interval inverts
    note: str = ""
    #: False when the data could not bound the change (too few samples or rounds): the bounds
    #: are then ±∞ and ``note`` says what would bound it. A bounded interval may still reach ±∞
    #: (an error rate rising from a baseline of 0 is +∞ %).
    bounded: bool = True


# ---------------------------------------------------------------------------------------------
# weighted samples


def weighted(values: Iterable[tuple[float, int]]) -> list[tuple[float, int]]:
    """Merged, sorted ``(value, count)`` pairs without zero counts."""
    merged: dict[float, int] = {}
    for value, count in values:
        if count:
            merged[value] = merged.get(value, 0) + count
    return sorted(merged.items())


def _total(w: Weighted) -> int:
    return sum(c for _, c in w)


def _order_stat(w: Weighted, rank: int) -> float:
    """The ``rank``-th smallest value (1-based) of sorted weighted samples."""
    seen = 0
    for value, count in w:
        seen += count
        if seen >= rank:
            return value
    return w[-1][0]


def _median(w: Weighted) -> float:
    n = _total(w)
    lo, hi = _order_stat(w, (n + 1) // 2), _order_stat(w, n // 2 + 1)
    return (lo + hi) / 2


def _positive(*sides: Weighted) -> bool:
    return all(value > 0 for w in sides for value, _ in w)


def _relative(delta: float, log: bool, reference: float) -> float:
    """A change on the analysis scale as a relative change (+ means larger)."""
    if log:
        return math.expm1(delta) if delta < 700 else math.inf
    if reference == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / abs(reference)


def _interval(
    estimate: float,
    low: float,
    high: float,
    *,
    log: bool,
    reference: float,
    confidence: float,
    method: str,
    p_value: float | None,
) -> Interval:
    return Interval(
        _relative(estimate, log, reference),
        _relative(low, log, reference) if math.isfinite(low) else -math.inf,
        _relative(high, log, reference) if math.isfinite(high) else math.inf,
        confidence,
        method,
        p_value,
    )


def _unbounded(confidence: float, method: str, note: str, estimate: float = math.nan) -> Interval:
    return Interval(estimate, -math.inf, math.inf, confidence, method, None, note, bounded=False)


def _z(confidence: float) -> float:
    return _NORMAL.inv_cdf((1 + confidence) / 2)


# ---------------------------------------------------------------------------------------------
# distributions


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(B ≤ k) for B ~ Binomial(n, p); exact up to 20 000 trials, normal beyond."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n > 20_000:
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        return _NORMAL.cdf((k + 0.5 - mean) / sd)
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    return math.fsum(
        math.exp(base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        for i in range(k + 1)
    )


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def _beta_inc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    if math.isinf(df) or df > 1e7:
        return 1 - _NORMAL.cdf(t)
    tail = 0.5 * _beta_inc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def _t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (p > ½) of Student's t, by bisection on the survival function."""
    if math.isinf(df) or df > 1e7:
        return _NORMAL.inv_cdf(p)
    lo, hi = 0.0, 1.0
    while _t_sf(hi, df) > 1 - p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_sf(mid, df) > 1 - p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


@lru_cache(maxsize=64)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many of the C(n1+n2, n1) orderings of two samples without ties give U = k, for each k.

    The coefficients of the Gaussian binomial [n1+n2 choose n1]_q = prod_{i=1..n1}
    (1 - q^(n2+i)) / (1 - q^i), computed as a truncated power series in exact integers."""
    size = n1 * n2 + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, n1 + 1):
        shift = n2 + i
        for k in range(size - 1, shift - 1, -1):
            poly[k] -= poly[k - shift]
        for k in range(i, size):
            poly[k] += poly[k - i]
    return tuple(poly)


@lru_cache(maxsize=64)
def _t_counts(n: int) -> tuple[int, ...]:
    """How many of the 2^n sign patterns give a signed-rank sum T+ = k, for each k."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for k in range(len(counts) - 1, rank - 1, -1):
            counts[k] += counts[k - rank]
    return tuple(counts)


def _exact_two_sided(counts: Sequence[int], statistic: int) -> float:
    total = sum(counts)
    lower = sum(counts[: statistic + 1])
    upper = sum(counts[statistic:])
    return min(1.0, 2 * min(lower, upper) / total)


def _critical_rank(counts: Sequence[int], alpha: float) -> int:
    """The largest k with P(S ≤ k − 1) ≤ α/2 under the null distribution ``counts`` (0: none)."""
    total, seen, k = sum(counts), 0, 0
    for count in counts:
        if 2 * (seen + count) > alpha * total:
            break
        seen += count
        k += 1
    return k


# ---------------------------------------------------------------------------------------------
# rank tests


def mann_whitney(
    a: Iterable[tuple[float, int]], b: Iterable[tuple[float, int]]
) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test on weighted samples ``(value, count)``.

    Returns ``(p_value, effect)`` where ``effect`` is P(B > A) + ½·P(B = A) (0.5 = no shift).
    Uses the normal approximation with tie correction, computed over distinct values, so a
    histogram of millions of requests costs as much as its bucket count; small samples without
    ties get the exact null distribution. ``p = 1`` when either side has fewer than 2 samples.
    """
    wa, wb = weighted(a), weighted(b)
    n1, n2 = _total(wa), _total(wb)
    if n1 < 2 or n2 < 2:
        return 1.0, 0.5
    values = sorted({v for v, _ in wa} | {v for v, _ in wb})
    ca, cb = dict(wa), dict(wb)
    below_a = 0
    u_b = 0.0  # number of (a, b) pairs with b > a, ties counting ½
    tie_term = 0.0
    for value in values:
        x, y = ca.get(value, 0), cb.get(value, 0)
        u_b += y * (below_a + x / 2)
        below_a += x
        t = x + y
        tie_term += t * t * t - t
    effect = u_b / (n1 * n2)
    if tie_term == 0 and n1 * n2 <= _EXACT_U:
        # small samples without ties (round statistics): the exact null distribution, which
        # the normal approximation misjudges at the tails (5 vs 5 fully separated: p = 0.0079)
        return _exact_two_sided(_u_counts(n1, n2), round(u_b)), effect
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return 1.0, effect
    # continuity correction towards the mean
    z = (abs(u_b - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2))), effect


def wilcoxon_signed_rank(differences: Iterable[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that the differences centre on 0.

    Zero differences are dropped (Wilcoxon's convention, scipy's default). Up to 50 differences
    the p-value is exact: the distribution of the signed-rank sum over all 2^n sign patterns,
    with tied differences keeping their mid-ranks (scipy gets the same by permutation up to 13
    tied differences, and by the normal approximation above). Beyond 50, the normal
    approximation with tie correction. ``p = 1`` when no difference is left."""
    nonzero = sorted((abs(d), d > 0) for d in differences if d != 0)
    n = len(nonzero)
    if n == 0:
        return 1.0
    doubled: list[int] = []  # twice the mid-ranks: whole numbers even where ties share a rank
    tie_term = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and nonzero[j + 1][0] == nonzero[i][0]:
            j += 1
        doubled.extend([i + j + 2] * (j - i + 1))
        t = j - i + 1
        tie_term += t * t * t - t
        i = j + 1
    t_plus = sum(r for r, (_, positive) in zip(doubled, nonzero, strict=True) if positive)
    if n <= _EXACT_T:
        if tie_term == 0:
            return _exact_two_sided(_t_counts(n), t_plus // 2)
        return _exact_two_sided(_subset_sums(tuple(doubled)), t_plus)
    mean = n * (n + 1) / 4
    variance = n * (n + 1) * (2 * n + 1) / 24 - tie_term / 48
    if variance <= 0:
        return 1.0
    z = abs(t_plus / 2 - mean) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _subset_sums(weights: tuple[int, ...]) -> tuple[int, ...]:
    """How many of the 2^n subsets of ``weights`` sum to k, for each k."""
    counts = [1] + [0] * sum(weights)
    for weight in weights:
        for k in range(len(counts) - 1, weight - 1, -1):
            counts[k] += counts[k - weight]
    return tuple(counts)


# ---------------------------------------------------------------------------------------------
# intervals


def _rank_bounds(n: int, q: float, alpha: float) -> tuple[int, int]:
    """Ranks ``(l, u)`` (1-based) of the distribution-free 1 − ``alpha`` interval
    [X_(l), X_(u)] of the ``q`` quantile of ``n`` samples: l is the largest rank with
    P(B ≤ l − 1) ≤ α/2 and u the smallest with P(B ≥ u) ≤ α/2, B ~ Binomial(n, q) being the
    number of samples below the quantile. ``l = 0`` / ``u = n + 1``: that side is unbounded."""
    return _rank_bounds_cached(n, q, alpha)


@lru_cache(maxsize=256)
def _rank_bounds_cached(n: int, q: float, alpha: float) -> tuple[int, int]:
    if n > 20_000:  # normal approximation with continuity correction
        z, mean, sd = _z(1 - alpha), n * q, math.sqrt(n * q * (1 - q))
        low = math.floor(mean + 0.5 - z * sd)
        high = math.ceil(mean + 0.5 + z * sd)
        return max(0, low), min(n + 1, high)
    log_p, log_q, base = math.log(q), math.log1p(-q), math.lgamma(n + 1)
    low, high, cdf = 0, n + 1, 0.0
    for i in range(n + 1):
        cdf += math.exp(
            base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )
        if cdf <= alpha / 2:
            low = i + 1  # P(B <= i) <= α/2: rank i + 1 may be the lower end
        if cdf >= 1 - alpha / 2:
            high = i + 1  # P(B >= i + 1) <= α/2
            break
    return low, high


def min_samples(q: float, alpha: float) -> int:
    """Samples each side needs before its ``q`` quantile has a two-sided 1 − ``alpha`` interval:
    at α = 0.01, p50 needs 8, p95 104, p99 528, p99.9 5296."""
    return math.ceil(math.log(alpha / 2) / math.log(max(q, 1 - q)) - 1e-9)


def _quantile_bounds(w: Weighted, q: float, alpha: float, log: bool) -> tuple[float, float, float]:
    """The sample ``q`` quantile (nearest rank, as ``percentile()``) and its distribution-free
    1 − ``alpha`` interval, on the log scale with ``log``."""
    n = _total(w)
    low_rank, high_rank = _rank_bounds(n, q, alpha)
    scale = math.log if log else float
    estimate = scale(_order_stat(w, max(1, math.ceil(q * n))))
    low = scale(_order_stat(w, low_rank)) if low_rank >= 1 else -math.inf
    high = scale(_order_stat(w, high_rank)) if high_rank <= n else math.inf
    return estimate, low, high


def quantile_interval(q: float, base: Weighted, current: Weighted, *, alpha: float) -> Interval:
    """Interval of the relative change of the ``q`` quantile (0 < q < 1) between two independent
    samples, at confidence 1 − ``alpha``.

    Each side's quantile gets its exact distribution-free interval from the order statistics
    (the binomial argument holds for any continuous distribution); the two are combined by
    MOVER (Zou & Donner 2008, "method of variance estimates recovery"), which keeps each side's
    asymmetry. That asymmetry matters: where a percentile falls near a gap of a bimodal latency
    distribution (a cache that misses 5 % of the time, compared on p95), the sample percentile
    jumps between the modes from run to run. A symmetric standard error (Price & Bonett) then
    missed the true ratio in 49 % of unchanged comparisons; this interval in 0.1 %
    (1000 simulated A/A pairs at α = 0.01, n = 104 … 500). Elsewhere it is 5-10 % wider.

    Unbounded, with a note, when either side has fewer than :func:`min_samples` samples. The
    p-value is the Mann-Whitney test's, whether the distributions differ at all."""
    wb, wc = weighted(base), weighted(current)
    nb, nc = _total(wb), _total(wc)
    confidence = 1 - alpha
    method = "order statistics"
    need = min_samples(q, alpha)
    if min(nb, nc) < need:
        which = "the baseline's" if nb < need else "this run's"
        return _unbounded(
            confidence,
            method,
            f"{which} {min(nb, nc)} sample(s) are too few for an interval of "
            f"p{q * 100:g}: it needs {need}",
        )
    log = _positive(wb, wc)
    eb, lb, hb = _quantile_bounds(wb, q, alpha, log)
    ec, lc, hc = _quantile_bounds(wc, q, alpha, log)
    delta = ec - eb
    low = delta - math.hypot(ec - lc, hb - eb)
    high = delta + math.hypot(hc - ec, eb - lb)
    p_value, _ = mann_whitney(wb, wc)
    return _interval(
        delta,
        low,
        high,
        log=log,
        reference=math.exp(eb) if log else eb,
        confidence=confidence,
        method=method,
        p_value=p_value,
    )


def _expand(w: Weighted, limit: int) -> list[float]:
    """Weighted samples as a sorted list, thinned to ``limit`` evenly spaced order statistics."""
    n = _total(w)
    if n <= limit:
        return [value for value, count in w for _ in range(count)]
    ranks = iter([1 + round(i * (n - 1) / (limit - 1)) for i in range(limit)])
    out: list[float] = []
    rank, seen = next(ranks), 0
    for value, count in w:  # one pass: the wanted ranks ascend
        seen += count
        while rank <= seen:
            out.append(value)
            rank = next(ranks, n + 1)
    return out


def _weighted_rank(sorted_values: Sequence[float], rank: int) -> float:
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def shift_interval(base: Weighted, current: Weighted, *, alpha: float) -> Interval:
    """Interval of the relative change between two independent samples under a shift model
    (on the log scale: a change by a common factor), at confidence 1 − ``alpha``: the
    Hodges-Lehmann estimate (median of all pairwise differences) with Moses' interval, whose
    bounds are the order statistics of those differences that the Mann-Whitney U test puts at
    its critical value. Exact for samples without ties up to n1·n2 = 2500, normal beyond.

    It costs n1·n2 differences: beyond 250 000, each side is thinned to 500 evenly spaced order
    statistics (a histogram of a million requests is judged as if it held 500, conservatively)."""
    wb, wc = weighted(base), weighted(current)
    confidence = 1 - alpha
    method = "Hodges-Lehmann"
    if _total(wb) < 2 or _total(wc) < 2:
        return _unbounded(confidence, method, "a side with fewer than 2 values has no spread")
    log = _positive(wb, wc)
    limit = max(2, math.isqrt(_MAX_DIFFERENCES))
    xs, ys = _expand(wb, limit), _expand(wc, limit)
    n1, n2 = len(xs), len(ys)
    if log:
        xs, ys = [math.log(x) for x in xs], [math.log(y) for y in ys]
    differences = sorted(y - x for x in xs for y in ys)
    total = n1 * n2
    if total <= _EXACT_U:
        k = _critical_rank(_u_counts(min(n1, n2), max(n1, n2)), alpha)
    else:
        sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
        k = math.floor(total / 2 - _z(confidence) * sd)
    reference = _median(wb)
    middle = (differences[(total - 1) // 2] + differences[total // 2]) / 2
    p_value, _ = mann_whitney(wb, wc)
    if k < 1:
        return Interval(
            _relative(middle, log, reference),
            -math.inf,
            math.inf,
            confidence,
            method,
            p_value,
            f"{n1} and {n2} values are too few for a {_percent(confidence)} % interval",
            bounded=False,
        )
    return _interval(
        middle,
        _weighted_rank(differences, k),
        _weighted_rank(differences, total - k + 1),
        log=log,
        reference=reference,
        confidence=confidence,
        method=method,
        p_value=p_value,
    )


def min_pairs(alpha: float) -> int:
    """Paired rounds :func:`paired_interval` needs for a bounded 1 − ``alpha`` interval: the
    fewest n for which all n pairs changing the same way has probability ≤ α/2 (2^-n)."""
    return max(1, math.ceil(math.log2(2 / alpha) - 1e-9))


def paired_interval(base: Sequence[float], current: Sequence[float], *, alpha: float) -> Interval:
    """Interval of the relative change between paired measurements — round i of the baseline
    revision and round i of the candidate, measured one right after the other — at confidence
    1 − ``alpha``: the Hodges-Lehmann estimate of the per-pair change (median of the Walsh
    averages of the differences, on the log scale when every value is positive) with the
    interval that inverts the Wilcoxon signed-rank test. Exact up to 50 pairs, normal beyond.

    Needs :func:`min_pairs` pairs to be bounded — 8 at α = 0.01, 6 at 0.05: with fewer, even
    every round slower could be chance (7 of 7: p = 2/2^7 = 0.016)."""
    if len(base) != len(current):
        raise ValueError(
            f"paired rounds must come in pairs: {len(base)} baseline round(s), "
            f"{len(current)} current"
        )
    confidence = 1 - alpha
    method = "paired Hodges-Lehmann"
    n = len(base)
    if n == 0:
        return _unbounded(confidence, method, "no rounds")
    log = all(v > 0 for v in base) and all(v > 0 for v in current)
    if log:
        diffs = [math.log(c) - math.log(b) for b, c in zip(base, current, strict=True)]
    else:
        diffs = [c - b for b, c in zip(base, current, strict=True)]
    walsh = sorted((diffs[i] + diffs[j]) / 2 for i in range(n) for j in range(i, n))
    total = len(walsh)
    if n <= _EXACT_T:
        k = _critical_rank(_t_counts(n), alpha)
    else:
        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        k = math.floor(total / 2 - _z(confidence) * sd)
    reference = _median([(b, 1) for b in sorted(base)])
    middle = (walsh[(total - 1) // 2] + walsh[total // 2]) / 2
    p_value = wilcoxon_signed_rank(diffs)
    if k < 1:
        need = min_pairs(alpha)
        return Interval(
            _relative(middle, log, reference),
            -math.inf,
            math.inf,
            confidence,
            method,
            p_value,
            f"{n} round(s) are too few for a {_percent(confidence)} % interval: it needs {need}",
            bounded=False,
        )
    return _interval(
        middle,
        walsh[k - 1],
        walsh[total - k],
        log=log,
        reference=reference,
        confidence=confidence,
        method=method,
        p_value=p_value,
    )


def _moments(w: Weighted) -> tuple[int, float, float]:
    n = _total(w)
    mean = math.fsum(v * c for v, c in w) / n
    variance = math.fsum(c * (v - mean) ** 2 for v, c in w) / (n - 1)
    return n, mean, variance


def mean_interval(base: Weighted, current: Weighted, *, alpha: float) -> Interval:
    """Interval of the relative change of the mean between two independent samples, at
    confidence 1 − ``alpha``: Welch's interval with Satterthwaite's degrees of freedom, for the
    log of the ratio of means (delta method) when both means are positive, else for their
    difference (relative to the baseline's mean: an error rate rising from 0 is +∞)."""
    wb, wc = weighted(base), weighted(current)
    confidence = 1 - alpha
    if _total(wb) < 2 or _total(wc) < 2:
        return _unbounded(confidence, "Welch", "a side with fewer than 2 values has no spread")
    n1, m1, s1 = _moments(wb)
    n2, m2, s2 = _moments(wc)
    log = m1 > 0 and m2 > 0
    if log:
        delta = math.log(m2) - math.log(m1)
        v1, v2 = s1 / (n1 * m1 * m1), s2 / (n2 * m2 * m2)
    else:
        delta = m2 - m1
        v1, v2 = s1 / n1, s2 / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        p = 1.0 if delta == 0 else 0.0
        return _interval(
            delta,
            delta,
            delta,
            log=log,
            reference=m1,
            confidence=confidence,
            method="Welch",
            p_value=p,
        )
    df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    t = _t_quantile(1 - alpha / 2, df)
    return _interval(
        delta,
        delta - t * se,
        delta + t * se,
        log=log,
        reference=m1,
        confidence=confidence,
        method="Welch",
        p_value=min(1.0, 2 * _t_sf(abs(delta) / se, df)),
    )


def change_interval(
    stat: str, base: Weighted, current: Weighted, *, alpha: float, rounds: bool = False
) -> Interval | None:
    """The interval that fits the compared statistic ``stat``, or None when there is none.

    ``rounds``: the samples are per-round statistics (independent units): Hodges-Lehmann.
    Otherwise the median of up to 500 samples a side gets the Hodges-Lehmann shift too, larger
    medians and the other percentiles order statistics, means Welch's interval; ``min``,
    ``max`` and single values have no distribution-free interval, and either side with fewer
    than 2 samples none at all.

    Why not the median's own order-statistic interval for small samples: with the tens of
    samples a test records, it is too wide to decide — at n = 20 its 99 % interval runs from the
    4th to the 17th value, so four scheduler outliers in twenty reach it. Simulated timings of
    20 samples with 20 % outliers (1.3-2x), +30 % slower, tolerance 20 %: order statistics found
    the regression in 107 of 300 runs, the shift interval in 260; neither called an unchanged
    pair regressed. Beyond 500 samples the shift interval would have to thin them (a million
    requests judged as 500: -5 … +16 % where the order statistics give ±0.5 %), while the
    median's own interval is narrow by then (n = 1000: the 46th to the 54th percentile).
    """
    if _total(weighted(base)) < 2 or _total(weighted(current)) < 2:
        return None
    small = max(_total(weighted(base)), _total(weighted(current))) <= _SHIFT_MEDIAN_UP_TO
    if rounds or (stat == "p50" and small):
        return shift_interval(base, current, alpha=alpha)
    if stat in QUANTILES:
        return quantile_interval(QUANTILES[stat], base, current, alpha=alpha)
    if stat == "mean":
        return mean_interval(base, current, alpha=alpha)
    return None


def _percent(fraction: float) -> str:
    """A confidence level for people: 99 %, 99.4 % (not 99.375 %)."""
    return f"{round(fraction * 100, 1):g}"
