"""The pytest-free core of ``--perf-profile`` (``pytest_bridgeperf/profiling.py``): folding
library calls into the user's functions, the diff of two profiles, the files viewers open."""

from __future__ import annotations

import itertools
import json
import pstats
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_bridgeperf import profiling
from pytest_bridgeperf.baseline import Baseline, BaselineError
from pytest_bridgeperf.profiling import FunctionStat, Profile

HERE = __file__  # a user file: this project's tests
LIB = json.__file__  # the standard library: not the user's code


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# summarize: synthetic cProfile data, exact numbers ------------------------------------------


def _stats() -> profiling.RawStats:
    """test_body (user) → helper (user) → json.dumps (library, calls no user code)
    test_body → runner (library) → callback (user): the runner is a framework."""
    body = (HERE, 10, "test_body")
    helper = (HERE, 20, "helper")
    dumps = (LIB, 5, "dumps")
    runner = (LIB, 50, "runner")
    callback = (HERE, 30, "callback")
    sleep = ("~", 0, "<built-in method time.sleep>")
    return {
        body: (1, 1, 0.001, 0.100, {}),
        helper: (3, 3, 0.002, 0.032, {body: (3, 3, 0.002, 0.032)}),
        dumps: (3, 3, 0.010, 0.010, {helper: (3, 3, 0.010, 0.010)}),
        sleep: (2, 2, 0.020, 0.020, {helper: (2, 2, 0.020, 0.020)}),
        runner: (1, 1, 0.040, 0.067, {body: (1, 1, 0.040, 0.067)}),
        callback: (5, 5, 0.027, 0.027, {runner: (5, 5, 0.027, 0.027)}),
    }


def test_library_calls_fold_into_their_user_caller_and_frameworks_do_not() -> None:
    profile = profiling.summarize(_stats())
    by_name = {f.name: f for f in profile.functions}
    assert set(by_name) == {"test_body", "helper", "callback"}
    # helper: its own 2 ms + json.dumps 10 ms + time.sleep 20 ms (C functions are filed "~")
    assert by_name["helper"].own == pytest.approx(0.032)
    # the runner calls back into user code: a framework, its 40 ms stay outside
    assert by_name["test_body"].own == pytest.approx(0.001)
    assert by_name["callback"].own == pytest.approx(0.027)
    assert [f.name for f in profile.functions] == ["helper", "callback", "test_body"]
    assert profile.total == pytest.approx(0.100)
    assert profile.library == pytest.approx(0.040)
    assert by_name["helper"].via == "test_body"
    assert by_name["helper"].via_share == pytest.approx(1.0)
    assert by_name["callback"].via == ""  # called from library code only


def test_idle_time_in_the_selector_is_counted_apart() -> None:
    stats = _stats()
    runner = (LIB, 50, "runner")
    poll = ("~", 0, "<method 'poll' of 'select.epoll' objects>")
    stats[poll] = (4, 4, 0.015, 0.015, {runner: (4, 4, 0.015, 0.015)})
    profile = profiling.summarize(stats)
    assert profile.idle == pytest.approx(0.015)
    text = profiling.format_profile(profile)
    assert "15.0 ms of it idle, waiting for I/O or timers" in text


def test_paths_are_relative_to_the_rootdir() -> None:
    profile = profiling.summarize(_stats(), root=Path(HERE).parent)
    assert {f.file for f in profile.functions} == {Path(HERE).name}


def test_a_real_run_names_the_slow_helper_first() -> None:
    def fast() -> int:
        return sum(range(50))

    def slow() -> None:
        _spin(0.02)  # 20 ms against microseconds: the order holds on a loaded machine

    def body() -> None:
        for _ in range(3):
            fast()
            slow()
            json.dumps({"a": list(range(100))})

    with profiling.profiling() as run:
        body()
    assert run.profile is not None
    top = run.profile.top()
    assert top[0].name == "_spin"
    assert top[0].via == "slow"
    assert top[0].own >= 0.06
    assert {"fast", "slow", "body"} <= {f.name for f in run.profile.functions}


def test_an_exception_is_noted_and_raised() -> None:
    def fail() -> None:
        _spin(0.001)
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError), profiling.profiling() as run:
        fail()
    assert run.profile is not None
    assert "raised ZeroDivisionError" in run.profile.note


def test_another_profiler_active_means_no_profile() -> None:
    import sys

    previous = sys.getprofile()
    sys.setprofile(lambda *args: None)
    try:
        with profiling.profiling() as run:
            pass
    finally:
        sys.setprofile(previous)
    assert run.profile is None
    assert "another profiler is active" in run.unavailable


