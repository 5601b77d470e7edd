"""``--perf-profile``: a test whose timing regressed runs once more under cProfile, and its
failure says where the time went.

The verdicts here come from recorded timings (a fixed distribution, slow or not, as in
test_plugin_confirm.py), so they do not depend on how busy this machine is. What is profiled
is real code: one helper among several spins for a fixed wall time per call, the others do
microseconds of work. The margins are wide on purpose: the slow helper costs 50-100 times
what all the other helpers together cost, so even a machine that stalls the test for a whole
scheduler slice (~10 ms) at the worst moment cannot put another helper above it.
"""

from __future__ import annotations

import json
import pstats
import re

# pytester forgets modules imported during in-process runs; importing these here keeps them
# from being re-imported by every run (see test_plugin_confirm.py)
import hypothesis  # noqa: F401
import jsonschema
import pytest
from test_profile_core import SPEEDSCOPE

HELPERS = """
import time

SLOW = 0.0  # seconds that slow_path spins per call (set by the test module)

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

def parse(n):
    return [str(i) for i in range(n)]

def validate(rows):
    return all(rows)

def slow_path(rows):
    # the helper a commit made slower
    if SLOW:
        spin(SLOW)
    return len(rows)

def render(rows):
    return ",".join(rows)

def handle():
    rows = parse(50)
    validate(rows)
    slow_path(rows)
    return render(rows)
"""

SYNC_TEST = """
import os
import pytest
import helpers

helpers.SLOW = float(os.environ.get("SLOW", "0"))
RUNS = []

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

@pytest.mark.perf{marker}
def test_handle(perf):
    RUNS.append(1)
    for _ in range(10):
        helpers.handle()
    perf.record("t", samples(8 if helpers.SLOW else 5))

def test_runs():
    # how many whole runs test_handle had: measure, confirm, and the profiled ones
    print("RUNS", len(RUNS))
"""


def _line(text: str, needle: str) -> int:
    """The line number of the first line of ``text`` (as pytester writes it) with ``needle``."""
    lines = text.strip().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


SPIN = f"helpers.py:{_line(HELPERS, 'def spin')} spin"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment variables the inner tests read (SLOW, EXTRA), reset after each test."""
    monkeypatch.delenv("SLOW", raising=False)
    monkeypatch.delenv("EXTRA", raising=False)
    return monkeypatch


def _project(pytester: pytest.Pytester, marker: str = "", test: str = SYNC_TEST) -> None:
    pytester.makepyfile(helpers=HELPERS, test_handle=test.format(marker=marker))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def _baseline(pytester: pytest.Pytester, *args: str) -> None:
    result = pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=2)


def _regress(pytester: pytest.Pytester, *args: str, slow: str = "0.004") -> pytest.RunResult:
    """A run in which slow_path spins ``slow`` seconds per call (and the timing regresses)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLOW", slow)
        return pytester.runpytest("--perf", "-p", "no:randomly", *args)


