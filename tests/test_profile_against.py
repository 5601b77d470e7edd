"""``--perf-against=REF`` with ``--perf-profile``: the regressed test is profiled once on each
side, and the message lists the functions whose time grew from REF to this checkout.

On real git repositories (see test_against_plugin.py): the verdict comes from recorded
timings (a constant of the code under test, with a small per-round jitter), so it does not
depend on how busy this machine is; the profiled code is real. The change under test is an N+1
in Python: each row serialized ten more times. Its call counts are exact on both sides, and
the time it adds (100 extra calls of a 0.5 ms spin = 50 ms) is well above what a loaded
machine does to the rest of the test (a few ms).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hypothesis  # noqa: F401  (see test_plugin_confirm.py)
import pytest
from against_projects import commit, init_repo, write

pytestmark = pytest.mark.slow

ITEMS = """
import time

EXTRA = {extra}  # serializations per row beyond the first: the N+1 a commit introduces

def load_rows(n):
    return list(range(n))

def serialize_item(row):
    end = time.perf_counter() + 0.0005
    while time.perf_counter() < end:
        pass
    return {{"id": row}}

def render(items):
    return len(items)

def list_items(n):
    rows = load_rows(n)
    out = [serialize_item(row) for row in rows]
    for row in rows:
        for _ in range(EXTRA):
            serialize_item(row)
    return render(out)
"""

TESTS = """
import itertools
import os

import pytest

import items

_round = itertools.count()
_SIDE = os.environ.get("BRIDGEPERF_SIDE", "A")

def samples():
    r = next(_round)
    jitter = 1 + 0.02 * (((r * 7 + (3 if _SIDE == "B" else 0)) % 5) - 2) / 2
    cost = 10.0 if items.EXTRA else 5.0
    return [cost / 1000 * jitter * (0.99 + 0.02 * i / 19) for i in range(20)]

@pytest.mark.perf{marker}
def test_list(perf):
    items.list_items(10)
    perf.record("t", samples())
"""

INI = """
[pytest]
perf_against_rounds = 10
asyncio_default_fixture_loop_scope = function
"""


def _project(pytester: pytest.Pytester, marker: str = "") -> Path:
    root = pytester.path
    init_repo(root)
    tests = TESTS.format(marker=marker)
    write(root, {"items.py": ITEMS.format(extra=0), "test_list.py": tests, "pytest.ini": INI})
    commit(root, "base")
    write(root, {"items.py": ITEMS.format(extra=10)})  # the N+1, uncommitted: side A
    return root


def _line(needle: str) -> int:
    lines = ITEMS.lstrip("\n").splitlines()  # as against_projects.write writes it
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_the_diff_names_the_helper_whose_calls_grew(pytester: pytest.Pytester) -> None:
    root = _project(pytester)
    result = pytester.runpytest(
        "--perf",
        "-p",
        "no:randomly",
        "--perf-against=HEAD",
        "--perf-artifacts=profiles",
        "--perf-report=r.json",
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "perf: t p50 5.00 ms → 10.0 ms * vs HEAD (*): regressed",
            "where the time went:",
            "one more run under cProfile, * on the test's thread; your code by own time:",
            "time that grew the most, HEAD (*) → this checkout (one profiled run each: *",
        ]
    )
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("time that grew the most"))
    first = lines[start + 1]
    serialize = _line("def serialize_item")
    assert re.fullmatch(
        # (a time per call that also moved by half on a busy machine is shown after the calls)
        rf"\s+\+\S+ m?s  items\.py:{serialize} serialize_item \(10 calls → 110 calls"
        r"(; \S+ \S+ → \S+ \S+ own per call)?\)",
        first,
    ), first
    # the functions whose calls did not change are not listed as grown
    grown = lines[start + 1 : start + 6]
    assert not any(" render " in line or " load_rows " in line for line in grown), grown
    # both sides' files, named apart
    names = sorted(p.name for p in (root / "profiles").iterdir())
    assert len(names) == 4, names
    assert {n.split("-")[-1] for n in names} == {"A.prof", "A.speedscope.json", "B.prof",
                                                  "B.speedscope.json"}  # fmt: skip
    report = json.loads((root / "r.json").read_text())
    profile = report["tests"]["test_list.py::test_list"]["profile"]
    assert "serialize_item (10 calls → 110 calls" in profile["diff"]
    assert profile["against_artifacts"]["pstats"].endswith("-B.prof")
    calls = {f["function"]: f["calls"] for f in profile["functions"]}
    assert calls["serialize_item"] == 110


def test_off_profiles_neither_side(pytester: pytest.Pytester) -> None:
    _project(pytester)
    result = pytester.runpytest(
        "--perf", "-p", "no:randomly", "--perf-against=HEAD", "--perf-profile=off"
    )
    result.assert_outcomes(failed=1)
    assert "where the time went" not in result.stdout.str()


def test_lines_are_this_checkouts(pytester: pytest.Pytester) -> None:
    _project(pytester, marker="(lines=[items.list_items])")
    result = pytester.runpytest("--perf", "-p", "no:randomly", "--perf-against=HEAD")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["line by line (line_profiler): items.py:* list_items — *"])
    inner = next(line for line in out.splitlines() if line.rstrip().endswith("serialize_item(row)"))
    # this checkout's N+1 loop: 10 rows x 10 extra calls
    assert inner.split()[1] == "100", inner
