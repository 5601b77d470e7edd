"""``perf.measure`` beside pytest-benchmark: the same functions, timed by both, in one pytest run.

Three functions — ≈1 µs (``sum(range(200))``), ≈100 µs (``sorted`` of 1,600 floats), ≈10 ms (a
generator expression over 360,000 squares) — are timed by pytest-benchmark's ``benchmark(fn)``
and by ``perf.measure(fn)`` (wall clock, and once more with ``clock="cpu"``), both at their
default settings, in the same pytest process, tool after tool for each function (which tool goes
first alternates between repetitions, so neither always gets the warmer cache). The run is
repeated ``--repeats`` times as the machine is found, then as many times with one CPU kept busy by
another process. Printed per function: each tool's median (the median over the repetitions of
the median it reported), its ratio to pytest-benchmark's and to timeit's (the reference: a plain
``fn()`` loop, no argument unpacking, in repeats as long as perf.measure's rounds), the run-to-run
spread of each tool's median — (max − min) / median over the repetitions, and the interquartile
range / median, which one outlying repetition does not decide — and the time each tool took.

Usage: ``python benchmarks/measure_vs_pytest_benchmark.py [--repeats 10] [--only quiet|busy]
[--option rounds=50 ...]`` (``--option`` passes keywords to ``perf.measure``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

FUNCTIONS = {
    "1us": "sum(range(200))",
    "100us": "sorted(DATA)",
    "10ms": "sum(i * i for i in range(360_000))",
}
TOOLS = ("pytest-benchmark", "perf.measure", "perf.measure cpu", "timeit")

HEADER = """
import json
import os
import random
import statistics
import time
import timeit

import pytest

rng = random.Random(1)
DATA = [rng.random() for _ in range(1600)]
OPTIONS = {options}


def f_1us():
    return sum(range(200))


def f_100us():
    return sorted(DATA)


def f_10ms():
    return sum(i * i for i in range(360_000))


def took(tool, key, seconds, median=None):
    with open(os.environ["TOOK_FILE"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps([tool, key, seconds, median]) + "\\n")
"""

BENCHMARK_TEST = """
def test_benchmark_{key}(benchmark):
    start = time.perf_counter()
    benchmark(f_{key})
    took("pytest-benchmark", "{key}", time.perf_counter() - start)
"""

MEASURE_TEST = """
@pytest.mark.perf
def test_measure_{key}(perf):
    start = time.perf_counter()
    perf.measure(f_{key}, name="{key}", **OPTIONS)
    took("perf.measure", "{key}", time.perf_counter() - start)
"""

TIMEIT_TEST = """
def test_timeit_{key}():
    # the reference: timeit's own loop (a plain fn() call, no argument unpacking), repeats of
    # ~0.5 ms (perf.measure's round) for ~0.5 s in all, the median per-call time
    start = time.perf_counter()
    timer = timeit.Timer(f_{key})
    number, total = timer.autorange()
    per_call = total / number
    number = max(1, round(0.0005 / per_call))
    repeats = max(5, min(2000, round(0.5 / (number * per_call))))
    times = [t / number for t in timer.repeat(repeat=repeats, number=number)]
    took("timeit", "{key}", time.perf_counter() - start, statistics.median(times))
"""

MEASURE_CPU_TEST = """
@pytest.mark.perf
def test_measure_cpu_{key}(perf):
    start = time.perf_counter()
    perf.measure(f_{key}, name="{key} cpu", clock="cpu", **OPTIONS)
    took("perf.measure cpu", "{key}", time.perf_counter() - start)
"""


def burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        sum(i * i for i in range(10_000))


def write_tests(root: Path, repetition: int, options: dict[str, Any]) -> None:
    parts = [HEADER.format(options=repr(options))]
    for key in FUNCTIONS:
        tests = [BENCHMARK_TEST, MEASURE_TEST, MEASURE_CPU_TEST, TIMEIT_TEST]
        if repetition % 2:  # alternate which tool measures a function first
            tests.reverse()
        parts += [t.format(key=key) for t in tests]
    (root / "test_side_by_side.py").write_text("\n".join(parts), encoding="utf-8")


def run_once(root: Path, repetition: int, options: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """One pytest run: every tool's median and time taken, per function."""
    write_tests(root, repetition, options)
    for name in ("bench.json", "perf.json", "took.jsonl"):
        (root / name).unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--perf",
        f"--perf-baseline={root / 'unused-baseline.json'}",
        f"--perf-report={root / 'perf.json'}",
        f"--benchmark-json={root / 'bench.json'}",
        "test_side_by_side.py",
    ]
    env = {**os.environ, "TOOK_FILE": str(root / "took.jsonl")}
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"the pytest run failed:\n{done.stdout}\n{done.stderr}")
    results: dict[tuple[str, str], Any] = {}
    bench = json.loads((root / "bench.json").read_text(encoding="utf-8"))
    for entry in bench["benchmarks"]:
        key = entry["name"].removeprefix("test_benchmark_")
        results["pytest-benchmark", key] = {"median": entry["stats"]["median"]}
    report = json.loads((root / "perf.json").read_text(encoding="utf-8"))
    for test in report["tests"].values():
        for row in test["metrics"]:
            tool = "perf.measure cpu" if row["name"].endswith(" cpu") else "perf.measure"
            results[tool, row["name"].removesuffix(" cpu")] = {"median": row["current"]}
    for line in (root / "took.jsonl").read_text(encoding="utf-8").splitlines():
        tool, key, seconds, median = json.loads(line)
        entry = results.setdefault((tool, key), {"median": median})
        entry["took"] = seconds
    return results


