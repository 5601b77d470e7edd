"""What ``--perf-profile`` costs, and why the profiler is cProfile.

Two measurements, side by side in one run:

1. **The example app's suite with ``always``**: ``pytest --perf examples/bridge_app`` with
   ``--perf-profile=off`` and with ``--perf-profile=always`` (every perf test profiled once
   more after its verdict), alternating, ``--suite`` times each. Wall time of each run.
2. **The profilers on the app's own work**: the work of the example's perf tests — the
   statistics query, a page of 100 dashboards loaded and serialised, one HTTP request served by
   the app in process — and a call-heavy pure-Python function (a recursive ``fib``: cProfile's
   worst case), each run bare, under cProfile and under pyinstrument (when installed),
   interleaved, ``--repeat`` times; the median of each and its ratio to the bare run. For
   pyinstrument also the number of samples it took (at its default 1 ms interval).

Usage: ``python benchmarks/profile_overhead.py [--suite 3] [--repeat 15]`` from the repository
root (the example needs the ``[example]`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bridge_app"


def suite(mode: str) -> float:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--perf",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--perf-profile={mode}",
        str(EXAMPLE),
    ]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode not in (0, 1):
        raise SystemExit(f"the example's suite did not run ({mode}):\n{done.stdout}{done.stderr}")
    return elapsed


def workloads() -> tuple[dict[str, Callable[[], Any]], Callable[[], None]]:
    """The work, and what closes the app's server and client afterwards."""
    sys.path.insert(0, str(EXAMPLE))
    from aiohttp.test_utils import TestClient, TestServer
    from bridge_app import (
        Pagination,
        compute_statistics,
        create_app,
        list_dashboards,
        make_engine,
        make_session_factory,
        seed_database,
    )

    directory = Path(tempfile.mkdtemp(prefix="bridgeperf-profile-bench-"))
    engine = make_engine(f"sqlite:///{directory / 'bridge.db'}")
    seed_database(engine)
    session = make_session_factory(engine)()
    pagination = Pagination.parse("1", "100")
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_app(engine=engine), host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())

    async def requests() -> None:
        for _ in range(20):
            response = await client.get("/api/v1/dashboards?page=1&page_size=20")
            await response.read()

    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def close() -> None:
        loop.run_until_complete(client.close())
        loop.close()
        session.close()
        engine.dispose()

    return {
        "statistics query": lambda: compute_statistics(session),
        "page of 100 dashboards + json": lambda: json.dumps(list_dashboards(session, pagination)),
        "20 HTTP requests, app in process": lambda: loop.run_until_complete(requests()),
        "fib(20): 22k calls": lambda: fib(20),
    }, close


def bare(work: Callable[[], Any]) -> tuple[float, int]:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began, 0


def under_cprofile(work: Callable[[], Any]) -> tuple[float, int]:
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    work()
    profiler.disable()
    return time.perf_counter() - began, 0


def under_pyinstrument(work: Callable[[], Any]) -> tuple[float, int]:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="disabled")
    began = time.perf_counter()
    profiler.start()
    work()
    session = profiler.stop()
    return time.perf_counter() - began, int(session.sample_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=int, default=3, help="runs of the suite per mode")
    parser.add_argument("--repeat", type=int, default=15, help="runs of each workload")
    args = parser.parse_args()

    times: dict[str, list[float]] = {"off": [], "always": []}
    for index in range(args.suite):
        for mode in ("off", "always") if index % 2 == 0 else ("always", "off"):
            times[mode].append(suite(mode))
    off, always = statistics.median(times["off"]), statistics.median(times["always"])
    print("example app's suite, pytest --perf examples/bridge_app (wall time, s):")
    for mode, values in times.items():
        print(f"  --perf-profile={mode:<7} {', '.join(f'{v:.1f}' for v in values)}")
    print(f"  always / off: {always / off:.2f} (medians {always:.1f} s / {off:.1f} s)\n")

    profilers: dict[str, Callable[[Callable[[], Any]], tuple[float, int]]] = {
        "bare": bare,
        "cProfile": under_cprofile,
    }
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("(pyinstrument is not installed: its column is left out)\n")
    else:
        profilers["pyinstrument"] = under_pyinstrument
    print(f"profilers on the app's work (median of {args.repeat}; ratio to bare):")
    works, close = workloads()
    for name, work in works.items():
        work()  # warm: compiled statements, filled caches
        seen: dict[str, list[tuple[float, int]]] = {p: [] for p in profilers}
        for index in range(args.repeat):
            order = list(profilers) if index % 2 == 0 else list(reversed(profilers))
            for profiler in order:
                seen[profiler].append(profilers[profiler](work))
        base = statistics.median(t for t, _ in seen["bare"])
        cells = []
        for profiler, runs in seen.items():
            median = statistics.median(t for t, _ in runs)
            samples = statistics.median(s for _, s in runs)
            extra = f", {samples:.0f} samples" if profiler == "pyinstrument" else ""
            cells.append(f"{profiler} {median * 1e3:.1f} ms ({median / base:.2f}x{extra})")
        print(f"  {name}: " + "; ".join(cells))
    close()


if __name__ == "__main__":
    main()
