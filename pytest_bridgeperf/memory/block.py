"""``with perf_memory(budget="64MB") as m:`` — a measured block: peak, growth, RSS peak, sites."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Literal

from ..metrics import Recorder
from ..units import format_size, parse_size
from .sites import AllocationSite, format_sites, sites_from_snapshot
from .tracers import (
    HeapCounterSource,
    MemraySource,
    OpenBlock,
    PeakCoordinator,
    PeakSource,
    TracemallocSource,
    coordinator,
    heap_counter,
    rss_source_factory,
)

__all__ = ["Backend", "Kind", "MemoryBlock", "MemoryBudgetExceeded", "rerunning"]

Kind = Literal["python", "rss"]
Backend = Literal["auto", "heapcount", "tracemalloc", "memray"]

#: True while a test body runs a second time to explain a failure: blocks measure but neither
#: record nor fail then.
rerunning: ContextVar[bool] = ContextVar("bridgeperf_memory_rerunning", default=False)

BaselineLookup = Callable[[str], "float | None"]


class MemoryBudgetExceeded(AssertionError):
    """A measured block used more memory than its budget."""


def distortion_reason(backend: str) -> str:
    return (
        f"a Python-heap tracer ({backend}) was running; timings measured under it are slower "
        "than real ones. Measure timings outside memory blocks / memory budgets"
    )


#: Backends whose timings are distorted: tracemalloc costs 6x on allocation-heavy code; memray's
#: tracker writes a capture file. The heap counter (about 1.1-1.2x) does not flag timings.
DISTORTING = ("tracemalloc", "memray")


def resolve_backend(backend: Backend, frames: int | None) -> str:
    """``auto``: tracemalloc when sites are asked for (``frames``) or tracemalloc already traces
    (its cost is paid; sharing it adds no second hook), else the heap counter when built, else
    tracemalloc."""
    if backend not in ("auto", "heapcount", "tracemalloc", "memray"):
        raise ValueError(
            f"backend must be 'auto', 'heapcount', 'tracemalloc' or 'memray', got {backend!r}"
        )
    if backend != "auto":
        return backend
    if frames is not None or tracemalloc.is_tracing() or heap_counter() is None:
        return "tracemalloc"
    return "heapcount"


def python_coordinator(backend: str, frames: int) -> PeakCoordinator:
    if backend == "heapcount":
        counter: Callable[[], PeakSource] = HeapCounterSource
        return coordinator(("python", "heapcount"), counter)
    if backend == "tracemalloc":
        return coordinator(("python", "tracemalloc", frames), lambda: TracemallocSource(frames))
    if backend == "memray":
        factory: Callable[[], PeakSource] = MemraySource
        return coordinator(("python", "memray"), factory)
    raise ValueError(f"backend must be 'heapcount', 'tracemalloc' or 'memray', got {backend!r}")


def rss_coordinator(include_children: bool, method: str) -> PeakCoordinator:
    return coordinator(
        ("rss", include_children, method), rss_source_factory(include_children, method)
    )


class MemoryBlock:
    """One measured block. Read :attr:`peak`, :attr:`current`, :attr:`rss_peak` after it closed.

    ``kind="python"``: :attr:`peak` is the Python-heap peak above the level at entry (every
    thread's allocations count), from the heap counter, or tracemalloc (see
    :func:`resolve_backend`). ``kind="rss"``: :attr:`peak` is the RSS peak above the RSS at
    entry. :attr:`rss_peak` is measured in both kinds (under ``kind="python"`` it includes the
    heap meter's own bookkeeping: about an eighth of the heap's span for the counter, up to
    double for tracemalloc on small-object-heavy code; budget RSS with ``kind="rss"``).
    """

    def __init__(
        self,
        budget: str | int | float | None = None,
        kind: Kind = "python",
        *,
        name: str | None = None,
        backend: Backend = "auto",
        frames: int | None = None,
        include_children: bool = False,
        rss_method: str = "auto",
        recorder: Recorder | None = None,
        baseline: BaselineLookup | None = None,
        metric_name: Callable[[str], str] | None = None,
        record: bool = True,
        enforce: bool = True,
    ) -> None:
        if kind not in ("python", "rss"):
            raise ValueError(f"kind must be 'python' or 'rss', got {kind!r}")
        if frames is not None and (not isinstance(frames, int) or frames < 1):
            raise ValueError(f"frames must be a positive int, got {frames!r}")
        self.budget: int | None = None if budget is None else parse_size(budget)
        # Quote the budget as the user wrote it ("64MB" should not come back as "61 MiB").
        self._budget_text = budget.strip() if isinstance(budget, str) else None
        self.kind: Kind = kind
        resolved = resolve_backend(backend, frames) if kind == "python" else "rss"
        if resolved == "heapcount" and frames is not None:
            raise ValueError(
                "frames= needs backend='tracemalloc' (the heap counter keeps no sites)"
            )
        self.backend: str = resolved
        self.name = name
        self._frames = frames or 1
        self._recorder = recorder
        self._baseline = baseline
        self._metric_name = metric_name
        self._record_metric = record
        self._enforce = enforce
        self._python = python_coordinator(resolved, self._frames) if kind == "python" else None
        self._python_backend = resolved
        self._rss = rss_coordinator(include_children, rss_method)
        self._python_block: OpenBlock | None = None
        self._rss_block: OpenBlock | None = None
        self._entry_snapshot: tracemalloc.Snapshot | None = None
        self._saved_distortion: str | None = None
        self._result: dict[str, int] | None = None
        #: Allocation sites behind the peak (filled when the budget failed, or by memray).
        self.sites: list[AllocationSite] = []
        self.sites_heading = ""
        #: The metric recorded for this block, if any.
        self.metric_name: str | None = None

    # -- results ----------------------------------------------------------------------------

    def _get(self, key: str) -> int:
        if self._result is None:
            raise RuntimeError(f"read m.{key} after the perf_memory block has ended")
        return self._result[key]

    @property
    def peak(self) -> int:
        """Bytes above the level at entry at the block's peak (Python heap or RSS by ``kind``)."""
        return self._get("peak")

    @property
    def current(self) -> int:
        """Growth at exit: bytes still allocated (``kind``'s measure) relative to entry."""
        return self._get("current")

    @property
    def rss_peak(self) -> int:
        """RSS peak above the RSS at entry."""
        return self._get("rss_peak")

    @property
    def python_peak(self) -> int | None:
        """Python-heap peak, or None for ``kind="rss"``."""
        return self._get("python_peak") if self.kind == "python" else None

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> MemoryBlock:
        if self._python_block is not None or self._rss_block is not None:
            raise RuntimeError("a perf_memory block cannot be entered twice at the same time")
        self._result = None
        self._rss_block = self._rss.enter()
        if self._python is not None:
            shared = tracemalloc.is_tracing()
            try:
                self._python_block = self._python.enter()
            except BaseException:
                self._rss.exit(self._rss_block)
                self._rss_block = None
                raise
            if shared and self.budget is not None and self._python_backend == "tracemalloc":
                # Traces from before this block exist; diff against them to name this block's
                # sites if the budget fails.
                self._entry_snapshot = tracemalloc.take_snapshot()
            if self._recorder is not None and self._python_backend in DISTORTING:
                self._saved_distortion = self._recorder.timing_distortion
                self._recorder.timing_distortion = distortion_reason(self._python_backend)
        return self

    async def __aenter__(self) -> MemoryBlock:
        return self.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True  # a budget failure points at the user's `with` line
        self._finish(ok=exc_type is None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True  # a budget failure points at the user's `with` line
        self._finish(ok=exc_type is None)

    def _finish(self, ok: bool) -> None:
        __tracebackhide__ = True
        python_peak = python_current = 0
        snapshot: tracemalloc.Snapshot | None = None
        try:
            if self._python is not None and self._python_block is not None:
                block = self._python_block
                if (
                    ok
                    and self.budget is not None
                    and self._python_backend == "tracemalloc"
                    and tracemalloc.is_tracing()
                    and max(block.peak, tracemalloc.get_traced_memory()[1]) - block.entry
                    > self.budget
                ):
                    snapshot = tracemalloc.take_snapshot()
                python_peak, python_current = self._python.exit(block)
                if block.peak_sites is not None:
                    self.sites = block.peak_sites
                    self.sites_heading = "allocation sites at the peak (memray), user code first"
        finally:
            self._python_block = None
            if (
                self._recorder is not None
                and self._python is not None
                and self._python_backend in DISTORTING
            ):
                self._recorder.timing_distortion = self._saved_distortion
            rss_peak = rss_current = 0
            if self._rss_block is not None:
                rss_peak, rss_current = self._rss.exit(self._rss_block)
                self._rss_block = None
        self._result = {
            "peak": python_peak if self.kind == "python" else rss_peak,
            "current": python_current if self.kind == "python" else rss_current,
            "rss_peak": rss_peak,
            "python_peak": python_peak,
        }
        if snapshot is not None:
            self.sites = sites_from_snapshot(snapshot, self._entry_snapshot)
            self.sites_heading = "allocation sites still live at the block's exit, user code first"
        self._entry_snapshot = None
        if not ok or rerunning.get():
            return
        if self._record_metric:
            self._record()
        if self._enforce and self.budget is not None and self.peak > self.budget:
            raise MemoryBudgetExceeded(self.failure_message())

    # -- reporting --------------------------------------------------------------------------

    @property
    def measure(self) -> str:
        return "Python-heap peak" if self.kind == "python" else "RSS peak"

    def explain(self) -> str:
        if not self.sites_heading:
            return ""
        text = format_sites(self.sites, self.sites_heading)
        if self.kind == "python" and self.sites and self._python_backend == "tracemalloc":
            live = sum(s.size for s in self.sites)
            if live < self.peak // 2:
                text += (
                    f"\n  (only {format_size(live)} of the {format_size(self.peak)} peak was still "
                    "live at exit: the peak was transient; a marker budget "
                    "@pytest.mark.perf(memory=...) names the sites at the peak itself)"
                )
        return text

    def failure_message(self) -> str:
        assert self.budget is not None
        shown = self.metric_name or self.name
        label = f" {shown!r}" if shown else ""
        baseline = None
        if self._baseline is not None and self.metric_name:
            baseline = self._baseline(self.metric_name)
        baseline_text = (
            f"baseline {format_size(baseline)}" if baseline is not None else "no baseline"
        )
        budget = self._budget_text or format_size(self.budget)
        lines = [
            f"perf_memory block{label}: {self.measure} {format_size(self.peak)} exceeds the "
            f"budget {budget} ({baseline_text}; growth at exit {format_size(self.current)}; "
            f"measured with {self.backend})"
        ]
        explanation = self.explain()
        if explanation:
            lines.append(explanation)
        elif self.backend == "heapcount":
            lines.append(
                "  (the heap counter keeps no allocation sites: give this block frames=5 to "
                "measure it with tracemalloc and list the sites still live at its exit)"
            )
        return "\n".join(lines)

    def _record(self) -> None:
        if self._recorder is None:
            return
        base = self.name or ("memory.block" if self.kind == "python" else "rss.block")
        name = (
            self._metric_name(base) if self._metric_name is not None and self.name is None else base
        )
        self.metric_name = name
        details: dict[str, Any] = {
            "kind": self.kind,
            "backend": self.backend,
            "current": self.current,
        }
        if self.budget is not None:
            details["budget"] = self.budget
        explanation = self.explain()
        if explanation:
            details["explain"] = explanation
            details["sites"] = [site.to_json() for site in self.sites]
        if self.kind == "python":
            # The counter and tracemalloc are exact and repeatable; memray's arena view is not.
            noisy = self.backend not in ("heapcount", "tracemalloc")
            self._recorder.record(
                name, self.peak, "bytes", role="memory", noisy=noisy, details=details
            )
        else:
            self._recorder.record(name, self.peak, "bytes", role="rss", noisy=True, details=details)

    def __repr__(self) -> str:
        if self._result is None:
            return f"<perf_memory block kind={self.kind!r} (open or not run)>"
        return (
            f"<perf_memory block kind={self.kind!r} peak={format_size(self.peak)} "
            f"current={format_size(self.current)} rss_peak={format_size(self.rss_peak)}>"
        )
