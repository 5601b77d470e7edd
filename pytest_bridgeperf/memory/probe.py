"""The body probe behind ``@pytest.mark.perf(memory="64MB", rss="200MB")``.

The plugin wraps each run of a test body in :func:`body_probe` when the marker has a ``memory``
or an ``rss`` budget, telling it what the run is for (its *mode*); every run is a whole run of
the test (setup, call, teardown, fresh fixtures):

* ``measure`` (also ``confirm``): ``memory`` measures the body's exact Python-heap peak with the
  heap counter (timings recorded meanwhile stay valid), or with tracemalloc where the counter is
  not built (timings flagged as distorted). ``rss`` alone reads the kernel's high-water mark
  (free). With both budgets the heap meter's own bookkeeping would inflate the RSS peak, so this
  run measures the RSS only and a ``heap`` run follows (:func:`phases`).
* ``heap``: the Python heap only.
* ``explain-sites``: a broken ``memory`` budget is explained by a run under memray's
  Python-allocator tracer, naming the allocation sites live *at the peak* (without memray: under
  tracemalloc, naming those still live at the end).
* ``explain-lines-heap`` / ``explain-lines-rss``: with ``--perf-memory-lines``, a run under
  memory-profiler's line profiler.

Explaining runs record nothing: their text goes to the ``explanations`` mapping the plugin hands
in, under the metric's name.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from ..metrics import Budgets, Recorder
from ..units import format_size
from .block import MemoryBlock, rerunning
from .lines import line_profiling
from .sites import format_sites, sites_from_memray

__all__ = ["body_probe", "explain_modes", "phases"]

MEASURING = frozenset({"measure", "confirm"})


def phases(budgets: Budgets) -> list[str]:
    """The runs one measurement of the test body takes."""
    if budgets.memory is not None and budgets.rss is not None:
        return ["measure", "heap"]
    return ["measure"]


def explain_modes(budgets: Budgets, broken: set[str], memory_lines: bool) -> list[str]:
    """The explaining runs for the broken budgets (``broken``: names of failed metrics)."""
    modes: list[str] = []
    if budgets.memory is not None and "memory" in broken:
        modes.append("explain-sites")
        if memory_lines:
            modes.append("explain-lines-heap")
    if budgets.rss is not None and "rss" in broken and memory_lines:
        modes.append("explain-lines-rss")
    return modes


def body_probe(
    budgets: Budgets,
    recorder: Recorder,
    mode: str,
    explanations: MutableMapping[str, str],
    function: Callable[..., Any] | None = None,
) -> contextlib.AbstractContextManager[None] | None:
    """Measure (or explain) one run of the test body for the marker's ``memory``/``rss``
    budgets; records ``memory`` (bytes, role memory) and/or ``rss`` (bytes, role rss).
    ``function``: the test function, for the line-by-line report."""
    if budgets.memory is None and budgets.rss is None:
        return None
    if mode in MEASURING:
        if budgets.rss is not None:
            return _measure_rss(recorder)
        return _measure_heap(recorder, budgets.memory)
    if mode == "heap":
        return _measure_heap(recorder, budgets.memory) if budgets.memory is not None else None
    if mode == "explain-sites":
        return _explain_sites(budgets.memory, explanations)
    if mode in ("explain-lines-heap", "explain-lines-rss"):
        heap = mode == "explain-lines-heap"
        return _explain_lines(explanations, "memory" if heap else "rss", heap, function)
    return None


@contextlib.contextmanager
def _measure_heap(recorder: Recorder, budget: int | None) -> Iterator[None]:
    heap = MemoryBlock(budget, "python", recorder=recorder, record=False, enforce=False)
    with heap:
        yield
    details: dict[str, Any] = {"kind": "python", "backend": heap.backend, "current": heap.current}
    recorder.record("memory", heap.peak, "bytes", role="memory", noisy=False, details=details)


@contextlib.contextmanager
def _measure_rss(recorder: Recorder) -> Iterator[None]:
    rss = MemoryBlock(None, "rss", record=False, enforce=False)
    with rss:
        yield
    details: dict[str, Any] = {"kind": "rss", "current": rss.current}
    recorder.record("rss", rss.peak, "bytes", role="rss", noisy=True, details=details)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """While a run explains: the test's own perf_memory blocks neither record nor fail."""
    token = rerunning.set(True)
    try:
        yield
    finally:
        rerunning.reset(token)


@contextlib.contextmanager
def _explain_sites(budget: int | None, explanations: MutableMapping[str, str]) -> Iterator[None]:
    try:
        import memray
    except ImportError:
        with _live_sites(budget, explanations, "memray is not installed"):
            yield
        return
    directory = Path(tempfile.mkdtemp(prefix="bridgeperf-sites-"))
    path = directory / "run.bin"
    try:
        tracker = memray.Tracker(
            path,
            file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            trace_python_allocators=True,
        )
        try:
            tracker.__enter__()
        except RuntimeError as exc:  # another memray tracker is active (pytest-memray)
            with _live_sites(budget, explanations, f"memray could not start ({exc})"):
                yield
            return
        try:
            with _quiet():
                yield
        finally:
            tracker.__exit__(None, None, None)
        reader = memray.FileReader(path)
        try:
            records = reader.get_high_watermark_allocation_records(merge_threads=True)
            sites, peak = sites_from_memray(records), int(reader.metadata.peak_memory)
        finally:
            reader.close()
        explanations["memory"] = format_sites(
            sites,
            f"allocation sites at the peak (a run under memray measured {format_size(peak)}), "
            "user code first",
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def _live_sites(
    budget: int | None, explanations: MutableMapping[str, str], why: str
) -> Iterator[None]:
    """The heap counter keeps no sites: a run under tracemalloc names those still live at the
    body's end."""
    block = MemoryBlock(budget, "python", backend="tracemalloc", record=False, enforce=False)
    with block, _quiet():
        yield
    live = block.explain() or "no allocation site found"
    explanations["memory"] = f"{live}\n  (sites at the peak unavailable: {why})"


@contextlib.contextmanager
def _explain_lines(
    explanations: MutableMapping[str, str],
    metric: str,
    heap: bool,
    function: Callable[..., Any] | None,
) -> Iterator[None]:
    with _quiet(), line_profiling(function=function, heap=heap) as report:
        yield
    previous = explanations.get(metric, "")
    explanations[metric] = "\n".join(x for x in (previous, report.text()) if x)