def phase(repeats: int, options: dict[str, Any], busy: bool) -> list[dict[tuple[str, str], Any]]:
    burner = None
    if busy:
        burner = multiprocessing.Process(target=burn, daemon=True)
        burner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for repetition in range(repeats):
                runs.append(run_once(Path(tmp), repetition, options))
                print(".", end="", flush=True, file=sys.stderr)
            print(file=sys.stderr)
            return runs
    finally:
        if burner is not None:
            burner.terminate()
            burner.join()


def us(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.3f} µs"


def table(title: str, runs: list[dict[tuple[str, str], Any]]) -> None:
    print(f"\n{title} ({len(runs)} repetitions, load average {load()})")
    print(
        "| function | tool | median | ratio to pytest-benchmark | ratio to timeit "
        "| spread max−min | spread IQR | time taken |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, expression in FUNCTIONS.items():
        reference = statistics.median(run["pytest-benchmark", key]["median"] for run in runs)
        truth = statistics.median(run["timeit", key]["median"] for run in runs)
        for tool in TOOLS:
            medians = [run[tool, key]["median"] for run in runs]
            middle = statistics.median(medians)
            spread = (max(medians) - min(medians)) / middle
            quartiles = statistics.quantiles(medians, n=4)
            iqr = (quartiles[2] - quartiles[0]) / middle
            took = statistics.median(run[tool, key]["took"] for run in runs)
            print(
                f"| `{expression}` | {tool} | {us(middle)} | {middle / reference:.3f} | "
                f"{middle / truth:.3f} | {spread * 100:.1f} % | {iqr * 100:.1f} % | {took:.2f} s |"
            )


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def parse_option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", choices=("quiet", "busy"), default=None)
    parser.add_argument("--option", action="append", default=[], type=parse_option)
    args = parser.parse_args()
    options = dict(args.option)
    print(f"{os.cpu_count()} CPUs; perf.measure options: {options or 'defaults'}")
    print(f"load average before: {load()}")
    if args.only != "busy":
        table("As the machine was found", phase(args.repeats, options, busy=False))
    if args.only != "quiet":
        table("One CPU kept busy by another process", phase(args.repeats, options, busy=True))


if __name__ == "__main__":
    main()
