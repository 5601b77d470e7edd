"""The memory core without pytest's plugin: accuracy of known allocations, nesting, threads,
async, recording, sites and the leak check."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import textwrap
import threading

import pytest

from pytest_bridgeperf.memory import (
    LeakDetected,
    MemoryBudgetExceeded,
    PerfMemory,
)
from pytest_bridgeperf.memory.block import Backend
from pytest_bridgeperf.memory.sites import is_user_file
from pytest_bridgeperf.memory.tracers import clear_refs_works, heap_counter
from pytest_bridgeperf.metrics import Recorder

MB = 1_000_000
LINUX_HWM = sys.platform == "linux" and clear_refs_works()

#: The exact Python-heap backends: every accuracy and nesting check runs under both.
HEAP_BACKENDS = [
    pytest.param(
        "heapcount",
        marks=pytest.mark.skipif(heap_counter() is None, reason="heap counter not built"),
    ),
    "tracemalloc",
]


def within(measured: float, expected: float, fraction: float) -> bool:
    return abs(measured - expected) <= fraction * expected


# -- accuracy: Python heap (±5 %) -------------------------------------------------------------


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_python_heap_of_a_50mb_bytearray(backend: Backend) -> None:
    with PerfMemory()(backend=backend) as m:
        data = bytearray(50 * MB)
    assert within(m.peak, 50 * MB, 0.05), m
    assert within(m.current, 50 * MB, 0.05), m
    del data


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_python_heap_of_a_million_small_objects(backend: Backend) -> None:
    with PerfMemory()(backend=backend) as m:
        objects = [object() for _ in range(1_000_000)]
    expected = sys.getsizeof(objects) + sum(sys.getsizeof(o) for o in objects[:1000]) * 1000
    assert within(m.peak, expected, 0.05), (m, expected)
    del objects


def test_python_heap_of_a_numpy_array() -> None:
    numpy = pytest.importorskip("numpy")
    # numpy reports its data buffers to tracemalloc (PyTraceMalloc_Track) only.
    with PerfMemory()(backend="tracemalloc") as m:
        array = numpy.ones(10_000_000)  # 80 MB of float64
    assert within(m.peak, array.nbytes, 0.05), m
    del array


@pytest.mark.skipif(heap_counter() is None, reason="heap counter not built")
def test_heap_counter_does_not_see_numpy_buffers() -> None:
    """The documented limit of the default backend: numpy allocates its data with malloc."""
    numpy = pytest.importorskip("numpy")
    with PerfMemory()(backend="heapcount") as m:
        array = numpy.ones(10_000_000)
    assert m.peak < 100_000, m  # the array object, not its 80 MB of data
    del array


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_transient_peak_is_caught_and_growth_is_zero(backend: Backend) -> None:
    with PerfMemory()(backend=backend) as m:
        data = bytearray(30 * MB)
        del data
    assert within(m.peak, 30 * MB, 0.05), m
    assert abs(m.current) < 1 * MB, m


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_python_peak_is_repeatable(backend: Backend) -> None:
    def block() -> int:
        with PerfMemory()(backend=backend) as m:
            rows = [{"id": i, "name": f"row{i}"} for i in range(50_000)]
            del rows
        return m.peak

    peaks = {block() for _ in range(3)}
    assert max(peaks) - min(peaks) <= 0.001 * max(peaks), peaks


# -- accuracy: RSS (±10 %), in a fresh interpreter so free heap left by other tests cannot hide it


RSS_SCRIPT = """
import json, sys
from pytest_bridgeperf.memory import PerfMemory
method = sys.argv[1]
pm = PerfMemory()
out = {}
with pm(kind="rss", rss_method=method) as m:
    data = bytearray(50_000_000)
out["bytearray"] = m.peak
del data
with pm(kind="rss", rss_method=method) as m:
    objects = [object() for _ in range(1_000_000)]
out["objects"] = m.peak
out["objects_expected"] = sys.getsizeof(objects) + 16 * len(objects)
del objects
try:
    import numpy
except ImportError:
    pass
