"""Cost and accuracy of ``perf_memory``'s modes on allocation-heavy code, beside its peers.

The workload builds 300,000 small dicts (the allocation-heavy case the README quotes). It runs
bare and under every mode — default Python heap (the heap counter, a C extension), its fallback
``backend="tracemalloc"``, ``backend="memray"``, ``kind="rss"`` (kernel high-water mark, and the
psutil sampler), the bare heap counter, plain tracemalloc with 1 and 10 frames — and,
when pytest-memray is installed, inside a pytest test marked ``limit_memory`` under ``--memray``
(timed inside the test body, so pytest's start-up is not counted). Variants are interleaved
round by round in one process; the best round counts. Times are the process's CPU time
(tracer and sampler threads included), so other processes competing for the CPU do not blur
the comparison. Each ratio is the mode's time over bare.

A second table shows what each mode measures: the peak of the same workload in a fresh heap and
in a fragmented one (after a larger workload freed all but every 50th object), against
tracemalloc's exact figure.

    python benchmarks/memory_overhead.py [--rows N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_bridgeperf.memory import PerfMemory
from pytest_bridgeperf.memory.tracers import heap_counter
from pytest_bridgeperf.units import format_size

COUNTER = "perf_memory() [heapcount, default]"
FALLBACK = "perf_memory(backend='tracemalloc') [fallback]"
MEMRAY = "perf_memory(backend='memray')"


def workload(rows: int) -> int:
    out = [{"id": i, "name": "row", "value": i * 2} for i in range(rows)]
    return len(out)


def timed(run: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def modes(rows: int) -> dict[str, Callable[[], object]]:
    pm = PerfMemory()

    def block(**options: object) -> Callable[[], object]:
        def run() -> None:
            with pm(**options):  # type: ignore[arg-type]
                workload(rows)

        return run

    def raw_tracemalloc(frames: int) -> Callable[[], object]:
        def run() -> None:
            tracemalloc.start(frames)
            workload(rows)
            tracemalloc.get_traced_memory()
            tracemalloc.stop()

        return run

    def raw_counter() -> None:
        counter = heap_counter()
        assert counter is not None
        counter.start()
        workload(rows)
        counter.get()
        counter.stop()

    found: dict[str, Callable[[], object]] = {
        "bare": lambda: workload(rows),
        COUNTER: block(backend="heapcount"),
        FALLBACK: block(backend="tracemalloc"),
        MEMRAY: block(backend="memray"),
        "perf_memory(kind='rss') [VmHWM]": block(kind="rss"),
        "perf_memory(kind='rss', sampler)": block(kind="rss", rss_method="sample"),
        "heap counter alone": raw_counter,
        "tracemalloc alone, 1 frame": raw_tracemalloc(1),
        "tracemalloc alone, 10 frames": raw_tracemalloc(10),
    }
    if sys.platform != "linux":
        del found["perf_memory(kind='rss') [VmHWM]"]
    try:
        import memray  # noqa: F401
    except ImportError:
        del found[MEMRAY]
    if heap_counter() is None:
        del found[COUNTER], found["heap counter alone"]
    return found


PYTEST_MEMRAY_TEST = """
import json, os, time
import pytest

def workload(rows):
    out = [{{"id": i, "name": "row", "value": i * 2}} for i in range(rows)]
    return len(out)

@pytest.mark.parametrize("round", range({rounds}))
@pytest.mark.limit_memory("4 GB")
def test_workload(round):
    start = time.process_time()
    workload({rows})
    elapsed = time.process_time() - start
    with open(os.environ["BENCH_OUT"], "a") as fh:
        fh.write(json.dumps(elapsed) + "\\n")
"""


def pytest_memray_times(rows: int, rounds: int) -> tuple[float, float, str]:
    """Best workload time inside a pytest test, without and with ``--memray`` (same file,
    same conditions), or why it could not run."""
    try:
        import pytest_memray  # noqa: F401
    except ImportError:
        return 0.0, 0.0, "pytest-memray is not installed (pip install pytest-memray)"
    best: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        test = Path(tmp) / "test_bench.py"
        test.write_text(textwrap.dedent(PYTEST_MEMRAY_TEST.format(rows=rows, rounds=rounds)))
        for extra in ([], ["--memray"]):
            out = Path(tmp) / f"times{len(extra)}.jsonl"
            env = {**os.environ, "BENCH_OUT": str(out)}
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
            command += ["-p", "no:cacheprovider", *extra, str(test)]
            done = subprocess.run(
                command,
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0 or not out.exists():
                return 0.0, 0.0, f"pytest {' '.join(extra)} failed: {done.stdout[-400:]}"
            best.append(min(float(line) for line in out.read_text().split()))
    return best[0], best[1], ""


def accuracy(rows: int) -> list[tuple[str, int, int]]:
    """(mode, peak in a fresh heap, peak in a fragmented heap)."""
    pm = PerfMemory()
    options: list[tuple[str, dict[str, object]]] = [
        ("heap counter (default)", {"backend": "heapcount"}),
        ("tracemalloc (fallback)", {"backend": "tracemalloc"}),
        ("memray backend", {"backend": "memray"}),
        ("rss (VmHWM or sampler)", {"kind": "rss"}),
    ]
    results = []
    for label, opts in options:
        if opts.get("backend") == "heapcount" and heap_counter() is None:
            continue
        try:
            import memray  # noqa: F401
        except ImportError:
            if opts.get("backend") == "memray":
                continue
        gc.collect()
        with pm(**opts) as fresh:  # type: ignore[arg-type]
            workload(rows)
        big = [{"id": i, "name": "row", "value": i * 2} for i in range(rows * 2)]
        keep = big[::50]
        del big
        gc.collect()
        with pm(**opts) as fragmented:  # type: ignore[arg-type]
            workload(rows)
        del keep
        gc.collect()
        results.append((label, fresh.peak, fragmented.peak))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    variants = modes(args.rows)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(timed(run))
    best = {name: min(values) for name, values in times.items()}
    bare = best["bare"]

    print(f"workload: {args.rows:,} small dicts; best of {args.rounds} rounds, interleaved")
    print(f"{'mode':<46} {'best':>10} {'ratio':>7}")
    for name, value in best.items():
        print(f"{name:<46} {value * 1000:>8.1f}ms {value / bare:>6.2f}x")

    plain, under_memray, why = pytest_memray_times(args.rows, args.rounds)
    if not why:
        print(
            f"{'pytest-memray limit_memory (--memray)':<46} {under_memray * 1000:>8.1f}ms "
            f"{under_memray / plain:>6.2f}x  (vs {plain * 1000:.1f}ms in the same pytest test "
            "without --memray)"
        )
    else:
        print(f"{'pytest-memray limit_memory':<46} skipped: {why}")

    if COUNTER in best:
        print()
        print("the default (heap counter) against its peers, time over time:")
        peers = [("tracemalloc fallback", best[FALLBACK])]
        if MEMRAY in best:
            peers.append(("memray backend", best[MEMRAY]))
        if not why:
            # pytest-memray's ratio is taken inside pytest; compare ratios over bare.
            peers.append(("pytest-memray (ratio over ratio)", under_memray / plain * bare))
        for label, value in peers:
            print(f"  vs {label:<34} {best[COUNTER] / value:>6.2f}x")

    print()
    print("what each mode measures (peak above entry, same workload):")
    print(f"{'mode':<26} {'fresh heap':>12} {'fragmented heap':>16}")
    for label, fresh, fragmented in accuracy(args.rows):
        print(f"{label:<26} {format_size(fresh):>12} {format_size(fragmented):>16}")


if __name__ == "__main__":
    main()
