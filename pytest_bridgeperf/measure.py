"""Timing a function: calibrated rounds, warm-up, garbage-collector control, and a timer block.

``perf.measure(fn, *args)`` does what a hand-written timing loop gets wrong: it calibrates how many
calls make one round (so the clock's resolution and cost vanish in the round's length), warms up,
controls the garbage collector, runs enough rounds and records the per-call time of every round as
one distribution — the same kind of metric ``perf.record`` makes from samples, so budgets, the
baseline and the significance test treat it alike. ``await perf.ameasure(fn, *args)`` does the
same for coroutine functions on the running event loop; ``with perf.timer(name):`` records one
sample per entry of a block.

The schedule (calibration, warm-up, rounds, the time bound) is one generator that a synchronous
and an asynchronous driver both run, so the two cannot drift apart. No pytest here.
"""

from __future__ import annotations

import functools
import gc as gc_module
import inspect
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .stats import percentile
from .units import UnitError, parse_duration

if TYPE_CHECKING:
    from .metrics import Metric, Recorder

__all__ = [
    "CLOCKS",
    "DEFAULT_MAX_TIME",
    "DEFAULT_MIN_TIME",
    "DEFAULT_ROUNDS",
    "DEFAULT_WARMUP",
    "MAX_KEPT_ROUNDS",
    "MIN_ROUNDS",
    "MeasureError",
    "Measurement",
    "Plan",
    "Timer",
    "ameasure_function",
    "describe",
    "kept_rounds",
    "measure_function",
]

T = TypeVar("T")
Clock = Literal["wall", "cpu"]
GcMode = Literal["keep", "disable"]

#: ``clock=`` → the clock read around each round (integer nanoseconds). ``cpu`` is the CPU time
#: of the calling thread, not of the process: a server or a pool thread that the test runs beside
#: the measured code (perf_load serves apps that way) would otherwise be billed to it; on this
#: machine a busy second thread made process_time_ns of a ``sum(range(1000))`` loop 1.95x while
#: its thread_time_ns moved 1 %. Both CPU clocks cost ~0.4 µs a read here (a system call),
#: perf_counter_ns ~45 ns (vDSO), which is why ``min_time`` depends on the clock.
CLOCKS: dict[str, Callable[[], int]] = {
    "wall": time.perf_counter_ns,
    "cpu": time.thread_time_ns,
}
_CLOCK_NAMES = {"wall": "time.perf_counter_ns", "cpu": "time.thread_time_ns"}
#: ``gc=``; the default is "keep": what the code costs with the collector as production runs it.
#: Its collections did not move the median here — a function building 200 small dicts (24 µs)
#: measured 23.9 µs with "keep" and 24.0 µs with "disable" (8 interleaved runs each, in a process
#: holding pytest, SQLAlchemy, aiohttp and hypothesis): a rare full collection lands in one
#: round of a hundred.
GC_MODES = ("keep", "disable")

