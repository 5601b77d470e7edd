"""``pytest --perf --perf-against=REF`` end to end, on real git repositories.

The timings are recorded, not measured: each round of the inner test records samples whose
scale is a constant of the code under test (so A and B differ exactly by the change made in the
commit) with a per-round, per-side jitter, so the verdicts do not depend on how busy this machine
is. Real sides (interpreters over execnet) and real worktrees all the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hypothesis  # noqa: F401  (see test_plugin_confirm.py)
import pytest
from against_projects import GIT_ENV, commit, git, init_repo, worktrees, write

pytestmark = pytest.mark.slow

CALC = """
COST = {cost}  # milliseconds per call: what the commits change
"""

TESTS = """
import itertools
import os

import pytest

import calc

_round = itertools.count()
_SIDE = os.environ.get("BRIDGEPERF_SIDE", "A")

def samples():
    # 20 samples of COST ms; each round (and each side) gets its own few-percent jitter, so the
    # paired rounds make a real interval, centred on the change the commit made
    r = next(_round)
    jitter = 1 + 0.02 * (((r * 7 + (3 if _SIDE == "B" else 0)) % 5) - 2) / 2
    return [calc.COST / 1000 * jitter * (0.99 + 0.02 * i / 19) for i in range(20)]

@pytest.mark.perf
def test_timed(perf):
    perf.record("t", samples())
"""

INI = """
[pytest]
perf_against_rounds = 10
asyncio_default_fixture_loop_scope = function
"""


def _project(pytester: pytest.Pytester, cost: float, tests: str = TESTS) -> Path:
    root = pytester.path
    init_repo(root)
    write(root, {"calc.py": CALC.format(cost=cost), "test_timed.py": tests, "pytest.ini": INI})
    commit(root, "base")
    return root


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--perf", "-p", "no:randomly", *args)


def test_a_regression_against_a_commit_fails_and_says_vs_what(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    sha = git(root, "rev-parse", "--short", "HEAD")
    write(root, {"calc.py": CALC.format(cost=6.0)})  # +20 %, uncommitted: A is the dirty tree
    result = _run(pytester, "--perf-against=HEAD", "--perf-report=report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"perf: t p50 5.00 ms → 6.00 ms (+* %, tolerance 10 %, * CI of the paired change *)"
            f" vs HEAD ({sha}): regressed",
            f"*perf summary (vs HEAD ({sha}))*",
        ]
    )
    report = json.loads((root / "report.json").read_text())
    (row,) = report["tests"]["test_timed.py::test_timed"]["metrics"]
    assert row["verdict"] == "regressed"
    assert row["interval"]["low"] > 0.10
    assert len(row["paired"]["a"]) == len(row["paired"]["b"]) >= 8
    assert worktrees(root) == [root]  # the temporary worktree is gone


def test_unchanged_code_passes(pytester: pytest.Pytester) -> None:
    _project(pytester, 5.0)
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  t p50 * 5.00 ms → 5.00 ms * ok"])


def test_an_improvement_passes(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    write(root, {"calc.py": CALC.format(cost=3.0)})
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  t p50 * 5.00 ms → 3.00 ms * improved"])


def test_merge_base_of_a_branch(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    git(root, "checkout", "-q", "-b", "feature")
    commit(root, "slower", {"calc.py": CALC.format(cost=7.5)})
    result = _run(pytester, "--perf-against=merge-base:main")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*5.00 ms → 7.50 ms (+* %*vs merge-base:main (*): regressed"])


def test_src_layout_imports_refs_code(pytester: pytest.Pytester) -> None:
    root = pytester.path
    init_repo(root)
    write(
        root,
        {
            "pyproject.toml": """
                [project]
                name = "srcpkg"
                version = "0"

                [tool.setuptools.packages.find]
                where = ["src"]

                [tool.pytest.ini_options]
                perf_against_rounds = 10
                pythonpath = ["src"]
                """,
            "src/srcpkg/__init__.py": "def answer():\n    return 2\n",
            "tests/test_src.py": """
                import pytest
                import srcpkg

                @pytest.mark.perf
                def test_answer(perf):
                    perf.record("answer", srcpkg.answer(), unit="count")
                """,
        },
    )
    commit(root, "base")
    write(root, {"src/srcpkg/__init__.py": "def answer():\n    return 3\n"})
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: answer 2 → 3 (+50 %, tolerance 10 %, exact*): regressed"])


def test_a_test_new_on_this_side(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    write(
        root,
        {
            "test_timed.py": TESTS
            + textwrap.dedent(
                """
                @pytest.mark.perf
                def test_new(perf):
                    perf.record("n", 3, unit="count")
                """
            )
        },
    )
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["test_timed.py::test_new", "*not on HEAD*", "  n * new*"])


def test_a_test_failing_on_ref_only_is_not_compared(pytester: pytest.Pytester) -> None:
    broken = TESTS.replace('perf.record("t", samples())', 'perf.record("t", samples())\n    1 / 0')
    root = _project(pytester, 5.0, tests=broken)
    write(root, {"test_timed.py": TESTS})  # fixed here
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*the test failed on HEAD*ZeroDivisionError*"])


def test_a_test_failing_here_fails_with_its_own_error(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    write(
        root,
        {
            "test_timed.py": TESTS.replace(
                "def test_timed(perf):", "def test_timed(perf):\n    assert False, 'broken here'"
            )
        },
    )
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: broken here*"])


def test_query_counts_compared_exactly_with_the_statement_diff(pytester: pytest.Pytester) -> None:
    tests = """
