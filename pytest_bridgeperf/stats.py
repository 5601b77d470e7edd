"""Distributions, percentiles and the verdict rules.

Timing distributions live in HDR histograms (``hdrhistogram``, values in integer nanoseconds,
3 significant digits, 1 ns .. 1 h), stored in HdrHistogram's standard compressed encoding so any
HdrHistogram tool can read a baseline. Other noisy metrics keep a capped, order-preserving sample
reservoir. No pytest here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from .intervals import Interval, change_interval, mann_whitney, paired_interval
from .units import format_change, format_value

__all__ = [
    "ALPHA",
    "Comparison",
    "Interval",
    "LatencyHistogram",
    "compare_distributions",
    "compare_exact",
    "compare_paired",
    "interval_verdict",
    "mann_whitney",
    "percentile",
    "regression_margin",
    "thin_samples",
]

#: Timing verdicts use two-sided 1 − ALPHA confidence intervals (and tests at ALPHA where no
#: interval exists).
ALPHA = 0.01

_NS = 1_000_000_000
_LOWEST_NS = 1
_HIGHEST_NS = 3600 * _NS
_SIGNIFICANT_DIGITS = 3
#: Reservoirs of non-timing samples are thinned to this many order statistics.
MAX_SAMPLES = 1000


class LatencyHistogram:
    """An HDR histogram of durations. Public values are seconds; storage is nanoseconds."""

    __slots__ = ("_h",)

    def __init__(self, hdr: HdrHistogram | None = None) -> None:
        self._h = (
            hdr if hdr is not None else HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _SIGNIFICANT_DIGITS)
        )

    # recording -------------------------------------------------------------------------------
    def record(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` samples of ``seconds``, exactly to 3 significant digits, from 0 to
        one hour (the histogram's range). Anything else raises ``ValueError``: a negative
        duration used to become 1 ns and a longer one ~3601 s, silently."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise ValueError(f"a duration must be a number of seconds, got {seconds!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a duration must be finite and non-negative, got {seconds!r} s")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"a sample count must be a whole number >= 1, got {count!r}")
        nanoseconds = round(seconds * _NS)
        if nanoseconds > _HIGHEST_NS:
            raise ValueError(
                f"duration {seconds:g} s is longer than {_HIGHEST_NS // _NS} s (1 h), the "
                "longest a latency histogram stores"
            )
        # 0 is recorded as 0 (HdrHistogram's bucket 0), not raised to the 1 ns lowest value
        self._h.record_value(nanoseconds, count)

    def record_ns(self, nanoseconds: int, count: int = 1) -> None:
        value = min(max(nanoseconds, _LOWEST_NS), _HIGHEST_NS)
        self._h.record_value(value, count)

    def merge(self, other: LatencyHistogram) -> None:
        if other.count:  # hdrh's add() would take an empty histogram's minimum as 0
            self._h.add(other._h)

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> LatencyHistogram:
        hist = cls()
        for sample in samples:
            hist.record(sample)
        return hist

    # reading ---------------------------------------------------------------------------------
    @property
    def hdr(self) -> HdrHistogram:
        return self._h

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile(self, q: float) -> float:
        """The value at percentile ``q`` (0..100) in seconds; ``nan`` when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within 0..100, got {q!r}")
        if self.count == 0:
            return math.nan
        # Nearest rank, as `percentile()` and the Java/C HdrHistogram: the python hdrh rounds the
        # target rank half up instead, which put p90 of 7 samples on the 6th value.
        target = max(1, math.ceil(q / 100 * self.count))
        h, seen = self._h, 0
        for index in range(h.counts_len):
            seen += h.get_count_at_index(index)
            if seen >= target:
                value = h.get_value_from_index(index)
                edge = h.get_highest_equivalent_value if q else h.get_lowest_equivalent_value
                return float(edge(value)) / _NS
        return self.max

    @property
    def mean(self) -> float:
        if not self.count:
            return math.nan
        # hdrh's get_mean_value(), without its slow iterator
        median = self._h._hdr_median_equiv_value
        total = sum(count * median(value) for value, count in self._buckets())
        return float(total) / self.count / _NS

    @property
    def stdev(self) -> float:
        return float(self._h.get_stddev()) / _NS if self.count else math.nan

    @property
    def max(self) -> float:
        return float(self._h.get_max_value()) / _NS if self.count else math.nan

    @property
    def min(self) -> float:
        return float(self._h.get_min_value()) / _NS if self.count else math.nan

    def items(self) -> Iterator[tuple[float, int]]:
        """``(value_seconds, count)`` for every non-empty bucket, ascending."""
        # Same values as hdrh's RecordedIterator, ~30x faster: that iterator costs ~50 ms for a
        # 10 ms histogram, and every verdict walks two of them.
        for value, count in self._buckets():
            yield value / _NS, count

    def _buckets(self) -> Iterator[tuple[int, int]]:
        h = self._h
        limit = min(h.counts_len, h.encoder.payload.counts_len)
        for index, count in enumerate(h.counts[:limit]):
            if count:
                yield h.get_highest_equivalent_value(h.get_value_from_index(index)), int(count)

    # storage ---------------------------------------------------------------------------------
    def encode(self) -> str:
        return bytes(self._h.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> LatencyHistogram:
        try:
            hdr = HdrHistogram.decode(text.encode("ascii"))
        except Exception as exc:  # the decoder raises a mix of zlib/base64/struct errors
            raise ValueError(f"not an HdrHistogram compressed encoding: {exc}") from None
        if hdr is None:
            raise ValueError("not an HdrHistogram compressed encoding")
        return cls(hdr)

    def __repr__(self) -> str:
        p50 = self.percentile(50) if self.count else None
        return f"<LatencyHistogram count={self.count} p50={p50}>"


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples (the HdrHistogram definition)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q!r}")
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(q / 100 * n))
    return float(sorted_samples[min(rank, n) - 1])