#: Measured rounds. Many short rounds rather than a few long ones, as pytest-benchmark does: on
#: this 2-core machine with one core kept busy (benchmarks/measure_vs_pytest_benchmark.py, load
#: average 10-14) the run-to-run spread of the median of a 30 µs function was 13 % with 30
#: rounds of 100 µs, 8-9 % with 100 and 7 % with 200; pytest-benchmark, whose ~1.5 s of 5 µs
#: rounds sample more of the machine's slow and fast spells, had 5-9 %. 1,000 rounds of 500 µs
#: sample ~0.5 s of them.
DEFAULT_ROUNDS = 1000
#: Most per-round values kept for the significance test and stored in the baseline (see
#: :func:`kept_rounds`).
MAX_KEPT_ROUNDS = 100
#: Fewest rounds a measurement cut short by ``max_time`` still runs: with fewer than 5 per side a
#: two-sided Mann-Whitney test cannot reach p < 0.01 at all (5 vs 5 fully separated: p = 0.0079).
MIN_ROUNDS = 5
#: Round length the iterations are calibrated to, per clock. At least ~1,000 reads of the clock
#: (perf_counter_ns ~45 ns, thread_time_ns ~420 ns here), so its cost is <0.1 % of a round. Wall
#: rounds stay well below a scheduler time slice: under that load, rounds of 2 ms and 10 ms were
#: preempted so often that their medians came out 6-8x the true per-call time, while 0.1-1 ms
#: rounds agreed with pytest-benchmark within 4 %. CPU-clock rounds do not see preemption.
DEFAULT_MIN_TIME: dict[str, float] = {"wall": 500e-6, "cpu": 1e-3}
#: The whole measurement (calibration, warm-up, rounds) stops once this has passed (wall time):
#: a function over ~2 ms gets fewer than 1,000 rounds (a 20 ms one ~100), never fewer than 5.
DEFAULT_MAX_TIME = 2.0
#: Warm-up rounds after calibration, excluded from the result. Calibration already ran the
#: function hundreds of times (its first round measured within 1-3 % of the median), but with
#: ``setup=`` there is no calibration: the first call of sorted() on fresh 2,000-item lists took
#: 1.4-2.4x the median, the second 1.0-1.1x.
DEFAULT_WARMUP = 1

_NS = 1_000_000_000


class MeasureError(ValueError):
    """An option of ``perf.measure`` / ``perf.ameasure`` / ``perf.timer`` is invalid."""


# ---------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class Plan:
    """Validated options of one measurement."""

    rounds: int = DEFAULT_ROUNDS
    min_time: float = DEFAULT_MIN_TIME["wall"]  # seconds per round (calibration target)
    max_time: float = DEFAULT_MAX_TIME  # seconds for the whole measurement
    warmup_rounds: int = DEFAULT_WARMUP
    warmup_time: float = 0.0  # seconds; used instead of warmup_rounds when > 0
    clock: str = "wall"
    gc: str = "keep"

    @classmethod
    def parse(
        cls,
        *,
        rounds: int = DEFAULT_ROUNDS,
        min_time: str | float | None = None,
        max_time: str | float = DEFAULT_MAX_TIME,
        warmup: int | str = DEFAULT_WARMUP,
        clock: str = "wall",
        gc: str = "keep",
        api: str = "perf.measure",
    ) -> Plan:
        """Check every option; raises :class:`MeasureError` naming the option and the problem."""
        if clock not in CLOCKS:
            raise MeasureError(
                f"{api}: clock={clock!r}: use 'wall' (time.perf_counter_ns) or 'cpu' "
                "(time.thread_time_ns, CPU time of this thread)"
            )
        if gc not in GC_MODES:
            raise MeasureError(
                f"{api}: gc={gc!r}: use 'keep' (the collector runs as usual) or 'disable' "
                "(off during rounds, a young-generation collection between them)"
            )
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise MeasureError(f"{api}: rounds={rounds!r}: expected a whole number ≥ 1")
        round_time = _duration(
            api, "min_time", DEFAULT_MIN_TIME[clock] if min_time is None else min_time
        )
        total = _duration(api, "max_time", max_time)
        if total <= 0:
            raise MeasureError(f"{api}: max_time={max_time!r}: must be longer than 0")
        warmup_rounds, warmup_time = 0, 0.0
        if isinstance(warmup, bool):
            raise MeasureError(_warmup_message(api, warmup))
        if isinstance(warmup, int):
            if warmup < 0:
                raise MeasureError(_warmup_message(api, warmup))
            warmup_rounds = warmup
        elif isinstance(warmup, str):
            warmup_time = _duration(api, "warmup", warmup)
            if warmup_time >= total:
                raise MeasureError(
                    f"{api}: warmup={warmup!r} is not shorter than max_time={max_time!r}, "
                    "which bounds the whole measurement, warm-up included: shorten the warm-up "
                    "or raise max_time"
                )
        else:  # a bare float would be ambiguous: seconds, or rounds?
            raise MeasureError(_warmup_message(api, warmup))
        return cls(rounds, round_time, total, warmup_rounds, warmup_time, clock, gc)


