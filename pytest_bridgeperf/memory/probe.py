"""The body probe behind ``@pytest.mark.perf(memory="64MB", rss="200MB")``.

The plugin calls :func:`body_probe` around the test body when the marker has a ``memory`` or an
``rss`` budget. ``memory`` measures the body's exact Python-heap peak with the heap counter
(timings recorded meanwhile stay valid), or with tracemalloc where the counter is not built
(timings flagged as distorted). ``rss`` alone reads the kernel's high-water mark (free). Both
together would make the heap meter's own bookkeeping inflate the RSS peak, so then the body runs
with the RSS meter only and a second run of the body measures the Python heap.

A failed ``memory`` budget is explained: the body runs once more under memray's Python-allocator
tracer to name the allocation sites live *at the peak* (without memray: once more under
tracemalloc, naming those still live at the end), and with ``--perf-memory-lines`` once more
under memory-profiler's line profiler.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..metrics import Budgets, Recorder
from ..settings import Settings
from ..units import format_size
from .block import MemoryBlock, rerunning
from .lines import line_report
from .sites import AllocationSite, format_sites, sites_from_memray

__all__ = ["body_probe"]

Rerun = Callable[[], object]


def body_probe(
    budgets: Budgets, recorder: Recorder, settings: Settings, rerun: Rerun
) -> contextlib.AbstractContextManager[None] | None:
    """Measure the test body against the marker's ``memory``/``rss`` budgets (see the module
    docstring); records ``memory`` (bytes, role memory) and/or ``rss`` (bytes, role rss)."""
    if budgets.memory is None and budgets.rss is None:
        return None
    return _probe(budgets, recorder, settings, rerun)


@contextlib.contextmanager
def _quiet_rerun(recorder: Recorder) -> Iterator[None]:
    """While the body runs again: our blocks neither record nor fail, and what the body records
    goes to a scratch table (the first run's metrics stand; names must stay unique)."""
    token = rerunning.set(True)
    metrics, distortion = recorder.metrics, recorder.timing_distortion
    recorder.metrics = {}
    try:
        yield
    finally:
        recorder.metrics, recorder.timing_distortion = metrics, distortion
        rerunning.reset(token)


def _run_again(rerun: Rerun, recorder: Recorder) -> BaseException | None:
    with _quiet_rerun(recorder):
        try:
            rerun()
        except Exception as exc:
            return exc
    return None


def _peak_sites(rerun: Rerun, recorder: Recorder) -> tuple[list[AllocationSite], int] | str:
    """Run the body again under memray with Python-allocator tracing: the sites live at the
    peak. Returns the sites and memray's peak, or why it could not."""
    try:
        import memray
    except ImportError:
        return "memray is not installed"
    directory = Path(tempfile.mkdtemp(prefix="bridgeperf-sites-"))
    path = directory / "rerun.bin"
    try:
        tracker = memray.Tracker(
            path,
            file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            trace_python_allocators=True,
        )
        try:
            tracker.__enter__()
        except RuntimeError as exc:
            return f"memray could not start ({exc})"
        try:
            error = _run_again(rerun, recorder)
        finally:
            tracker.__exit__(None, None, None)
        if error is not None:
            return f"the rerun raised {type(error).__name__}: {error}"
        reader = memray.FileReader(path)
        try:
            records = reader.get_high_watermark_allocation_records(merge_threads=True)
            return sites_from_memray(records), int(reader.metadata.peak_memory)
        finally:
            reader.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _explain_heap(block: MemoryBlock, settings: Settings, rerun: Rerun, recorder: Recorder) -> str:
    parts: list[str] = []
    found = _peak_sites(rerun, recorder)
    if isinstance(found, tuple):
        sites, peak = found
        parts.append(
            format_sites(
                sites,
                f"allocation sites at the peak (a rerun under memray measured "
                f"{format_size(peak)}), user code first",
            )
        )
    else:
        live = block.explain() or _live_sites(block, rerun, recorder)
        parts.append(f"{live}\n  (sites at the peak unavailable: {found})")
    if settings.memory_lines:
        parts.append(_lines(rerun, recorder, heap=True))
    return "\n".join(parts)


def _live_sites(block: MemoryBlock, rerun: Rerun, recorder: Recorder) -> str:
    """The heap counter keeps no sites: run the body once more under tracemalloc for the sites
    still live at its end."""
    again = MemoryBlock(block.budget, "python", backend="tracemalloc", record=False, enforce=False)
    with again:
        error = _run_again(rerun, recorder)
    if error is not None:
        return f"no allocation site found (the rerun raised {type(error).__name__}: {error})"
    return again.explain() or "no allocation site found"


def _lines(rerun: Rerun, recorder: Recorder, heap: bool) -> str:
    function: Callable[..., Any] | None = getattr(rerun, "function", None)
    with _quiet_rerun(recorder):
        try:
            return line_report(rerun, function=function, heap=heap)
        except Exception as exc:  # never hide the budget failure behind a report failure
            return f"(--perf-memory-lines: the line report failed: {type(exc).__name__}: {exc})"


def _record_heap(recorder: Recorder, block: MemoryBlock, explain: str) -> None:
    details: dict[str, Any] = {"kind": "python", "backend": block.backend, "current": block.current}
    if explain:
        details["explain"] = explain
        details["sites"] = [site.to_json() for site in block.sites]
    recorder.record("memory", block.peak, "bytes", role="memory", noisy=False, details=details)


def _record_rss(recorder: Recorder, peak: int, current: int, explain: str) -> None:
    details: dict[str, Any] = {"kind": "rss", "current": current}
    if explain:
        details["explain"] = explain
    recorder.record("rss", peak, "bytes", role="rss", noisy=True, details=details)


@contextlib.contextmanager
def _probe(
    budgets: Budgets, recorder: Recorder, settings: Settings, rerun: Rerun
) -> Iterator[None]:
    if rerunning.get():
        # A rerun explaining a failure: the outer probe measures; nothing to do here.
        yield
        return
    if budgets.memory is not None and budgets.rss is None:
        heap = MemoryBlock(budgets.memory, "python", recorder=recorder, record=False, enforce=False)
        with heap:
            yield
        exceeded = heap.peak > budgets.memory
        _record_heap(
            recorder, heap, _explain_heap(heap, settings, rerun, recorder) if exceeded else ""
        )
        return

    rss = MemoryBlock(budgets.rss, "rss", record=False, enforce=False)
    with rss:
        yield
    rss_explain = ""
    if budgets.rss is not None and rss.peak > budgets.rss and settings.memory_lines:
        rss_explain = _lines(rerun, recorder, heap=False)
    _record_rss(recorder, rss.peak, rss.current, rss_explain)
    if budgets.memory is None:
        return
    # Second phase: the Python heap, measured in a rerun so its tracer does not inflate the RSS.
    heap = MemoryBlock(budgets.memory, "python", recorder=recorder, record=False, enforce=False)
    with _quiet_rerun(recorder), heap:
        error: BaseException | None = None
        try:
            rerun()
        except Exception as exc:
            error = exc
    if error is not None:
        raise AssertionError(
            "memory budget: a test with both memory= and rss= budgets runs its body a second "
            "time to measure the Python heap without distorting the RSS, and that run raised "
            f"{type(error).__name__}: {error}. Put the two budgets on separate tests."
        ) from error
    exceeded = heap.peak > budgets.memory
    _record_heap(recorder, heap, _explain_heap(heap, settings, rerun, recorder) if exceeded else "")
