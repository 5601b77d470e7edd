"""Metrics, the recorder every fixture records through, and marker budgets.

No pytest here: the plugin hands a :class:`Recorder` to the fixtures and reads it back after the
test body ran.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from .measure import (
    DEFAULT_MAX_TIME,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    Clock,
    GcMode,
    Plan,
    Timer,
    ameasure_function,
    measure_function,
)
from .stats import LatencyHistogram, percentile, thin_samples
from .tracing import timing_distortion
from .units import (
    UnitError,
    format_value,
    parse_count,
    parse_duration,
    parse_percent,
    parse_rate,
    parse_size,
)

__all__ = [
    "BUDGET_KEYS",
    "UNITS",
    "BudgetCheck",
    "Budgets",
    "Metric",
    "Recorder",
    "check_budgets",
]

Better = Literal["lower", "higher"]
T = TypeVar("T")

#: Units a metric can have, with whether that unit is noisy (timing-like) by default.
UNITS: dict[str, bool] = {"s": True, "1/s": True, "bytes": False, "count": False, "ratio": False}

#: Statistics a metric with samples can be summarised by (and compared on).
STATS = ("mean", "min", "p50", "p90", "p95", "p99", "p999", "max")
_PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9, "max": 100.0}


@dataclass
class Metric:
    """One measured quantity of one test."""

    name: str
    unit: str
    better: Better
    value: float  # the compared statistic (``stat``) of the distribution, or the single value
    stat: str = "value"  # "value" for a single number, else one of STATS
    noisy: bool = True  # timing-like: compared with the significance test and environment rules
    role: str | None = (
        None  # which marker budgets apply: latency, error_rate, rps, queries, memory, rss
    )
    samples: list[float] | None = None  # sorted, thinned reservoir (non-histogram distributions)
    histogram: LatencyHistogram | None = None  # timing distributions
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (e.g. fingerprints)
    #: the statistic measured per round (e.g. each second's p95 of a load run): when present the
    #: significance test compares rounds, which are independent, instead of correlated samples
    rounds: list[float] | None = None
    distorted: str | None = None  # why this timing must not be trusted (e.g. a memory tracer ran)

    @property
    def count(self) -> int:
        if self.histogram is not None:
            return self.histogram.count
        if self.samples is not None:
            return len(self.samples)
        return 1

    def statistic(self, stat: str) -> float:
        """Any of STATS (or ``value``) of this metric's distribution."""
        if stat == "value" or (self.histogram is None and self.samples is None):
            return self.value
        if self.histogram is not None:
            if stat == "mean":
                return self.histogram.mean
            if stat == "min":
                return self.histogram.min
            if stat == "max":
                return self.histogram.max
            return self.histogram.percentile(_PERCENTILES[stat])
        assert self.samples is not None
        if stat == "mean":
            return math.fsum(self.samples) / len(self.samples) if self.samples else math.nan
        if stat == "min":
            return self.samples[0] if self.samples else math.nan
        return percentile(self.samples, _PERCENTILES[stat])

    def distribution(self) -> list[tuple[float, int]]:
        """Weighted samples for the significance test."""
        if self.rounds:
            return [(r, 1) for r in self.rounds]
        if self.histogram is not None:
            return list(self.histogram.items())
        if self.samples is not None:
            return [(s, 1) for s in self.samples]
        return [(self.value, 1)]

    def summary(self) -> dict[str, float]:
        """Headline statistics, for people reading a baseline or a report."""
        if self.histogram is None and self.samples is None:
            return {}
        return {stat: self.statistic(stat) for stat in STATS}

    def format(self, value: float | None = None) -> str:
        return format_value(self.value if value is None else value, self.unit)

    def to_json(self) -> dict[str, Any]:
        """This metric as JSON-able data, whole (the histogram in HdrHistogram's compressed
        encoding): what crosses from a ``--perf-against`` side to the controller.
        :meth:`from_json` reads it back."""
        return {
            "name": self.name,
            "unit": self.unit,
            "better": self.better,
            "value": self.value,
            "stat": self.stat,
            "noisy": self.noisy,
            "role": self.role,
            "histogram": None if self.histogram is None else self.histogram.encode(),
            "samples": None if self.samples is None else list(self.samples),
            "rounds": None if self.rounds is None else list(self.rounds),
            "details": dict(self.details),
            "distorted": self.distorted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Metric:
        """The metric :meth:`to_json` wrote; ``ValueError`` naming the metric and the field when
        the data is not one."""
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"not a serialized metric (no name): {dict(data)!r:.200}")

        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"metric {name!r}: field {field_name!r} {why}")

        unit = data.get("unit")
        if unit not in UNITS:
            raise bad("unit", f"must be one of {', '.join(UNITS)}, got {unit!r}")
        better = data.get("better")
        if better not in ("lower", "higher"):
            raise bad("better", f"must be 'lower' or 'higher', got {better!r}")
        stat = data.get("stat", "value")
        if stat != "value" and stat not in STATS:
            raise bad("stat", f"must be 'value' or one of {', '.join(STATS)}, got {stat!r}")
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("value", f"must be a number, got {value!r}")
        histogram = None
        encoded = data.get("histogram")
        if encoded is not None:
            if not isinstance(encoded, str):
                raise bad("histogram", "must be an HdrHistogram compressed encoding (a string)")
            try:
                histogram = LatencyHistogram.decode(encoded)
            except ValueError as exc:
                raise bad("histogram", str(exc)) from None

        def numbers(field_name: str) -> list[float] | None:
            raw = data.get(field_name)
            if raw is None:
                return None
            if not isinstance(raw, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in raw
            ):
                raise bad(field_name, "must be a list of numbers")
            return [float(v) for v in raw]

        details = data.get("details") or {}
        if not isinstance(details, Mapping):
            raise bad("details", "must be a mapping")
        role = data.get("role")
        distorted = data.get("distorted")
        for field_name, text in (("role", role), ("distorted", distorted)):
            if text is not None and not isinstance(text, str):
                raise bad(field_name, f"must be a string or null, got {text!r}")
        return cls(
            name=name,
            unit=unit,
            better=better,
            value=float(value),
            stat=stat,
            noisy=bool(data.get("noisy", UNITS[unit])),
            role=role,
            samples=numbers("samples"),
            histogram=histogram,
            details=dict(details),
            rounds=numbers("rounds"),
            distorted=distorted,
        )


