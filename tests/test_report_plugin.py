"""The report options, JUnit properties and the coloured / ``-v`` summary, as a user meets them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pytest_bridgeperf.report.document import load_report

PERF_TESTS = """
import os
import pytest

FACTOR = int(os.environ.get("PERF_FACTOR", "1"))


@pytest.mark.perf(p99="1s")
def test_latency(perf):
    perf.record("handler", [0.002 + i * 1e-5 for i in range(200)])


def test_queries(perf):
    fps = {"SELECT * FROM t WHERE id = ?": 3 * FACTOR, "SELECT 1": 1}
    perf.record("queries", sum(fps.values()), unit="count", role="queries", noisy=False,
                details={"fingerprints": fps})
"""
PERF_TESTS = PERF_TESTS.replace("def test_queries", "@pytest.mark.perf\ndef test_queries")

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with a baseline; ``PERF_FACTOR=2`` makes the query count regress."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("PERF_FACTOR", raising=False)
    pytester.makepyfile(test_perf=PERF_TESTS)
    pytester.runpytest("--perf-update").assert_outcomes(passed=2)
    return pytester


def test_help_lists_the_report_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*--perf-markdown=PATH*",
            "*--perf-html=PATH*",
            "*--perf-openmetrics=PATH*",
            "*perf_markdown (string):*",
            "*perf_html (string):*",
            "*perf_openmetrics (string):*",
        ]
    )


def test_cli_options_write_every_report(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERF_FACTOR", "2")
    result = project.runpytest(
        "--perf",
        "--perf-markdown=out/perf.md",
        "--perf-html=out/perf.html",
        "--perf-openmetrics=out/perf.prom",
        "--perf-report=out/perf.json",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "perf: report written to out/perf.json",
            "perf: report written to out/perf.md",
            "perf: report written to out/perf.html",
            "perf: report written to out/perf.prom",
        ]
    )
    out = project.path / "out"
    markdown = (out / "perf.md").read_text()
    assert markdown.startswith("## 🔴 Performance: 1 regressed")
    assert "#### 🔴 `test_perf.py::test_queries` — regressed" in markdown
    assert "+   6× SELECT * FROM t WHERE id = ?" in markdown
    html = (out / "perf.html").read_text()
    assert html.count('<svg class="plot percentiles"') == 1
    assert "test_perf.py::test_queries" in html
    families = {f.name: f for f in text_string_to_metric_families((out / "perf.prom").read_text())}
    queries = {s.labels["query_type"]: s.value for s in families["bridge_db_queries"].samples}
    assert queries == {"SELECT": 7}
    report = load_report(out / "perf.json")
    assert report["totals"]["regressed"] == 1


def test_ini_options_write_the_reports(project: pytest.Pytester) -> None:
    project.makeini(
        """
        [pytest]
        perf_markdown = reports/summary.md
        perf_html = reports/perf.html
        perf_openmetrics = reports/perf.prom
        """
    )
    project.runpytest("--perf").assert_outcomes(passed=2)
    reports = project.path / "reports"
    assert (reports / "summary.md").read_text().startswith("## ✅ Performance: 0 regressed")
    assert (reports / "perf.html").read_text().startswith("<!DOCTYPE html>")
    assert (reports / "perf.prom").read_text().endswith("# EOF\n")


def test_no_report_without_the_options(project: pytest.Pytester) -> None:
    result = project.runpytest("--perf")
    result.assert_outcomes(passed=2)
    assert "report written" not in result.stdout.str()
    assert sorted(p.name for p in project.path.iterdir() if p.is_file()) == [
        "perf-baseline.json",
        "test_perf.py",
    ]


def test_markdown_is_appended_to_the_github_step_summary(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = project.path / "step-summary.md"
    summary.write_text("## Build\n\nok\n\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.runpytest("--perf", "--perf-markdown=perf.md").assert_outcomes(passed=2)
    text = summary.read_text()
    assert text.startswith("## Build\n\nok\n\n## ✅ Performance: 0 regressed")
    assert text.count("## ✅ Performance") == 1
    assert (project.path / "perf.md").read_text() in text


def test_step_summary_is_automatic_under_github_actions(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No option needed: GitHub Actions sets GITHUB_STEP_SUMMARY, the summary lands there."""
    summary = project.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.runpytest("--perf").assert_outcomes(passed=2)
    assert summary.read_text().startswith("## ✅ Performance: 0 regressed")
    assert not (project.path / "perf.md").exists()