def _listing(output: str) -> list[str]:
    """The functions of the profile listing in a failure message, in order."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "your code by own time:" in line)
    assert lines[start + 1].split() == ["own", "cumulative", "calls", "function"], lines[start + 1]
    found = []
    for line in lines[start + 2 :]:
        match = re.match(r"\s+\S+ \S+\s+\S+ \S+\s+[\d,]+\s+(\S+:\d+ \S+)", line)
        if match is None:
            break
        found.append(match.group(1))
    return found


def _runs(result: pytest.RunResult) -> int:
    match = re.search(r"RUNS (\d+)", result.stdout.str())
    assert match is not None, result.stdout.str()
    return int(match.group(1))


def test_sync_regression_names_the_slowed_helper_first(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    result = _regress(pytester, "-s")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "perf: t p50 5.00 ms → 8.00 ms * regressed",
            "  (confirmed by 1 rerun(s))",
            "where the time went:",
            "one more run under cProfile, * on the test's thread; your code by own time:",
        ]
    )
    listing = _listing(out)
    # spin is where slow_path spends its time: named first, with the helper that pays for it
    assert listing[0] == SPIN, listing
    assert f"{SPIN} ← slow_path (100 %)" in out, out
    assert any(f.endswith(" slow_path") for f in listing)
    # 10 calls of 4 ms: the spin's own time is at least the 40 ms it spun
    row = next(line for line in out.splitlines() if SPIN in line)
    value, unit = row.split()[:2]
    assert unit == "ms", row
    assert float(value) >= 40, row
    result.stdout.fnmatch_lines(["*outside your code (*%): libraries, pytest*"])
    # measure, confirm, then one profiled run
    assert _runs(result) == 3


def test_no_profile_without_a_timing_regression(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    result = _regress(pytester, "-s", slow="0")
    result.assert_outcomes(passed=2)
    assert "where the time went" not in result.stdout.str()
    assert _runs(result) == 1


@pytest.mark.parametrize("how", ["cli", "ini"])
def test_off_runs_no_profiling_round(pytester: pytest.Pytester, how: str) -> None:
    _project(pytester)
    _baseline(pytester)
    if how == "ini":
        pytester.makeini(
            "[pytest]\nasyncio_default_fixture_loop_scope = function\nperf_profile = off\n"
        )
        result = _regress(pytester, "-s")
    else:
        result = _regress(pytester, "-s", "--perf-profile=off")
    result.assert_outcomes(failed=1, passed=1)
    assert "where the time went" not in result.stdout.str()
    assert _runs(result) == 2  # measure and confirm only


def test_the_cli_overrides_the_ini(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nperf_profile = off\n"
    )
    result = _regress(pytester, "-s", "--perf-profile=on-regression")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["where the time went:"])


def test_always_profiles_a_passing_test_without_failing_it(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    result = _regress(pytester, "-s", "--perf-profile=always", "--perf-report=r.json", slow="0")
    result.assert_outcomes(passed=2)
    assert "where the time went" not in result.stdout.str()  # no failure, no message
    assert _runs(result) == 2  # the measured run, then the profiled one
    report = json.loads((pytester.path / "r.json").read_text())
    profile = report["tests"]["test_handle.py::test_handle"]["profile"]
    names = [f["function"] for f in profile["functions"]]
    assert {"handle", "parse", "render", "test_handle"} <= set(names)
    # and the profiled run's timings were not the compared ones: the verdict is the measured
    # run's "ok", although the profiled run of 10 handle() calls is no 5 ms sample
    (row,) = report["tests"]["test_handle.py::test_handle"]["metrics"]
    assert row["verdict"] == "ok"


def test_invalid_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest("--perf", "--perf-profile=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-profile / ini perf_profile = 'sometimes'*always*"])


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*--perf-profile=MODE*",
            "*--perf-artifacts=DIR*",
            "*perf_profile_baseline (bool):*",
        ]
    )


# async and load tests ------------------------------------------------------------------------

ASYNC_TEST = """
import asyncio
import os
import pytest
import helpers

helpers.SLOW = float(os.environ.get("SLOW", "0"))

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

async def fetch(i):
    await asyncio.sleep(0)
    return helpers.handle()

@pytest.mark.asyncio
@pytest.mark.perf
async def test_handle_async(perf):
    await asyncio.gather(*(fetch(i) for i in range(10)))
    perf.record("t", samples(8 if helpers.SLOW else 5))
"""


def test_async_regression_names_the_slowed_helper_first(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(helpers=HELPERS, test_handle_async=ASYNC_TEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result = _regress(pytester)
    result.assert_outcomes(failed=1)
    listing = _listing(result.stdout.str())
    assert listing[0] == SPIN, listing
    assert any(f.endswith(" fetch") for f in listing), listing


LOAD_TEST = """
import os
import pytest
from aiohttp import web
import helpers

helpers.SLOW = float(os.environ.get("SLOW", "0"))

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

async def items(request):
    return web.json_response({{"items": helpers.handle()}})

@pytest.fixture
def app():
    app = web.Application()
    app.router.add_get("/items", items)
    return app

@pytest.mark.perf
def test_items_endpoint(perf, perf_load, app):
    # record=False: only the recorded timing decides the verdict (see the module docstring)
    result = perf_load(app, path="/items", users=2, requests={requests}, record=False)
    assert result.errors == 0
    perf.record("t", samples(8 if helpers.SLOW else 5))
"""


def test_load_test_profiles_the_apps_handling_not_the_generator(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(helpers=HELPERS, test_load=LOAD_TEST.format(requests=40))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result = _regress(pytester, "--perf-report=r.json")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    listing = _listing(out)
    assert listing[0] == SPIN, listing
    # the app's handler is there; the load generator and the server are library code
    assert any(f.endswith(" items") for f in listing), listing
    assert not any("pytest_bridgeperf" in f or "aiohttp" in f for f in listing), listing
    report = json.loads((pytester.path / "r.json").read_text())
    profile = report["tests"]["test_load.py::test_items_endpoint"]["profile"]
    handler = next(f for f in profile["functions"] if f["function"] == "items")
    # 40 requests, each handled once: a deterministic count, whatever the machine's load
    assert handler["calls"] == 40, handler
    assert profile["library"] > 0  # the server, the event loop and the generator: one line


ASGI_LOAD_TEST = """
import os
import pytest
import fastapi
import helpers