class Recorder:
    """Collects the metrics of one test. ``perf.record(...)`` and every fixture go through here."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        #: distributions that ``perf.timer`` blocks grow during the test, by metric name
        self._series: dict[str, _Series] = {}
        #: Set while something that distorts timings runs (a costly memory tracer); timings
        #: recorded meanwhile carry it as ``Metric.distorted``. Tracers and profilers from
        #: outside the plugin are detected when recording (``tracing.timing_distortion``).
        self.timing_distortion: str | None = None

    @property
    def metrics(self) -> dict[str, Metric]:
        """The test's metrics by name. A ``perf.timer`` distribution gains a sample per entry of
        its block; reading the metrics brings it up to date (its percentiles are computed here,
        not on every entry, which keeps a timer in a tight loop cheap)."""
        for series in self._series.values():
            series.refresh()
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: dict[str, Metric]) -> None:
        self._metrics = metrics
        # a timer keeps growing its metric only while that very metric is still recorded
        self._series = {n: s for n, s in self._series.items() if metrics.get(n) is s.metric}

    def record(
        self,
        name: str,
        value_or_samples: float | Sequence[float] | LatencyHistogram,
        unit: str = "s",
        better: Better = "lower",
        *,
        stat: str | None = None,
        role: str | None = None,
        noisy: bool | None = None,
        details: Mapping[str, Any] | None = None,
        rounds: Sequence[float] | None = None,
    ) -> Metric:
        """Record ``name``: one number, a sequence of samples, or a latency histogram.

        ``unit`` is one of ``s``, ``bytes``, ``count``, ``ratio``, ``1/s``; ``better`` says which
        direction is an improvement. Samples are summarised by ``stat`` (default ``p50``), which
        is also the statistic compared with the baseline. ``rounds`` optionally gives that
        statistic measured per independent round; the significance test then uses them.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        if unit not in UNITS:
            raise ValueError(
                f"metric {name!r}: unknown unit {unit!r}; use one of {', '.join(UNITS)}"
            )
        if better not in ("lower", "higher"):
            raise ValueError(f"metric {name!r}: better must be 'lower' or 'higher', got {better!r}")
        if stat is not None and stat not in STATS and stat != "value":
            raise ValueError(
                f"metric {name!r}: unknown stat {stat!r}; use one of {', '.join(STATS)}"
            )
        if name in self.metrics:
            raise ValueError(
                f"metric {name!r} was already recorded in this test; give each metric its own name"
            )
        histogram: LatencyHistogram | None = None
        samples: list[float] | None = None
        if isinstance(value_or_samples, LatencyHistogram):
            if unit != "s":
                raise ValueError(f"metric {name!r}: a latency histogram has unit 's', not {unit!r}")
            histogram = value_or_samples
            if histogram.count == 0:
                raise ValueError(f"metric {name!r}: the histogram holds no samples")
        elif _is_number(value_or_samples):
            single = _checked(name, unit, value_or_samples)
        elif isinstance(value_or_samples, Iterable) and not isinstance(
            value_or_samples, (str, bytes)
        ):
            raw = [_checked(name, unit, v, i) for i, v in enumerate(value_or_samples)]
            if not raw:
                raise ValueError(f"metric {name!r}: no samples given")
            if unit == "s":
                try:
                    histogram = LatencyHistogram.from_samples(raw)
                except ValueError as exc:  # beyond the histogram's range: never clamped
                    raise ValueError(
                        f"metric {name!r}: {exc}; record such a duration as one number"
                    ) from None
            else:
                samples = thin_samples(raw)
        else:
            raise TypeError(
                f"metric {name!r}: expected a number or a sequence of numbers, "
                f"got {type(value_or_samples).__name__}"
            )
        round_values: list[float] | None = None
        if rounds is not None:
            if isinstance(rounds, (str, bytes)) or not isinstance(rounds, Iterable):
                raise TypeError(
                    f"metric {name!r}: rounds must be a sequence of numbers, "
                    f"got {type(rounds).__name__}"
                )
            round_values = [_checked(name, unit, r, i, "round") for i, r in enumerate(rounds)]
            if not round_values:
                raise ValueError(f"metric {name!r}: rounds is empty; leave it out instead")
        has_distribution = histogram is not None or samples is not None
        chosen = (stat or "p50") if has_distribution else "value"
        metric = Metric(
            name=name,
            unit=unit,
            better=better,
            value=0.0,
            stat=chosen,
            noisy=UNITS[unit] if noisy is None else noisy,
            role=role if role is not None else ("latency" if unit == "s" else None),
            samples=samples,
            histogram=histogram,
            details=dict(details or {}),
            rounds=round_values,
        )
        metric.value = metric.statistic(chosen) if has_distribution else single
        if metric.noisy:
            # the plugin's own memory tracers say so themselves; anything else that traces or
            # profiles the process (coverage, a debugger, cProfile, pytest-memray) is looked
            # up now, once per metric (a few µs)
            metric.distorted = self.timing_distortion or timing_distortion()
        self.metrics[name] = metric
        return metric

    # timing a function -------------------------------------------------------------------------
    def measure(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        name: str | None = None,
        rounds: int = DEFAULT_ROUNDS,
        min_time: str | float | None = None,
        max_time: str | float = DEFAULT_MAX_TIME,
        warmup: int | str = DEFAULT_WARMUP,
        clock: Clock = "wall",
        gc: GcMode = "keep",
        setup: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """Time ``fn(*args, **kwargs)`` and record its per-call time as the metric ``name``
        (default: the function's qualified name); returns what the last call returned.

        Each of ``rounds`` rounds times as many calls as calibration found to fill ``min_time``
        (default 500 µs on the wall clock, 1 ms on the CPU clock) and contributes its time per
        call to the distribution; ``warmup`` rounds (an int) or time (``"100ms"``) run first
        and are not recorded; ``max_time`` bounds the whole measurement (at least 5 rounds
        run). ``clock="cpu"`` measures this thread's CPU time. ``gc="disable"`` turns the
        garbage collector off during the rounds and collects the young generation between
        them. ``setup()`` is called before each round and returns fresh ``(args, kwargs)``;
        a round is then one call. An exception in ``fn`` propagates and records nothing.
        """
        __tracebackhide__ = True
        plan = Plan.parse(
            rounds=rounds,
            min_time=min_time,
            max_time=max_time,
            warmup=warmup,
            clock=clock,
            gc=gc,
            api="perf.measure",
        )
        return measure_function(self, fn, args, kwargs, name=name, plan=plan, setup=setup)

    async def ameasure(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        name: str | None = None,
        rounds: int = DEFAULT_ROUNDS,
        min_time: str | float | None = None,
        max_time: str | float = DEFAULT_MAX_TIME,
        warmup: int | str = DEFAULT_WARMUP,
        clock: Clock = "wall",
        gc: GcMode = "keep",
        setup: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> T:
        """:meth:`measure` for coroutine functions: ``await perf.ameasure(fetch, url)``. Every
        call is awaited on the running event loop (the test's), so tasks already running on
        it — a server the test started — keep serving while the rounds are timed."""
        __tracebackhide__ = True
        plan = Plan.parse(
            rounds=rounds,
            min_time=min_time,
            max_time=max_time,
            warmup=warmup,
            clock=clock,
            gc=gc,
            api="perf.ameasure",
        )
        return await ameasure_function(self, fn, args, kwargs, name=name, plan=plan, setup=setup)

    def timer(self, name: str, *, clock: Clock = "wall") -> Timer:
        """``with perf.timer("render"):`` records one sample per entry of the block; every entry
        with this name in the test (a loop, several fixtures) adds to one distribution."""
        return Timer(self, name, clock)

    def accumulate(self, name: str, seconds: float, *, clock: str = "wall") -> Metric:
        """Add one duration to the timing distribution ``name`` that grows over the test (what a
        ``perf.timer`` block does on leaving). The first sample records the metric; later ones
        join it. A name recorded otherwise (``perf.record``, ``perf.measure``) is refused."""
        series = self._series.get(name)
        if series is not None and self._metrics.get(name) is series.metric:
            if clock != series.clock:
                raise ValueError(
                    f"metric {name!r}: timer entries with the {clock} clock cannot join "
                    f"entries timed with the {series.clock} clock; give them another name"
                )
            series.add(seconds, self.timing_distortion)
            return series.metric
        if name in self._metrics:
            raise ValueError(
                f"metric {name!r} was already recorded in this test (perf.record or "
                "perf.measure); give the timer a name of its own"
            )
        metric = self.record(name, [seconds], details={"clock": clock, "entries": 1})
        self._series[name] = _Series(metric, clock)
        return metric

    def __repr__(self) -> str:
        return f"<perf recorder: {len(self.metrics)} metric(s)>"


class _Series:
    """The samples of a ``perf.timer`` distribution since the metrics were last read."""

    __slots__ = ("clock", "metric", "pending")

    def __init__(self, metric: Metric, clock: str) -> None:
        self.metric = metric
        self.clock = clock
        self.pending: list[float] = []

    def add(self, seconds: float, distortion: str | None) -> None:
        _check_finite(self.metric.name, seconds)
        self.pending.append(seconds)
        if distortion:
            self.metric.distorted = distortion

    def refresh(self) -> None:
        if not self.pending:
            return
        metric = self.metric
        assert metric.histogram is not None  # a timer records durations
        for seconds in self.pending:
            metric.histogram.record(seconds)
        self.pending.clear()
        metric.value = metric.statistic(metric.stat)
        metric.details["entries"] = metric.histogram.count


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r}: value {value!r} is not a finite number")


def _is_number(value: object) -> bool:
    # numbers.Real takes int, float, Fraction and numpy's numbers; bool is an int to Python but a
    # flag to a person, and a numeric string is text (it was converted silently before)
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, _np_bool_types()))


