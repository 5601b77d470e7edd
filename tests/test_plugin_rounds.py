"""Every run of a perf test is a whole run: setup, call and teardown with fresh function-scoped
fixtures, as pytest-rerunfailures reruns a test. Failed tests keep their record.

Regressions are forced with recorded samples (see test_plugin_confirm.py): nothing here depends
on how busy the machine is.
"""

from __future__ import annotations

import json

import hypothesis  # noqa: F401  (see test_plugin_confirm.py)
import pytest

SLOW_FIRST = """
import pytest

CALLS = []

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

def slow(runs):
    return len(CALLS) in runs
"""


def _update(pytester: pytest.Pytester, source: str) -> None:
    pytester.makepyfile(test_rounds=source.replace("{slow}", "set()"))
    pytester.runpytest("--perf", "--perf-update").assert_outcomes(passed=1)


def test_each_round_gets_fresh_function_fixtures(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
EVENTS = []

@pytest.fixture(scope="module")
def shared():
    EVENTS.append("module up")
    yield object()
    EVENTS.append("module down")

@pytest.fixture
def resource(shared):
    thing = object()
    EVENTS.append(("up", id(thing)))
    yield thing
    EVENTS.append(("down", id(thing)))

@pytest.mark.perf
def test_timed(perf, resource):
    CALLS.append(resource)
    perf.record("t", samples(9 if slow({slow}) else 5))

def test_after():
    ups = [e for e in EVENTS if isinstance(e, tuple) and e[0] == "up"]
    downs = [e for e in EVENTS if isinstance(e, tuple) and e[0] == "down"]
    assert len(ups) == len(downs) == len(CALLS) == 2
    assert CALLS[0] is not CALLS[1]
    assert EVENTS.count("module up") == 1 and "module down" not in EVENTS
"""
    )
    pytester.makepyfile(test_rounds=source.replace("{slow}", "set()"))
    pytester.runpytest("--perf", "--perf-update", "-k", "timed").assert_outcomes(passed=1)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1}"))
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*not reproduced on rerun*"])


def test_a_class_gets_a_fresh_instance_per_round(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
class TestTimed:
    @pytest.mark.perf
    def test_timed(self, perf):
        CALLS.append(1)
        assert not hasattr(self, "ran"), "the instance of an earlier round was reused"
        self.ran = True
        perf.record("t", samples(9 if slow({slow}) else 5))
"""
    )
    _update(pytester, source)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1, 2}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: t p50 * regressed", "  (confirmed by 1 rerun(s))"])


def test_an_aiohttp_app_fixture_is_new_in_each_round(pytester: pytest.Pytester) -> None:
    """The README's pattern `perf_load(app, ...)`: aiohttp refuses to start an application
    twice, so a confirmation reusing the fixture's app crashed."""
    source = """
import asyncio
import pytest
from aiohttp import web

CALLS = []

@pytest.fixture
def app():
    async def hello(request):
        return web.Response(text="hi")
    application = web.Application()
    application.router.add_get("/", hello)
    return application

@pytest.mark.perf
def test_load(perf_load, perf, app):
    CALLS.append(1)
    perf_load(app, requests=50, users=2, record=False)  # only "t" is judged
    # the timing that regresses: recorded, so the verdict does not depend on the machine
    ms = 9 if len(CALLS) in {slow} else 5
    perf.record("t", [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)])
"""
    pytester.makeini(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_rounds=source.replace("{slow}", "set()"))
    # (pytest-benchmark warns that it is off when this suite runs under xdist: an error here)
    quiet = ("-p", "no:benchmark")
    pytester.runpytest("--perf", "--perf-update", *quiet).assert_outcomes(passed=1)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1, 2}"))
    result = pytester.runpytest("--perf", *quiet)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: t p50 * regressed", "  (confirmed by 1 rerun(s))"])
    assert "Changing state" not in result.stdout.str()