def test_step_summary_can_be_turned_off(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = project.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    project.makeini("[pytest]\nperf_step_summary = false\n")
    project.runpytest("--perf").assert_outcomes(passed=2)
    assert not summary.exists()


def test_an_unwritable_report_is_reported_not_raised(project: pytest.Pytester) -> None:
    (project.path / "blocker").write_text("a file, not a directory")
    result = project.runpytest("--perf", "--perf-html=blocker/perf.html")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["perf: cannot write a report: *blocker*"])


def test_junit_xml_carries_the_metrics_as_properties(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERF_FACTOR", "2")
    project.runpytest("--perf", "--junitxml=junit.xml").assert_outcomes(passed=1, failed=1)
    tree = ET.parse(project.path / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    props = {
        name: {p.get("name"): p.get("value") for p in case.iter("property")}
        for name, case in cases.items()
    }
    queries = props["test_queries"]
    assert queries["perf:queries"] == "7.0"
    assert queries["perf:queries baseline"] == "4.0"
    assert queries["perf:queries change"] == "0.75"
    assert queries["perf:queries verdict"] == "regressed"
    assert queries["perf:verdict"] == "regressed"
    latency = props["test_latency"]
    assert latency["perf:handler p50 unit"] == "s"
    assert 0.002 < float(latency["perf:handler p50"]) < 0.0041
    assert latency["perf:handler p50 verdict"] == "ok"
    assert latency["perf:verdict"] == "ok"


def test_the_summary_is_coloured_on_a_terminal(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERF_FACTOR", "2")
    coloured = project.runpytest("--perf", "--color=yes").stdout.str()
    summary = coloured[coloured.index("perf summary") : coloured.index("short test summary")]
    assert "\x1b[31m\x1b[1mregressed\x1b[0m" in summary
    assert "\x1b[32mok\x1b[0m" in summary
    assert "\x1b[31m\x1b[1mtest_perf.py::test_queries\x1b[0m" in summary
    plain = project.runpytest("--perf", "--color=no").stdout.str()
    assert not ANSI.search(plain)
    assert ANSI.sub("", summary).rsplit("\n", 2)[0] in plain  # same text, without colour


def test_verbose_mode_explains_each_metric(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERF_FACTOR", "2")
    compact = project.runpytest("--perf").stdout.str()
    assert "basis:" not in compact
    verbose = project.runpytest("--perf", "-v")
    verbose.stdout.fnmatch_lines(
        [
            "test_perf.py::test_latency",
            "  handler p50 * ok  budget ✓",
            "      basis: tolerance 10 %, *99 % CI of the shift * … *, p = *",
            "      this run: n = 200, p50 *, p90 *, p99 *, max *",
            "      baseline: p50 *",
            "      budget p99 ≤ 1.00 s: * ✓",
            "test_perf.py::test_queries",
            "  queries * 4 → 7 * regressed",
            "      basis: tolerance 10 %, exact",
        ]
    )


def test_missing_tests_appear_in_the_reports_with_their_baseline(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_perf=PERF_TESTS.split("@pytest.mark.perf\ndef test_queries")[0])
    result = project.runpytest("--perf", "--perf-report=r.json", "--perf-markdown=r.md")
    result.assert_outcomes(passed=1)
    report = json.loads((project.path / "r.json").read_text())
    (row,) = report["tests"]["test_perf.py::test_queries"]["metrics"]
    assert (row["verdict"], row["baseline"], row["unit"]) == ("missing", 4.0, "count")
    assert "### Missing (in the baseline, not measured)" in (project.path / "r.md").read_text()


def test_reports_under_xdist_come_from_the_controller(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    monkeypatch.setenv("PERF_FACTOR", "2")
    result = project.runpytest_subprocess(
        "--perf", "-n", "2", "-p", "no:cacheprovider", "--perf-markdown=x.md", "--perf-html=x.html"
    )
    result.assert_outcomes(passed=1, failed=1)
    markdown = (project.path / "x.md").read_text()
    assert markdown.startswith("## 🔴 Performance: 1 regressed · 0 improved · 0 new · 1 ok")
    assert Path(project.path / "x.html").read_text().count("<section") == 2
