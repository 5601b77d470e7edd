"""Memory budgets: Python-heap and RSS peaks of a block or a test body, allocation sites, leaks.

Pytest-free: the ``perf_memory`` fixture hands a :class:`PerfMemory` the test's recorder.

* ``kind="python"`` (default): the Python-heap peak above the level at entry, exact and
  repeatable, recorded as a non-noisy ``bytes`` metric of role ``memory``. Measured by the heap
  counter (a C extension, about 1.1-1.2x on allocation-heavy code) where it is built, else by
  tracemalloc (6x); ``backend="memray"`` trades exactness for speed (see
  :class:`~.tracers.MemraySource`).
* ``kind="rss"``: the RSS peak above entry: the kernel's high-water mark on Linux (exact, free),
  a psutil sampling thread elsewhere or with ``include_children=True``; role ``rss``, noisy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..metrics import Recorder
from .block import Backend, BaselineLookup, Kind, MemoryBlock, MemoryBudgetExceeded
from .leaks import DEFAULT_IGNORE, IgnoreRule, LeakDetected, LeakReport, LeakSite, aleaks, leaks
from .probe import body_probe
from .sites import AllocationSite
from .tracers import MemoryMeasurementError

__all__ = [
    "DEFAULT_IGNORE",
    "AllocationSite",
    "LeakDetected",
    "LeakReport",
    "LeakSite",
    "MemoryBlock",
    "MemoryBudgetExceeded",
    "MemoryMeasurementError",
    "PerfMemory",
    "body_probe",
]


class PerfMemory:
    """What the ``perf_memory`` fixture returns.

    ``with perf_memory(budget="64MB") as m:`` measures a block (also ``async with``);
    ``perf_memory.leaks(func, iterations=20)`` checks a callable for leaks.
    """

    def __init__(
        self, recorder: Recorder | None = None, baseline: BaselineLookup | None = None
    ) -> None:
        self._recorder = recorder
        self._baseline = baseline

    def _unique(self, base: str) -> str:
        taken = self._recorder.metrics if self._recorder is not None else {}
        if base not in taken:
            return base
        number = 2
        while f"{base}.{number}" in taken:
            number += 1
        return f"{base}.{number}"

    def __call__(
        self,
        budget: str | int | float | None = None,
        kind: Kind = "python",
        *,
        name: str | None = None,
        backend: Backend = "auto",
        frames: int | None = None,
        include_children: bool = False,
        rss_method: str = "auto",
        record: bool = True,
    ) -> MemoryBlock:
        """A measured block. ``budget``: max peak (``"64MB"``, ``"64MiB"``, bytes) of ``kind``;
        exceeding it fails with the allocation sites. ``name``: the recorded metric (default
        ``memory.block``/``rss.block``, numbered when repeated). ``backend``: ``"auto"`` (the
        heap counter where built, else tracemalloc), ``"heapcount"``, ``"tracemalloc"`` or
        ``"memray"``. ``frames``: measure with tracemalloc keeping that many frames per
        allocation, so a failed budget lists the allocation sites (5 finds the user's line
        behind library calls); costs 6x or more on allocation-heavy code."""
        return MemoryBlock(
            budget,
            kind,
            name=name,
            backend=backend,
            frames=frames,
            include_children=include_children,
            rss_method=rss_method,
            recorder=self._recorder if record else None,
            baseline=self._baseline,
            metric_name=self._unique,
        )

    def leaks(
        self,
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
    ) -> LeakReport:
        """Fail (``LeakDetected``) if calling ``func`` leaves memory behind at some allocation
        site, growing by ``threshold`` or more per call; see :mod:`.leaks`."""
        return leaks(
            func,
            iterations,
            warmup=warmup,
            threshold=threshold,
            ignore=ignore,
            default_ignore=default_ignore,
            frames=frames,
            args=args,
            kwargs=kwargs,
            check=check,
            recorder=self._recorder,
        )

    async def aleaks(
        self,
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
    ) -> LeakReport:
        """:meth:`leaks` for an async ``func``."""
        return await aleaks(
            func,
            iterations,
            warmup=warmup,
            threshold=threshold,
            ignore=ignore,
            default_ignore=default_ignore,
            frames=frames,
            args=args,
            kwargs=kwargs,
            check=check,
            recorder=self._recorder,
        )

    def __repr__(self) -> str:
        return "<perf_memory>"