else:
    with pm(kind="rss", rss_method=method) as m:
        array = numpy.ones(10_000_000)
    out["numpy"] = m.peak
    del array
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(
            "hwm", marks=pytest.mark.skipif(not LINUX_HWM, reason="needs Linux clear_refs")
        ),
        "sample",
    ],
)
def test_rss_accuracy(method: str) -> None:
    import json

    result = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, method], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert within(out["bytearray"], 50 * MB, 0.10), out
    assert within(out["objects"], out["objects_expected"], 0.10), out
    if "numpy" in out:
        assert within(out["numpy"], 80 * MB, 0.10), out


def run_fresh(code: str) -> dict[str, int]:
    """Run ``code`` in a fresh interpreter (RSS depends on what the allocator already holds, so
    in-process RSS checks would depend on the tests before them); it prints a JSON dict."""
    import json

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, int] = json.loads(result.stdout)
    return found


@pytest.mark.skipif(not LINUX_HWM, reason="needs Linux clear_refs")
def test_rss_high_water_mark_sees_a_freed_peak() -> None:
    out = run_fresh(
        """
        import json
        from pytest_bridgeperf.memory import PerfMemory
        with PerfMemory()(kind="rss") as m:
            data = bytearray(60_000_000)
            del data
        print(json.dumps({"peak": m.peak, "current": m.current}))
        """
    )
    assert within(out["peak"], 60 * MB, 0.10), out
    assert out["current"] < 10 * MB, out


def test_rss_sampler_sees_a_peak_held_for_20ms() -> None:
    out = run_fresh(
        """
        import json, time
        from pytest_bridgeperf.memory import PerfMemory
        with PerfMemory()(kind="rss", rss_method="sample") as m:
            data = bytearray(60_000_000)
            time.sleep(0.02)
            del data
        print(json.dumps({"peak": m.peak}))
        """
    )
    assert out["peak"] >= 0.9 * 60 * MB, out


def test_rss_include_children() -> None:
    code = "import time; x = bytearray(80_000_000); time.sleep(0.4)"
    with PerfMemory()(kind="rss", include_children=True) as with_children:
        subprocess.run([sys.executable, "-c", code], check=True)
    with PerfMemory()(kind="rss") as alone:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert with_children.peak >= 70 * MB, with_children
    assert alone.peak < 20 * MB, alone


# -- nesting, threads, async -------------------------------------------------------------------


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_nested_blocks_each_see_their_own_peak(backend: Backend) -> None:
    pm = PerfMemory()
    with pm(backend=backend) as outer:
        kept = bytearray(20 * MB)
        with pm(backend=backend) as inner:
            temp = bytearray(30 * MB)
            del temp
        with pm(backend=backend) as second:
            small = bytearray(1 * MB)
    assert within(inner.peak, 30 * MB, 0.05), inner
    assert abs(inner.current) < 1 * MB, inner
    assert within(second.peak, 1 * MB, 0.05), second
    assert within(outer.peak, 50 * MB, 0.05), outer  # 20 kept + 30 transient
    assert within(outer.current, 21 * MB, 0.05), outer
    del kept, small


def test_nested_rss_blocks_keep_the_outer_peak() -> None:
    out = run_fresh(
        """
        import json
        from pytest_bridgeperf.memory import PerfMemory
        pm = PerfMemory()
        with pm(kind="rss") as outer:
            data = bytearray(60_000_000)
            del data
            with pm(kind="rss") as inner:  # resets the kernel's high-water mark
                small = bytearray(5_000_000)
            del small
        print(json.dumps({"outer": outer.peak, "inner": inner.peak}))
        """
    )
    assert out["outer"] >= 0.9 * 60 * MB, out
    assert out["inner"] < 20 * MB, out


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_allocations_of_other_threads_count(backend: Backend) -> None:
    holder: list[bytearray] = []

    def worker() -> None:
        holder.append(bytearray(40 * MB))

    with PerfMemory()(backend=backend) as m:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert within(m.peak, 40 * MB, 0.05), m


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_blocks_in_two_threads_close_in_any_order(backend: Backend) -> None:
    pm = PerfMemory()
    results: dict[str, int] = {}
    entered = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with pm(backend=backend) as m:
            entered.set()
            release.wait(5)
            data = bytearray(10 * MB)
            del data
        results["worker"] = m.peak

    with pm(backend=backend) as main:
        thread = threading.Thread(target=worker)
        thread.start()
        entered.wait(5)
        big = bytearray(30 * MB)
        del big
    release.set()  # the main block closed first; the worker's is still open
    thread.join()
    assert within(main.peak, 30 * MB, 0.05), main
    assert 10 * MB * 0.95 <= results["worker"] <= 31.5 * MB, results


