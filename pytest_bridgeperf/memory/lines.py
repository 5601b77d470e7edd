"""``--perf-memory-lines``: a line-by-line memory report of a test function (memory-profiler)."""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from .sites import is_user_file

__all__ = ["LineReport", "line_profiling", "line_report"]

_MIB = 2.0**20


def _heap_code_map(include_children: bool) -> Any:
    import memory_profiler

    class HeapCodeMap(memory_profiler.CodeMap):  # type: ignore[misc]
        """memory-profiler's per-line bookkeeping, fed with the exact Python-heap level
        (its own ``tracemalloc`` backend takes a full snapshot per line and counts per file)."""

        def trace(self, code: Any, lineno: int, prev_lineno: int | None) -> None:
            memory = tracemalloc.get_traced_memory()[0] / _MIB
            previous = self[code].get(lineno)
            previous_memory = previous[1] if previous else 0
            previous_inc = previous[0] if previous else 0
            prev_line = self[code].get(prev_lineno) if prev_lineno else None
            prev_line_memory = prev_line[1] if prev_line else 0
            occurrences = self[code][lineno][2] + 1 if lineno in self[code] else 1
            self[code][lineno] = (
                previous_inc + (memory - prev_line_memory),
                max(memory, previous_memory),
                occurrences,
            )

    return HeapCodeMap(include_children=include_children, backend="psutil")


class LineReport:
    """The table of one profiled run (read :meth:`text` after the run)."""

    def __init__(self, profiler: Any, heap: bool) -> None:
        self._profiler = profiler
        self._heap = heap
        self.error: BaseException | None = None

    def text(self) -> str:
        import memory_profiler

        stream = io.StringIO()
        memory_profiler.show_results(self._profiler, stream=stream, precision=2)
        text = stream.getvalue().rstrip()
        scale = "Python heap, MiB" if self._heap else "RSS, MiB"
        if not text:
            text = "(no line of the test function ran under the line profiler)"
        header = f"line-by-line memory of the test function ({scale}; memory-profiler):"
        if self.error is not None:
            header += f"\n(the profiled run raised {type(self.error).__name__}: {self.error})"
        return f"{header}\n{text}"


@contextlib.contextmanager
def line_profiling(
    function: Callable[..., Any] | None = None, heap: bool = True
) -> Iterator[LineReport]:
    """Profile what runs inside the block line by line under memory-profiler.

    ``function``: the test function whose lines to report; when unknown, the first function of
    the user's code called in the block. ``heap``: Python heap (tracemalloc) rather than RSS.
    An exception of the block is noted in the report and re-raised.
    """
    import memory_profiler

    profiler = memory_profiler.LineProfiler(backend="psutil")
    if heap:
        profiler.code_map = _heap_code_map(include_children=False)
    found: list[Any] = []
    if function is not None:
        target = inspect.unwrap(function)
        code = getattr(target, "__code__", None)
        if code is not None:
            profiler.code_map.add(code)
            found.append(code)

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and not found and is_user_file(frame.f_code.co_filename):
            profiler.code_map.add(frame.f_code)
            found.append(frame.f_code)
        return profiler.trace_memory_usage(frame, event, arg)

    report = LineReport(profiler, heap)
    started = False
    if heap and not tracemalloc.is_tracing():
        tracemalloc.start(1)
        started = True
    previous = sys.gettrace()
    profiler._original_trace_function = previous
    sys.settrace(tracer)
    try:
        yield report
    except BaseException as exc:
        report.error = exc
        raise
    finally:
        sys.settrace(previous)
        if started:
            tracemalloc.stop()


def line_report(
    run: Callable[[], object],
    function: Callable[..., Any] | None = None,
    heap: bool = True,
) -> str:
    """Run ``run()`` once under memory-profiler's line profiler and return its table (an
    exception of ``run`` is noted in the table, not raised)."""
    with contextlib.suppress(Exception), line_profiling(function, heap) as report:
        run()
    return report.text()