def _duration(api: str, option: str, value: object) -> float:
    try:
        return parse_duration(value)  # type: ignore[arg-type]
    except UnitError as exc:
        raise MeasureError(f"{api}: {option}={value!r}: {exc}") from None


def _warmup_message(api: str, value: object) -> str:
    return (
        f"{api}: warmup={value!r}: give a number of rounds (an int ≥ 0, e.g. warmup=3) or a "
        "duration with a unit (e.g. warmup='100ms')"
    )


# ---------------------------------------------------------------------------------------------
# the schedule


@dataclass
class Measurement:
    """What one ``perf.measure`` found: the per-call time of every round, in seconds."""

    per_call: list[float] = field(default_factory=list)
    iterations: int = 1
    warmup_rounds: int = 0
    stopped: bool = False  # max_time ended the measurement before ``rounds`` rounds

    def details(self, function: str, plan: Plan) -> dict[str, Any]:
        """The metric's details: stored in the baseline, shown by the reports."""
        rounds = len(self.per_call)
        explain = (
            f"measured {function}: {_plural(self.iterations, 'call')} × "
            f"{_plural(rounds, 'round')}, {plan.clock} clock ({_CLOCK_NAMES[plan.clock]}), "
            f"gc {plan.gc}"
        )
        if self.stopped:
            explain += f"; max_time ended it after {rounds} of {plan.rounds} rounds"
        return {
            "function": function,
            "iterations": self.iterations,
            "rounds": rounds,
            "clock": plan.clock,
            "gc": plan.gc,
            "explain": explain,  # for failure messages only: not stored in the baseline
        }


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _schedule(plan: Plan, *, calibrate: bool, result: Measurement) -> Generator[int, int, None]:
    """Yields how many calls to time next and receives how long they took (clock nanoseconds).

    Calibration: from 1 call, ×10 until a round lasts a tenth of ``min_time``, then the estimate
    (with 5 % to spare) until a round lasts ``min_time`` — pytest-benchmark's rule. A round that
    a preemption made slower only makes the estimate smaller, and the next try grows it again.
    Whatever the clock, a round may last at most a sixth of ``max_time`` in wall time, so that
    ``MIN_ROUNDS`` of them fit (a sleeping function costs little CPU time: on the CPU clock it
    would otherwise calibrate to rounds of seconds). The warm-up and the rounds follow with that
    many calls. ``max_time`` (wall time) is checked after every timing: past it, calibration and
    warm-up stop, and the rounds stop once ``MIN_ROUNDS`` are in (or ``rounds``, if fewer were
    asked for).
    """
    now = time.perf_counter_ns
    deadline = now() + round(plan.max_time * _NS)
    target = round(plan.min_time * _NS)
    longest = plan.max_time * _NS / (MIN_ROUNDS + 1)
    n = 1
    if calibrate:
        cold = True
        while True:
            started = now()
            elapsed = yield n
            wall = now() - started
            if now() >= deadline:
                break
            if cold:
                # The first call pays one-time costs (a regex compiled, a cache filled, lazy
                # imports) and can last ~300x a warm call (re.match with a new pattern: 150 µs,
                # then 0.5 µs): it must not end the calibration, or that function would be
                # timed one call per round.
                cold = False
                continue
            if elapsed >= target:
                break
            if elapsed * 10 >= target:
                grown = max(n + 1, math.ceil(n * target * 1.05 / max(elapsed, 1)))
            else:
                grown = n * 10
            grown = min(grown, int(n * longest / max(wall, 1)))
            if grown <= n:
                break
            n = grown
    result.iterations = n
    if plan.warmup_time > 0:
        warm_until = now() + round(plan.warmup_time * _NS)
        while now() < warm_until and now() < deadline:
            yield n
            result.warmup_rounds += 1
    else:
        for _ in range(plan.warmup_rounds):
            if now() >= deadline:
                break
            yield n
            result.warmup_rounds += 1
    fewest = min(MIN_ROUNDS, plan.rounds)
    collect = plan.gc == "disable"
    for index in range(plan.rounds):
        if collect:
            # the garbage a round made, collected outside the timing: a young-generation pass
            # costs ~0.1 µs here, a full gc.collect() ~100 ms in a process that imported
            # pytest, SQLAlchemy and aiohttp (59,000 tracked objects) — per round, that would
            # be most of the measurement's time
            gc_module.collect(0)
        elapsed = yield n
        result.per_call.append(elapsed / n / _NS)
        if index + 1 >= fewest and index + 1 < plan.rounds and now() >= deadline:
            result.stopped = True
            break


