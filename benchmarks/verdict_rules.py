"""How often does each timing verdict rule say "regressed" — the confidence-interval rule of
``stats.compare_distributions`` beside the rule it replaced (change beyond the tolerance and a
Mann-Whitney U test at α), on the same simulated samples.

Simulated rather than timed so that the figures are the rules', not this machine's: every
scenario draws baseline and current samples from known distributions, seeded, and counts the
verdicts over ``--reps`` repetitions. Tolerance 10 %, α = 0.01, no absolute floor.

Usage: ``python benchmarks/verdict_rules.py [--reps 300]``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from collections.abc import Callable

from pytest_bridgeperf.intervals import mann_whitney
from pytest_bridgeperf.stats import LatencyHistogram, compare_distributions, relative_change

TOLERANCE = 0.10
ALPHA = 0.01

Draw = Callable[[random.Random, float], list[float]]


def lognormal(n: int, sigma: float) -> Draw:
    return lambda rng, scale: [scale * rng.lognormvariate(math.log(0.010), sigma) for _ in range(n)]


def cache(n: int, misses: float) -> Draw:
    """Hits at ~10 ms, misses at ~50 ms; ``scale`` multiplies the miss rate (a tail regression)."""

    def draw(rng: random.Random, scale: float) -> list[float]:
        return [
            (0.050 if rng.random() < misses * scale else 0.010) * rng.lognormvariate(0, 0.1)
            for _ in range(n)
        ]

    return draw


def previous_rule(
    stat: str, base: LatencyHistogram, cur: LatencyHistogram, q: float
) -> tuple[str, float]:
    """The verdict before intervals: the change of the statistic beyond the tolerance, and a
    Mann-Whitney U test rejecting "same distribution" at α."""
    b, c = base.percentile(q), cur.percentile(q)
    change = relative_change(b, c)
    p, _ = mann_whitney(base.items(), cur.items())
    if abs(change) > TOLERANCE and p < ALPHA:
        return ("regressed" if change > 0 else "improved"), change
    return "ok", change


def interval_rule(
    stat: str, base: LatencyHistogram, cur: LatencyHistogram, q: float
) -> tuple[str, float]:
    b, c = base.percentile(q), cur.percentile(q)
    result = compare_distributions(
        b,
        c,
        list(base.items()),
        list(cur.items()),
        better="lower",
        tolerance=TOLERANCE,
        floor=0.0,
        alpha=ALPHA,
        stat=stat,
    )
    return result.verdict, result.change


SCENARIOS: list[tuple[str, str, Draw, float, str]] = [
    # name, compared statistic, distribution, true factor, what a good rule says
    ("A/A, 30 samples (σ 0.1)", "p50", lognormal(30, 0.1), 1.00, "never regressed"),
    ("+8 %, 30 samples (within tolerance)", "p50", lognormal(30, 0.1), 1.08, "never regressed"),
    ("+8 %, 3000 samples (within tolerance)", "p50", lognormal(3000, 0.1), 1.08, "never regressed"),
    (
        "+12 %, 30 samples (barely beyond)",
        "p50",
        lognormal(30, 0.1),
        1.12,
        "regressed or undecided",
    ),
    ("+30 %, 30 samples", "p50", lognormal(30, 0.1), 1.30, "regressed"),
    ("+30 %, 10 samples, σ 0.3", "p50", lognormal(10, 0.3), 1.30, "regressed or undecided"),
    ("cache A/A, p95, 500 samples, 5 % misses", "p95", cache(500, 0.05), 1.00, "never regressed"),
    ("cache misses 3 % → 9 %, p95, 500 samples", "p95", cache(500, 0.03), 3.00, "regressed"),
]

_Q = {"p50": 50.0, "p95": 95.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"tolerance {TOLERANCE:.0%}, α = {ALPHA}, {args.reps} repetitions per scenario")
    print(
        f"{'scenario':44} {'rule':9} {'regressed':>10} {'undecided':>10} {'ok':>6} {'improved':>9}"
    )
    for index, (name, stat, draw, factor, wanted) in enumerate(SCENARIOS):
        counts: dict[str, Counter[str]] = {"previous": Counter(), "interval": Counter()}
        rng = random.Random(index)
        for _ in range(args.reps):
            base = LatencyHistogram.from_samples(draw(rng, 1.0))
            cur = LatencyHistogram.from_samples(draw(rng, factor))
            counts["previous"][previous_rule(stat, base, cur, _Q[stat])[0]] += 1
            counts["interval"][interval_rule(stat, base, cur, _Q[stat])[0]] += 1
        for rule, counter in counts.items():
            cells = " ".join(
                f"{counter[v] / args.reps:>{w}.1%}"
                for v, w in (("regressed", 10), ("undecided", 10), ("ok", 6), ("improved", 9))
            )
            label = name if rule == "previous" else f"  (want: {wanted})"
            print(f"{label:44} {rule:9} {cells}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