def test_the_benchmark_fixture_survives_a_confirmation(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
@pytest.mark.perf
def test_both(benchmark, perf):
    CALLS.append(1)
    benchmark(sum, range(100))
    perf.record("t", samples(9 if slow({slow}) else 5))
"""
    )
    _update(pytester, source)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(passed=1)
    assert "FixtureAlreadyUsed" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*not reproduced on rerun*"])


def test_an_error_in_a_confirming_round_shows_the_first_verdict(
    pytester: pytest.Pytester,
) -> None:
    source = (
        SLOW_FIRST
        + """
@pytest.mark.perf
def test_timed(perf):
    CALLS.append(1)
    if len(CALLS) == 2 and {slow}:
        raise RuntimeError("the database went away")
    perf.record("t", samples(9 if slow({slow}) else 5))
"""
    )
    _update(pytester, source)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1}"))
    result = pytester.runpytest("--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*RuntimeError: the database went away",
            "*perf: the first run*",
            "perf: t p50 * regressed",
            "*run 2, which was to confirm this verdict, failed*",
        ]
    )


def test_a_teardown_error_between_rounds_is_the_tests_error(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
@pytest.fixture
def fragile():
    yield
    if len(CALLS) == 1 and {slow}:
        raise RuntimeError("could not close")

@pytest.mark.perf
def test_timed(perf, fragile):
    CALLS.append(1)
    perf.record("t", samples(9 if slow({slow}) else 5))

def test_next():
    pass
"""
    )
    pytester.makepyfile(test_rounds=source.replace("{slow}", "set()"))
    pytester.runpytest("--perf", "--perf-update", "-k", "timed").assert_outcomes(passed=1)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "{1}"))
    result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_timed*", "*could not close*"])


# failed tests keep their record ------------------------------------------------------------------


def test_a_failed_test_keeps_its_metrics(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fails="""
        import pytest

        @pytest.mark.perf(p95="1ms")
        def test_fails(perf):
            perf.record("t", [0.005] * 10)
            perf.record("count", 3, unit="count")
            assert False, "the check of the result failed"
        """
    )
    result = pytester.runpytest("--perf", "--perf-update", "--perf-report=report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*perf summary*",
            "test_fails.py::test_fails",
            "  (the test failed: its metrics are shown, not written)",
            "  t p50 * budget ✗*",
        ]
    )
    # the breached budget is shown with the test's own failure
    result.stdout.fnmatch_lines(["*AssertionError: the check of the result failed*"])
    result.stdout.fnmatch_lines(["*- perf -*", "perf: t: p95 5.00 ms (budget ≤ 1ms)*"])
    report = json.loads((pytester.path / "report.json").read_text())
    test = report["tests"]["test_fails.py::test_fails"]
    assert test["outcome"] == "failed"
    assert {row["name"] for row in test["metrics"]} == {"t", "count"}
    assert not (pytester.path / "perf-baseline.json").exists()


# pytest-rerunfailures and --lf -------------------------------------------------------------------


def test_rerunfailures_reruns_a_test_using_perf_without_perf(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_flaky="""
        CALLS = []

        def test_flaky(perf):
            CALLS.append(1)
            perf.record("x", 1.0, unit="count")
            assert len(CALLS) > 1
        """
    )
    result = pytester.runpytest("-p", "rerunfailures", "--reruns=1")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    assert "already recorded" not in result.stdout.str()


def test_rerunfailures_reruns_perf_tests_as_whole_rounds(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
@pytest.mark.perf
def test_flaky(perf):
    CALLS.append(1)
    perf.record("t", samples(5))
    assert len(CALLS) > 1 or not {slow}, "flaky"

@pytest.mark.perf
def test_slow(perf):
    CALLS.append(1)
    perf.record("s", samples(9 if {slow} else 5))
"""
    )
    pytester.makepyfile(test_rounds=source.replace("{slow}", "False"))
    pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly").assert_outcomes(passed=2)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "True"))
    result = pytester.runpytest("--perf", "--reruns=1", "-p", "no:randomly")
    # test_flaky: fails its own assert once, passes on rerunfailures' rerun; test_slow: its
    # regression is confirmed by our round, fails, and rerunfailures' rerun fails again
    assert result.parseoutcomes() == {"passed": 1, "failed": 1, "rerun": 2}
    result.stdout.fnmatch_lines(["perf: s p50 * regressed", "  (confirmed by 1 rerun(s))"])
    assert "already recorded" not in result.stdout.str()


def test_last_failed_reruns_a_perf_test(pytester: pytest.Pytester) -> None:
    source = (
        SLOW_FIRST
        + """
@pytest.mark.perf
def test_timed(perf):
    perf.record("t", samples(9 if {slow} else 5))
"""
    )
    pytester.makepyfile(test_rounds=source.replace("{slow}", "False"))
    pytester.runpytest("--perf", "--perf-update").assert_outcomes(passed=1)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "True"))
    pytester.runpytest("--perf", "-p", "cacheprovider").assert_outcomes(failed=1)
    pytester.makepyfile(test_rounds=source.replace("{slow}", "False"))
    result = pytester.runpytest("--perf", "--lf", "-p", "cacheprovider")
    result.assert_outcomes(passed=1)