helpers.SLOW = float(os.environ.get("SLOW", "0"))

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

def make_app():
    app = fastapi.FastAPI()

    @app.get("/items")
    {kind}def items():
        return {{"items": helpers.handle()}}

    return app

@pytest.mark.perf
def test_items_endpoint(perf, perf_load):
    # served by uvicorn on a thread of its own (serve="thread", the default for ASGI apps); a
    # sync endpoint runs in Starlette's thread pool, threads started during the run too
    result = perf_load(make_app(), path="/items", users=2, requests=40, record=False)
    assert result.errors == 0 and result.serve == "thread"
    perf.record("t", samples(8 if helpers.SLOW else 5))
"""


@pytest.mark.parametrize("kind", ["async ", ""], ids=["async-endpoint", "sync-endpoint"])
def test_asgi_load_test_profiles_the_server_threads(pytester: pytest.Pytester, kind: str) -> None:
    pytester.makepyfile(helpers=HELPERS, test_load=ASGI_LOAD_TEST.format(kind=kind))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result = _regress(pytester, "--perf-report=r.json")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        ["one more run under cProfile, * on the test's thread and * it started; your code*"]
    )
    listing = _listing(out)
    # the slowed helper ran on the server's threads, not the test's: found there, and first
    assert listing[0] == SPIN, listing
    assert not any("pytest_bridgeperf" in f or "uvicorn" in f for f in listing), listing
    report = json.loads((pytester.path / "r.json").read_text())
    profile = report["tests"]["test_load.py::test_items_endpoint"]["profile"]
    endpoint = next(f for f in profile["functions"] if f["function"] == "items")
    # 40 requests, each handled once, on whichever thread served it
    assert endpoint["calls"] == 40, endpoint
    assert profile["threads"] >= 1


# lines= ------------------------------------------------------------------------------------


def test_lines_reports_per_line_timings_of_the_named_function(pytester: pytest.Pytester) -> None:
    _project(pytester, marker="(lines=[helpers.slow_path, helpers.render])")
    _baseline(pytester)
    result = _regress(pytester, "-s")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    slow_path = _line(HELPERS, "def slow_path")
    result.stdout.fnmatch_lines(
        [
            f"line by line (line_profiler): helpers.py:{slow_path} slow_path — * in its lines",
            "*line*hits*time*per hit*% time*code",
            "*def slow_path(rows):",
        ]
    )
    spin_line = next(line for line in out.splitlines() if line.rstrip().endswith("spin(SLOW)"))
    # 10 hits, and the spin's share of slow_path's time: ≥ 90 % (4 ms per call against the
    # few hundred nanoseconds of the other two lines)
    fields = spin_line.split()
    assert fields[:2] == [str(_line(HELPERS, "spin(SLOW)")), "10"], spin_line
    share = float(next(f for f in fields if f.endswith("%")).rstrip("%"))
    assert share >= 90, spin_line
    render = _line(HELPERS, "def render")
    result.stdout.fnmatch_lines([f"line by line (line_profiler): helpers.py:{render} render — *"])
    assert _runs(result) == 4  # measure, confirm, profile, lines


def test_lines_without_line_profiler_says_how_to_get_it(pytester: pytest.Pytester) -> None:
    _project(pytester, marker="(lines=[helpers.slow_path])")
    _baseline(pytester)
    pytester.makeconftest(
        "import sys\nsys.modules['line_profiler'] = None  # as if it were not installed\n"
    )
    result = _regress(pytester)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        # (fnmatch reads [profile] as a character class: ? stands for the brackets)
        ["line by line: line_profiler is not installed: pip install 'pytest-bridgeperf?profile?'*"]
    )
    _listing(result.stdout.str())  # the cProfile listing is there all the same


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('"helpers.slow_path"', "*test_handle.py::test_handle: @pytest.mark.perf: lines= takes*"),
        ("[]", "*test_handle.py::test_handle: @pytest.mark.perf: lines= needs at least one*"),
    ],
)
def test_lines_is_validated_at_collection(
    pytester: pytest.Pytester, lines: str, expected: str
) -> None:
    _project(pytester, marker=f"(lines={lines})")
    result = pytester.runpytest()  # without --perf too: a typo fails the everyday run
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_lines_is_not_a_budget(pytester: pytest.Pytester) -> None:
    _project(pytester, marker='(lines=[helpers.render], p50="1s")')
    _baseline(pytester)  # the budget still applies, lines= does not break its parsing


# artifacts and reports -------------------------------------------------------------------------


def test_artifacts_are_written_and_linked(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    result = _regress(
        pytester,
        "--perf-artifacts=out/profiles",
        "--perf-html=reports/perf.html",
        "--perf-markdown=summary.md",
    )
    result.assert_outcomes(failed=1, passed=1)
    files = sorted((pytester.path / "out" / "profiles").iterdir())
    assert len(files) == 2, files
    prof = next(f for f in files if f.name.endswith(".prof"))
    assert prof.with_suffix(".speedscope.json") in files
    stats = pstats.Stats(str(prof))  # what snakeviz opens
    assert any(name == "slow_path" for _, _, name in stats.stats)
    scope = json.loads(prof.with_suffix(".speedscope.json").read_text())
    jsonschema.validate(scope, SPEEDSCOPE)
    assert any(frame["name"] == "slow_path" for frame in scope["shared"]["frames"])
    result.stdout.fnmatch_lines([f"  files: out/profiles/{prof.name}, out/profiles/*.json"])
    html = (pytester.path / "reports" / "perf.html").read_text()
    # linked relative to the page, which is in another directory than the rootdir
    assert f'href="../out/profiles/{prof.name}"' in html
    assert "Where the time went" in html
    assert "slow_path" in html
    summary = (pytester.path / "summary.md").read_text()
    top = re.findall(r"^\d\. `([^`]+)`", summary, re.M)
    assert len(top) == 3, summary
    assert top[0] == SPIN, summary


def test_artifacts_option_from_ini(pytester: pytest.Pytester) -> None:
    _project(pytester)
    _baseline(pytester)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nperf_artifacts = profs\n"
    )
    result = _regress(pytester)
    result.assert_outcomes(failed=1, passed=1)
    assert len(list((pytester.path / "profs").glob("*.prof"))) == 1


# a profile stored in the baseline -------------------------------------------------------------

N_PLUS_ONE = """
import os
import time
import pytest

