"""Verdicts of whole metrics: a metric against its baseline entry (judge), the same metric
measured on two revisions in paired rounds (judge_rounds), and the report row of a verdict."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_bridgeperf.baseline import BaselineMetric, metric_entry
from pytest_bridgeperf.compare import (
    VERDICTS,
    RoundMetric,
    Verdict,
    judge,
    judge_rounds,
    verdict_row,
)
from pytest_bridgeperf.metrics import Metric, Recorder


def _recorded(samples: list[float], **kw: Any) -> Metric:
    return Recorder().record("t", samples, **kw)


def _stored(metric: Metric) -> BaselineMetric:
    entry = metric_entry(metric)
    return BaselineMetric(
        name=metric.name,
        unit=entry["unit"],
        better=entry["better"],
        value=entry["value"],
        stat=entry["stat"],
        noisy=entry["noisy"],
        n=entry["n"],
        hdr=entry.get("hdr"),
        samples=entry.get("samples"),
        rounds=entry.get("rounds"),
        summary=entry.get("summary", {}),
    )


def _judge(current: Metric, base: Metric, tolerance: float = 0.10) -> Verdict:
    return judge(
        current, _stored(base), tolerance=tolerance, min_delta=1e-3, alpha=0.01, comparable=True
    )


def _timings(center: float, n: int, seed: int, spread: float = 0.02) -> list[float]:
    rng = random.Random(seed)
    return [center * rng.lognormvariate(0, spread) for _ in range(n)]


def test_verdicts_list() -> None:
    assert VERDICTS == (
        "ok",
        "regressed",
        "improved",
        "new",
        "not comparable",
        "missing",
        "undecided",
    )


def test_judge_reports_the_interval() -> None:
    verdict = _judge(_recorded(_timings(0.013, 40, 2)), _recorded(_timings(0.010, 40, 1)))
    assert verdict.verdict == "regressed"
    interval = verdict.interval
    assert interval is not None
    assert interval.method == "Hodges-Lehmann"
    assert 0.2 < interval.low < interval.high < 0.4
    text = verdict.describe()
    assert text.startswith("t p50 ")
    assert "99 % CI of the shift +" in text


def test_judge_uses_rounds_when_both_sides_have_them() -> None:
    """Per-round statistics are the independent units: 8 rounds of +30 % are a regression even
    though the pooled samples (every round identical inside) would say so far more strongly,
    and a baseline without rounds is compared sample with sample."""
    base_rounds = _timings(0.010, 8, 1, spread=0.05)
    cur_rounds = [r * 1.3 for r in _timings(0.010, 8, 2, spread=0.05)]
    samples = _timings(0.010, 40, 3)
    base = _recorded(samples, rounds=base_rounds)
    cur = _recorded([s * 1.3 for s in samples], rounds=cur_rounds)

    def width(verdict: Verdict) -> float:
        assert verdict.interval is not None
        return verdict.interval.high - verdict.interval.low

    with_rounds = _judge(cur, base)
    without = _judge(_recorded([s * 1.3 for s in samples]), _recorded(samples))
    # the interval was computed from 8 + 8 rounds, so it is wider than one from 40 + 40 samples
    assert width(with_rounds) > 2 * width(without)
    assert with_rounds.verdict == "regressed"
    # rounds on one side only: samples against samples, not rounds against samples
    assert width(_judge(cur, _recorded(samples))) == pytest.approx(width(without))


def test_verdict_row_carries_the_interval_as_json() -> None:
    base = _recorded(_timings(0.010, 40, 1))
    verdict = _judge(_recorded(_timings(0.0125, 40, 2)), base)
    row = verdict_row(verdict, _stored(base))
    interval = row["interval"]
    assert set(interval) == {"low", "high", "confidence", "method"}
    assert interval["confidence"] == 0.99
    assert interval["low"] < interval["high"]
    json.dumps(row, allow_nan=False)
    # an error rate rising from exactly 0 is +∞ %: JSON has no ∞, so null
    zero = Recorder().record("e", [0.0] * 10, unit="ratio", stat="mean", noisy=True)
    some = Recorder().record("e", [0.01] * 10, unit="ratio", stat="mean", noisy=True)
    rising = judge(some, _stored(zero), tolerance=0.1, min_delta=0, alpha=0.01, comparable=True)
    assert rising.verdict == "regressed"
    row = verdict_row(rising, _stored(zero))
    assert row["interval"]["low"] is None
    assert row["change"] is None
    json.dumps(row, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# --perf-against: paired rounds of two revisions


def _round_metrics(values: list[float]) -> list[Metric]:
    return [Recorder().record("latency", [value] * 3) for value in values]


def _against(base: Sequence[RoundMetric], cur: Sequence[RoundMetric], **kw: Any) -> Verdict:
    args: dict[str, Any] = {"tolerance": 0.10, "min_delta": 1e-3, "alpha": 0.01}
    args.update(kw)
    return judge_rounds("latency", base, cur, **args)


def test_judge_rounds_paired_timings() -> None:
    base = _timings(0.010, 10, 1, spread=0.1)
    verdict = _against(_round_metrics(base), _round_metrics([b * 1.4 for b in base]))
    assert verdict.verdict == "regressed"
    assert verdict.change == pytest.approx(0.4, rel=1e-3)
    assert verdict.baseline == pytest.approx(sorted(base)[4] / 2 + sorted(base)[5] / 2, rel=2e-3)
    assert "paired change" in verdict.basis
    same = _against(_round_metrics(base), _round_metrics(_timings(0.010, 10, 2, spread=0.01)))
    assert same.verdict in ("ok", "undecided")
    assert _against(
        _round_metrics(base[:6]), _round_metrics([b * 2 for b in base[:6]])
    ).verdict == ("undecided")


def test_judge_rounds_looks_split_alpha() -> None:
    """Judging after every few rounds and stopping at the first decision: each look at α/looks.
    Eight rounds decide at α = 0.01 but not at 0.01 / 4 (that needs 10)."""
    base = _timings(0.010, 8, 1, spread=0.01)
    cur = [b * 1.5 for b in base]
    assert _against(_round_metrics(base), _round_metrics(cur)).verdict == "regressed"
    four_looks = _against(_round_metrics(base), _round_metrics(cur), looks=4)
    assert four_looks.verdict == "undecided"
    assert "it needs 10" in four_looks.basis
    with pytest.raises(ValueError, match="looks must be at least 1"):
        _against(_round_metrics(base), _round_metrics(cur), looks=0)


def test_judge_rounds_other_verdicts() -> None:
    base = _round_metrics([0.01] * 8)
    assert _against(base, []).verdict == "missing"
    new = _against([], _round_metrics([0.01] * 8))
    assert new.verdict == "new"
    assert new.current == pytest.approx(0.01, rel=1e-3)  # HDR: 3 significant digits
    with pytest.raises(ValueError, match="8 round\\(s\\) of the reference revision, 7 of this one"):
        _against(base, _round_metrics([0.01] * 7))
    # deterministic metrics: the median round, exactly against the tolerance
    counts = [Recorder().record("latency", n, unit="count") for n in (10, 10, 10)]
    more = [Recorder().record("latency", n, unit="count") for n in (12, 12, 13)]
    exact = _against(counts, more)
    assert exact.verdict == "regressed"
    assert "exact" in exact.basis
    # a timing measured under a memory tracer in any round is not comparable
    distorted = _round_metrics([0.01] * 8)
    distorted[3].distorted = "a memory tracer ran"
    assert _against(base, distorted).verdict == "not comparable"
    # the reference revision recorded it as another unit: starts afresh
    other = _against(_round_metrics([0.01] * 8), [*counts, *more, *counts[:2]])
    assert other.verdict == "new"
    assert other.current == 10


def test_judge_rounds_accepts_baseline_metrics() -> None:
    """Rounds that travelled as baseline entries (JSON) judge like live metrics."""
    base = _timings(0.010, 9, 4, spread=0.05)
    live = _round_metrics(base)
    stored = [_stored(m) for m in live]
    cur = _round_metrics([b * 1.5 for b in base])
    assert _against(stored, cur).verdict == _against(live, cur).verdict == "regressed"
