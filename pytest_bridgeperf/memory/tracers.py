"""Peak sources: the process-wide things that can tell a memory peak, and the bookkeeping that
lets measured blocks nest.

Every source here is process-wide by nature (tracemalloc, the kernel's RSS high-water mark, a
memray tracker), so nesting cannot be done by starting a second one. Instead a
:class:`PeakCoordinator` owns one running source per configuration; on every block entry and exit
it *folds*: reads ``(current, peak since the last fold)``, raises the running peak of every open
block to it, and resets the source's peak. Each block thus sees exactly the peak that happened
while it was open, in any nesting order (also non-LIFO, as with blocks in several threads).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from .sites import AllocationSite, sites_from_memray

__all__ = [
    "HEAP_COUNTER_ENV",
    "HeapCounterSource",
    "HighWaterMarkSource",
    "MemoryMeasurementError",
    "MemraySource",
    "PeakCoordinator",
    "PeakSource",
    "RssSamplerSource",
    "TracemallocSource",
    "clear_refs_works",
    "coordinator",
    "heap_counter",
]


class MemoryMeasurementError(RuntimeError):
    """A memory measurement could not be started (backend missing or busy)."""


class PeakSource(Protocol):
    """One process-wide peak meter. All values are bytes on the source's own scale."""

    name: str

    def start(self) -> int:
        """Begin measuring; return the current level."""

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        """``(current, peak since start or the previous fold, sites at that peak or None)``;
        then reset the peak to the current level."""

    def stop(self) -> None:
        """Stop measuring (after a final :meth:`fold`)."""


# ---------------------------------------------------------------------------------------------
# Python heap: the heap counter (C extension), tracemalloc where it is not built

#: Set to ``0`` (or ``off``/``false``/``no``) to measure ``kind="python"`` with tracemalloc even
#: where the heap counter is built: the fallback of an install without a compiler.
HEAP_COUNTER_ENV = "BRIDGEPERF_HEAP_COUNTER"


