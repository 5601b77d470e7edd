"""A baseline or report that cannot be written: said in the perf summary, with the reason; the
test outcomes and every other report still come out; a failed baseline update makes an otherwise
green run exit 1. Before: a raw PermissionError traceback, no perf summary, no test summary and
no report."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PERF_TESTS = """
import pytest

@pytest.mark.perf
def test_a(perf):
    perf.record("queries", 3, unit="count")

@pytest.mark.perf
def test_b(perf):
    perf.record("latency", [0.001 * (1 + i % 5) for i in range(40)])
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PERF_ENV", raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_perf=PERF_TESTS)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def _assert_no_crash(result: pytest.RunResult) -> None:
    text = _output(result)
    assert "Traceback" not in text
    assert "INTERNALERROR" not in text
    assert "perf summary (env default)" in text
    result.assert_outcomes(passed=2)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[str]:
    """Make ``directory`` read-only for this process, whoever it runs as: permissions for a
    user, the immutable attribute for root (which permissions do not stop). Yields the reason
    the system gives for a refused write."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a directory read-only")
    done = subprocess.run([chattr, "+i", str(directory)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed: {done.stderr.decode().strip()}")
    try:
        yield "Operation not permitted"
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_read_only_baseline_directory(project: pytest.Pytester) -> None:
    (project.path / "perf").mkdir()
    baseline = project.path / "perf" / "perf-baseline.json"
    first = _run(project, "--perf", "--perf-update", "--perf-baseline=perf/perf-baseline.json")
    assert first.ret == 0, _output(first)
    before = baseline.read_bytes()
    project.makepyfile(test_perf=PERF_TESTS.replace("3, unit", "4, unit"))
    with read_only(baseline.parent) as reason:
        result = _run(
            project,
            "--perf",
            "--perf-update",
            "--perf-accept",
            "--perf-baseline=perf/perf-baseline.json",
            "--perf-report=report.json",
        )
    _assert_no_crash(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # green tests, but the update failed
    result.stdout.fnmatch_lines(
        [
            "*perf summary (env default)*",
            f"perf: baseline */perf/perf-baseline.json NOT updated: *{reason} (2 test(s) not "
            "written)",
            "*2 passed*",
        ]
    )
    assert "updated: 2 test(s) written" not in result.stdout.str()
    assert baseline.read_bytes() == before
    report = json.loads((project.path / "report.json").read_text())
    assert report["written"] == []
    assert set(report["tests"]) == {"test_perf.py::test_a", "test_perf.py::test_b"}


def test_a_directory_in_the_way_of_the_lock(project: pytest.Pytester) -> None:
    (project.path / ".perf-baseline.json.lock").mkdir()
    result = _run(project, "--perf", "--perf-update", "--perf-markdown=summary.md")
    _assert_no_crash(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["perf: baseline * NOT updated: *.perf-baseline.json.lock: Is a*"])
    assert (project.path / "summary.md").exists()
    assert not (project.path / "perf-baseline.json").exists()


def test_a_report_that_cannot_be_written_costs_no_other(project: pytest.Pytester) -> None:
    (project.path / "report.json").mkdir()  # a directory in the way
    result = _run(
        project,
        "--perf",
        "--perf-update",
        "--perf-report=report.json",
        "--perf-markdown=summary.md",
        "--perf-html=report.html",
    )
    _assert_no_crash(result)
    # a report is said in the summary and leaves the exit status alone (the README's rule)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "perf: report written to summary.md",
            "perf: report written to report.html",
            "perf: cannot write a report: */report.json: *Is a directory",
            "perf: baseline * updated: 2 test(s) written, 0 pruned",
        ]
    )
    assert (project.path / "summary.md").read_text().strip()
    assert (project.path / "report.html").read_text().strip()
    assert (project.path / "perf-baseline.json").exists()  # the baseline is still written


def test_failed_tests_keep_their_exit_status(project: pytest.Pytester) -> None:
    project.makepyfile(test_fail="def test_x():\n    assert False\n")
    (project.path / ".perf-baseline.json.lock").mkdir()
    result = _run(project, "--perf", "--perf-update")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    assert "NOT updated" in result.stdout.str()


def _limit_file_size() -> None:  # pragma: no cover - runs in the child
    # a write beyond 400 bytes (the baseline here is ~1.5 KB) fails with EFBIG ("File too
    # large") instead of killing the process: the disk-full path without a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))


def test_a_write_that_runs_out_of_space(project: pytest.Pytester) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PERF_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--perf", "--perf-update"],
        cwd=project.path,
        env=env,
        preexec_fn=_limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "Traceback" not in text
    assert "NOT updated: " in text
    assert "File too large (2 test(s) not written)" in text
    assert "2 passed" in text
    assert not (project.path / "perf-baseline.json").exists()
    assert list(project.path.glob(".perf-baseline.json.*")) == []  # the partial temp file too
