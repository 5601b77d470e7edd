"""Markdown, HTML and OpenMetrics writers: parse what they wrote and check its structure."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import report_samples as samples
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pytest_bridgeperf.baseline import Baseline
from pytest_bridgeperf.report import write_outputs
from pytest_bridgeperf.report.document import (
    ReportError,
    load_report,
    ordered_tests,
    statement_diff,
    status_of,
    validate_report,
)
from pytest_bridgeperf.report.html import render_html
from pytest_bridgeperf.report.markdown import append_step_summary, render_markdown
from pytest_bridgeperf.report.offline import OfflineOptions, failed, metric_from_row, recompare
from pytest_bridgeperf.report.openmetrics import BUCKETS, render_openmetrics
from pytest_bridgeperf.report.plots import nines, percentile_curve
from pytest_bridgeperf.report.selection import SelectionError, keyword_matcher
from pytest_bridgeperf.stats import LatencyHistogram


@pytest.fixture
def document(tmp_path: Path) -> dict[str, Any]:
    return samples.build(tmp_path)


# ---------------------------------------------------------------------------------------------
# the document


def test_tests_are_ordered_most_urgent_first(document: dict[str, Any]) -> None:
    order = [nodeid for nodeid, _ in ordered_tests(document)]
    statuses = [status_of(document["tests"][n]) for n in order]
    assert statuses[:3] == ["regressed"] * 3
    assert order.index(samples.IMPROVED) < order.index(samples.NEW) < order.index(samples.OK)
    assert statuses[-2:] == ["ok", "ok"]


def test_a_broken_budget_makes_a_test_over_budget_even_without_a_regression() -> None:
    test = {
        "metrics": [
            {
                "name": "x",
                "verdict": "ok",
                "budgets": [{"budget": "p95", "limit": 1, "measured": 2, "passed": False}],
            }
        ]
    }
    assert status_of(test) == "over budget"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON (line 1, column 2"),
        ("[]", "not a pytest-bridgeperf report"),
        ('{"tool": "pytest-bridgeperf", "schema": 9, "tests": {}}', "newer pytest-bridgeperf"),
        ('{"tool": "pytest-bridgeperf", "schema": 1, "tests": []}', "tests: expected an object"),
        (
            '{"tool": "pytest-bridgeperf", "schema": 1, "tests": {"t": {"metrics": '
            '[{"name": "m", "verdict": "great"}]}}}',
            "verdict: expected one of ok, regressed",
        ),
        (
            '{"tool": "pytest-bridgeperf", "schema": 1, "tests": {"t": {"metrics": '
            '[{"name": "m", "verdict": "ok", "current": "12"}]}}}',
            "current: expected a number",
        ),
    ],
)
def test_bad_reports_are_refused_with_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(ReportError) as info:
        load_report(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert problem in message
    assert "\n" not in message


def test_a_missing_report_is_named(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such file"):
        load_report(tmp_path / "nope.json")


def test_statement_diff_shows_changed_counts(document: dict[str, Any]) -> None:
    row = samples.rows_by_name(document, samples.QUERIES)["queries"]
    diff = statement_diff(row)
    assert "-   3× SELECT * FROM settings WHERE connector_id = ?" in diff
    assert "+   6× SELECT * FROM settings WHERE connector_id = ?" in diff
    assert "+   1× UPDATE connectors SET seen = ? WHERE id = ?" in diff
    assert statement_diff({**row, "details": row["baseline_details"]}) == ""


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_tables(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_puts_regressions_first_then_improvements_new_and_ok(
    document: dict[str, Any],
) -> None:
    text = render_markdown(document)
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings[0].startswith("## 🔴 Performance: 4 regressed · 1 improved · 1 new · 4 ok")
    h3 = [h for h in headings if h.startswith("### ")]
    assert h3 == ["### Regressions", "### Improvements", "### New metrics (no baseline yet)"]
    regressed = [h for h in headings if h.startswith("#### ")]
    assert len(regressed) == 3
    assert all(h.startswith("#### 🔴") for h in regressed)
    assert any(samples.QUERIES in h for h in regressed)
    assert any(samples.API in h and "regressed" in h for h in regressed)
    assert "<summary>4 metric(s) ok</summary>" in text


def test_markdown_tables_are_well_formed_and_escape_pipes(document: dict[str, Any]) -> None:
    text = render_markdown(document)
    tables = _md_tables(text)
    assert len(tables) >= 6
    for table in tables:
        header, rule, *rows = table
        assert all(set(cell) <= set("-: ") for cell in rule)
        assert all(len(row) == len(header) for row in [rule, *rows]), table
    api = next(t for t in tables if any("GET /api/v1/dashboards p50" in r[0] for r in t))
    latency = next(r for r in api if r[0] == "GET /api/v1/dashboards p50")
    assert latency[4] == "**regressed**"
    assert "p99 ≤ 20.0 ms ✗" in latency[5]
    assert latency[3].startswith("+")
    assert "weird \\| name" in text  # the pipe in the metric name does not split the cell


def test_markdown_has_the_statement_diff_of_regressed_query_counts(
    document: dict[str, Any],
) -> None:
    text = render_markdown(document)
    block = re.search(r"```diff\n(.*?)\n```", text, re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    assert "-   3× SELECT * FROM settings WHERE connector_id = ?" in lines
    assert "+   6× SELECT * FROM settings WHERE connector_id = ?" in lines
    assert "SQL statements of <code>queries</code>: 4 → 8" in text


def test_markdown_without_regressions(tmp_path: Path) -> None:
    text = render_markdown(samples.build(tmp_path, regress=False))
    assert text.splitlines()[0].startswith("## ✅ Performance: 0 regressed")
    assert "No regressions." in text
    assert "### Regressions" not in text


def test_markdown_falls_back_to_its_own_statement_diff(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pytest_bridgeperf.queries", None)  # not installed
    row = samples.rows_by_name(document, samples.QUERIES)["queries"]
    diff = statement_diff(row)
    assert "-   3× SELECT * FROM settings WHERE connector_id = ?" in diff
    assert "+   1× UPDATE connectors SET seen = ? WHERE id = ?" in diff


def test_step_summary_is_appended_when_github_sets_it(tmp_path: Path) -> None:
    target = tmp_path / "step_summary.md"
    target.write_text("# earlier step\n")
    assert append_step_summary("## perf\n", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert append_step_summary("## perf again", {"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert target.read_text() == "# earlier step\n## perf\n\n## perf again\n\n"
    assert append_step_summary("## perf\n", {}) is None


def test_write_outputs_writes_every_requested_file(
    document: dict[str, Any], tmp_path: Path
) -> None:
    summary = tmp_path / "gh.md"
    written = write_outputs(
        document,
        markdown=tmp_path / "out" / "perf.md",
        html=tmp_path / "out" / "perf.html",
        openmetrics=tmp_path / "out" / "perf.prom",
        environ={"GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert written == [
        tmp_path / "out" / "perf.md",
        summary,
        tmp_path / "out" / "perf.html",
        tmp_path / "out" / "perf.prom",
    ]
    assert summary.read_text().startswith("## 🔴 Performance")
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


# ---------------------------------------------------------------------------------------------
# HTML

_VOID = {"meta", "link", "br", "img", "input", "hr", "col", "source", "wbr"}
_SVG_LEAVES = {"line", "rect", "path", "circle"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[tuple[dict[str, str], list[str]]]:
        return [
            (attrs, parents)
            for t, attrs, parents in self.elements
            if t == tag and (cls is None or cls in attrs.get("class", "").split())
        ]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def test_html_is_well_formed_self_contained_and_responsive(document: dict[str, Any]) -> None:
    text = render_html(document)
    page = _parse(text)
    assert page.errors == []
    assert page.stack == []
    assert not page.find("script")
    assert not page.find("link")
    assert not page.find("img")
    assert all(a["href"].startswith("#") for a, _ in page.find("a"))
    metas = {
        a.get("name") or a.get("http-equiv"): a.get("content", "") for a, _ in page.find("meta")
    }
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    assert "default-src 'none'" in metas["Content-Security-Policy"]
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    assert "@media (max-width:640px)" in text


def test_html_has_a_section_per_test_in_urgency_order_with_its_verdicts(
    document: dict[str, Any],
) -> None:
    page = _parse(render_html(document))
    sections = page.find("section", "test")
    assert len(sections) == len(document["tests"])
    classes = [a["class"].split()[1] for a, _ in sections]
    assert classes[:3] == ["regressed"] * 3
    assert classes[-1] == "ok"
    badges = [a["class"] for a, parents in page.find("span", "badge") if "section" in parents]
    assert sum("regressed" in b.split() for b in badges) >= 4 + 3
    assert any("over-budget" in b.split() for b in badges)


def _curve_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", d)]


def test_html_plots_the_percentile_curves_of_run_and_baseline(document: dict[str, Any]) -> None:
    text = render_html(document)
    page = _parse(text)
    plots = page.find("svg", "percentiles")
    latency_rows = [
        row
        for test in document["tests"].values()
        for row in test["metrics"]
        if row["unit"] == "s" and "hdr" in row
    ]
    assert len(plots) == len(latency_rows) == 3
    svgs = re.findall(r'<svg class="plot percentiles".*?</svg>', text, re.S)
    for svg in svgs:
        paths = re.findall(r'<path class="curve ([^"]+)" d="([^"]+)"', svg)
        assert paths
        for _, d in paths:
            points = _curve_points(d)
            assert len(points) > 50
            xs = [x for x, _ in points]
            ys = [y for _, y in points]
            assert xs == sorted(xs)
            assert ys == sorted(ys, reverse=True)  # latency never drops as the percentile rises
    api_svg = next(s for s in svgs if "GET /api/v1/dashboards:" in s)
    kinds = [k for k, _ in re.findall(r'<path class="curve ([^"]+)" d="([^"]+)"', api_svg)]
    assert kinds == ["baseline", "current regressed"]
    assert "p99 ≤ 20.0 ms" in api_svg  # the budget is marked on the plot
    for label in ("0%", "90%", "99%", "99.9%"):
        assert f">{label}</text>" in api_svg
    new_svg = next(s for s in svgs if "GET /api/v1/new:" in s)
    kinds = [k for k, _ in re.findall(r'<path class="curve ([^"]+)" d="([^"]+)"', new_svg)]
    assert kinds == ["current new"]


def test_html_shows_query_counts_with_their_differences(document: dict[str, Any]) -> None:
    text = render_html(document)
    table = re.search(r'<table class="statements">(.*?)</table>', text, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td class=\"fp\">(.*?)</td>(.*?)</tr>", table.group(1))
    cells = {fp: re.findall(r">([^<]*)</td>", rest) for fp, rest in rows}
    assert cells["SELECT * FROM settings WHERE connector_id = ?"] == ["3", "6", "+3"]
    assert cells["UPDATE connectors SET seen = ? WHERE id = ?"] == ["0", "1", "+1"]
    assert cells["SELECT connectors.id FROM connectors"] == ["1", "1", "="]
    assert next(iter(cells)) == "SELECT * FROM settings WHERE connector_id = ?"  # biggest change


def test_html_draws_memory_peaks_against_the_baseline_and_budget(
    document: dict[str, Any],
) -> None:
    text = render_html(document)
    bars = re.findall(r'<svg class="plot bars".*?</svg>', text, re.S)
    assert len(bars) == 2  # memory and rss
    memory = next(b for b in bars if "Python-heap peak" in b)
    widths = {
        c: float(w) for c, w in re.findall(r'class="bar ([^"]+)"[^>]*width="([\d.]+)"', memory)
    }
    assert widths["regressed"] == pytest.approx(3 * widths["baseline"], rel=0.01)
    assert "budget 61.0 MiB" in memory


def test_html_escapes_what_it_shows(tmp_path: Path) -> None:
    document = samples.build(tmp_path)
    document["tests"]['t.py::test[<script>alert("x")</script>]'] = document["tests"].pop(samples.OK)
    text = render_html(document)
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert _parse(text).errors == []


def test_html_of_an_empty_report(tmp_path: Path) -> None:
    document = {**samples.build(tmp_path), "tests": {}, "totals": {}}
    page = _parse(render_html(document))
    assert page.errors == []
    assert "No perf results in this report." in "".join(page.text)


def test_percentile_curve_follows_the_histogram() -> None:
    hist = LatencyHistogram.from_samples(i / 1000 for i in range(1, 1001))
    points = percentile_curve(hist, 3.0, steps=300)
    by_x = dict(points)
    assert by_x[0.0] == pytest.approx(hist.percentile(0.0001), rel=1e-3)
    assert by_x[1.0] == pytest.approx(hist.percentile(90), rel=1e-3)
    assert by_x[2.0] == pytest.approx(hist.percentile(99), rel=1e-3)
    assert by_x[2.99] == pytest.approx(hist.percentile(99.9), rel=2e-3)
    assert by_x[3.0] == pytest.approx(hist.max, rel=1e-3)  # the curve ends at the maximum
    assert nines(1000) == 3
    assert nines(10) == 2
    assert nines(10**9) == 5


# ---------------------------------------------------------------------------------------------
# OpenMetrics


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_openmetrics_round_trips_through_prometheus_client(document: dict[str, Any]) -> None:
    text = render_openmetrics(document)
    assert text.endswith("# EOF\n")
    families = _families(text)
    assert families["bridge_request_duration_seconds"].type == "histogram"
    assert families["bridge_request_duration_seconds"].unit == "seconds"
    assert families["bridge_requests"].type == "counter"
    assert families["bridge_db_queries"].type == "counter"
    assert families["bridge_memory_usage_bytes"].type == "gauge"
    assert families["bridgeperf_verdict"].type == "gauge"


def test_openmetrics_duration_buckets_come_from_the_histogram(document: dict[str, Any]) -> None:
    families = _families(render_openmetrics(document))
    samples_ = families["bridge_request_duration_seconds"].samples
    row = samples.rows_by_name(document, samples.API)["GET /api/v1/dashboards"]
    hist = LatencyHistogram.decode(row["hdr"])
    mine = [s for s in samples_ if s.labels.get("metric") == "GET /api/v1/dashboards"]
    buckets = [(float(s.labels["le"]), s.value) for s in mine if s.name.endswith("_bucket")]
    assert [b for b, _ in buckets] == [*BUCKETS, math.inf]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == hist.count
    at_10ms = dict(buckets)[0.01]
    expected = sum(c for v, c in hist.items() if v <= 0.01)
    assert at_10ms == expected
    assert 0 < at_10ms < hist.count
    count = next(s.value for s in mine if s.name.endswith("_count"))
    total = next(s.value for s in mine if s.name.endswith("_sum"))
    assert count == hist.count
    assert total == pytest.approx(hist.mean * hist.count)
    assert {s.labels["test"] for s in mine} == {samples.API}


def test_openmetrics_counts_queries_by_type_and_memory_by_kind(document: dict[str, Any]) -> None:
    families = _families(render_openmetrics(document))
    queries = {
        s.labels["query_type"]: s.value
        for s in families["bridge_db_queries"].samples
        if s.labels["test"] == samples.QUERIES
    }
    assert queries == {"SELECT": 7, "UPDATE": 1}
    memory = {
        s.labels["kind"]: s.value
        for s in families["bridge_memory_usage_bytes"].samples
        if s.labels["test"] == samples.MEMORY
    }
    assert memory == {"python": 30_000_000, "rss": 50_000_000}
    requests = {s.labels["test"] for s in families["bridge_requests"].samples}
    assert requests == {samples.API}  # only load results (with a request count) count requests


def test_openmetrics_labels_survive_quotes_backslashes_and_verdicts(
    document: dict[str, Any],
) -> None:
    families = _families(render_openmetrics(document))
    verdicts = {
        (s.labels["test"], s.labels["metric"]): s.labels["verdict"]
        for s in families["bridgeperf_verdict"].samples
    }
    assert verdicts[(samples.ODD, "weird | name")] == "ok"
    assert verdicts[(samples.API, "GET /api/v1/dashboards")] == "regressed"
    assert verdicts[(samples.NEW, "GET /api/v1/new")] == "new"
    totals = {s.labels["verdict"]: s.value for s in families["bridgeperf_metrics"].samples}
    assert totals == document["totals"]
    changes = {
        s.labels["metric"]: s.value
        for s in families["bridgeperf_metric_change_ratio"].samples
        if s.labels["test"] == samples.QUERIES
    }
    assert changes == {"queries": pytest.approx(1.0)}


def test_openmetrics_counts_load_requests(document: dict[str, Any]) -> None:
    row = samples.rows_by_name(document, samples.API)["GET /api/v1/dashboards"]
    row["details"] = {"count": 5012, "errors": 12}  # what perf_load records with its latency
    families = _families(render_openmetrics(document))
    (total,) = [s for s in families["bridge_requests"].samples if s.labels["test"] == samples.API]
    (errors,) = [
        s for s in families["bridge_request_errors"].samples if s.labels["test"] == samples.API
    ]
    assert (total.name, total.value, errors.value) == ("bridge_requests_total", 5012, 12)


# ---------------------------------------------------------------------------------------------
# offline verdicts


def test_offline_verdicts_match_the_run(tmp_path: Path, document: dict[str, Any]) -> None:
    baseline = Baseline.load(tmp_path / "baseline.json")
    again = recompare(validate_report(document), baseline, OfflineOptions())
    for nodeid, test in document["tests"].items():
        before = {r["name"]: (r["verdict"], r["current"], r["baseline"]) for r in test["metrics"]}
        after = {
            r["name"]: (r["verdict"], r["current"], r["baseline"])
            for r in again["tests"][nodeid]["metrics"]
        }
        assert after == before, nodeid
    assert again["totals"] == document["totals"]
    assert failed(again)


def test_offline_tolerance_override_and_strict(tmp_path: Path, document: dict[str, Any]) -> None:
    baseline = Baseline.load(tmp_path / "baseline.json")
    lenient = recompare(document, baseline, OfflineOptions(tolerance=5.0))
    assert lenient["totals"]["regressed"] == 0
    assert not failed(lenient)
    assert failed(lenient, strict=True)  # still new/improved metrics


def test_offline_reports_baseline_metrics_the_run_did_not_record(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    baseline = Baseline.load(tmp_path / "baseline.json")
    document["tests"][samples.MEMORY]["metrics"] = [
        r for r in document["tests"][samples.MEMORY]["metrics"] if r["name"] != "rss"
    ]
    del document["tests"][samples.OK]
    again = recompare(document, baseline, OfflineOptions(select=keyword_matcher("not odd")))
    rss = samples.rows_by_name(again, samples.MEMORY)["rss"]
    assert (rss["verdict"], rss["baseline"], rss["current"]) == ("missing", 50_000_000, None)
    assert again["not_in_report"] == [samples.OK]
    assert samples.ODD not in again["tests"]


def test_rows_rebuild_their_metric() -> None:
    assert metric_from_row({"name": "x", "verdict": "missing"}) is None
    metric = metric_from_row(
        {"name": "x", "unit": "1/s", "better": "higher", "current": 2.0, "stat": "mean",
         "samples": [1.0, 2.0, 3.0], "verdict": "ok"}
    )  # fmt: skip
    assert metric is not None
    assert (metric.stat, metric.value, metric.samples) == ("mean", 2.0, [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# -k and the pytest-free core


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ("api", ["t/test_api.py::test_get", "t/test_api.py::test_post"]),
        ("API and not post", ["t/test_api.py::test_get"]),
        ("db or post", ["t/test_api.py::test_post", "t/test_db.py::test_q"]),
        ("not (api or db)", []),
        ("", ["t/test_api.py::test_get", "t/test_api.py::test_post", "t/test_db.py::test_q"]),
    ],
)
def test_keyword_expressions(expression: str, selected: list[str]) -> None:
    nodeids = ["t/test_api.py::test_get", "t/test_api.py::test_post", "t/test_db.py::test_q"]
    match = keyword_matcher(expression)
    assert [n for n in nodeids if match(n)] == selected


@pytest.mark.parametrize("expression", ["api and", "(api", "api)", "or db", "not"])
def test_bad_keyword_expressions(expression: str) -> None:
    with pytest.raises(SelectionError, match=re.escape(repr(expression))):
        keyword_matcher(expression)


def test_reports_and_cli_import_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import pytest_bridgeperf.report.markdown, pytest_bridgeperf.report.html\n"
        "import pytest_bridgeperf.report.openmetrics, pytest_bridgeperf.report.offline\n"
        "import pytest_bridgeperf.report.terminal, pytest_bridgeperf.report.junit\n"
        "import pytest_bridgeperf.cli\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
