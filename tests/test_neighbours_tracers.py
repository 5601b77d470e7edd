"""pytest-cov and pytest-memray beside this plugin, for real: timings measured under them are
reported "not comparable" with the reason, deterministic metrics are still enforced. In a
subprocess: coverage must trace from the interpreter's start."""

from __future__ import annotations

import pytest

PERF_TESTS = """
import os
import time
import pytest

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@pytest.mark.perf
def test_fib(perf):
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        fib(16)
        samples.append(time.perf_counter() - start)
    perf.record("fib", samples)
    perf.record("calls", int(os.environ.get("CALLS", "5")), unit="count")
"""


def _subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


@pytest.fixture
def perf_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_fib=PERF_TESTS)
    update = _subprocess(pytester, "--perf", "--perf-update")
    update.assert_outcomes(passed=1)
    return pytester


def test_pytest_cov_timings_not_comparable_counts_enforced(
    perf_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytest_cov")
    result = _subprocess(perf_project, "--perf", "--cov=test_fib", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*fib p50*not comparable*",
            "*calls*ok*",
            "perf: warning: some timings were not compared — coverage tracing was active; "
            "deterministic metrics (counts, heap bytes) were still enforced",
        ]
    )
    assert "0 regressed" in result.stdout.str()
    # the count is still compared exactly, coverage or not
    monkeypatch.setenv("CALLS", "9")
    result = _subprocess(perf_project, "--perf", "--cov=test_fib")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*perf: calls 5 → 9 *regressed*"])


def test_pytest_memray_timings_not_comparable(perf_project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_memray")
    result = _subprocess(perf_project, "--perf", "--memray")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*fib p50*not comparable*",
            "perf: warning: some timings were not compared — memray was tracking allocations*",
        ]
    )
    assert "0 regressed" in result.stdout.str()