def thin_samples(samples: Sequence[float], limit: int = MAX_SAMPLES) -> list[float]:
    """Sorted samples thinned to at most ``limit`` evenly spaced order statistics (min/max kept)."""
    ordered = sorted(float(s) for s in samples)
    n = len(ordered)
    if n <= limit:
        return ordered
    return [ordered[round(i * (n - 1) / (limit - 1))] for i in range(limit)]


@dataclass(frozen=True)
class Comparison:
    """Outcome of comparing a current metric with its baseline."""

    verdict: str  # ok | regressed | improved | undecided
    change: float  # relative change of the compared statistic, + means larger
    p_value: float | None  # None when no test was possible (single values)
    basis: str  # human words for why
    interval: Interval | None = None  # of the relative change, when one decided the verdict


def _worse(change: float, better: str) -> float:
    """Change expressed so that positive means worse."""
    return change if better == "lower" else -change


def relative_change(baseline: float, current: float) -> float:
    if baseline == current:
        return 0.0
    if baseline == 0:
        return math.inf if current > 0 else -math.inf
    return (current - baseline) / abs(baseline)


def compare_exact(baseline: float, current: float, *, better: str, tolerance: float) -> Comparison:
    """Deterministic metrics (counts, Python-heap bytes): tolerance alone decides."""
    change = relative_change(baseline, current)
    worse = _worse(change, better)
    if worse > tolerance:
        verdict = "regressed"
    elif -worse > tolerance:
        verdict = "improved"
    else:
        verdict = "ok"
    return Comparison(verdict, change, None, f"tolerance {_pct(tolerance)}, exact")


def regression_margin(tolerance: float, floor: float, reference: float) -> float:
    """The smallest relative change that counts: the tolerance, or the absolute floor relative
    to the baseline's value when that is larger (a 30 % change of 50 µs is scheduler jitter)."""
    if floor <= 0:
        return tolerance
    if reference == 0:
        return math.inf
    return max(tolerance, floor / abs(reference))


def interval_verdict(interval: Interval, *, better: str, margin: float) -> str:
    """``regressed`` when the whole interval is worse than ``margin``, ``improved`` when it is
    all better than ``-margin``, ``ok`` when no change worse than the margin is plausible, and
    ``undecided`` when the interval reaches past the margin without clearing it."""
    if better == "lower":
        low, high = interval.low, interval.high
    else:
        low, high = -interval.high, -interval.low
    if low > margin:
        return "regressed"
    if high < -margin:
        return "improved"
    if high <= margin:
        return "ok"
    return "undecided"


def _interval_basis(
    interval: Interval, verdict: str, tolerance: float, floor: float, reference: float
) -> str:
    parts = [f"tolerance {_pct(tolerance)}"]
    of = {"Hodges-Lehmann": " of the shift", "paired Hodges-Lehmann": " of the paired change"}
    if regression_margin(tolerance, floor, reference) > tolerance:
        parts.append(
            f"absolute floor {format_value(floor, 's')} "
            f"({format_change(regression_margin(tolerance, floor, reference)).lstrip('+')})"
        )
    parts.append(
        f"{_percent(interval.confidence)} % CI{of.get(interval.method, '')} "
        f"{format_change(interval.low)} … {format_change(interval.high)}"
    )
    if interval.p_value is not None:
        parts.append(f"p = {_fmt_p(interval.p_value)}")
    return ", ".join(parts)


def _guarded(verdict: str, worse: float, threshold: float) -> tuple[str, str]:
    """The interval's verdict, unless the compared statistic's own change contradicts it.

    A shift interval describes the bulk of the distribution, the compared statistic may move
    on its own: a median jumping between the two modes of a cache's hits and misses triples
    while the bulk stays put. Regressed therefore also needs the statistic's change beyond
    the margin (the rule before intervals), ok needs it within."""
    if verdict == "regressed" and not worse > threshold:
        return "undecided", "; the statistic itself changed by less than the margin"
    if verdict == "improved" and not -worse > threshold:
        return "undecided", "; the statistic itself changed by less than the margin"
    if verdict == "ok" and worse > threshold:
        return "undecided", "; the statistic itself changed by more than the margin"
    if verdict == "undecided":
        return verdict, " — the interval spans the tolerance: more samples or rounds would decide"
    return verdict, ""