@pytest.mark.parametrize("backend", HEAP_BACKENDS)
def test_async_block(backend: Backend) -> None:
    async def scenario() -> tuple[int, int]:
        async with PerfMemory()(backend=backend) as m:
            await asyncio.sleep(0)
            data = bytearray(25 * MB)
            await asyncio.sleep(0)
            del data
        return m.peak, m.current

    peak, current = asyncio.run(scenario())
    assert within(peak, 25 * MB, 0.05)
    assert abs(current) < 1 * MB


def test_memray_backend_nests_and_is_close_for_large_allocations() -> None:
    pytest.importorskip("memray")
    pm = PerfMemory()
    with pm(backend="memray") as outer:
        kept = bytearray(20 * MB)
        with pm(backend="memray") as inner:
            temp = bytearray(30 * MB)
            del temp
    assert within(inner.peak, 30 * MB, 0.05), inner
    assert within(outer.peak, 50 * MB, 0.05), outer
    del kept


def test_results_before_exit_are_an_error() -> None:
    block = PerfMemory()()
    with pytest.raises(RuntimeError, match="after the perf_memory block"):
        _ = block.peak


# -- recording ---------------------------------------------------------------------------------


def test_blocks_record_through_the_recorder() -> None:
    recorder = Recorder()
    pm = PerfMemory(recorder)
    with pm() as first:
        data = bytearray(2 * MB)
    with pm():
        pass
    with pm(kind="rss"):
        pass
    with pm(name="export"):
        pass
    assert sorted(recorder.metrics) == ["export", "memory.block", "memory.block.2", "rss.block"]
    heap = recorder.metrics["memory.block"]
    assert (heap.unit, heap.role, heap.noisy, heap.value) == ("bytes", "memory", False, first.peak)
    rss = recorder.metrics["rss.block"]
    assert (rss.unit, rss.role, rss.noisy) == ("bytes", "rss", True)
    del data


def test_timing_distortion_is_set_while_the_tracer_runs_and_restored() -> None:
    recorder = Recorder()
    pm = PerfMemory(recorder)
    with pm(backend="tracemalloc"):
        assert recorder.timing_distortion
        assert "tracemalloc" in recorder.timing_distortion
        inside = recorder.record("inside", 0.01)
        with pm(kind="rss"):
            pass
        assert recorder.timing_distortion
    assert recorder.timing_distortion is None
    outside = recorder.record("outside", 0.01)
    assert inside.distorted
    assert not outside.distorted
    with pm(kind="rss"):  # the RSS meter costs nothing: no distortion
        assert recorder.timing_distortion is None


@pytest.mark.skipif(heap_counter() is None, reason="heap counter not built")
def test_the_heap_counter_does_not_distort_timings() -> None:
    recorder = Recorder()
    pm = PerfMemory(recorder)
    with pm() as block:  # the default: the counter costs about 1.1-1.2x, not 6x
        assert recorder.timing_distortion is None
        inside = recorder.record("inside", 0.01)
        with pm(backend="tracemalloc"):
            assert recorder.timing_distortion
        assert recorder.timing_distortion is None
    assert block.backend == "heapcount"
    assert not inside.distorted


# -- budgets and sites -------------------------------------------------------------------------


def make_rows(n: int) -> list[dict[str, int]]:
    return [{"id": i, "value": i * 2} for i in range(n)]  # the site the listing should name


