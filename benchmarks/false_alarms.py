"""How often does an unchanged test fail against its own baseline, and how often is a real
slowdown caught?

Writes a sleep-based perf test, records its baseline once, then reruns it ``--reruns`` times
unchanged (A/A: every failure is a false alarm) and ``--reruns`` times with the sleep made 30 %
longer (A/B: every pass is a miss), and counts the runs whose verdict stayed undecided (they
pass). With ``--noise`` a busy process competes for the CPUs, as on a shared CI machine.
Usage: ``python benchmarks/false_alarms.py [--reruns 20] [--noise]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
from pathlib import Path

TEST = """
import time
import pytest

SLEEP = {sleep}

@pytest.mark.perf
def test_sleepy(perf):
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        time.sleep(SLEEP)
        samples.append(time.perf_counter() - start)
    perf.record("sleep", samples)
"""


def burn() -> None:  # pragma: no cover - runs in a child process
    while True:
        sum(i * i for i in range(10_000))


def run(root: Path, sleep: float, *extra: str) -> tuple[int, bool]:
    """The exit status, and whether the verdict stayed undecided."""
    (root / "test_sleepy.py").write_text(TEST.format(sleep=sleep), encoding="utf-8")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--perf", *extra]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    return done.returncode, "1 undecided" in done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reruns", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.010)
    parser.add_argument("--noise", action="store_true", help="keep one core busy meanwhile")
    args = parser.parse_args()
    burner = None
    if args.noise:
        burner = multiprocessing.Process(target=burn, daemon=True)
        burner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
            if run(root, args.sleep, "--perf-update")[0] != 0:
                sys.exit("recording the baseline failed")
            same = [run(root, args.sleep) for _ in range(args.reruns)]
            slower = [run(root, args.sleep * 1.3) for _ in range(args.reruns)]
    finally:
        if burner is not None:
            burner.terminate()
    noise = " with one core kept busy" if args.noise else ""
    print(f"sleep {args.sleep * 1000:g} ms × 30 samples, {args.reruns} reruns each{noise}")
    false_alarms = sum(code != 0 for code, _ in same)
    caught = sum(code != 0 for code, _ in slower)
    print(
        f"  A/A (unchanged):   {false_alarms}/{args.reruns} false alarms, "
        f"{sum(u for _, u in same)} undecided"
    )
    print(
        f"  A/B (+30 % sleep): {caught}/{args.reruns} caught, {sum(u for _, u in slower)} undecided"
    )


if __name__ == "__main__":
    main()
