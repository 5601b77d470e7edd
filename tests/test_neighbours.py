"""The plugins people run beside this one, each for real: pytest-benchmark, pytest-randomly,
pytest-xdist and pytest-asyncio (strict and auto). pytest-timeout: test_neighbours_timeout.py;
pytest-cov and pytest-memray: test_neighbours_tracers.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


#: Compare runs here check that the neighbour and the plugin work together, not the machine's
#: speed: two runs a few seconds apart on a busy 2-core machine differ by more than 60 % in
#: throughput (measured), so timings get a tolerance no such spell reaches. Exact counts are
#: checked by their values and by marker budgets, which no tolerance loosens.
LENIENT = "--perf-tolerance=1000%"


def _baseline(pytester: pytest.Pytester) -> dict[str, Any]:
    data = json.loads((pytester.path / "perf-baseline.json").read_text())
    tests: dict[str, Any] = data["environments"]["default"]["tests"]
    return tests


# ---------------------------------------------------------------------------------------------
# pytest-benchmark

BENCHMARK_TESTS = """
import pytest

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@pytest.mark.perf
def test_both(benchmark, perf):
    assert benchmark(fib, 12) == 144
    # pytest-benchmark's own rounds, recorded and compared by this plugin
    perf.record("fib(12)", benchmark.stats.stats.data)
    perf.record("calls", 1, unit="count")

def test_benchmark_alone(benchmark):
    assert benchmark(fib, 10) == 55
"""


def test_benchmark_fixture_shares_a_test_with_perf(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytest_benchmark")
    # pytest-benchmark turns itself off in an xdist worker (benchmark.stats is then None), and
    # this suite may run in one: the inner run is not
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_bench=BENCHMARK_TESTS)
    result = _run(pytester, "-p", "no:randomly", "--perf", "--perf-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*perf summary (env default)*", "*fib(12) p50*new*"])
    result.stdout.fnmatch_lines(["*benchmark: 2 tests*"])  # pytest-benchmark's table
    stored = _baseline(pytester)["test_bench.py::test_both"]["metrics"]["fib(12)"]
    assert stored["n"] >= 5  # pytest-benchmark's minimum number of rounds reached the baseline
    result = _run(pytester, "-p", "no:randomly", "--perf", LENIENT)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["perf: * 0 regressed*"])
    result.stdout.fnmatch_lines(["*benchmark: 2 tests*"])
    # without --perf the perf test is skipped and the benchmark runs as always
    result = _run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=1)


# ---------------------------------------------------------------------------------------------
# pytest-randomly

RANDOMLY_TESTS = """
import random
import time
import pytest

@pytest.mark.perf
@pytest.mark.parametrize("n", range(6))
def test_ordered_work(perf, n):
    # pytest-randomly reseeds `random` before every test: what the test draws is the same
    # whatever the order, so the count is exact
    items = random.sample(range(1000), 10 + n)
    perf.record("items", len(items), unit="count")
    # CPU time: beside other suites a 20 µs sort's wall time swings by more than the lenient
    # tolerance (a preempted sample lasts milliseconds), and this test is about the order
    samples = []
    for _ in range(20):
        start = time.thread_time()
        sorted(items * 50)
        samples.append(time.thread_time() - start)
    perf.record("sort", samples)
"""


def _order(result: pytest.RunResult) -> list[str]:
    return re.findall(r"test_ordered_work\[(\d)\] PASSED", result.stdout.str())


def test_random_order_and_reseeding(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_randomly")
    pytester.makepyfile(test_random=RANDOMLY_TESTS)
    first = _run(pytester, "-p", "randomly", "--randomly-seed=1", "-v", "--perf", "--perf-update")
    first.assert_outcomes(passed=6)
    entries = _baseline(pytester)
    assert len(entries) == 6
    second = _run(pytester, "-p", "randomly", "--randomly-seed=2", "-v", "--perf", LENIENT)
    second.assert_outcomes(passed=6)
    assert sorted(_order(first)) == sorted(_order(second)) == [str(n) for n in range(6)]
    assert _order(first) != _order(second)  # seeds 1 and 2 give different orders
    second.stdout.fnmatch_lines(["perf: * 0 regressed, 0 improved, 0 new, *, 0 missing"])
    # the exact counts were compared and found equal in the other order
    equal = [
        line
        for line in second.stdout.lines
        if line.strip().startswith("items") and "+0.0 %" in line and line.rstrip().endswith("ok")
    ]
    assert len(equal) == 6, second.stdout.str()
    # an update in another order writes the same entries
    third = _run(pytester, "-p", "randomly", "--randomly-seed=3", "--perf", "--perf-update")
    third.assert_outcomes(passed=6)
    again = _baseline(pytester)
    assert {k: v["metrics"]["items"]["value"] for k, v in again.items()} == {
        k: v["metrics"]["items"]["value"] for k, v in entries.items()
    }


# ---------------------------------------------------------------------------------------------
# pytest-xdist

XDIST_CONFTEST = """
import asyncio
import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    yield engine
    engine.dispose()

