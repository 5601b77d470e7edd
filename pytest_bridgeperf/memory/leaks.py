"""``perf_memory.leaks(func, iterations=N)``: does calling ``func`` leave memory behind, steadily?

Warm up (caches fill, lazy imports happen), then run ``func`` N times with a garbage collection
and a tracemalloc snapshot after each run, attribute the live memory to allocation sites (the
innermost line of the user's code), and flag the sites whose memory grows steadily by at least
``threshold`` bytes per iteration. A cache that fills and is cleared (a saw-tooth) or that filled
during the warm-up is not steady growth; interpreter caches are filtered out by file pattern.
"""

from __future__ import annotations

import fnmatch
import gc
import inspect
import itertools
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..metrics import Recorder
from ..units import format_size, parse_size
from .block import distortion_reason
from .sites import display_path, is_user_file

__all__ = ["DEFAULT_IGNORE", "LeakDetected", "LeakReport", "LeakSite", "aleaks", "leaks"]

#: Files whose allocations are interpreter or tooling caches, never the code under test
#: (matched against the innermost frame of an allocation, fnmatch patterns).
DEFAULT_IGNORE: tuple[str, ...] = (
    tracemalloc.__file__,
    "<frozen importlib*",
    "<unknown>",
    "*/importlib/*",
    "*/linecache.py",
    "*/re/*",
    "*/sre_*.py",
    "*/typing.py",
    "*/functools.py",
    "*/abc.py",
    "*/inspect.py",
    "*/tokenize.py",
    "*/warnings.py",
    "*/threading.py",
    "*/asyncio/*",
    "*/_pytest/*",
    "*/pluggy/*",
    "*/pytest_bridgeperf/*",
)

IgnoreRule = str | Callable[[str, int], bool]


class LeakDetected(AssertionError):
    """``perf_memory.leaks`` found allocation sites that grow with every call."""


@dataclass(frozen=True)
class LeakSite:
    filename: str
    lineno: int
    user: bool
    per_iteration: float  # bytes
    growth: int  # bytes over the measured iterations
    count_growth: int  # blocks over the measured iterations
    steady: float  # fraction of iterations in which the site grew

    @property
    def location(self) -> str:
        return f"{display_path(self.filename)}:{self.lineno}"


@dataclass
class LeakReport:
    iterations: int
    warmup: int
    threshold: int
    leaks: list[LeakSite] = field(default_factory=list)
    total_growth: int = 0  # traced bytes, last measured run minus first

    @property
    def leaked(self) -> bool:
        return bool(self.leaks)

    @property
    def per_iteration(self) -> float:
        return self.total_growth / self.iterations if self.iterations else 0.0

    def __bool__(self) -> bool:
        return self.leaked

    def __str__(self) -> str:
        head = (
            f"{len(self.leaks)} allocation site(s) grew steadily over {self.iterations} "
            f"iterations (after {self.warmup} warm-up), threshold "
            f"{format_size(self.threshold)}/iteration; total growth "
            f"{format_size(self.total_growth)} ({format_size(self.per_iteration)}/iteration)"
        )
        if not self.leaks:
            return (
                f"no leak: no allocation site grew by {format_size(self.threshold)}/iteration "
                f"over {self.iterations} iterations (total growth {format_size(self.total_growth)})"
            )
        lines = [head]
        width = max(len(s.location) for s in self.leaks)
        for number, site in enumerate(self.leaks, 1):
            lines.append(
                f"  {number:>2}. {site.location:<{width}}  +{format_size(site.per_iteration)}"
                f"/iteration  (+{format_size(site.growth)}, +{site.count_growth} blocks, grew in "
                f"{site.steady:.0%} of iterations)"
            )
        return "\n".join(lines)

    def assert_no_leaks(self) -> None:
        if self.leaked:
            raise LeakDetected(f"memory leak: {self}")


def _compile_ignore(ignore: Iterable[IgnoreRule]) -> Callable[[str, int], bool]:
    patterns = [rule for rule in ignore if isinstance(rule, str)]
    hooks = [rule for rule in ignore if not isinstance(rule, str)]

    def ignored(filename: str, lineno: int) -> bool:
        normalized = filename.replace("\\", "/")
        if any(fnmatch.fnmatch(normalized, pattern) for pattern in patterns):
            return True
        return any(hook(filename, lineno) for hook in hooks)

    return ignored


