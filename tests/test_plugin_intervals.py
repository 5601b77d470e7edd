"""Interval verdicts as a user meets them: the undecided verdict in the summary and the reports,
its second look, and ``bridgeperf compare`` judging per-round statistics as the run did.

Samples here are fixed numbers, not timings, so every verdict is the same on a busy machine."""

from __future__ import annotations

import json

# pytester forgets modules imported during in-process runs; importing hypothesis here keeps it
# from being re-imported by every run.
import hypothesis  # noqa: F401
import pytest

from pytest_bridgeperf.cli import main

SPREAD = """
import os
import pytest

@pytest.mark.perf
def test_spread(perf):
    # 50 samples spread evenly over 1-7 ms: their median is known only to about ±15 %
    scale = float(os.environ.get("SCALE", "1"))
    perf.record("t", [scale * 0.001 * (1 + i % 7) for i in range(50)])
    perf.record("calls", 3, unit="count")
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_undecided_passes_with_a_second_look_and_is_reported(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_spread=SPREAD)
    _run(pytester, "--perf", "--perf-update").assert_outcomes(passed=1)
    result = _run(
        pytester,
        "--perf",
        "--perf-report=r.json",
        "--perf-markdown=r.md",
        "--perf-html=r.html",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "test_spread.py::test_spread",
            "  (first run t p50 4.00 ms → 4.00 ms (+0.0 %, tolerance 10 %, "
            "99 % CI of the shift -25 % … +33 %, p = 1.00 — the interval spans the "
            "tolerance: more samples or rounds would decide): undecided; measured again)",
            "  t p50 * 4.00 ms → 4.00 ms * undecided",
            "  calls * ok",
            "perf: 1 ok, 0 regressed, 0 improved, 0 new, 0 not comparable, 0 missing, 1 undecided",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert report["totals"]["undecided"] == 1
    (row,) = [
        r for r in report["tests"]["test_spread.py::test_spread"]["metrics"] if r["name"] == "t"
    ]
    assert row["verdict"] == "undecided"
    assert row["interval"]["method"] == "Hodges-Lehmann"
    assert row["interval"]["confidence"] == 0.99
    assert row["interval"]["low"] < -0.10 < 0.10 < row["interval"]["high"]
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "### Undecided (the confidence interval spans the tolerance)" in markdown
    assert "1 undecided" in markdown.splitlines()[0]
    html = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert '<span class="badge undecided">1 undecided</span>' in html


def test_decided_runs_keep_the_summary_line(pytester: pytest.Pytester) -> None:
    """The summary names undecided only when there is one."""
    pytester.makepyfile(test_spread=SPREAD)
    _run(pytester, "--perf", "--perf-update").assert_outcomes(passed=1)
    result = _run(pytester, "--perf", "--perf-tolerance=50%")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["perf: 2 ok, 0 regressed, 0 improved, 0 new, 0 not comparable, 0 missing"]
    )
    assert "undecided" not in result.stdout.str()


def test_update_takes_no_second_look(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_spread=SPREAD)
    _run(pytester, "--perf", "--perf-update").assert_outcomes(passed=1)
    result = _run(pytester, "--perf", "--perf-update")
    result.assert_outcomes(passed=1)
    assert "measured again" not in result.stdout.str()
    result.stdout.fnmatch_lines(["  t p50 * undecided"])


ROUNDS = """
import os
import pytest

@pytest.mark.perf
def test_rounds(perf):
    scale = float(os.environ.get("SCALE", "1"))
    # tight samples, but per-round statistics that wander from 1 to 8 ms: the rounds are the
    # independent units, and they cannot show a 50 % change
    samples = [scale * 0.004 * (1 + k / 1000) for k in range(40)]
    rounds = [scale * 0.001 * r for r in (1, 5, 2, 8, 3, 7, 4, 6)]
    perf.record("t", samples, rounds=rounds)
"""


def test_compare_judges_rounds_like_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_rounds=ROUNDS)
    _run(pytester, "--perf", "--perf-update").assert_outcomes(passed=1)
    monkeypatch.setenv("SCALE", "1.5")
    result = _run(pytester, "--perf", "--perf-report=r.json", "--perf-confirm=0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  t p50 * +50 %  undecided"])
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    (row,) = report["tests"]["test_rounds.py::test_rounds"]["metrics"]
    assert len(row["rounds"]) == 8
    code = main(
        [
            "compare",
            str(pytester.path / "perf-baseline.json"),
            str(pytester.path / "r.json"),
            f"--json={pytester.path / 'again.json'}",
        ]
    )
    capsys.readouterr()
    assert code == 0
    again = json.loads((pytester.path / "again.json").read_text(encoding="utf-8"))
    (judged,) = again["tests"]["test_rounds.py::test_rounds"]["metrics"]
    # judged on the 8 + 8 rounds, as the run did; on the 40 tight samples it would be regressed
    assert judged["verdict"] == "undecided"
    assert judged["interval"] == row["interval"]