import pytest
import sqlalchemy as sa

import calc

@pytest.mark.perf
def test_items(perf_queries):
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE item (id INTEGER PRIMARY KEY, owner INTEGER)"))
        conn.execute(sa.text("CREATE TABLE owner (id INTEGER PRIMARY KEY)"))
    with perf_queries(engine) as q, engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, owner FROM item")).all()
        for _ in range(int(calc.COST)):  # one statement per item: an N+1 when COST grows
            conn.execute(sa.text("SELECT id FROM owner WHERE id = :id"), {"id": 1})
"""
    root = _project(pytester, 1.0, tests=tests)
    write(root, {"calc.py": CALC.format(cost=4.0)})
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["perf: queries 2 → 5 (+150 %, tolerance 10 %, exact*): regressed"])
    result.stdout.fnmatch_lines(["*SELECT id FROM owner WHERE id = ?*"])


def test_xdist(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    write(
        root,
        {"test_more.py": TESTS.replace("def test_timed", "def test_other")},
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "more")
    write(root, {"calc.py": CALC.format(cost=7.5)})
    result = _run(pytester, "--perf-against=HEAD", "-n", "2")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*perf summary (vs HEAD (*))*"])
    assert worktrees(root) == [root]


def test_a_ref_git_cannot_resolve_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _project(pytester, 5.0)
    result = _run(pytester, "--perf-against=no-such-branch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-against=no-such-branch: git cannot resolve*"])


def test_a_ref_whose_code_does_not_import_is_a_usage_error(pytester: pytest.Pytester) -> None:
    root = _project(pytester, 5.0)
    commit(root, "broken", {"conftest.py": "import no_such_module_here\n"})
    write(root, {"conftest.py": ""})
    result = _run(pytester, "--perf-against=HEAD")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-against=HEAD*no_such_module_here*"])
    assert worktrees(root) == [root]


def test_against_and_update_are_exclusive(pytester: pytest.Pytester) -> None:
    _project(pytester, 5.0)
    result = _run(pytester, "--perf-against=HEAD", "--perf-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-against*cannot be combined with --perf-update*"])


def test_ctrl_c_removes_the_worktree(pytester: pytest.Pytester) -> None:
    slow = TESTS.replace(
        'perf.record("t", samples())',
        'import time; time.sleep(0.3)\n    perf.record("t", samples())',
    )
    root = _project(pytester, 5.0, tests=slow)
    env = {**os.environ, **GIT_ENV, "PYTEST_ADDOPTS": "-p no:randomly"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--perf", "--perf-against=HEAD", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # wait until the worktree exists and rounds are running, then interrupt
        deadline = time.monotonic() + 60
        while len(worktrees(root)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(worktrees(root)) == 2, "the worktree never appeared"
        time.sleep(1.5)
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert worktrees(root) == [root]


def test_load_runs_are_capped_per_round(pytester: pytest.Pytester) -> None:
    tests = """
import pytest

@pytest.mark.perf
def test_load(perf_load):
    result = perf_load(lambda: None, duration="5s", users=1)
    # perf_against_load_duration caps each round's run: 5 s asked, 0.2 s run
    assert result.elapsed < 2.0, result.elapsed
"""
    root = _project(pytester, 5.0, tests=tests)
    ini = INI.replace("perf_against_rounds = 10", "perf_against_rounds = 8")
    write(root, {"pytest.ini": ini + "perf_against_load_duration = 0.2s\n"})
    result = _run(pytester, "--perf-against=HEAD")
    result.assert_outcomes(passed=1)