def _np_bool_types() -> tuple[type, ...]:
    numpy = sys.modules.get("numpy")  # never imported here: only there when the user has it
    return (numpy.bool_,) if numpy is not None else ()


#: What a negative value of each unit is, for messages.
_NEGATIVE = {
    "s": "duration",
    "1/s": "rate",
    "bytes": "size",
    "count": "count",
    "ratio": "ratio",
}


def _checked(
    name: str, unit: str, value: object, index: int | None = None, what: str = "sample"
) -> float:
    """``value`` as a float, or an error naming the metric (and the sample's position)."""
    which = f"{what} {index}" if index is not None else "value"
    if not _is_number(value):
        raise TypeError(
            f"metric {name!r}: {which} is {value!r} ({type(value).__name__}), expected a number"
        )
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"metric {name!r}: {which} {value!r} is not a finite number")
    if number < 0:  # every unit measures a magnitude
        raise ValueError(
            f"metric {name!r}: {which} {value!r} is negative; a {_NEGATIVE[unit]} cannot be"
        )
    return number


# ---------------------------------------------------------------------------------------------
# budgets


def _budget_parsers() -> dict[str, Any]:
    return {
        **{key: parse_duration for key in ("p50", "p90", "p95", "p99", "p999", "max", "mean")},
        "error_rate": parse_percent,
        "rps": parse_rate,
        "queries": parse_count,
        "queries_per_request": parse_count,
        "memory": parse_size,
        "rss": parse_size,
        "tolerance": parse_percent,
    }


