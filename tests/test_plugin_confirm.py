"""A regression or breached budget that may be a fluke of the machine is confirmed by another
whole run of the test before it fails it.

The timings here are recorded, not measured: each run of the inner test records samples chosen
by the test (a fixed distribution, slow or not), so the verdicts do not depend on how busy this
machine is.
"""

from __future__ import annotations

# pytester forgets modules imported during in-process runs; importing hypothesis here keeps it
# from being re-imported by every run.
import hypothesis  # noqa: F401
import pytest

TEST = """
import pytest

CALLS = []

def samples(ms):
    # 20 samples spread ±2 % around `ms` milliseconds
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

@pytest.mark.perf
def test_sleepy(perf):
    CALLS.append(1)
    # slow_calls: which runs (1-based) are 60 % slower than the baseline's 5 ms
    slow = len(CALLS) in {slow_calls}
    perf.record("sleep", samples(8 if slow else 5))
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


def test_more_confirmations(pytester: pytest.Pytester) -> None:
    _baseline(pytester)
    # slow twice, fast the third time: passes only with two confirmations
    pytester.makepyfile(test_sleepy=TEST.format(slow_calls="{1, 2}", work=1))
    result = pytester.runpytest("--perf", "--perf-tolerance=20%", "--perf-confirm=2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*not reproduced on rerun*"])


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
    pytester.makepyfile(
        test_sleepy=TEST.format(slow_calls="set()", work=5)
        + "\ndef test_runs():\n    assert len(CALLS) == 1\n"
    )
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["perf: work 1 → 5 (+400 %, tolerance 10 %, exact): regressed"])
    assert "rerun(s)" not in result.stdout.str()
    assert "not reproduced" not in result.stdout.str()


def test_invalid_confirm_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest("--perf-confirm=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-confirm*lots*"])


# budgets by kind ---------------------------------------------------------------------------------

BUDGETED = """
import pytest

CALLS = []

@pytest.mark.perf(p99="10ms")
def test_latency(perf):
    CALLS.append(1)
    # a stall in the first run only: its p99 breaks the budget, the confirming run's does not
    tail = 0.050 if len(CALLS) in {stalls} else 0.004
    perf.record("request", [0.003] * 98 + [tail, tail])
"""


def test_a_noisy_budget_is_confirmed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_budget=BUDGETED.format(stalls="{1}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*first run request: p99 50.0 ms (budget ≤ 10ms)*not reproduced*"])


def test_a_reproduced_noisy_budget_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_budget=BUDGETED.format(stalls="{1, 2}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["perf: request: p99 50.0 ms (budget ≤ 10ms)", "  (confirmed by 1 rerun(s))"]
    )


def test_a_query_budget_is_not_rerun(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_q="""
        import pytest
        import sqlalchemy as sa

        CALLS = []

        @pytest.mark.perf(queries=1)
        def test_two_queries():
            CALLS.append(1)
            engine = sa.create_engine("sqlite://")
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                conn.execute(sa.text("SELECT 2"))

        def test_ran_once():
            assert len(CALLS) == 1
        """
    )
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["perf: queries: queries 2 (budget ≤ 1)"])
    assert "rerun(s)" not in result.stdout.str()


# heap bytes: exact only when they are -----------------------------------------------------------

HEAP = """
import pytest

CALLS = []
KEEP = []

@pytest.mark.perf(memory="64MB")
def test_heap():
    CALLS.append(1)
    extra = {extra}
    block = bytearray(1_000_000 + (2_000_000 if len(CALLS) in extra else 0))
    KEEP.append(len(block))
    del block
"""


def test_a_heap_regression_that_does_not_reproduce_is_noisy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_heap=HEAP.format(extra="set()"))
    pytester.runpytest("--perf", "--perf-update").assert_outcomes(passed=1)
    pytester.makepyfile(test_heap=HEAP.format(extra="{1}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert "memory varied between runs" in output
    assert "not reproduced on rerun" in output


def test_a_deterministic_heap_regression_fails_after_its_rerun(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_heap=HEAP.format(extra="set()"))
    pytester.runpytest("--perf", "--perf-update").assert_outcomes(passed=1)
    pytester.makepyfile(test_heap=HEAP.format(extra="{1, 2}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: memory * → * (+* %, tolerance 10 %, exact): regressed"])
    result.stdout.fnmatch_lines(["*confirmed by 1 rerun(s)*"])
    assert "varied" not in result.stdout.str()
