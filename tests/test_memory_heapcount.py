"""The heap counter (``pytest_bridgeperf.memory._heapcount``): its C API, exact accounting under
random allocation patterns, threads, coexistence with tracemalloc, determinism in a fragmented
heap, its cost, and the tracemalloc fallback when it is switched off or not built."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_bridgeperf.memory import MemoryMeasurementError, PerfMemory
from pytest_bridgeperf.memory.tracers import HEAP_COUNTER_ENV, heap_counter
from pytest_bridgeperf.metrics import Recorder

MB = 1_000_000
SOURCE = Path(__file__).resolve().parents[1] / "pytest_bridgeperf" / "memory" / "_heapcount.c"


def compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


def test_the_counter_is_built_wherever_a_compiler_is() -> None:
    """The install builds the extension (setup.py, optional=True); without it every
    ``kind="python"`` block silently pays tracemalloc's 6x, so a lost build must not go unseen."""
    if compiler() is None:
        pytest.skip("no C compiler: the tracemalloc fallback is the expected outcome")
    if os.environ.get(HEAP_COUNTER_ENV):
        pytest.skip(f"{HEAP_COUNTER_ENV} is set")
    assert heap_counter() is not None, "pytest_bridgeperf.memory._heapcount did not build"


needs_counter = pytest.mark.skipif(heap_counter() is None, reason="heap counter not built")


@pytest.fixture
def counter() -> Iterator[ModuleType]:
    module = heap_counter()
    if module is None:
        pytest.skip("heap counter not built")
    assert not module.is_running(), "a previous test left the counter running"
    yield module
    module.stop()


def bytearray_buffer(b: bytearray) -> int:
    """Bytes of a bytearray's buffer (what it asked the allocator for)."""
    return sys.getsizeof(b) - sys.getsizeof(bytearray())


# -- the C API ---------------------------------------------------------------------------------


def test_start_get_reset_peak_stop(counter: ModuleType) -> None:
    assert counter.get() == (0, 0)
    counter.start()
    assert counter.is_running()
    with pytest.raises(RuntimeError, match="already running"):
        counter.start()
    data = bytearray(5 * MB)
    current, peak = counter.get()
    assert 5 * MB <= current <= 5 * MB + 10_000  # + the pytest.raises objects above
    del data
    current, peak = counter.get()
    assert current < 10_000
    assert peak >= 5 * MB
    counter.reset_peak()
    assert counter.get()[1] < 10_000
    counter.stop()
    assert not counter.is_running()
    assert counter.get() == (0, 0)
    counter.stop()  # idempotent


def test_free_of_a_block_from_before_start_counts_zero(counter: ModuleType) -> None:
    old = bytearray(3 * MB)
    counter.start()
    del old
    assert counter.get() == (0, 0)  # not negative: the block was never counted


def test_realloc_of_a_block_from_before_start_counts_the_new_size(counter: ModuleType) -> None:
    grown = bytearray(1000)
    counter.start()
    grown.extend(bytes(100_000))  # a realloc of the old buffer, and a temporary bytes object
    current, peak = counter.get()
    assert current == bytearray_buffer(grown), (current, bytearray_buffer(grown))
    assert peak >= bytearray_buffer(grown) + 100_000
    assert counter._check()


def test_realloc_and_free_of_counted_blocks(counter: ModuleType) -> None:
    counter.start()
    blocks = [bytearray(n) for n in (10, 1000, 70_000, 2 * MB)]
    for block in blocks:
        block.extend(bytes(50_000))
        del block[100:]  # shrink: realloc to a smaller size
    expected = sum(bytearray_buffer(b) for b in blocks)
    current = counter.get()[0]
    # Besides the buffers: the four bytearray objects and the list (a few hundred bytes).
    assert expected <= current <= expected + 1000, (current, expected)
    assert counter._check()
    del blocks
    assert counter.get()[0] < 1000


def test_bookkeeping_selftest_with_synthetic_addresses(counter: ModuleType) -> None:
    """Unaligned addresses, sizes beyond 16 bits, replaced blocks and backward-shift deletion,
    checked step by step against a reference (paths Python's own allocators rarely take)."""
    for seed in range(1, 40):
        counter._selftest(seed, 20_000)


# -- exact under random allocation patterns ----------------------------------------------------

SIZES = st.one_of(
    st.integers(0, 600),  # pymalloc's small blocks
    st.integers(600, 70_000),  # malloc'ed, still in the fast path
    st.integers(65_000, 3_000_000),  # beyond 16 bits: the exact table
)
OPS = st.lists(
    st.tuples(st.sampled_from(["new", "resize", "free"]), st.integers(0, 63), SIZES),
    min_size=1,
    max_size=120,
)