# JSON, baseline -------------------------------------------------------------------------------


def test_profile_json_round_trip() -> None:
    profile = profiling.summarize(_stats())
    data = profile.to_json(top=2)
    assert [f["function"] for f in data["functions"]] == ["helper", "callback"]
    again = Profile.from_json(json.loads(json.dumps(data)))
    assert again.functions[0] == FunctionStat(HERE, 20, "helper", 3, 0.032, 0.032, "test_body", 1.0)
    assert again.total == pytest.approx(0.1)
    with pytest.raises(ValueError, match="needs a list of functions"):
        Profile.from_json({"functions": "no"})


def test_a_stored_profile_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"
    document: dict[str, Any] = {
        "tool": "pytest-bridgeperf",
        "schema": 1,
        "environments": {
            "default": {
                "tests": {
                    "t.py::t": {
                        "metrics": {},
                        "profile": {"functions": [{"file": "a.py", "function": "f"}]},
                    }
                }
            }
        },
    }
    path.write_text(json.dumps(document))
    with pytest.raises(BaselineError, match=r"profile\.functions\[0\]\.line: expected a finite"):
        Baseline.load(path)
    document["environments"]["default"]["tests"]["t.py::t"]["profile"] = profiling.summarize(
        _stats()
    ).to_json(profiling.STORED_TOP)
    path.write_text(json.dumps(document))
    stored = Baseline.load(path).profile("default", "t.py::t")
    assert stored is not None
    assert stored["functions"][0]["function"] == "helper"


# diffs ------------------------------------------------------------------------------------------


def _profile(*functions: tuple[str, int, float, float], total: float = 0.1) -> Profile:
    return Profile(
        functions=[FunctionStat("app/items.py", 40 + i, n, c, o, cu) for i, (n, c, o, cu) in
                   enumerate(functions)],
        total=total,
        library=0.01,
        idle=0.0,
    )  # fmt: skip


def test_the_function_called_more_often_ranks_above_the_helpers_it_calls() -> None:
    before = _profile(("serialize_item", 1000, 0.001, 0.010), ("spin", 1000, 0.009, 0.009))
    after = _profile(("serialize_item", 11000, 0.011, 0.110), ("spin", 11000, 0.099, 0.099))
    changes = profiling.diff_profiles(before, after)
    assert [c.function.name for c in changes] == ["serialize_item", "spin"]
    text = profiling.format_diff(before, after, before_name="main")
    assert "+100 ms  app/items.py:40 serialize_item (1,000 calls → 11,000 calls)" in text


def test_a_function_made_slower_ranks_by_its_own_time_not_its_callers() -> None:
    before = _profile(("handler", 10, 0.001, 0.020), ("render", 10, 0.019, 0.019))
    after = _profile(("handler", 10, 0.001, 0.050), ("render", 10, 0.049, 0.049))
    text = profiling.format_diff(before, after, before_name="the baseline's profile")
    lines = text.splitlines()
    assert lines[1] == "    +30.0 ms  app/items.py:41 render (10 calls)"
    assert not any("handler" in line for line in lines)


def test_a_moved_function_is_matched_by_name_and_a_new_one_is_marked() -> None:
    before = _profile(("render", 10, 0.010, 0.010))
    after = Profile(
        [
            FunctionStat("app/items.py", 55, "render", 10, 0.010, 0.010),
            FunctionStat("app/items.py", 70, "audit", 10, 0.030, 0.030),
        ],
        total=0.1,
        library=0.01,
        idle=0.0,
    )
    text = profiling.format_diff(before, after, before_name="main")
    assert "+30.0 ms  app/items.py:70 audit (— → 10 calls)" in text
    assert "render" not in text  # line 40 → 55, same function, same time
    assert "—: not among the functions kept" in text


def test_noise_below_the_floor_is_not_listed() -> None:
    before = _profile(("render", 10, 0.010, 0.010), total=1.0)
    after = _profile(("render", 10, 0.015, 0.015), total=1.0)  # +5 ms of a 1 s run
    text = profiling.format_diff(before, after, before_name="main")
    assert "no function of your code grew by more than 10.0 ms" in text


# files ------------------------------------------------------------------------------------------

