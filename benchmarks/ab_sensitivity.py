"""How often each verdict mode is right on this machine: the committed baseline against
``--perf-against``, side by side, on the same changes, with a CPU hog on every other repetition.

A small git repository holds a ~5 ms function (about half CPU work, half sleep; 30 samples per
test) and an aiohttp endpoint whose handler does the same kind of work. Branches make the
function 0 %, +3 %, +5 %, +10 % and +20 % slower, and the endpoint 0 % and +10 % slower. For each
repetition and each branch:

* committed baseline: the branch's test run with ``pytest --perf`` against a baseline recorded
  once on the base commit (default settings: 10 % tolerance);
* same-job comparison: ``pytest --perf --perf-against=base --perf-tolerance=2%`` (1 % for +3 %).

A run that fails counts as "caught" for a slower branch and as a false alarm for the 0 % branch.
Odd repetitions run with a process spinning on one core beside them.

    python benchmarks/ab_sensitivity.py            # 20 repetitions (about an hour here)
    python benchmarks/ab_sensitivity.py --runs 4   # a quick look
    python benchmarks/ab_sensitivity.py --endpoint-runs 10   # the endpoint in the first 10 only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}

WORK = """
import time

FACTOR = {factor}
SPINS = {spins}


def work():
    # about 2.5 ms of CPU work and a 2.5 ms sleep, both scaled by FACTOR
    total = 0
    for i in range(int(SPINS * FACTOR)):
        total += i * i
    time.sleep(0.0025 * FACTOR)
    return total
"""

TESTS = """
import time

import pytest
from aiohttp import web

from work import work


@pytest.mark.perf
def test_work(perf):
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    perf.record("work", samples)


@pytest.fixture
def app():
    async def handler(request):
        work()
        return web.Response(text="ok")

    application = web.Application()
    application.router.add_get("/", handler)
    return application


@pytest.mark.perf
def test_endpoint(perf_load, app):
    perf_load(app, requests=200, users=2, name="GET /")
"""

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def calibrate() -> int:
    """Loop iterations that take about 2.5 ms of CPU here (median of 15 timings)."""
    spins = 20_000
    timings = []
    for _ in range(15):
        start = time.thread_time()
        total = 0
        for i in range(spins):
            total += i * i
        timings.append(time.thread_time() - start)
    return max(1000, round(spins * 0.0025 / statistics.median(timings)))


def make_repo(root: Path, spins: int) -> dict[str, float]:
    """The repository: base, then one branch per variant. Returns branch → factor."""
    repo = root / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "pytest.ini").write_text(textwrap.dedent(INI))
    (repo / "test_work.py").write_text(textwrap.dedent(TESTS))
    (repo / "work.py").write_text(textwrap.dedent(WORK).format(factor=1.0, spins=spins))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    git(repo, "tag", "base")
    variants = {"same": 1.0, "slow3": 1.03, "slow5": 1.05, "slow10": 1.10, "slow20": 1.20}
    for branch, factor in variants.items():
        git(repo, "checkout", "-q", "-b", branch, "base")
        text = textwrap.dedent(WORK).format(factor=factor, spins=spins)
        (repo / "work.py").write_text(text + f"\n# {branch}\n")
        git(repo, "commit", "-q", "-am", branch)
    git(repo, "checkout", "-q", "base")
    return variants


@contextlib.contextmanager
def hog(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def pytest_run(repo: Path, *args: str) -> tuple[str, float, str]:
    """One pytest run: (outcome, seconds, output); outcome is passed, regressed, undecided or
    error."""
    start = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.monotonic() - start
    out = done.stdout + done.stderr
    if done.returncode == 1 and "regressed" in out:
        return "regressed", seconds, out
    if done.returncode == 0:
        return ("undecided" if re.search(r"[1-9]\d* undecided", out) else "passed"), seconds, out
    return "error", seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="repetitions per variant")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the committed-baseline mode"
    )
    parser.add_argument("--no-endpoint", action="store_true", help="skip the endpoint")
    parser.add_argument(
        "--endpoint-runs",
        type=int,
        default=None,
        help="repetitions that include the endpoint (default: all; the target is out of 10)",
    )
    parser.add_argument(
        "--only-endpoint", action="store_true", help="only the endpoint (its own 0 %% and +10 %%)"
    )
    args = parser.parse_args()
    spins = calibrate()
    print(f"calibrated: {spins} loop iterations ≈ 2.5 ms of CPU; load average {os.getloadavg()}")
    results: dict[tuple[str, str, str], list[str]] = {}
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ab-sensitivity-") as tmp:
        repo = Path(tmp)
        variants = make_repo(repo, spins)
        project = repo / "project"
        # the committed baseline, recorded once on the base commit, as a user would
        git(project, "checkout", "-q", "base")
        if not args.no_baseline:
            outcome, _, out = pytest_run(project, "--perf", "--perf-update")
            if outcome != "passed":
                sys.exit(f"recording the baseline failed:\n{out}")
            baseline = (project / "perf-baseline.json").read_text()
        endpoint_runs = args.runs if args.endpoint_runs is None else args.endpoint_runs
        for run in range(args.runs):
            noisy = run % 2 == 1
            for branch in variants:
                tests = [] if args.only_endpoint else ["test_work.py::test_work"]
                if not args.no_endpoint and branch in ("same", "slow10") and run < endpoint_runs:
                    tests.append("test_work.py::test_endpoint")
                if not tests:
                    continue
                git(project, "checkout", "-q", branch)
                with hog(noisy):
                    for test in tests:
                        kind = "endpoint" if test.endswith("endpoint") else "function"
                        if not args.no_baseline:
                            (project / "perf-baseline.json").write_text(baseline)
                            outcome, _, _ = pytest_run(project, "--perf", test)
                            results.setdefault(("baseline", kind, branch), []).append(outcome)
                            (project / "perf-baseline.json").unlink()
                        tolerance = "1%" if branch == "slow3" else "2%"
                        outcome, took, out = pytest_run(
                            project,
                            "--perf",
                            "--perf-against=base",
                            f"--perf-tolerance={tolerance}",
                            test,
                        )
                        if outcome == "error":
                            print(out[-3000:])
                        results.setdefault(("against", kind, branch), []).append(outcome)
                        seconds.setdefault(kind, []).append(took)
                        print(f"  {branch} {kind}: against {outcome} in {took:.1f} s", flush=True)
            print(
                f"repetition {run + 1}/{args.runs} done (hog: {noisy}); load {os.getloadavg()}",
                flush=True,
            )
            git(project, "checkout", "-q", "base")
    print()
    print(
        "| mode | test | change | tolerance | failed (caught / false alarm) | undecided | errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (mode, kind, branch), outcomes in sorted(results.items()):
        change = f"+{round((variants[branch] - 1) * 100)} %"
        tol = "10 %" if mode == "baseline" else ("1 %" if branch == "slow3" else "2 %")
        failed = outcomes.count("regressed")
        print(
            f"| {mode} | {kind} | {change} | {tol} | {failed}/{len(outcomes)} "
            f"| {outcomes.count('undecided')} | {outcomes.count('error')} |"
        )
    for kind, took in seconds.items():
        median = statistics.median(took)
        print(f"median --perf-against run ({kind}, whole pytest process): {median:.1f} s")


if __name__ == "__main__":
    main()