@needs_counter
@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_random_alloc_realloc_free_matches_tracemalloc(ops: list[tuple[str, int, int]]) -> None:
    """tracemalloc stacked on the counter sees the same allocations: both must agree to the
    byte, at every step."""
    counter = heap_counter()
    assert counter is not None
    slots: list[bytearray | None] = [None] * 64
    counter.start()
    tracemalloc.start(1)
    try:
        counted0 = counter.get()[0]
        traced0 = tracemalloc.get_traced_memory()[0]
        for op, index, size in ops:
            block = slots[index]
            if op == "new" or block is None:
                slots[index] = bytearray(size)
            elif op == "resize":
                if size > len(block):
                    block.extend(b"x" * (size - len(block)))
                else:
                    del block[size:]
            else:
                slots[index] = None
            counted = counter.get()[0] - counted0
            traced = tracemalloc.get_traced_memory()[0] - traced0
            # get() itself returns a tuple allocated while counting; tracemalloc's reading is
            # allocated too: allow the two small result objects, nothing proportional.
            assert abs(counted - traced) <= 200, (op, size, counted, traced)
        assert counter._check()
    finally:
        tracemalloc.stop()
        counter.stop()


def test_threads_allocating_under_the_gil(counter: ModuleType) -> None:
    barrier = threading.Barrier(4)
    kept: list[list[bytearray]] = [[] for _ in range(4)]

    def worker(number: int) -> None:
        barrier.wait()
        for i in range(3000):
            kept[number].append(bytearray(100 + (i * 37) % 5000))
            if i % 3 == 0:
                kept[number].pop(0)

    counter.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live = sum(bytearray_buffer(b) + sys.getsizeof(bytearray()) for part in kept for b in part)
    current = counter.get()[0]
    assert counter._check()
    # Plus the four lists' item arrays and the thread objects (well under 200 kB).
    assert live <= current <= live + 200_000, (current, live)
    kept.clear()
    del threads
    gc.collect()
    assert counter.get()[0] < 100_000


# -- coexistence with tracemalloc --------------------------------------------------------------


def test_tracemalloc_started_and_stopped_inside_a_counter_block(counter: ModuleType) -> None:
    counter.start()
    tracemalloc.start()
    data = bytearray(10 * MB)
    assert abs(counter.get()[0] - tracemalloc.get_traced_memory()[0]) < 10_000
    tracemalloc.stop()
    more = bytearray(5 * MB)  # the counter still counts after tracemalloc unhooked itself
    assert 15 * MB <= counter.get()[0] <= 15 * MB + 10_000
    assert counter._check()
    del data, more


def test_counter_stopped_while_tracemalloc_runs_on_top(counter: ModuleType) -> None:
    counter.start()
    tracemalloc.start()
    counter.stop()  # our hooks are under tracemalloc's: they stay, as a pass-through
    block = bytearray(2 * MB)
    assert tracemalloc.get_traced_memory()[0] >= 2 * MB
    tracemalloc.stop()  # puts our pass-through back on top
    del block
    counter.start()
    data = bytearray(3 * MB)
    assert 3 * MB <= counter.get()[0] <= 3 * MB + 10_000
    del data


def test_counter_taken_out_of_the_chain_raises(counter: ModuleType) -> None:
    tracemalloc.start()
    try:
        counter.start()  # wraps tracemalloc's hooks
    finally:
        tracemalloc.stop()  # restores what tracemalloc wrapped: the counter is out
    with pytest.raises(RuntimeError, match="taken out of the allocator chain"):
        counter.get()
    counter.stop()
    counter.start()  # hooks in again
    data = bytearray(2 * MB)
    assert 2 * MB <= counter.get()[0] <= 2 * MB + 10_000
    del data


@needs_counter
@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.sampled_from(["counter", "tracemalloc"]), min_size=1, max_size=12))
def test_any_order_of_starting_and_stopping_both(steps: list[str]) -> None:
    """Each step toggles one of the two hook stacks, in any order: no crash, no endless
    recursion, and the counter either counts exactly or says it was taken out of the chain."""
    counter = heap_counter()
    assert counter is not None
    try:
        for step in steps:
            if step == "counter":
                (counter.stop if counter.is_running() else counter.start)()
            elif tracemalloc.is_tracing():
                tracemalloc.stop()
            else:
                tracemalloc.start()
            if counter.is_running():
                try:
                    before = counter.get()[0]
                except RuntimeError as exc:
                    if "taken out of the allocator chain" not in str(exc):
                        raise
                    continue
                data = bytearray(MB)
                grown = counter.get()[0] - before
                assert MB <= grown <= MB + 1000, grown
                del data
    finally:
        tracemalloc.stop()
        counter.stop()
    counter.start()  # and afterwards it always works again
    try:
        data = bytearray(MB)
        assert MB <= counter.get()[0] <= MB + 1000
        del data
    finally:
        counter.stop()


@needs_counter
def test_a_block_refuses_a_figure_from_a_counter_taken_out_of_the_chain() -> None:
    pm = PerfMemory()
    tracemalloc.start()
    block = pm(backend="heapcount")
    with (
        pytest.raises(MemoryMeasurementError, match="taken out of the allocator chain"),
        block,
    ):
        tracemalloc.stop()
    assert not heap_counter().is_running()  # type: ignore[union-attr]