def compare_distributions(
    baseline_value: float,
    current_value: float,
    baseline_dist: Sequence[tuple[float, int]],
    current_dist: Sequence[tuple[float, int]],
    *,
    better: str,
    tolerance: float,
    floor: float,
    alpha: float = ALPHA,
    stat: str = "p50",
    rounds: bool = False,
) -> Comparison:
    """Noisy metrics, judged on a 1 − ``alpha`` confidence interval of the relative change of
    ``stat`` (see :func:`pytest_bridgeperf.intervals.change_interval`; ``rounds``: the
    distributions are per-round statistics): regressed or improved only when the whole
    interval lies beyond the margin — the tolerance, or ``floor`` (absolute) when that is
    larger —, ok when nothing worse than the margin is plausible, undecided otherwise. The
    change of ``stat`` itself must agree: beyond the margin for regressed or improved, within
    it for ok (else undecided; see :func:`_guarded`).

    Where no interval exists (``min``/``max``, too few samples for a percentile) the earlier
    rule decides: the change of ``stat`` exceeds the margin and a Mann-Whitney U test rejects
    "same distribution" at ``alpha`` (or a side holds a single value)."""
    change = relative_change(baseline_value, current_value)
    interval = change_interval(stat, baseline_dist, current_dist, alpha=alpha, rounds=rounds)
    worse = _worse(change, better)
    if interval is not None and interval.bounded:
        threshold = regression_margin(tolerance, floor, baseline_value)
        verdict, why = _guarded(
            interval_verdict(interval, better=better, margin=threshold), worse, threshold
        )
        basis = _interval_basis(interval, verdict, tolerance, floor, baseline_value) + why
        return Comparison(verdict, change, interval.p_value, basis, interval)
    delta = abs(current_value - baseline_value)
    n_base = sum(c for _, c in baseline_dist)
    n_cur = sum(c for _, c in current_dist)
    p_value: float | None = None
    if n_base >= 2 and n_cur >= 2:
        p_value, _ = mann_whitney(baseline_dist, current_dist)
    beyond = abs(worse) > tolerance and delta > floor
    significant = p_value is None or p_value < alpha
    basis = f"tolerance {_pct(tolerance)}"
    basis += f", p = {_fmt_p(p_value)}" if p_value is not None else ", single value"
    if interval is not None:  # an interval exists for this statistic, but not for this data
        basis += f", no interval: {interval.note}"
    elif p_value is not None:
        basis += f", no interval for {stat}"
    if beyond and significant:
        verdict = "regressed" if worse > 0 else "improved"
    else:
        verdict = "ok"
        if abs(worse) > tolerance and delta <= floor:
            basis += ", below the absolute floor"
        elif abs(worse) > tolerance and not significant:
            basis += f", not significant at α = {alpha:g}"
    return Comparison(verdict, change, p_value, basis)


def compare_paired(
    baseline_rounds: Sequence[float],
    current_rounds: Sequence[float],
    *,
    better: str,
    tolerance: float,
    floor: float,
    alpha: float = ALPHA,
) -> Comparison:
    """The same-job A/B comparison: round i of each side measured one right after the other
    (per-round values of the compared statistic). Judged like :func:`compare_distributions`
    on :func:`pytest_bridgeperf.intervals.paired_interval`; with too few rounds for an interval
    the verdict is ``undecided`` and the basis says how many it needs. ``change`` is the
    interval's estimate (the median per-pair change), not a ratio of pooled values."""
    interval = paired_interval(baseline_rounds, current_rounds, alpha=alpha)
    reference = statistics.median(baseline_rounds) if baseline_rounds else 0.0
    if all(b == c for b, c in zip(baseline_rounds, current_rounds, strict=True)):
        # identical per round (a deterministic value measured each round): nothing changed
        return Comparison("ok", 0.0, 1.0, f"tolerance {_pct(tolerance)}, identical rounds")
    if not interval.bounded:
        basis = f"tolerance {_pct(tolerance)}, no interval: {interval.note}"
        if interval.p_value is not None:
            basis += f", p = {_fmt_p(interval.p_value)}"
        return Comparison("undecided", interval.estimate, interval.p_value, basis, interval)
    threshold = regression_margin(tolerance, floor, reference)
    verdict, why = _guarded(
        interval_verdict(interval, better=better, margin=threshold),
        _worse(interval.estimate, better),
        threshold,
    )
    basis = _interval_basis(interval, verdict, tolerance, floor, reference) + why
    return Comparison(verdict, interval.estimate, interval.p_value, basis, interval)


def _pct(fraction: float) -> str:
    percent = fraction * 100
    return f"{percent:g} %"


def _fmt_p(p: float) -> str:
    if p < 0.0001:
        return f"{p:.1e}"
    return f"{p:.4f}".rstrip("0").rstrip(".") if p < 0.01 else f"{p:.2f}"


def _percent(fraction: float) -> str:
    """A confidence level for people: 99 %, 99.4 % (not 99.375 %)."""
    return f"{round(fraction * 100, 1):g}"