# ---------------------------------------------------------------------------------------------
# measure / ameasure


def measure_function(
    recorder: Recorder,
    fn: Callable[..., T],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    name: str | None,
    plan: Plan,
    setup: Callable[[], Any] | None,
) -> T:
    """Time ``fn(*args, **kwargs)`` by ``plan``, record it under ``name`` into ``recorder`` and
    return what the last call returned. An exception in ``fn`` propagates; nothing is recorded.
    """
    __tracebackhide__ = True  # pytest shows the test's and the function's frames, not ours
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"perf.measure: {_qualified(fn)} is a coroutine function: use "
            "`await perf.ameasure(...)` in an async test"
        )
    metric_name = _metric_name(recorder, fn, name, setup, args, kwargs, "perf.measure")
    result = Measurement()
    steps = _schedule(plan, calibrate=setup is None, result=result)
    clock = CLOCKS[plan.clock]
    value: Any = None
    with _collector(plan.gc):
        try:
            n = next(steps)
            first = True
            while True:
                call_args, call_kwargs = (
                    _fresh_arguments(setup, "perf.measure") if setup is not None else (args, kwargs)
                )
                elapsed, value = _time_calls(fn, call_args, call_kwargs, n, clock)
                if first:
                    first = False
                    if inspect.isawaitable(value):
                        _discard(value)
                        raise TypeError(
                            f"perf.measure: {_qualified(fn)} returned an awaitable: use "
                            "`await perf.ameasure(...)` to time it"
                        )
                n = steps.send(elapsed)
        except StopIteration:
            pass
        finally:
            steps.close()
    _record(recorder, metric_name, fn, plan, result)
    return value  # type: ignore[no-any-return]