def test_auto_shares_a_running_tracemalloc() -> None:
    tracemalloc.start()
    try:
        with PerfMemory()() as m:
            data = bytearray(4 * MB)
    finally:
        tracemalloc.stop()
    assert m.backend == "tracemalloc"
    assert 4 * MB <= m.peak <= 4 * MB + 10_000
    del data


@needs_counter
def test_leak_check_inside_a_counter_block() -> None:
    kept: list[bytearray] = []

    def leaky() -> None:
        kept.append(bytearray(4096))

    pm = PerfMemory()
    with pm() as block:
        report = pm.leaks(leaky, iterations=10, check=False)
        data = bytearray(3 * MB)
    assert block.backend == "heapcount"
    assert report.leaked
    assert 3 * MB + 14 * 4096 <= block.peak <= 3 * MB + 2 * MB, block
    del data


# -- determinism: the figure memray cannot give -------------------------------------------------

FRAGMENTED = """
import gc, json
from pytest_bridgeperf.memory import PerfMemory

def workload(rows):
    out = [{"id": i, "name": "row", "value": i * 2} for i in range(rows)]
    return len(out)

pm = PerfMemory()
workload(1000)  # first-use caches
gc.collect()
with pm(backend="heapcount") as fresh:
    workload(200_000)
big = [{"id": i, "name": "row", "value": i * 2} for i in range(400_000)]
keep = big[::50]  # every 50th object survives: the heap is full of holes
del big
gc.collect()
with pm(backend="heapcount") as fragmented:
    workload(200_000)
print(json.dumps({"fresh": fresh.peak, "fragmented": fragmented.peak}))
"""


@needs_counter
def test_same_peak_in_a_fresh_and_in_a_fragmented_heap() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import json

    out = json.loads(result.stdout)
    assert out["fresh"] > 40 * MB, out
    # Only the interpreter's free lists (dicts, at most 80 objects) can differ.
    assert abs(out["fresh"] - out["fragmented"]) <= 0.001 * out["fresh"], out


# -- cost ----------------------------------------------------------------------------------------


def workload(rows: int) -> int:
    out = [{"id": i, "name": "row", "value": i * 2} for i in range(rows)]
    return len(out)


def best_cpu_time(run: Callable[[], object], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


@needs_counter
def test_the_counter_costs_a_fraction_of_tracemalloc() -> None:
    """Generous bound (measured: about 1.1-1.2x against tracemalloc's 6x)."""
    pm = PerfMemory()

    def counted() -> None:
        with pm(backend="heapcount"):
            workload(100_000)

    def traced() -> None:
        with pm(backend="tracemalloc"):
            workload(100_000)

    bare = best_cpu_time(lambda: workload(100_000))
    counter_time = best_cpu_time(counted)
    tracer_time = best_cpu_time(traced)
    assert counter_time < 2.5 * bare, (bare, counter_time)
    assert counter_time < tracer_time / 2, (counter_time, tracer_time)


# -- the C source and the fallback ------------------------------------------------------------


def test_the_c_source_compiles_without_warnings(tmp_path: Path) -> None:
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler")
    include = sysconfig.get_paths()["include"]
    command = [cc, "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", f"-I{include}"]
    command += [str(SOURCE), "-o", str(tmp_path / "heapcount.so")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


FALLBACK = """
import json
from pytest_bridgeperf.memory import PerfMemory
from pytest_bridgeperf.metrics import Recorder
recorder = Recorder()
with PerfMemory(recorder)() as m:
    distorted = recorder.timing_distortion
    data = bytearray(20_000_000)
print(json.dumps({"backend": m.backend, "peak": m.peak, "distorted": distorted}))
"""


@pytest.mark.parametrize("switch", ["0", "off"])
def test_fallback_to_tracemalloc_when_switched_off(switch: str) -> None:
    import json

    env = {**os.environ, HEAP_COUNTER_ENV: switch}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["backend"] == "tracemalloc"
    assert 20 * MB <= out["peak"] <= 20 * MB + 10_000
    assert out["distorted"]
    assert "tracemalloc" in out["distorted"]


def test_fallback_when_the_extension_is_missing() -> None:
    """As on an install without a compiler: the module cannot be imported."""
    import json

    code = "import sys; sys.modules['pytest_bridgeperf.memory._heapcount'] = None\n" + FALLBACK
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "tracemalloc"


def test_explicit_heapcount_without_the_extension_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(HEAP_COUNTER_ENV, "0")
    with (
        pytest.raises(MemoryMeasurementError, match="compiled extension"),
        PerfMemory()(backend="heapcount"),
    ):
        pass


@needs_counter
def test_frames_selects_tracemalloc_and_rejects_heapcount() -> None:
    pm = PerfMemory(Recorder())
    assert pm(frames=3).backend == "tracemalloc"
    assert pm().backend == "heapcount"
    with pytest.raises(ValueError, match="frames= needs backend='tracemalloc'"):
        pm(backend="heapcount", frames=3)
    with pytest.raises(ValueError, match="backend must be"):
        pm(backend="guess")  # type: ignore[arg-type]