EXTRA = int(os.environ.get("EXTRA", "0"))

def samples(ms):
    return [ms / 1000 * (0.98 + 0.04 * i / 19) for i in range(20)]

def load(n):
    return list(range(n))

def serialize_item(row):
    end = time.perf_counter() + 0.0005
    while time.perf_counter() < end:
        pass
    return {"id": row}

def list_items(n):
    rows = load(n)
    out = [serialize_item(r) for r in rows]
    for r in rows:  # the N+1: an extra serialization per row
        for _ in range(EXTRA):
            serialize_item(r)
    return out

@pytest.mark.perf
def test_list(perf):
    list_items(10)
    perf.record("t", samples(8 if EXTRA else 5))
"""


def test_a_stored_profile_gives_the_diff_without_ab(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_list=N_PLUS_ONE)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nperf_profile_baseline = true\n"
    )
    pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly").assert_outcomes(passed=1)
    baseline = json.loads((pytester.path / "perf-baseline.json").read_text())
    stored = baseline["environments"]["default"]["tests"]["test_list.py::test_list"]["profile"]
    names = {f["function"]: f for f in stored["functions"]}
    assert names["serialize_item"]["calls"] == 10
    assert len(stored["functions"]) <= 15
    assert "artifacts" not in stored
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EXTRA", "10")
        result = pytester.runpytest("--perf", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["time that grew the most, the baseline's profile → this run *"])
    first = out.splitlines()[
        next(i for i, line in enumerate(out.splitlines()) if "time that grew the most" in line) + 1
    ]
    assert re.match(
        r"\s+\+\S+ \S+  test_list\.py:\d+ serialize_item \(10 calls → 110 calls"
        r"(; \S+ \S+ → \S+ \S+ own per call)?\)$",
        first,
    ), first


def test_without_the_ini_no_profile_is_stored(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_list=N_PLUS_ONE)
    pytester.runpytest("--perf", "--perf-update", "-p", "no:randomly").assert_outcomes(passed=1)
    baseline = json.loads((pytester.path / "perf-baseline.json").read_text())
    assert "profile" not in baseline["environments"]["default"]["tests"]["test_list.py::test_list"]