@pytest.fixture
def app(engine):
    async def item(request):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/item", item)
    return app
"""

XDIST_TESTS = """
import os
import pytest

@pytest.mark.perf(error_rate="1%")
@pytest.mark.parametrize("i", range(3))
def test_load(perf_load, perf_queries, app, engine, i):
    # requests=: an exact count of statements, compared exactly with the baseline
    with perf_queries(engine) as q:
        result = perf_load(app, path="/item", users=2, requests=40)
    assert q.count == result.count == 40
    assert "PYTEST_XDIST_WORKER" in os.environ

@pytest.mark.perf(queries=3)
@pytest.mark.parametrize("i", range(3))
def test_queries(engine, i):
    from sqlalchemy import text
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("SELECT 1"))
"""


def test_xdist_runs_load_and_query_tests_on_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(XDIST_CONFTEST)
    pytester.makepyfile(test_x=XDIST_TESTS)
    quiet = ("-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:benchmark")
    result = pytester.runpytest_subprocess("-n", "2", *quiet, "--perf", "--perf-update")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "perf: baseline * updated: 6 test(s) written, 0 pruned",
            "*warning: timing metrics were measured under pytest-xdist*",
        ]
    )
    assert result.stdout.str().count("perf summary") == 1
    entries = _baseline(pytester)
    assert len(entries) == 6
    assert entries["test_x.py::test_queries[0]"]["metrics"]["queries"]["value"] == 3
    result = pytester.runpytest_subprocess("-n", "2", *quiet, "--perf", LENIENT)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["perf: * 0 regressed, *, 0 missing"])


# ---------------------------------------------------------------------------------------------
# pytest-asyncio, strict and auto

ASYNC_CONFTEST = """
import asyncio
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

@pytest_asyncio.fixture
async def engine(tmp_path):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO items (id) VALUES (1), (2), (3)"))
    yield engine
    await engine.dispose()

@pytest.fixture
def app(engine):
    async def items(request):
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id FROM items"))).all()
            await asyncio.sleep(0.01)
        return web.json_response([r.id for r in rows])

    app = web.Application()
    app.router.add_get("/items", items)
    return app
"""

ASYNC_TESTS = """
import pytest

@pytest.mark.asyncio
@pytest.mark.perf(error_rate="1%")
async def test_load_on_the_test_loop(perf_load, perf_queries, app, engine):
    async with perf_queries(engine) as q:
        result = await perf_load.arun(app, path="/items", users=4, requests=60)
    assert result.errors == 0
    # one statement per request (an exact count, compared exactly with the baseline)
    assert q.count == result.count == 60

@pytest.mark.asyncio
async def test_run_ending_with_requests_in_flight(perf_load, perf_queries, app, engine):
    async with perf_queries(engine, name="queries in flight") as q:
        result = await perf_load.arun(app, path="/items", users=4, duration="0.4s", record=False)
    # the requests in flight at the end were waited for, inside the block: every connection is
    # back in the pool at its exit (checked by perf_queries), and each request ran its query
    assert q.count == result.sent

@pytest.mark.asyncio
@pytest.mark.perf(queries=2)
async def test_query_budget(engine):
    from sqlalchemy import text
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        await conn.execute(text("SELECT 2"))

@pytest.mark.asyncio
async def test_async_callable(perf_load):
    import asyncio

    async def call():
        await asyncio.sleep(0.001)

    result = await perf_load.arun(call, users=4, requests=100)
    assert result.count == 100
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    pytest.importorskip("pytest_asyncio")
    pytest.importorskip("aiosqlite")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(ASYNC_CONFTEST)
    # auto mode needs no marker: prove it by leaving them out
    tests = ASYNC_TESTS if mode == "strict" else ASYNC_TESTS.replace("@pytest.mark.asyncio\n", "")
    pytester.makepyfile(test_async=tests)
    args = ("-p", "no:randomly", f"--asyncio-mode={mode}", "--perf")
    result = _run(pytester, *args, "--perf-update")
    result.assert_outcomes(passed=4)
    entries = _baseline(pytester)
    assert entries["test_async.py::test_query_budget"]["metrics"]["queries"]["value"] == 2
    load = entries["test_async.py::test_load_on_the_test_loop"]["metrics"]
    assert {"GET /items latency", "GET /items rps", "GET /items error_rate"} <= set(load)
    # the in-flight test's statement count depends on the machine's speed: not compared
    result = _run(pytester, *args, "-k", "not in_flight", LENIENT)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["perf: * 0 regressed, *, 0 missing"])
