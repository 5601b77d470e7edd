"""What a ``--perf-against`` side costs: its start-up, and the overhead of one round.

Side by side, in one run, alternating:

- start-up: ``Side.start`` (a fresh interpreter, its pytest session, collection of a small
  project) against a fresh ``python`` running ``pytest.main`` on the same files and exiting as
  soon as collection finished — the least any fresh pytest process pays for the same work;
- a round of an empty test: ``Side.run_round`` as the controller sees it (wall) and inside the
  side (setup + call + teardown), against pytest's own cost per empty test (one plain session
  of N empty tests, divided by N).

Usage: ``python benchmarks/against_overhead.py [--starts 5] [--rounds 2000]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_bridgeperf.against.options import SideArgs
from pytest_bridgeperf.against.sides import Side

FILES, TESTS_PER_FILE = 10, 10


def make_project(root: Path) -> list[str]:
    tests = root / "tests"
    tests.mkdir(parents=True)
    files = []
    for f in range(FILES):
        body = "".join(f"def test_{f}_{t}():\n    pass\n\n" for t in range(TESTS_PER_FILE))
        (tests / f"test_gen_{f}.py").write_text(body, encoding="utf-8")
        files.append(f"tests/test_gen_{f}.py")
    (tests / "test_empty.py").write_text("def test_empty():\n    pass\n", encoding="utf-8")
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n", encoding="utf-8"
    )
    return [*files, "tests/test_empty.py"]


def options() -> tuple[str, ...]:
    return ("-p", "no:randomly", "-q")


def start_side(root: Path, files: list[str], basetemp: Path) -> tuple[float, Side]:
    args = SideArgs(options=options()).render(root, basetemp=basetemp)
    side = Side("A", root, import_paths=[root], args=args)
    began = time.perf_counter()
    side.start(files)
    return time.perf_counter() - began, side


#: a fresh pytest session that stops once it has collected (pytest's terminal summary, which
#: Side.start never reaches, costs seconds here: pytest-hypothesis imports hypothesis in it)
_COLLECT_AND_EXIT = """
import os, sys, pytest
class Stop:
    def pytest_collection_finish(self, session):
        os._exit(0 if session.items else 1)
sys.exit(pytest.main(sys.argv[1:], plugins=[Stop()]))
"""


def plain_collect(root: Path, files: list[str]) -> float:
    cmd = [sys.executable, "-c", _COLLECT_AND_EXIT, *options()]
    cmd += ["-p", "no:cacheprovider", *files]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"plain collection failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def plain_per_test(root: Path, count: int) -> float:
    """pytest's own cost of one empty test: a session of ``count`` of them, divided."""
    many = root / "many"
    many.mkdir(exist_ok=True)
    (many / "test_many.py").write_text(
        f"import pytest\n\n@pytest.mark.parametrize('i', range({count}))\n"
        "def test_many(i):\n    pass\n",
        encoding="utf-8",
    )
    cmd = [sys.executable, "-m", "pytest", *options(), "-p", "no:cacheprovider"]
    durations = []
    for extra in (["--collect-only"], []):
        began = time.perf_counter()
        subprocess.run([*cmd, *extra, "many"], cwd=root, capture_output=True, check=True)
        durations.append(time.perf_counter() - began)
    return (durations[1] - durations[0]) / count  # running minus collecting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        files = make_project(root)
        plain_collect(root, files)  # warm the bytecode caches
        starts: list[float] = []
        plains: list[float] = []
        side = None
        for n in range(args.starts):
            plains.append(plain_collect(root, files))
            elapsed, side = start_side(root, files, Path(tmp) / f"bt-{n}")
            starts.append(elapsed)
            if n < args.starts - 1:
                side.close()
        assert side is not None
        walls, durations = [], []
        for _ in range(args.rounds):
            result = side.run_round("tests/test_empty.py::test_empty")
            assert result.outcome == "passed", result.longrepr
            walls.append(result.wall)
            durations.append(result.duration)
        side.close()
        per_test = plain_per_test(root, args.rounds)
    tests = FILES * TESTS_PER_FILE + 1
    print(f"start-up, {tests} tests in {len(files)} files ({args.starts} alternating runs, median)")
    start, plain = statistics.median(starts), statistics.median(plains)
    print(f"  Side.start (interpreter + session + collection)  {start * 1e3:8.1f} ms")
    print(f"  pytest.main up to collected (fresh process)       {plain * 1e3:8.1f} ms")
    print(f"  ratio                                             {start / plain:8.2f}")
    wall, inside = statistics.median(walls), statistics.median(durations)
    print(f"round of an empty test ({args.rounds} rounds, median)")
    print(f"  Side.run_round, controller's wall time            {wall * 1e6:8.0f} us")
    print(f"  ... of which setup + call + teardown in the side  {inside * 1e6:8.0f} us")
    print(f"  plain pytest, per empty test in one session       {per_test * 1e6:8.0f} us")
    print(f"  ratio (round wall / plain per test)               {wall / per_test:8.2f}")
    print(f"  p90 of the round's wall time                      {_p90(walls) * 1e6:8.0f} us")


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))]


if __name__ == "__main__":
    main()
