"""One A/B trial: a perf test measured in interleaved rounds on this checkout (side A) and on
another revision (side B), until every metric's verdict is decided or a cap is reached.

No pytest here: the caller hands in ``run_round(side, mode)``, which runs the test once, as a
whole, on one side and returns what it recorded.

The design follows duet benchmarking and randomized multiple interleaved trials: both versions
run close together in time, in blocks of one round each, in a randomized balanced order (each
pair of blocks is ``AB BA`` or ``BA AB``), so the machine's mood hits both sides alike and a
drift over the trial cancels out. A metric's verdict comes from the paired per-block values
(see :mod:`pytest_bridgeperf.intervals`): the interval of the relative change B → A is checked
after every block, like Google's tachometer auto-sampling — a clear 40 % change is decided in a
few rounds, a 3 % one needs more.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..compare import Verdict
from ..evaluation import Failure, failure_message, report_row
from ..intervals import Interval, min_pairs
from ..metrics import BudgetCheck, Budgets, Metric, check_budgets
from ..stats import LatencyHistogram, compare_exact, compare_paired, thin_samples
from ..units import format_change, format_value

__all__ = [
    "SideRun",
    "Trial",
    "TrialResult",
    "TrialSettings",
    "aggregate",
    "block_orders",
    "look_alpha",
]

SIDES = ("A", "B")


@dataclass
class SideRun:
    """One whole run of the test on one side."""

    outcome: str  # passed | failed | skipped | error | missing
    metrics: dict[str, Metric] = field(default_factory=dict)
    longrepr: str | None = None  # the failure as pytest prints it
    crash: str | None = None  # its one-line reason
    duration: float = 0.0
    sections: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


RunRound = Callable[[str, str], SideRun]


@dataclass(frozen=True)
class TrialSettings:
    tolerance: float
    max_rounds: int = 60  # measured rounds per side
    max_time: float = 120.0  # seconds for the whole trial of one test, warm-up included
    warmup: int = 1  # unmeasured rounds per side first
    #: the error rate of a whole trial: each look's interval is at the level look_alpha() gives
    alpha: float = 0.05
    label: str = "REF"  # how B is named in messages: "origin/main (3f2a9c1)"
    min_delta: float = 0.0  # an absolute floor, as in the committed-baseline mode

    @property
    def per_look(self) -> tuple[float, tuple[int, ...]]:
        """The α of each look and the block counts at which the trial looks (see
        :func:`look_alpha`)."""
        return look_alpha(self.alpha, self.max_rounds)


#: Pocock's critical value C_P(K) for an overall two-sided α of 0.05 over K equally spaced
#: looks (Pocock 1977; Jennison & Turnbull, "Group Sequential Methods", table 2.1): each look
#: tests at the nominal level 2·(1 − Φ(C_P)), which keeps the chance of any false decision over
#: all K looks at 0.05, allowing for the looks sharing their data — less wasteful than
#: Bonferroni's 0.05/K (0.0071 at K = 7).
_POCOCK_05 = {
    1: 1.960, 2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413, 6: 2.453, 7: 2.485, 8: 2.512,
    9: 2.535, 10: 2.555, 11: 2.572, 12: 2.588, 15: 2.626, 20: 2.672,
}  # fmt: skip

#: Looks fall after every second block (a whole ``AB BA`` pair) up to this many blocks, then
#: after every fourth: most decisions come early, and fewer late looks leave each look a less
#: strict level. Simulated (1,000 trials of per-pair noise of 3.5 %, as rounds of a ~5 ms
#: function showed here beside a busy core; ``tests/test_against_trial.py`` checks the same on
#: fewer), the schedule to 60 blocks looks 16 times at 0.0082 each and, against looking after
#: every second block to 40, caught a 4.5 % change at a 2 % tolerance in 99.5 % of trials rather
#: than 94.7 %, decided unchanged code in 95 % rather than 82 %, still took 8 blocks for a clear
#: change, and called a change right at the tolerance a regression in 2.8 % (1.9 %).
_DENSE_LOOKS = 16


def _per_look(alpha: float, looks: int) -> float:
    if alpha != 0.05:
        return alpha / looks  # Bonferroni: always valid, more cautious
    if looks > 20:
        return 0.0075 * 20 / looks  # past the table: Bonferroni-like from K = 20, cautious
    known = sorted(_POCOCK_05)
    below = max(k for k in known if k <= looks)
    above = min(k for k in known if k >= looks)
    c_low, c_high = _POCOCK_05[below], _POCOCK_05[above]
    c = c_low if above == below else c_low + (c_high - c_low) * (looks - below) / (above - below)
    return round(2 * (1 - statistics.NormalDist().cdf(c)), 4)


def look_points(first: int, max_rounds: int) -> tuple[int, ...]:
    """The block counts at which a trial capped at ``max_rounds`` blocks looks, from ``first``:
    every second block to :data:`_DENSE_LOOKS`, every fourth after, and the cap itself."""
    first += first % 2  # looks fall on whole pairs of blocks
    dense = range(first, min(max_rounds, _DENSE_LOOKS) + 1, 2)
    sparse = range(_DENSE_LOOKS + 4, max_rounds + 1, 4)
    points = [n for n in (*dense, *sparse) if n >= first]
    if not points or points[-1] != max_rounds:
        points.append(max_rounds)
    return tuple(points)


def look_alpha(alpha: float, max_rounds: int) -> tuple[float, tuple[int, ...]]:
    """The α of each look, and the block counts at which to look (:func:`look_points`).

    A trial that stops at the first decided look would, at α per look, raise its false-alarm
    rate with every look; each look uses Pocock's constant nominal level for the number of
    looks instead (Bonferroni's α/K for an α other than 0.05). A look can decide only from
    ``min_pairs`` of that level on (8 blocks at the default 60), so the looks are counted from
    there."""
    looks = 1
    for _ in range(32):
        points = look_points(min_pairs(_per_look(alpha, looks)), max_rounds)
        if len(points) <= looks:
            break
        looks = len(points)
    level = _per_look(alpha, looks)
    return level, look_points(min(max_rounds, min_pairs(level)), max_rounds)


@dataclass
class TrialResult:
    """What the trial found, ready for the reports."""

    status: str  # compared | a-failed | a-skipped | b-failed | b-missing
    rows: list[dict[str, Any]]
    failures: list[Failure]
    notes: list[str]
    blocks: int
    elapsed: float
    order: str  # the rounds as run, e.g. "AB BA BA AB"
    a_last: SideRun | None = None
    b_last: SideRun | None = None
    explain: dict[str, str] = field(default_factory=dict)

    def message(self) -> str:
        """The failure message, laid out as the committed-baseline mode's."""
        return failure_message(self.failures, self.notes, self.explain)


def block_orders(rng: random.Random) -> Iterator[str]:
    """An endless randomized balanced schedule: each pair of blocks is AB BA or BA AB."""
    while True:
        first = "AB" if rng.random() < 0.5 else "BA"
        yield first
        yield first[::-1]


class Trial:
    """The A/B trial of one test."""

    def __init__(
        self,
        settings: TrialSettings,
        budgets: Budgets,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.budgets = budgets
        self.rng = rng
        self.clock = clock
        self.order: list[str] = []

    def run(self, run_round: RunRound) -> TrialResult:
        settings = self.settings
        start = self.clock()
        orders = block_orders(self.rng)
        last: dict[str, SideRun] = {}
        # Warm-up: each side's first run pays for imports, caches and .pyc compilation (the
        # worktree of B has none); it is run, checked, and not measured.
        for _ in range(settings.warmup):
            order = next(orders)
            self.order.append(order.lower())
            for side in order:
                last[side] = run_round(side, "warmup")
            stopped = self._stopped(last, [], start)
            if stopped is not None:
                return stopped
        blocks: list[tuple[SideRun, SideRun]] = []
        decided: dict[str, str] = {}
        _, looks = settings.per_look
        while True:
            order = next(orders)
            self.order.append(order)
            for side in order:
                last[side] = run_round(side, "measure")
                if not last[side].passed:
                    break  # the other side's run of this block would be of no use
            stopped = self._stopped(last, blocks, start)
            if stopped is not None:
                return stopped
            blocks.append((last["A"], last["B"]))
            if len(blocks) in looks:
                decided = {name: mt.verdict for name, mt in self._metrics(blocks).items()}
                if all(v != "undecided" for v in decided.values()):
                    break
            if len(blocks) >= settings.max_rounds or self.clock() - start >= settings.max_time:
                break
        return self._result("compared", blocks, start, last)

    # ------------------------------------------------------------------------------------------
    def _stopped(
        self, last: dict[str, SideRun], blocks: list[tuple[SideRun, SideRun]], start: float
    ) -> TrialResult | None:
        """A side whose run did not pass ends the trial."""
        a, b = last.get("A"), last.get("B")
        if a is not None and not a.passed:
            status = "a-skipped" if a.outcome == "skipped" else "a-failed"
            return self._result(status, blocks, start, last, failed_a=a)
        if b is not None and not b.passed:
            status = "b-missing" if b.outcome == "missing" else "b-failed"
            if a is None:  # B ran first in its block: A still needs one run for the record
                return self._result(status, blocks, start, last)
            return self._result(status, blocks, start, last, only_a=a)
        return None

    def _metrics(self, blocks: Sequence[tuple[SideRun, SideRun]]) -> dict[str, _MetricTrial]:
        names: list[str] = []
        for a, b in blocks:
            for name in [*a.metrics, *b.metrics]:
                if name not in names:
                    names.append(name)
        return {name: _MetricTrial(name, blocks, self.settings) for name in names}

    def _result(
        self,
        status: str,
        blocks: Sequence[tuple[SideRun, SideRun]],
        start: float,
        last: Mapping[str, SideRun],
        *,
        failed_a: SideRun | None = None,
        only_a: SideRun | None = None,
    ) -> TrialResult:
        settings = self.settings
        label = settings.label
        rows: list[dict[str, Any]] = []
        failures: list[Failure] = []
        notes: list[str] = []
        explain: dict[str, str] = {}
        a_metrics: dict[str, Metric]
        if status == "compared":
            trials = self._metrics(blocks)
            a_metrics = {name: mt.a_total for name, mt in trials.items() if mt.a_total}
        else:
            record = failed_a or only_a
            a_metrics = dict(record.metrics) if record is not None else {}
            if blocks and status.startswith("b-"):  # B failed later: compare what we have
                trials = self._metrics(blocks)
                a_metrics = {name: mt.a_total for name, mt in trials.items() if mt.a_total}
            else:
                trials = {}
        checks = check_budgets(a_metrics.values(), self.budgets)
        for check in checks:
            if not check.passed:
                failures.append(Failure(_budget_text(check), check.metric, "budget", False))
        for name, metric in a_metrics.items():
            mt = trials.get(name)
            checks_of = [c for c in checks if c.metric == name]
            if mt is None:
                verdict, basis = _unpaired(status, label)
                row = report_row(
                    metric,
                    Verdict(
                        name, verdict, metric.unit, metric.stat, metric.value, None, basis=basis
                    ),
                    checks_of,
                    None,
                )
                rows.append(row)
                continue
            row = mt.row(checks_of)
            rows.append(row)
            if mt.verdict == "regressed":
                failures.append(
                    Failure(f"✗ {mt.describe(label)}: regressed", name, "regression", False)
                )
                diff = mt.statement_diff()
                if diff:
                    explain[name] = diff
        for name, mt in trials.items():
            if mt.a_total is None and mt.b_total is not None:
                b = mt.b_total
                rows.append(
                    report_row(
                        None,
                        Verdict(
                            name, "missing", b.unit, b.stat, None, b.value, basis=f"only on {label}"
                        ),
                        [],
                        None,
                    )
                )
        failures.sort(key=lambda f: f.kind != "budget")
        elapsed = self.clock() - start
        if status == "compared":
            undecided = sum(1 for row in rows if row.get("verdict") == "undecided")
            notes.append(
                f"vs {label}: {len(blocks)} round(s) per side in {elapsed:.1f} s"
                + (f", {undecided} metric(s) undecided at the cap" if undecided else "")
            )
        elif status == "b-missing":
            notes.append(f"not on {label}: measured on this checkout only")
        elif status == "b-failed":
            b_run = last.get("B")
            reason = (b_run.crash or b_run.outcome) if b_run is not None else "failed"
            notes.append(f"the test failed on {label} ({reason}): timings not compared")
        return TrialResult(
            status,
            rows,
            failures,
            notes,
            len(blocks),
            elapsed,
            " ".join(self.order),
            a_last=last.get("A"),
            b_last=last.get("B"),
            explain=explain,
        )


def _unpaired(status: str, label: str) -> tuple[str, str]:
    if status == "b-missing":
        return "new", f"not on {label}"
    if status == "b-failed":
        return "not comparable", f"the test failed on {label}"
    return "new", "no comparison (the test did not pass)"


def _budget_text(check: BudgetCheck) -> str:
    return check.describe() + " (over the A rounds)"


class _MetricTrial:
    """One metric across the blocks of a trial."""

    def __init__(
        self, name: str, blocks: Sequence[tuple[SideRun, SideRun]], settings: TrialSettings
    ) -> None:
        self.name = name
        self.settings = settings
        a = [blk[0].metrics.get(name) for blk in blocks]
        b = [blk[1].metrics.get(name) for blk in blocks]
        self.a = [m for m in a if m is not None]
        self.b = [m for m in b if m is not None]
        self.pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        self.a_total = aggregate(self.a) if self.a else None
        self.b_total = aggregate(self.b) if self.b else None
        self.interval: Interval | None = None
        self.change: float | None = None
        self.basis = ""
        self.verdict = self._judge()

    @property
    def reference(self) -> Metric:
        metric = self.a_total or self.b_total
        assert metric is not None
        return metric

    def _judge(self) -> str:
        label = self.settings.label
        tolerance = self.settings.tolerance
        if self.a_total is None:
            return "missing"
        if self.b_total is None:
            self.basis = f"not on {label}"
            return "new"
        metric = self.a_total
        distorted = next((m.distorted for m in self.a + self.b if m.distorted), None)
        if metric.noisy and distorted:
            self.basis = distorted
            return "not comparable"
        a_values = [x.value for x, _ in self.pairs]
        b_values = [y.value for _, y in self.pairs]
        exact = not metric.noisy and len(set(a_values)) == 1 and len(set(b_values)) == 1
        if exact:
            comparison = compare_exact(
                b_values[0], a_values[0], better=metric.better, tolerance=tolerance
            )
            self.change = comparison.change
            self.basis = f"tolerance {tolerance * 100:g} %, exact, {len(self.pairs)} round(s)"
            return comparison.verdict
        alpha, _ = self.settings.per_look
        paired = compare_paired(
            b_values,
            a_values,
            better=metric.better,
            tolerance=tolerance,
            floor=self.settings.min_delta if metric.unit == "s" else 0.0,
            alpha=alpha,
        )
        self.interval = paired.interval
        self.change = paired.change
        self.basis = f"{paired.basis}, {len(self.pairs)} round(s)"
        if not metric.noisy:
            self.basis += ", varied between rounds: judged like a noisy metric"
        return paired.verdict

    def describe(self, label: str) -> str:
        """``p95 12.1 ms → 14.0 ms (+16 %, 95 % CI +12 … +20 %, 8 rounds) vs REF``."""
        metric = self.reference
        stat = metric.stat
        name = self.name if stat in ("value", "") else f"{self.name} {stat}"
        base = format_value(self.b_total.value, metric.unit) if self.b_total else "—"
        cur = format_value(self.a_total.value, metric.unit) if self.a_total else "—"
        inner = ", ".join(x for x in (format_change(self.change), self.basis) if x)
        return f"{name} {base} → {cur} ({inner}) vs {label}"

    def statement_diff(self) -> str:
        """For query metrics: the statements added or removed between B and A."""
        if self.a_total is None or self.b_total is None or self.a_total.role != "queries":
            return ""
        try:
            from ..queries import fingerprint_diff
        except ImportError:
            return ""
        try:
            return str(fingerprint_diff(self.b_total.details, self.a_total.details))
        except Exception:  # a diff is a courtesy; never let it mask the verdict
            return ""

    def row(self, checks: list[BudgetCheck]) -> dict[str, Any]:
        metric = self.reference
        verdict = Verdict(
            self.name,
            self.verdict,
            metric.unit,
            metric.stat,
            self.a_total.value if self.a_total else None,
            self.b_total.value if self.b_total else None,
            change=self.change,
            basis=self.basis,
            tolerance=self.settings.tolerance,
            interval=self.interval,
        )
        row = report_row(self.a_total, verdict, checks, None)
        b = self.b_total
        if b is not None:
            row["baseline_summary"] = b.summary()
            if b.histogram is not None:
                row["baseline_hdr"] = b.histogram.encode()
            if b.details:
                row["baseline_details"] = b.details
        # the per-round values judged, side by side
        row["paired"] = {
            "a": [x.value for x, _ in self.pairs],
            "b": [y.value for _, y in self.pairs],
        }
        return row


def aggregate(metrics: Sequence[Metric]) -> Metric:
    """One side's metric over its rounds: histograms merged, samples pooled, single values by
    their median (exact metrics: the first round's, with the others' details)."""
    first = metrics[0]
    if first.histogram is not None:
        histogram = LatencyHistogram()
        for metric in metrics:
            if metric.histogram is not None:
                histogram.merge(metric.histogram)
        merged = _like(first, histogram=histogram)
        merged.value = merged.statistic(first.stat)
        return merged
    if first.samples is not None:
        pooled = [s for m in metrics for s in (m.samples or [])]
        merged = _like(first, samples=thin_samples(pooled))
        merged.value = merged.statistic(first.stat)
        return merged
    if not first.noisy:
        return first
    merged = _like(first)
    merged.value = statistics.median(m.value for m in metrics)
    return merged


def _like(metric: Metric, **changes: Any) -> Metric:
    values: dict[str, Any] = {
        "name": metric.name,
        "unit": metric.unit,
        "better": metric.better,
        "value": metric.value,
        "stat": metric.stat,
        "noisy": metric.noisy,
        "role": metric.role,
        "samples": metric.samples,
        "histogram": metric.histogram,
        "details": dict(metric.details),
        "rounds": None,
        "distorted": metric.distorted,
    }
    values.update(changes)
    return Metric(**values)