def test_budget_failure_names_the_users_line_first() -> None:
    recorder = Recorder()
    pm = PerfMemory(recorder)
    with pytest.raises(MemoryBudgetExceeded) as info, pm("1MB", frames=5) as m:
        rows = make_rows(50_000)
    message = str(info.value)
    assert "exceeds the budget 1" in message
    assert "no baseline" in message
    listing = message.split("allocation sites", 1)[1]
    first = listing.splitlines()[1]
    assert "test_memory_core.py:" in first, message
    assert m.sites[0].user
    assert m.sites[0].filename.endswith("test_memory_core.py")
    assert "explain" in recorder.metrics["memory.block"].details
    del rows


def test_budget_accepts_binary_and_decimal_units() -> None:
    pm = PerfMemory()
    with pm("2MiB") as m:
        data = bytearray(2_050_000)  # > 2 MB, < 2 MiB
    assert m.budget == 2 * 1024 * 1024
    with pytest.raises(MemoryBudgetExceeded), pm("2MB"):
        data2 = bytearray(2_050_000)
    del data, data2


def test_budget_failure_quotes_the_baseline() -> None:
    pm = PerfMemory(Recorder(), baseline=lambda name: 1_500_000.0 if name == "export" else None)
    with pytest.raises(MemoryBudgetExceeded, match=r"baseline 1\.43 MiB"), pm("1MB", name="export"):
        data = bytearray(3 * MB)
    del data


def test_no_budget_failure_when_the_body_raised() -> None:
    pm = PerfMemory()

    def body() -> None:
        with pm("1kB"):
            data = bytearray(3 * MB)
            raise KeyError(len(data))

    with pytest.raises(KeyError):
        body()


def test_user_files() -> None:
    assert is_user_file(__file__)
    assert not is_user_file(functools.__file__)
    assert not is_user_file(pytest.__file__)
    assert not is_user_file("<frozen importlib._bootstrap>")


# -- leaks --------------------------------------------------------------------------------------

_LEAKED: list[bytes] = []


def leaky() -> None:
    _LEAKED.append(bytearray(2048))  # the leaking line


def clean() -> None:
    rows = make_rows(2000)
    del rows


@functools.lru_cache(maxsize=16)
def cached(key: int) -> bytes:
    return bytearray(4096 + key)


def cache_that_fills() -> None:
    for key in range(16):
        cached(key)


_SAW: dict[int, bytes] = {}


def saw_tooth() -> None:
    if len(_SAW) >= 4:
        _SAW.clear()
    _SAW[len(_SAW)] = bytearray(4096)


def test_leak_found_with_its_site() -> None:
    with pytest.raises(LeakDetected) as info:
        PerfMemory().leaks(leaky, iterations=15)
    message = str(info.value)
    assert "test_memory_core.py:" in message
    line = leaky.__code__.co_firstlineno + 1
    assert f"test_memory_core.py:{line}" in message
    assert "/iteration" in message


def test_leak_report_without_check() -> None:
    report = PerfMemory().leaks(leaky, iterations=10, check=False)
    assert report.leaked
    site = report.leaks[0]
    assert site.user
    assert 2048 <= site.per_iteration <= 2048 * 1.5, report
    assert site.steady >= 0.9


@pytest.mark.parametrize("func", [clean, cache_that_fills, saw_tooth])
def test_no_false_leak(func: object) -> None:
    report = PerfMemory().leaks(func, iterations=20, check=False)  # type: ignore[arg-type]
    assert not report.leaked, str(report)


def test_leak_ignore_hook() -> None:
    ignored = PerfMemory().leaks(
        leaky, iterations=10, ignore=[lambda filename, lineno: filename == __file__]
    )
    assert not ignored.leaked


def test_async_leak_check() -> None:
    async def leaky_async() -> None:
        await asyncio.sleep(0)
        _LEAKED.append(bytearray(4096))

    async def scenario() -> None:
        with pytest.raises(LeakDetected):
            await PerfMemory().aleaks(leaky_async, iterations=8)

    asyncio.run(scenario())


def test_core_imports_without_pytest() -> None:
    code = """
        import sys
        sys.modules["pytest"] = None
        sys.modules["_pytest"] = None
        import pytest_bridgeperf.memory
        from pytest_bridgeperf.memory import PerfMemory
        with PerfMemory()("1MB") as m:
            pass
        assert not [m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest", "memray",
                    "psutil", "memory_profiler") and sys.modules[m] is not None]
        print("ok")
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
