"""A timing regression is confirmed by rerunning the test body before it fails the test."""

from __future__ import annotations

# pytester forgets modules imported during in-process runs; importing hypothesis here keeps it
# from being re-imported by every run.
import hypothesis  # noqa: F401
import pytest

# The rerun logic is under test here, not the clock: fixed samples make every verdict the same on
# a busy machine (where a 5 ms sleep was seen to read 8 ms, as long as the "slow" 8 ms one).
# Real timings are the business of tests/test_plugin_runners.py and benchmarks/false_alarms.py.
TEST = """
import pytest

CALLS = []

@pytest.mark.perf
def test_sleepy(perf):
    CALLS.append(1)
    # slow_calls: which calls (1-based) take 60 % longer than the baseline's 5 ms
    slow = len(CALLS) in {slow_calls}
    perf.record("sleep", [(0.008 if slow else 0.005) * (1 + k / 1000) for k in range(20)])
    perf.record("work", {work}, unit="count")
"""


def _baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="set()", work=1))
    pytester.runpytest("--perf", "--perf-update").assert_outcomes(passed=1)


def test_transient_slowdown_is_not_a_regression(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="{1}", work=1))
    result = pytester.runpytest("--perf", "--perf-tolerance=20%")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*first run sleep p50 * regressed; not reproduced on rerun*"])


def test_reproduced_slowdown_fails_and_says_so(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="{1, 2}", work=1))
    result = pytester.runpytest("--perf", "--perf-tolerance=20%")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: sleep p50 * regressed", "  (confirmed by 1 rerun(s))"])


def test_confirmation_can_be_turned_off(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="{1}", work=1))
    pytester.makeini("[pytest]\nperf_confirm = 0\n")
    result = pytester.runpytest("--perf", "--perf-tolerance=20%")
    result.assert_outcomes(failed=1)
    assert "rerun(s)" not in result.stdout.str()
    assert "not reproduced" not in result.stdout.str()


def test_exact_regressions_are_not_rerun(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="set()", work=5))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: work 1 → 5 (+400 %, tolerance 10 %, exact): regressed"])
    assert "rerun(s)" not in result.stdout.str()
    assert "not reproduced" not in result.stdout.str()


def test_invalid_confirm_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest("--perf-confirm=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-confirm*lots*"])
