"""perf_load as a user meets it: fixtures, marker budgets, baseline entries, thresholds, errors."""

from __future__ import annotations

import json

import pytest

APP = """
import asyncio
import pytest
from aiohttp import web

async def hello(request):
    return web.Response(text="hello")

async def boom(request):
    return web.Response(status=500, text="boom")

@pytest.fixture
def app():
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/boom", boom)
    return app
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_results_are_recorded_per_name_and_marker_budgets_apply(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf(p95="2s", error_rate="1%", rps=20)
        def test_hello(perf_load, app):
            result = perf_load(app, path="/hello", users=2, duration="0.5s")
            assert result.count > 20
            again = perf_load(app, path="/hello", requests=30, name="second")
            assert again.count == 30

        @pytest.mark.perf(rps=10**9)
        def test_too_slow(perf_load, app):
            perf_load(app, path="/hello", users=1, duration="0.3s")

        @pytest.mark.perf(error_rate="1%")
        def test_errors(perf_load, app):
            perf_load(app, path="/boom", users=1, duration="0.3s", expect_errors=True)

        def test_mix(perf_load, perf, app):
            perf_load(app, users=2, duration="0.5s", name="mix",
                      mix=[{"path": "/hello", "weight": 3}, {"path": "/boom", "name": "boom"}])
            print(sorted(perf.metrics))
        """
    )
    result = _run(pytester, "--perf", "--perf-update", "-s")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*_ test_too_slow _*",
            "perf: GET /hello rps: rps * (budget ≥ 1000000000/s)",
            "*_ test_errors _*",
            "perf: GET /boom error_rate: error_rate 100 % (budget ≤ 1%)",
            "GET /boom error_rate:",
            "errors by type: HTTP 500 ×*; responses by status: 500 ×*",
        ]
    )
    assert "'mix [GET /hello] latency', 'mix [GET /hello] rps'" in result.stdout.str()
    baseline = json.loads((pytester.path / "perf-baseline.json").read_text())
    text = json.dumps(baseline)
    for name in ("GET /hello latency", "GET /hello rps", "GET /hello error_rate", "second rps"):
        assert name in text, name


def test_check_failure_lists_every_threshold(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        def test_thresholds(perf_load, app):
            result = perf_load(app, path="/hello", users=2, requests=200)
            result.check("p(95) < 1ns", "error_rate < 1%", "rps > 1", "p(99.9) < 1s")
        """
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*2 of 4 threshold(s) failed for GET /hello:*",
            "*✗ p(95) < 1.00 ns  (measured *",
            "*✓ error_rate < 1.00 %  (measured 0 %)*",
            "*✓ rps > 1.00/s*",
            "*✗ p(99.9) < 1.00 s*too few to estimate p(99.9)*",
        ]
    )


def test_async_tests_use_arun_on_their_own_loop(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(APP)
    pytester.makepyfile(
        """
        import pytest
        from aiohttp import web

        @pytest.mark.asyncio
        async def test_app_on_the_test_loop(perf_load, app):
            # the app runs on this test's loop; perf_load.arun shares it
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            try:
                result = await perf_load.arun(f"http://127.0.0.1:{port}/hello", users=2,
                                              requests=100)
            finally:
                await runner.cleanup()
            assert result.count == 100 and result.errors == 0

        @pytest.mark.asyncio
        async def test_arun_serves_an_app(perf_load, app):
            result = await perf_load.arun(app, path="/hello", requests=50)
            assert result.count == 50

        @pytest.mark.asyncio
        async def test_sync_call_in_async_test(perf_load, app):
            perf_load(app, path="/hello", requests=5)
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = _run(pytester, "-p", "asyncio")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*use `result = await perf_load.arun(...)` there*"])


def test_safety_settings_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        perf_max_duration = 1s
        perf_allowed_hosts =
            other.example
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from pytest_bridgeperf.load import LoadOptionError, LoadTargetError

        def test_capped(perf_load):
            with pytest.raises(LoadOptionError, match="cap of 1s .ini perf_max_duration"):
                perf_load(lambda: None, duration="5s")

        def test_not_listed(perf_load):
            with pytest.raises(LoadTargetError, match="192.0.2.10:80"):
                perf_load("http://192.0.2.10/", duration="0.1s")
        """
    )
    _run(pytester).assert_outcomes(passed=2)


def test_progress_is_silent_when_not_a_tty(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        def test_long(perf_load):
            result = perf_load(lambda: time.sleep(0.01), duration="2.3s")
            # what the check needs: a run past the 2 s after which progress would show. (A count
            # of calls failed on a busy machine: 37 of the ideal 230 at load average ~10.)
            assert result.elapsed >= 2.3
            assert 0 < result.count <= 231  # one 10 ms call at a time, no more
        """
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    assert "[perf_load" not in result.stdout.str()
