"""Tracers and profilers make timings not comparable: detection with real sys.settrace,
sys.setprofile, cProfile, coverage, memray and sys.monitoring; the recorder and load runs marking
their timings. The plugin with the real pytest-cov and pytest-memray: test_neighbours_tracers.py."""

from __future__ import annotations

import bdb
import cProfile
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_bridgeperf.metrics import Recorder
from pytest_bridgeperf.tracing import (
    COVERAGE,
    MEMRAY,
    active_tracers,
    describe_hook,
    timing_distortion,
)


def _tracer(frame: Any, event: str, arg: Any) -> None:
    return None


def _profiler(frame: Any, event: str, arg: Any) -> None:
    return None


@pytest.fixture
def restore_hooks() -> Iterator[None]:
    """Whatever a test installs is removed, and what ran before (say, an outer coverage) is
    put back."""
    trace, profile = sys.gettrace(), sys.getprofile()
    yield
    sys.settrace(trace)
    sys.setprofile(profile)


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "COVERAGE"))}
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_nothing_is_reported_in_a_plain_interpreter() -> None:
    result = _run(
        """
        import sys
        sys.modules["pytest"] = None  # the module is pytest-free
        from pytest_bridgeperf.tracing import timing_distortion
        print(repr(timing_distortion()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_a_trace_function_is_named(restore_hooks: None) -> None:
    sys.settrace(_tracer)
    try:
        reasons = active_tracers()
    finally:
        sys.settrace(None)
    assert f"a trace function was active ({__name__}._tracer)" in reasons
    assert not any("_tracer" in r for r in active_tracers())


def test_a_debugger_is_recognised(restore_hooks: None) -> None:
    class QuietDebugger(bdb.Bdb):
        def trace_dispatch(self, frame: Any, event: str, arg: Any) -> Any:  # type: ignore[override]
            return None

    debugger = QuietDebugger()
    sys.settrace(debugger.trace_dispatch)
    try:
        reason = timing_distortion()
    finally:
        sys.settrace(None)
    assert reason is not None
    assert "a debugger was active" in reason
    assert "QuietDebugger" in reason
    # pdb's own hook (not installed here: it would stop at the next line) is a Bdb method too
    import pdb

    assert describe_hook(pdb.Pdb().trace_dispatch) == ("pdb", "Pdb")


def test_a_profile_function_and_cprofile(restore_hooks: None) -> None:
    sys.setprofile(_profiler)
    try:
        reasons = active_tracers()
    finally:
        sys.setprofile(None)
    assert f"a profiler was active ({__name__}._profiler)" in reasons
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        reasons = active_tracers()
    finally:
        profiler.disable()
    assert "a profiler was active (cProfile)" in reasons
    assert "a profiler was active (cProfile)" not in active_tracers()


def test_coverage_is_recognised_by_its_tracer_and_when_started() -> None:
    coverage = pytest.importorskip("coverage")
    if coverage.Coverage.current() is not None:
        pytest.skip("the suite itself runs under coverage: one more instance would disturb it")
    cov = coverage.Coverage(data_file=None)
    cov.start()
    try:
        reasons = active_tracers()
        trace = sys.gettrace()
    finally:
        cov.stop()
    assert COVERAGE in reasons
    assert reasons.count(COVERAGE) == 1  # its tracer and its started instance: one reason
    assert trace is not None
    assert type(trace).__module__.startswith("coverage")
    assert COVERAGE not in active_tracers()


def test_a_memray_tracker_is_recognised(tmp_path: Path) -> None:
    memray = pytest.importorskip("memray")
    with memray.Tracker(tmp_path / "capture.bin"):
        reasons = active_tracers()
    assert MEMRAY in reasons
    assert MEMRAY not in active_tracers()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is Python 3.12+")
def test_sys_monitoring_tools_are_recognised() -> None:
    monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
    tool = monitoring.PROFILER_ID
    if monitoring.get_tool(tool) is not None:
        pytest.skip("a profiler already holds the sys.monitoring profiler id")
    monitoring.use_tool_id(tool, "bridgeperf-test-profiler")
    try:
        reasons = active_tracers()
    finally:
        monitoring.free_tool_id(tool)
    assert "a profiler was active (bridgeperf-test-profiler)" in reasons


def test_threads_started_under_a_tracer_are_covered(restore_hooks: None) -> None:
    # coverage installs its tracer for new threads with threading.settrace: a sync load
    # callable's user threads are traced even when the recording thread's hook is gone
    threading.settrace(_tracer)
    try:
        reasons = active_tracers()
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    assert f"a trace function was active ({__name__}._tracer)" in reasons


def test_recorder_marks_timings_recorded_under_a_profiler_but_not_counts(
    restore_hooks: None,
) -> None:
    recorder = Recorder()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        timing = recorder.record("timing", [0.001, 0.002, 0.003])
        rate = recorder.record("rate", 120.0, unit="1/s", better="higher")
        count = recorder.record("count", 7, unit="count")
        heap = recorder.record("heap", 4096, unit="bytes")
    finally:
        profiler.disable()
    assert timing.distorted is not None
    assert "cProfile" in timing.distorted
    assert rate.distorted is not None
    assert "cProfile" in rate.distorted
    assert count.distorted is None
    assert heap.distorted is None
    later = recorder.record("later", [0.001, 0.002])
    assert later.distorted is None or "cProfile" not in later.distorted


def test_the_plugins_own_tracer_reason_comes_first(restore_hooks: None) -> None:
    recorder = Recorder()
    recorder.timing_distortion = "a Python-heap tracer (tracemalloc) was running"
    sys.setprofile(_profiler)
    try:
        metric = recorder.record("timing", [0.001, 0.002])
    finally:
        sys.setprofile(None)
    assert metric.distorted == "a Python-heap tracer (tracemalloc) was running"


def test_a_load_run_started_under_a_profiler_is_marked(restore_hooks: None) -> None:
    from pytest_bridgeperf.load import run_load
    from pytest_bridgeperf.load.record import record_result

    def call() -> None:
        sum(range(100))

    sys.setprofile(_profiler)
    try:
        result = run_load(call, {"users": 1, "requests": 50})
    finally:
        sys.setprofile(None)
    assert result.distorted is not None
    assert "_profiler" in result.distorted
    # recorded after the profiler stopped: the run's own finding still marks the timings
    recorder = Recorder()
    base = record_result(recorder, result)
    assert "_profiler" in (recorder.metrics[f"{base} latency"].distorted or "")
    assert "_profiler" in (recorder.metrics[f"{base} rps"].distorted or "")


WORKER_TARGET = """
import sys

def _profile(frame, event, arg):
    return None

# profiles every process that imports this module: the load worker processes too
sys.setprofile(_profile)

def call():
    sum(range(100))
"""


def test_a_profiler_in_a_load_worker_process_is_reported_by_the_parent(
    tmp_path: Path,
) -> None:
    (tmp_path / "traced_target.py").write_text(WORKER_TARGET)
    result = _run(
        """
        import json, sys
        sys.setprofile(None)
        from pytest_bridgeperf.load import run_load
        sys.path.insert(0, sys.argv[1])
        import traced_target
        sys.setprofile(None)  # the parent itself is clean
        from pytest_bridgeperf.tracing import timing_distortion
        assert timing_distortion() is None
        result = run_load(traced_target.call, {"users": 2, "requests": 40, "workers": 2})
        print(json.dumps({"count": result.count, "distorted": result.distorted}))
        """.replace("sys.argv[1]", repr(str(tmp_path)))
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["count"] == 40
    assert out["distorted"] == (
        "a profiler was active (traced_target._profile) in a perf_load worker process"
    )
