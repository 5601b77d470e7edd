"""The A/B trial's stopping rule: where it looks, at what level, and how often it errs.

The error rates are those of the real :class:`~pytest_bridgeperf.against.trial.Trial` on
simulated rounds (a seeded generator, so every run of these tests sees the same numbers): the
per-pair change is the true change times log-normal noise of the size this machine's rounds of
a ~5 ms function showed beside a busy core (a 3.5 % standard deviation per pair).
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from pytest_bridgeperf.against.trial import (
    SideRun,
    Trial,
    TrialSettings,
    look_alpha,
    look_points,
)
from pytest_bridgeperf.intervals import min_pairs
from pytest_bridgeperf.metrics import Budgets, Recorder
from pytest_bridgeperf.stats import compare_paired

NOISE = 0.035  # per-pair standard deviation of the log change


def test_looks_every_second_block_then_every_fourth_up_to_the_cap() -> None:
    assert look_points(8, 60) == (8, 10, 12, 14, 16, *range(20, 61, 4))
    assert look_points(7, 20) == (8, 10, 12, 14, 16, 20)
    assert look_points(8, 17) == (8, 10, 12, 14, 16, 17)  # the cap is always a look
    assert look_points(8, 42) == (8, 10, 12, 14, 16, *range(20, 41, 4), 42)
    assert look_points(12, 60)[0] == 12
    assert look_points(1, 1) == (1,)


@pytest.mark.parametrize("cap", [8, 10, 17, 20, 40, 60, 100])
def test_the_first_look_can_decide_and_the_level_allows_for_every_look(cap: int) -> None:
    level, points = look_alpha(0.05, cap)
    assert points[-1] == cap
    assert min_pairs(level) <= points[0]  # a look before that could only say undecided
    assert list(points) == sorted(set(points))
    # never less cautious than Pocock's constant level for as many looks as are taken
    pocock = {1: 0.05, 2: 0.0294, 3: 0.0221, 5: 0.0158, 8: 0.0120, 11: 0.0101, 15: 0.0087}
    below = [k for k in pocock if k <= len(points)]
    assert level <= pocock[max(below)] + 1e-4
    # and never much more wasteful than Bonferroni (the looks are counted before the first one
    # is known, which may count a look or two that cannot decide)
    assert level >= 0.05 / (len(points) + 2)


def test_a_level_other_than_five_percent_is_split_evenly() -> None:
    level, points = look_alpha(0.01, 60)
    assert 0.01 / (len(points) + 2) <= level <= 0.01 / len(points)
    assert min_pairs(level) <= points[0]


def _round(value: float) -> SideRun:
    recorder = Recorder()
    recorder.record("t", value, unit="s", noisy=True)
    return SideRun("passed", dict(recorder.metrics))


def _trials(change: float, tolerance: float, count: int, seed: int) -> tuple[Counter[str], int]:
    """``count`` simulated trials of a metric whose true relative change is ``change``:
    the verdicts, and the median number of blocks a trial took."""
    rng = random.Random(seed)
    settings = TrialSettings(tolerance=tolerance, warmup=0, max_time=math.inf)
    verdicts: Counter[str] = Counter()
    blocks = []
    for _ in range(count):

        def run_round(side: str, mode: str) -> SideRun:
            scale = 1 + change if side == "A" else 1.0
            return _round(0.005 * scale * math.exp(rng.gauss(0, NOISE / math.sqrt(2))))

        result = Trial(settings, Budgets(), rng).run(run_round)
        assert result.status == "compared"
        verdicts[result.rows[0]["verdict"]] += 1
        blocks.append(result.blocks)
    blocks.sort()
    return verdicts, blocks[len(blocks) // 2]


def test_unchanged_code_is_never_called_slower() -> None:
    verdicts, _ = _trials(0.0, 0.02, 150, seed=1)
    assert verdicts["regressed"] == 0
    assert verdicts["improved"] == 0
    assert verdicts["ok"] >= 0.85 * 150  # decided, not left undecided


def test_a_change_right_at_the_tolerance_is_called_a_regression_rarely() -> None:
    # the boundary case: any "regressed" is an error; the design allows 5 % for the trial
    verdicts, _ = _trials(0.02, 0.02, 300, seed=2)
    assert verdicts["regressed"] <= 0.05 * 300


def test_a_change_twice_the_tolerance_is_caught() -> None:
    verdicts, blocks = _trials(0.045, 0.02, 150, seed=3)
    assert verdicts["regressed"] >= 0.95 * 150
    assert verdicts["ok"] == verdicts["improved"] == 0
    assert blocks <= 32


def test_a_clear_change_is_decided_at_the_first_look() -> None:
    verdicts, blocks = _trials(0.20, 0.02, 60, seed=4)
    assert verdicts["regressed"] == 60
    assert blocks == 8


def test_the_simulation_tells_the_cases_apart() -> None:
    # a guard on the guards above: looking at every block at the full 5 % would call the
    # boundary case a regression far more often than the 5 % the design allows
    rng = random.Random(5)
    wrong = 0
    for _ in range(100):
        pairs = [(0.005, 0.005 * 1.02 * math.exp(rng.gauss(0, NOISE))) for _ in range(60)]
        for n in range(6, 61):
            base = [b for b, _ in pairs[:n]]
            cur = [c for _, c in pairs[:n]]
            verdict = compare_paired(
                base, cur, better="lower", tolerance=0.02, floor=0.0, alpha=0.05
            ).verdict
            if verdict != "undecided":
                wrong += verdict == "regressed"
                break
    assert wrong > 0.05 * 100
