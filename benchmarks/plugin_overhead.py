"""What the installed plugin costs a suite that does not ask for --perf.

Generates a 2,000-test suite (5 % of it marked ``perf``), then runs it alternately with the plugin
active and with ``-p no:bridgeperf``, several rounds each, in one run, and prints the median wall
times and their ratio. Usage: ``python benchmarks/plugin_overhead.py [--tests 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_suite(root: Path, tests: int) -> None:
    per_file = 100
    for f in range(tests // per_file):
        lines = ["import pytest", ""]
        for t in range(per_file):
            if t % 20 == 0:
                lines.append("@pytest.mark.perf(p95='50ms')")
            lines.append(f"def test_{f}_{t}():\n    assert {t} + 1 > {t}\n")
        (root / f"test_gen_{f}.py").write_text("\n".join(lines), encoding="utf-8")
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")


def run(root: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"suite failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_suite(root, args.tests)
        variants = {"plugin active": [], "-p no:bridgeperf": ["-p", "no:bridgeperf"]}
        times: dict[str, list[float]] = {name: [] for name in variants}
        run(root, [])  # warm the bytecode cache
        for _ in range(args.rounds):
            for name, extra in variants.items():
                times[name].append(run(root, extra))
        base = statistics.median(times["-p no:bridgeperf"])
        print(f"{args.tests} tests, {args.rounds} alternating rounds (median wall time)")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"  {name:<20} {med:7.3f} s   ratio {med / base:5.3f}")


if __name__ == "__main__":
    main()