#: The speedscope file format's required fields (from its published JSON schema,
#: https://www.speedscope.app/file-format-schema.json), for the sampled profiles written here.
SPEEDSCOPE = {
    "type": "object",
    "required": ["$schema", "profiles", "shared"],
    "properties": {
        "$schema": {"enum": ["https://www.speedscope.app/file-format-schema.json"]},
        "shared": {
            "type": "object",
            "required": ["frames"],
            "properties": {
                "frames": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "file": {"type": "string"},
                            "line": {"type": "number"},
                        },
                    },
                }
            },
        },
        "profiles": {
            "type": "array",
            "items": {
                "type": "object",
                "required": [
                    "endValue",
                    "name",
                    "samples",
                    "startValue",
                    "type",
                    "unit",
                    "weights",
                ],
                "properties": {
                    "type": {"enum": ["sampled"]},
                    "unit": {
                        "enum": [
                            "bytes",
                            "microseconds",
                            "milliseconds",
                            "nanoseconds",
                            "none",
                            "seconds",
                        ]
                    },
                    "samples": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "number"}},
                    },
                    "weights": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
    },
}


def test_artifacts_are_standard_files(tmp_path: Path) -> None:
    def leaf() -> None:
        _spin(0.005)

    def middle() -> None:
        leaf()
        leaf()

    with profiling.profiling(tmp_path) as run:
        middle()
    assert run.profile is not None
    written = profiling.write_artifacts(
        run.profile, profiling.artifact_stem(tmp_path / "out", "t.py::t"), tmp_path, "t.py::t"
    )
    assert written["pstats"].startswith("out/t.py_t-")
    stats = pstats.Stats(str(tmp_path / written["pstats"]))
    leaf_key = next(k for k in stats.stats if k[2] == "leaf")  # type: ignore[attr-defined]
    assert stats.stats[leaf_key][1] == 2  # type: ignore[attr-defined]
    document = json.loads((tmp_path / written["speedscope"]).read_text())
    jsonschema.validate(document, SPEEDSCOPE)
    (scope,) = document["profiles"]
    frames = document["shared"]["frames"]
    assert len(scope["samples"]) == len(scope["weights"])
    assert all(0 <= i < len(frames) for stack in scope["samples"] for i in stack)
    # every second of the run is in some stack, and leaf's 10 ms sit under middle
    assert sum(scope["weights"]) == pytest.approx(run.profile.total, rel=1e-3)
    names = [[frames[i]["name"] for i in stack] for stack in scope["samples"]]

    def under_middle(stack: list[str]) -> bool:
        return ("middle", "leaf") in itertools.pairwise(stack)

    under = sum(
        w for stack, w in zip(names, scope["weights"], strict=True) if under_middle(list(stack))
    )
    assert under >= 0.01


def test_artifact_names_stay_inside_the_directory(tmp_path: Path) -> None:
    stem = profiling.artifact_stem(tmp_path, "../../etc/passwd::test[a/b]")
    assert stem.parent == tmp_path
    assert "/" not in stem.name
    assert profiling.artifact_stem(tmp_path, "a::b") != profiling.artifact_stem(tmp_path, "a_b")


def test_a_symlink_in_the_directory_is_replaced_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    directory = tmp_path / "profiles"
    directory.mkdir()
    stem = profiling.artifact_stem(directory, "t.py::t")
    (directory / (stem.name + ".prof")).symlink_to(outside)
    with profiling.profiling() as run:
        _spin(0.001)
    assert run.profile is not None
    profiling.write_artifacts(run.profile, stem, tmp_path)
    assert outside.read_text() == "keep me"


# lines= -----------------------------------------------------------------------------------------


def _target(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def test_parse_lines() -> None:
    assert profiling.parse_lines(_target) == (_target,)
    assert profiling.parse_lines([_target, Profile.top]) == (_target, Profile.top)
    with pytest.raises(ValueError, match="lines= takes Python functions"):
        profiling.parse_lines(["_target"])
    with pytest.raises(ValueError, match="needs at least one"):
        profiling.parse_lines([])


def test_line_report() -> None:
    pytest.importorskip("line_profiler")
    with profiling.line_profiling([_target]) as run:
        _target(1000)
        _target(1000)
    text = profiling.format_line_report(run, Path(HERE).parent)
    lines = text.splitlines()
    assert lines[0].startswith("line by line (line_profiler): test_profile_core.py:")
    loop = next(line for line in lines if line.rstrip().endswith("total += i"))
    assert loop.split()[1] == "2,000"  # hits: exact


def test_a_fixed_time_run_shows_the_time_per_call() -> None:
    # perf.measure under the profiler runs rounds until its max_time: a slower function is
    # called fewer times in the same two seconds
    before = _profile(("page", 148, 0.060, 0.060), total=2.0)
    after = _profile(("page", 47, 1.750, 1.750), total=2.0)
    text = profiling.format_diff(before, after, before_name="main")
    assert (
        "+1.69 s  app/items.py:40 page (148 calls → 47 calls; 405 µs → 37.2 ms own per call)"
        in (text)
    )