@dataclass(frozen=True)
class Budgets:
    """Absolute limits from ``@pytest.mark.perf(...)``, checked on every run."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None
    error_rate: float | None = None
    rps: float | None = None
    queries: int | None = None
    queries_per_request: int | None = None
    memory: int | None = None
    rss: int | None = None
    tolerance: float | None = None
    #: the budgets as the test wrote them (``"5MB"``), for messages
    written: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, kwargs: Mapping[str, Any]) -> Budgets:
        """Validate marker keywords; raises ``ValueError`` naming the keyword."""
        parsers = _budget_parsers()
        values: dict[str, Any] = {}
        for key, raw in kwargs.items():
            if key not in parsers:
                raise ValueError(
                    f"unknown budget {key}={raw!r}; valid budgets: {', '.join(BUDGET_KEYS)}"
                )
            try:
                values[key] = parsers[key](raw)
            except UnitError as exc:
                raise ValueError(f"budget {key}={raw!r}: {exc}") from None
        written = tuple((k, v) for k, v in kwargs.items() if isinstance(v, str))
        return cls(**values, written=written)

    def items(self) -> list[tuple[str, Any]]:
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if f.name != "written" and getattr(self, f.name) is not None
        ]


BUDGET_KEYS = tuple(f.name for f in fields(Budgets) if f.name != "written")

#: What each budget keyword means, for ``pytest --markers`` and the README.
BUDGET_HELP = {
    "p50": "max median latency",
    "p90": "max 90th percentile latency",
    "p95": "max 95th percentile latency",
    "p99": "max 99th percentile latency",
    "p999": "max 99.9th percentile latency",
    "max": "max latency",
    "mean": "max mean latency",
    "error_rate": "max error rate of load results, e.g. '1%'",
    "rps": "min throughput of load results, requests/s",
    "queries": "max SQL statements issued by the test body",
    "queries_per_request": "max SQL statements of any one request of a load run on an app "
    "served in this process",
    "memory": "max Python-heap peak of the test body, e.g. '64MB' or '64MiB'",
    "rss": "max RSS peak of the test body",
    "tolerance": "this test's regression tolerance, e.g. '20%'",
}

_LATENCY_BUDGETS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
_ROLE_BUDGETS = {
    "error_rate": "error_rate",
    "rps": "rps",
    "queries": "queries",
    "queries_per_request": "queries_per_request",
    "memory": "memory",
    "rss": "rss",
}


@dataclass(frozen=True)
class BudgetCheck:
    metric: str
    budget: str
    limit: float
    measured: float
    unit: str
    passed: bool
    minimum: bool  # the budget is a floor (rps) rather than a ceiling
    written: str | None = None  # the limit as the test wrote it

    def describe(self) -> str:
        op = "≥" if self.minimum else "≤"
        mark = "✓" if self.passed else "✗"
        limit = self.written or format_value(self.limit, self.unit)
        return (
            f"{mark} {self.metric}: {self.budget} {format_value(self.measured, self.unit)} "
            f"(budget {op} {limit})"
        )


def check_budgets(metrics: Iterable[Metric], budgets: Budgets) -> list[BudgetCheck]:
    """Every applicable (budget, metric) pair. Latency budgets apply to every metric of role
    ``latency``; the others to metrics of the role of the same name."""
    checks: list[BudgetCheck] = []
    written = dict(budgets.written)
    for metric in metrics:
        if metric.role == "latency":
            for key in _LATENCY_BUDGETS:
                limit = getattr(budgets, key)
                if limit is None:
                    continue
                measured = metric.statistic(key)
                checks.append(
                    BudgetCheck(
                        metric.name,
                        key,
                        limit,
                        measured,
                        "s",
                        measured <= limit,
                        False,
                        written.get(key),
                    )
                )
        elif metric.role in _ROLE_BUDGETS:
            key = _ROLE_BUDGETS[metric.role]
            limit = getattr(budgets, key)
            if limit is None:
                continue
            minimum = key == "rps"
            passed = metric.value >= limit if minimum else metric.value <= limit
            checks.append(
                BudgetCheck(
                    metric.name,
                    key,
                    float(limit),
                    metric.value,
                    metric.unit,
                    passed,
                    minimum,
                    written.get(key),
                )
            )
    return checks