async def ameasure_function(
    recorder: Recorder,
    fn: Callable[..., Awaitable[T]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    name: str | None,
    plan: Plan,
    setup: Callable[[], Any] | None,
) -> T:
    """:func:`measure_function` for a function returning an awaitable: each call is awaited on
    the running event loop, so other tasks of that loop may run while a round is timed."""
    __tracebackhide__ = True
    metric_name = _metric_name(recorder, fn, name, setup, args, kwargs, "perf.ameasure")
    result = Measurement()
    steps = _schedule(plan, calibrate=setup is None, result=result)
    clock = CLOCKS[plan.clock]
    value: Any = None
    with _collector(plan.gc):
        try:
            n = next(steps)
            first = True
            while True:
                call_args, call_kwargs = (
                    _fresh_arguments(setup, "perf.ameasure")
                    if setup is not None
                    else (args, kwargs)
                )
                if first:
                    first = False
                    elapsed, value = await _atime_first(fn, call_args, call_kwargs, clock)
                else:
                    elapsed, value = await _atime_calls(fn, call_args, call_kwargs, n, clock)
                n = steps.send(elapsed)
        except StopIteration:
            pass
        finally:
            steps.close()
    _record(recorder, metric_name, fn, plan, result)
    return value  # type: ignore[no-any-return]


def _time_calls(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    n: int,
    clock: Callable[[], int],
) -> tuple[int, Any]:
    """``n`` calls between two clock reads; the last call's result is kept without a store per
    iteration (it would cost ~1 ns a call, 5 % of the cheapest functions)."""
    __tracebackhide__ = True
    rest = itertools.repeat(None, n - 1)
    if args or kwargs:
        start = clock()
        for _ in rest:
            fn(*args, **kwargs)
        value = fn(*args, **kwargs)
        end = clock()
    else:  # fn() is ~25 ns cheaper than fn(*(), **{}): worth it for a sub-µs function
        start = clock()
        for _ in rest:
            fn()
        value = fn()
        end = clock()
    return end - start, value


async def _atime_first(
    fn: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    clock: Callable[[], int],
) -> tuple[int, Any]:
    """The first timing (always of one call: calibration starts at 1), which also checks that
    ``fn`` returns an awaitable — ~0.1 µs, in a calibration or warm-up round unless both are off."""
    __tracebackhide__ = True
    start = clock()
    awaitable = fn(*args, **kwargs)
    if not inspect.isawaitable(awaitable):
        raise TypeError(
            f"perf.ameasure: {_qualified(fn)} returned {type(awaitable).__name__}, not an "
            "awaitable: use perf.measure(...)"
        )
    value = await awaitable
    return clock() - start, value


async def _atime_calls(
    fn: Callable[..., Awaitable[Any]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    n: int,
    clock: Callable[[], int],
) -> tuple[int, Any]:
    __tracebackhide__ = True
    rest = itertools.repeat(None, n - 1)
    start = clock()
    for _ in rest:
        await fn(*args, **kwargs)
    value = await fn(*args, **kwargs)
    end = clock()
    return end - start, value


class _collector:
    """``gc="disable"``: the collector off while measuring; ``gc.isenabled()`` as it was after,
    also when the function raised."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.was_enabled = gc_module.isenabled()

    def __enter__(self) -> None:
        if self.mode == "disable":
            gc_module.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc_module.enable()
        else:
            gc_module.disable()


def _fresh_arguments(setup: Callable[[], Any], api: str) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """What ``setup()`` returned: ``(args, kwargs)``, or None for a call without arguments."""
    got = setup()
    if got is None:
        return (), {}
    if (
        isinstance(got, tuple)
        and len(got) == 2
        and isinstance(got[0], Sequence)
        and not isinstance(got[0], (str, bytes))
        and isinstance(got[1], Mapping)
    ):
        return got[0], got[1]
    raise TypeError(
        f"{api}: setup {_qualified(setup)} returned {got!r:.80}; it must return "
        "(args, kwargs) — e.g. `return ([data], {})` — or None"
    )


def _discard(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)  # a never-awaited coroutine would warn
    if callable(close):
        close()


def _metric_name(
    recorder: Recorder,
    fn: Callable[..., Any],
    name: str | None,
    setup: Callable[[], Any] | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    api: str,
) -> str:
    """The metric name, checked before anything runs: a clash found after a long measurement
    would waste it."""
    if not callable(fn):
        raise TypeError(f"{api}: expected a function to time, got {type(fn).__name__}")
    if setup is not None:
        if not callable(setup):
            raise TypeError(f"{api}: setup must be callable, got {type(setup).__name__}")
        if args or kwargs:
            raise TypeError(
                f"{api}: {_qualified(fn)}: pass the arguments either directly or from setup "
                "(which returns (args, kwargs) before each round), not both"
            )
    metric_name = _short_name(fn) if name is None else name
    if name is None and metric_name == "<lambda>":
        raise MeasureError(f"{api}: a lambda has no name of its own: pass name=...")
    if not isinstance(metric_name, str) or not metric_name.strip():
        raise MeasureError(f"{api}: name={name!r}: expected a non-empty string")
    if metric_name in recorder.metrics:
        raise MeasureError(
            f"{api}: metric {metric_name!r} was already recorded in this test; give this "
            "measurement its own name=..."
        )
    return metric_name


def _record(
    recorder: Recorder, name: str, fn: Callable[..., Any], plan: Plan, result: Measurement
) -> Metric:
    return recorder.record(
        name,
        result.per_call,
        unit="s",
        rounds=kept_rounds(result.per_call),
        details=result.details(_qualified(fn), plan),
    )


def kept_rounds(per_call: Sequence[float]) -> list[float]:
    """The per-round values the significance test gets (and the baseline stores): every round's
    per-call time, or — past ``MAX_KEPT_ROUNDS`` rounds — the median of each of that many runs
    of consecutive rounds. Rounds next to each other share the machine's mood, so they are not
    the independent values the test assumes; runs of them spread over the measurement are
    closer to it, and a baseline entry stays ~100 lines. Every round stays in the histogram."""
    if len(per_call) <= MAX_KEPT_ROUNDS:
        return list(per_call)
    size = math.ceil(len(per_call) / MAX_KEPT_ROUNDS)
    return [percentile(sorted(per_call[i : i + size]), 50) for i in range(0, len(per_call), size)]


def _unwrap(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _short_name(fn: Any) -> str:
    """The default metric name: the function's qualified name (``Parser.parse``), without the
    function it was defined in (``page``, not ``test_x.<locals>.page``)."""
    target = _unwrap(fn)
    qualname = getattr(target, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(target).__qualname__
    return qualname.rpartition("<locals>.")[2]


def _qualified(fn: Any) -> str:
    """``module.Parser.parse``, for messages."""
    target = _unwrap(fn)
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{_short_name(target)}"


# ---------------------------------------------------------------------------------------------
# timer


class Timer:
    """``with perf.timer("render"):`` — one sample per entry of the block; entries with the same
    name in one test (in a loop, in fixtures) make one distribution. A block that raises records
    nothing. Enter the same Timer object again only after it was left."""

    __slots__ = ("_clock", "_start", "clock", "elapsed", "name", "recorder")

    def __init__(self, recorder: Recorder, name: str, clock: str = "wall") -> None:
        if not isinstance(name, str) or not name.strip():
            raise MeasureError(f"perf.timer: name={name!r}: expected a non-empty string")
        if clock not in CLOCKS:
            raise MeasureError(
                f"perf.timer({name!r}): clock={clock!r}: use 'wall' or 'cpu' (CPU time of this "
                "thread)"
            )
        self.recorder = recorder
        self.name = name
        self.clock = clock
        self._clock = CLOCKS[clock]
        self._start: int | None = None
        #: seconds the last completed entry took (None before the first)
        self.elapsed: float | None = None

    def __enter__(self) -> Timer:
        if self._start is not None:
            raise RuntimeError(
                f"perf.timer({self.name!r}) is already running: nested blocks need timers of "
                "their own (perf.timer(...) again)"
            )
        self._start = self._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._clock()
        start, self._start = self._start, None
        if exc_type is not None or start is None:
            return
        self.elapsed = (end - start) / _NS
        self.recorder.accumulate(self.name, self.elapsed, clock=self.clock)

    def __repr__(self) -> str:
        state = "running" if self._start is not None else "idle"
        return f"<perf.timer {self.name!r} ({self.clock} clock, {state})>"


# ---------------------------------------------------------------------------------------------
# display


def describe(details: Mapping[str, Any] | None) -> str:
    """``(1,000 × 30, cpu)`` for a measured function, ``(12 entries, wall)`` for a timer; empty
    for any other metric. Shared by the terminal summary and the Markdown and HTML reports."""
    if not isinstance(details, Mapping):
        return ""
    if "server" in details or "generator" in details:  # a load run's surroundings
        from .load.resources import describe_usage

        text = describe_usage(details.get("server"), details.get("generator"))
        return f"({text})" if text else ""
    clock = details.get("clock")
    if not isinstance(clock, str):
        return ""
    iterations, rounds, entries = (details.get(k) for k in ("iterations", "rounds", "entries"))
    if _count(iterations) and _count(rounds):
        return f"({iterations:,} × {rounds:,}, {clock})"
    if _count(entries):
        plural = "entry" if entries == 1 else "entries"
        return f"({entries:,} {plural}, {clock})"
    return ""


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