def heap_counter() -> ModuleType | None:
    """The ``_heapcount`` extension module, or None when it is not built or switched off."""
    if os.environ.get(HEAP_COUNTER_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    try:
        from . import _heapcount
    except ImportError:
        return None
    return _heapcount


class HeapCounterSource:
    """Exact Python-heap peak from allocator hooks on the MEM and OBJ domains that count requested
    bytes (no traceback per allocation): about 1.1-1.2x on allocation-heavy code, where
    tracemalloc costs 6x. Same figures as tracemalloc for everything allocated through Python's
    allocators, except numpy's data buffers (numpy reports those to tracemalloc only) and the
    rare direct ``PyMem_RawMalloc`` of the interpreter's own bookkeeping. Keeps no allocation
    sites."""

    name = "heapcount"

    def __init__(self) -> None:
        module = heap_counter()
        if module is None:
            raise MemoryMeasurementError(
                "backend='heapcount' needs the compiled extension "
                "pytest_bridgeperf.memory._heapcount (reinstall with a C compiler available) "
                f"and {HEAP_COUNTER_ENV} not set to 0"
            )
        self._counter = module

    def start(self) -> int:
        if self._counter.is_running():
            raise MemoryMeasurementError("the heap counter is already running")
        self._counter.start()
        return 0

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        try:
            current, peak = self._counter.get()
        except (RuntimeError, MemoryError) as exc:
            raise MemoryMeasurementError(f"Python-heap measurement failed: {exc}") from exc
        self._counter.reset_peak()
        return int(current), int(peak), None

    def stop(self) -> None:
        self._counter.stop()


# ---------------------------------------------------------------------------------------------
# Python heap: tracemalloc


class TracemallocSource:
    """Exact Python-heap peak: every allocation through the Python allocators (and numpy's, which
    reports to tracemalloc). Costs 6x on allocation-heavy code; the fallback of the heap counter,
    and what a block asking for allocation sites (``frames=``) uses."""

    name = "tracemalloc"

    def __init__(self, frames: int = 1) -> None:
        self.frames = frames
        self.started_here = False

    def start(self) -> int:
        if tracemalloc.is_tracing():
            # Someone else traces (python -X tracemalloc, a user): share it, leave it running.
            self.started_here = False
        else:
            tracemalloc.start(self.frames)
            self.started_here = True
        tracemalloc.reset_peak()
        return tracemalloc.get_traced_memory()[0]

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        return current, peak, None

    def stop(self) -> None:
        if self.started_here:
            tracemalloc.stop()


# ---------------------------------------------------------------------------------------------
# Python heap, cheap: memray's native tracker


@dataclass
class _Segment:
    path: Path
    tracker: Any


class MemraySource:
    """Allocator-level heap peak from memray's native tracker (malloc/mmap, no Python-allocator
    hooks): about 1.2-1.3x on allocation-heavy code, but it sees small Python objects only when
    pymalloc asks the system for a new 1 MiB arena. Blind to reuse of free arena space, so it
    under-counts in a fragmented heap (measured: 0.44 MB seen of a 12.8 MB peak). Opt-in.

    One memray tracker can run per process, so nesting is done in *segments*: every fold stops
    the tracker, reads its peak and its net growth, and starts a fresh one. Frees of memory that
    an earlier segment allocated are invisible to a later one, so an outer block's peak is an
    upper bound when an inner block frees memory the outer one allocated."""

    name = "memray"

    def __init__(self) -> None:
        try:
            import memray
        except ImportError as exc:  # pragma: no cover - memray is installed where tested
            raise MemoryMeasurementError(
                "backend='memray' needs memray (pip install memray; Linux and macOS only)"
            ) from exc
        self._memray = memray
        self._dir = Path(tempfile.mkdtemp(prefix="bridgeperf-memray-"))
        self._segment: _Segment | None = None
        self._count = 0
        self.level = 0

    def _begin(self) -> None:
        memray = self._memray
        self._count += 1
        path = self._dir / f"segment-{self._count}.bin"
        tracker = memray.Tracker(
            path,
            file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            trace_python_allocators=False,
            native_traces=False,
        )
        try:
            tracker.__enter__()
        except RuntimeError as exc:
            raise MemoryMeasurementError(
                f"cannot start a memray tracker: {exc} (is pytest --memray active? "
                "use backend='tracemalloc' then)"
            ) from exc
        self._segment = _Segment(path, tracker)

    def _end(self) -> tuple[int, int, list[AllocationSite]]:
        segment = self._segment
        assert segment is not None
        self._segment = None
        segment.tracker.__exit__(None, None, None)
        reader = self._memray.FileReader(segment.path)
        try:
            peak = int(reader.metadata.peak_memory)
            net = sum(int(r.size) for r in reader.get_leaked_allocation_records(merge_threads=True))
            sites = sites_from_memray(
                reader.get_high_watermark_allocation_records(merge_threads=True)
            )
        finally:
            reader.close()
            segment.path.unlink(missing_ok=True)
        return peak, net, sites

    def start(self) -> int:
        self._begin()
        return self.level

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        peak, net, sites = self._end()
        result_peak = self.level + peak
        self.level += net
        self._begin()
        return self.level, result_peak, sites

    def stop(self) -> None:
        if self._segment is not None:
            self._end()
        shutil.rmtree(self._dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# RSS


_STATUS_RE = re.compile(rb"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


def _read_status() -> tuple[int, int]:
    with open("/proc/self/status", "rb") as fh:
        values = dict(_STATUS_RE.findall(fh.read()))
    return int(values[b"VmRSS"]) * 1024, int(values[b"VmHWM"]) * 1024


def _clear_hwm() -> None:
    # "5" resets the peak-RSS counter of this process to its current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


_clear_refs_ok: bool | None = None


def clear_refs_works() -> bool:
    """Whether this process can reset its kernel RSS high-water mark."""
    global _clear_refs_ok
    if _clear_refs_ok is None:
        try:
            _clear_hwm()
            rss, hwm = _read_status()
            _clear_refs_ok = hwm <= rss + 4 * 1024 * 1024
        except OSError:
            _clear_refs_ok = False
    return _clear_refs_ok


class HighWaterMarkSource:
    """Exact RSS peak on Linux: the kernel's VmHWM, reset through /proc/self/clear_refs.
    No sampling, no thread, no measurable cost. Only this process (not its children)."""

    name = "vmhwm"

    def start(self) -> int:
        _clear_hwm()
        return _read_status()[0]

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        rss, hwm = _read_status()
        _clear_hwm()
        return rss, max(rss, hwm), None

    def stop(self) -> None:
        pass


class RssSamplerSource:
    """RSS peak by sampling (psutil) in a background thread: other platforms, or when the RSS of
    child processes counts too. A peak shorter than the interval can be missed."""

    name = "psutil-sampler"

    def __init__(self, include_children: bool = False, interval: float = 0.002) -> None:
        try:
            import psutil
        except ImportError as exc:  # pragma: no cover - psutil is installed where tested
            raise MemoryMeasurementError("kind='rss' needs psutil on this platform") from exc
        self._process = psutil.Process()
        self._psutil = psutil
        self.include_children = include_children
        self.interval = interval
        self._lock = threading.Lock()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> int:
        total = int(self._process.memory_info().rss)
        if self.include_children:
            for child in self._process.children(recursive=True):
                try:
                    total += int(child.memory_info().rss)
                except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                    continue
        with self._lock:
            self._peak = max(self._peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> int:
        current = self._sample()
        with self._lock:
            self._peak = current
        self._thread = threading.Thread(
            target=self._run, name="bridgeperf-rss-sampler", daemon=True
        )
        self._thread.start()
        return current

    def fold(self) -> tuple[int, int, list[AllocationSite] | None]:
        current = self._sample()
        with self._lock:
            peak, self._peak = self._peak, current
        return current, peak, None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---------------------------------------------------------------------------------------------
# nesting


@dataclass(eq=False)
class OpenBlock:
    """Bookkeeping of one open measured block, in its source's scale."""

    entry: int
    peak: int
    peak_sites: list[AllocationSite] | None = None
    sites_peak: int = -1
    extra: dict[str, Any] = field(default_factory=dict)


class PeakCoordinator:
    """Runs one source for all open blocks of one configuration; see the module docstring."""

    def __init__(self, factory: Callable[[], PeakSource]) -> None:
        self._factory = factory
        self._lock = threading.RLock()
        self._source: PeakSource | None = None
        self._open: list[OpenBlock] = []

    @property
    def source(self) -> PeakSource | None:
        return self._source

    def _fold(self) -> int:
        assert self._source is not None
        current, peak, sites = self._source.fold()
        for block in self._open:
            if peak > block.peak:
                block.peak = peak
            if sites is not None and peak > block.sites_peak:
                block.peak_sites, block.sites_peak = sites, peak
        return current

    def enter(self) -> OpenBlock:
        with self._lock:
            if self._source is None:
                source = self._factory()
                current = source.start()
                self._source = source
            else:
                current = self._fold()
            block = OpenBlock(entry=current, peak=current)
            self._open.append(block)
            return block

    def exit(self, block: OpenBlock) -> tuple[int, int]:
        """Close ``block``; return ``(peak above entry, growth at exit)``."""
        with self._lock:
            try:
                current = self._fold()
            finally:
                self._open.remove(block)
                if not self._open and self._source is not None:
                    source, self._source = self._source, None
                    source.stop()
            return max(0, block.peak - block.entry), current - block.entry


# One coordinator per source configuration, for the whole process: the sources themselves are
# process-wide (there is one tracemalloc, one VmHWM), so their bookkeeping has to be as well.
_coordinators: dict[tuple[Any, ...], PeakCoordinator] = {}
_registry_lock = threading.Lock()


def coordinator(key: tuple[Any, ...], factory: Callable[[], PeakSource]) -> PeakCoordinator:
    with _registry_lock:
        found = _coordinators.get(key)
        if found is None:
            found = _coordinators[key] = PeakCoordinator(factory)
        return found


def rss_source_factory(include_children: bool, method: str) -> Callable[[], PeakSource]:
    """``method``: ``auto`` (VmHWM where it works and no children count, else sampling),
    ``hwm`` or ``sample``."""
    if method == "auto":
        method = (
            "hwm"
            if sys.platform == "linux" and not include_children and clear_refs_works()
            else "sample"
        )
    if method == "hwm":
        if include_children:
            raise ValueError("rss_method='hwm' cannot include children; use 'sample'")
        if not (sys.platform == "linux" and clear_refs_works()):
            raise MemoryMeasurementError(
                "rss_method='hwm' needs Linux with a writable /proc/self/clear_refs"
            )
        return HighWaterMarkSource
    if method == "sample":
        return lambda: RssSamplerSource(include_children=include_children)
    raise ValueError(f"rss_method must be 'auto', 'hwm' or 'sample', got {method!r}")


def process_rss() -> int:
    """Current RSS of this process, bytes."""
    if sys.platform == "linux":
        return _read_status()[0]
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)