def _site_sizes(
    snapshot: tracemalloc.Snapshot, ignored: Callable[[str, int], bool]
) -> dict[tuple[str, int, bool], tuple[int, int]]:
    totals: dict[tuple[str, int, bool], list[int]] = {}
    for stat in snapshot.statistics("traceback"):
        frames = list(reversed(stat.traceback))  # innermost first
        if not frames or ignored(frames[0].filename, frames[0].lineno):
            continue
        chosen = next((f for f in frames if is_user_file(f.filename)), frames[0])
        key = (chosen.filename, chosen.lineno, is_user_file(chosen.filename))
        entry = totals.setdefault(key, [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    return {key: (size, count) for key, (size, count) in totals.items()}


class _LeakRun:
    def __init__(
        self,
        iterations: int,
        warmup: int,
        threshold: str | int | float,
        ignore: Sequence[IgnoreRule],
        default_ignore: bool,
        frames: int,
        recorder: Recorder | None,
    ) -> None:
        if iterations < 3:
            raise ValueError(f"iterations must be at least 3, got {iterations}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.iterations = iterations
        self.warmup = warmup
        self.threshold = parse_size(threshold)
        self.ignored = _compile_ignore([*(DEFAULT_IGNORE if default_ignore else ()), *ignore])
        self.frames = frames
        self.recorder = recorder
        self.samples: list[dict[tuple[str, int, bool], tuple[int, int]]] = []
        self.totals: list[int] = []
        self._started = False
        self._saved: str | None = None

    def begin(self) -> None:
        if self.recorder is not None:
            self._saved = self.recorder.timing_distortion
            self.recorder.timing_distortion = distortion_reason("tracemalloc")

    def start_tracing(self) -> None:
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._started = True

    def sample(self) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        self.totals.append(tracemalloc.get_traced_memory()[0])
        self.samples.append(_site_sizes(snapshot, self.ignored))
        del snapshot

    def end(self) -> None:
        if self._started:
            tracemalloc.stop()
            self._started = False
        if self.recorder is not None:
            self.recorder.timing_distortion = self._saved

    def report(self) -> LeakReport:
        first, last = self.samples[0], self.samples[-1]
        steps = len(self.samples) - 1
        found: list[LeakSite] = []
        for key in set(first) | set(last):
            series = [sample.get(key, (0, 0))[0] for sample in self.samples]
            growth = series[-1] - series[0]
            per_iteration = growth / steps
            if per_iteration < self.threshold:
                continue
            diffs = [b - a for a, b in itertools.pairwise(series)]
            grew = sum(1 for d in diffs if d > 0) / steps
            shrank = sum(1 for d in diffs if d < 0) / steps
            # Steady: grows in most runs, hardly ever gives memory back, and ends above anything
            # seen early on (a cache that is cleared now and then is a saw-tooth, not a leak).
            quarter = max(1, len(series) // 4)
            if grew < 0.6 or shrank > 0.1 or min(series[-quarter:]) <= max(series[:quarter]):
                continue
            filename, lineno, user = key
            count_growth = last.get(key, (0, 0))[1] - first.get(key, (0, 0))[1]
            found.append(
                LeakSite(filename, lineno, user, per_iteration, growth, count_growth, grew)
            )
        found.sort(key=lambda s: (not s.user, -s.growth))
        return LeakReport(
            iterations=steps,
            warmup=self.warmup,
            threshold=self.threshold,
            leaks=found,
            total_growth=self.totals[-1] - self.totals[0],
        )


def leaks(
    func: Callable[..., Any],
    iterations: int = 20,
    *,
    warmup: int = 3,
    threshold: str | int | float = "512B",
    ignore: Sequence[IgnoreRule] = (),
    default_ignore: bool = True,
    frames: int = 10,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    check: bool = True,
    recorder: Recorder | None = None,
) -> LeakReport:
    """Run ``func(*args, **kwargs)`` ``warmup`` + ``iterations`` + 1 times; flag allocation sites
    growing by at least ``threshold`` per call. ``ignore``: more fnmatch file patterns or
    ``hook(filename, lineno) -> bool`` callables matched against the innermost frame.
    Raises :class:`LeakDetected` when ``check`` and a leak is found; returns the report."""
    if inspect.iscoroutinefunction(func):
        raise TypeError("func is a coroutine function: use `await perf_memory.aleaks(...)`")
    run = _LeakRun(iterations, warmup, threshold, ignore, default_ignore, frames, recorder)
    call_kwargs = kwargs or {}
    run.begin()
    try:
        for _ in range(warmup):
            func(*args, **call_kwargs)
        run.start_tracing()
        func(*args, **call_kwargs)  # the first traced run fills what tracing itself makes lazily
        run.sample()
        for _ in range(iterations):
            func(*args, **call_kwargs)
            run.sample()
    finally:
        run.end()
    report = run.report()
    if check:
        report.assert_no_leaks()
    return report


async def aleaks(
    func: Callable[..., Awaitable[Any]],
    iterations: int = 20,
    *,
    warmup: int = 3,
    threshold: str | int | float = "512B",
    ignore: Sequence[IgnoreRule] = (),
    default_ignore: bool = True,
    frames: int = 10,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    check: bool = True,
    recorder: Recorder | None = None,
) -> LeakReport:
    """:func:`leaks` for an async ``func``, awaited in the running event loop."""
    run = _LeakRun(iterations, warmup, threshold, ignore, default_ignore, frames, recorder)
    call_kwargs = kwargs or {}
    run.begin()
    try:
        for _ in range(warmup):
            await func(*args, **call_kwargs)
        run.start_tracing()
        await func(*args, **call_kwargs)
        run.sample()
        for _ in range(iterations):
            await func(*args, **call_kwargs)
            run.sample()
    finally:
        run.end()
    report = run.report()
    if check:
        report.assert_no_leaks()
    return report
