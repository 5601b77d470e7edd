"""The HTML report (``--perf-html``): one self-contained file, no scripts, no network.

Per test: its verdicts and budgets, the latency percentile curves of this run over the baseline's,
SQL statement counts with their differences, and memory peaks. Inline CSS and SVG only; a
Content-Security-Policy forbids the page from loading anything. Readable on a phone. No pytest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from .. import __version__
from ..measure import describe
from ..units import format_duration, format_value
from .document import (
    STATUS_ORDER,
    budget_text,
    change_text,
    histogram_of,
    metric_label,
    ordered_tests,
    statement_diff,
    statement_rows,
    status_of,
    value_text,
)
from .plots import (
    BUDGET_QUANTILES,
    Curve,
    memory_bars_svg,
    nines,
    percentile_curve,
    percentile_plot_svg,
)

__all__ = ["render_html"]

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--panel:#f6f8fa;
--regressed:#cf222e;--improved:#1a7f37;--ok:#0969da;--new:#8250df;--nc:#9a6700;--missing:#bc4c00}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg)}
header,main,footer{max-width:1100px;margin:0 auto;padding:12px 16px}
h1{font-size:1.5rem;margin:.3em 0}
h2{font-size:1.05rem;margin:0 0 .5em;display:flex;gap:.5em;align-items:baseline;flex-wrap:wrap}
h2 code{word-break:break-all;font-size:.95rem}
h3{font-size:.95rem;margin:1em 0 .4em;color:var(--muted)}
.meta{color:var(--muted);margin:.2em 0}
.totals{display:flex;flex-wrap:wrap;gap:.4em;padding:0;margin:.6em 0;list-style:none}
.badge{display:inline-block;border-radius:1em;padding:.05em .65em;font-size:.85rem;
font-weight:600;color:#fff;background:var(--muted);white-space:nowrap}
.badge.regressed,.badge.over-budget{background:var(--regressed)}
.badge.improved{background:var(--improved)}.badge.ok{background:var(--ok)}
.badge.new{background:var(--new)}.badge.not-comparable{background:var(--nc)}
.badge.missing{background:var(--missing)}.badge.undecided{background:var(--nc)}
.badge.zero{opacity:.45}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid var(--line);padding:.3em .5em;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
small.how{color:var(--muted);font-size:.8rem}
td.fp{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.8rem;word-break:break-all}
tr.regressed td,tr.missing td{background:#ffebe9}tr.improved td{background:#dafbe1}
.delta-up{color:var(--regressed);font-weight:600}.delta-down{color:var(--improved);font-weight:600}
section.test{border:1px solid var(--line);border-left:5px solid var(--ok);border-radius:6px;
padding:12px 14px;margin:14px 0}
section.regressed,section.over-budget{border-left-color:var(--regressed)}
section.improved{border-left-color:var(--improved)}section.new{border-left-color:var(--new)}
section.not-comparable,section.undecided{border-left-color:var(--nc)}
section.missing{border-left-color:var(--missing)}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px;
margin:10px 0}
figure{margin:0}figcaption{font-size:.85rem;color:var(--muted);margin:.2em 0}
svg.plot{width:100%;height:auto;display:block;background:#fff}
svg .frame{fill:none;stroke:var(--line)}svg .grid{stroke:#eaeef2;stroke-width:1}
svg .tick,svg .legend,svg .value,svg .budget-label{font-size:13px;fill:var(--muted)}
svg .axis{font-size:13px;fill:var(--fg)}
svg .curve{fill:none;stroke-width:2.2;stroke:var(--ok)}
svg .curve.baseline{stroke:#8c959f;stroke-dasharray:6 4}
svg .curve.regressed{stroke:var(--regressed)}svg .curve.improved{stroke:var(--improved)}
svg .curve.new{stroke:var(--new)}svg .curve.not-comparable{stroke:var(--nc)}
svg .budget{stroke:var(--missing);stroke-width:2;stroke-dasharray:3 3}
svg .budget-label{fill:var(--missing)}
svg .bar{fill:var(--ok)}svg .bar.baseline{fill:#afb8c1}svg .bar.regressed{fill:var(--regressed)}
svg .bar.improved{fill:var(--improved)}svg .bar.new{fill:var(--new)}
pre{background:var(--panel);padding:8px;overflow-x:auto;font-size:.8rem;border-radius:4px}
pre .add{color:var(--regressed)}pre .del{color:var(--improved)}
details summary{cursor:pointer;color:var(--muted)}
nav table td:first-child{word-break:break-all}
a{color:var(--ok)}
footer{color:var(--muted);font-size:.8rem}
@media (max-width:640px){
body{font-size:14px}header,main,footer{padding:8px 10px}
th.basis,td.basis,th.budget,td.budget{display:none}
th,td{padding:.25em .3em}table{font-size:.82rem}.badge{font-size:.75rem}
section.test{padding:8px 8px}
.plots{grid-template-columns:1fr}
svg .tick,svg .legend,svg .value,svg .budget-label,svg .axis{font-size:17px}
svg .axis.y{display:none}
}
""".strip()


def _cls(text: str) -> str:
    return text.replace(" ", "-")


def _badge(status: str, text: str | None = None, zero: bool = False) -> str:
    extra = " zero" if zero else ""
    return f'<span class="badge {_cls(status)}{extra}">{escape(text or status)}</span>'


#: what the two sides of a comparison are called: (the reference, this run)
Names = tuple[str, str]
_NAMES: Names = ("baseline", "this run")


def _metric_table(rows: Sequence[Mapping[str, Any]], names: Names = _NAMES) -> str:
    head = (
        f"<tr><th>metric</th><th>verdict</th><th>{escape(names[0])}</th>"
        f"<th>{escape(names[1])}</th><th>change</th>"
        '<th class="budget">budget</th><th class="basis">basis</th></tr>'
    )
    body = []
    for row in rows:
        unit = row.get("unit", "")
        verdict = str(row["verdict"])
        failed_budget = any(not b.get("passed", True) for b in row.get("budgets", []))
        body.append(
            f'<tr class="{_cls(verdict)}">'
            f"<td>{escape(metric_label(row))}</td>"
            f"<td>{_badge(verdict)}{' ' + _badge('over budget') if failed_budget else ''}</td>"
            f'<td class="num">{escape(value_text(row.get("baseline"), unit))}</td>'
            f'<td class="num">{escape(value_text(row.get("current"), unit))}{_how(row)}</td>'
            f'<td class="num">{escape(change_text(row))}</td>'
            f'<td class="budget">{escape(budget_text(row))}</td>'
            f'<td class="basis">{escape(str(row.get("basis", "")))}</td></tr>'
        )
    return f'<div class="scroll"><table class="metrics">{head}{"".join(body)}</table></div>'


def _how(row: Mapping[str, Any]) -> str:
    """How a timed function was measured, under its value: ``1,000 × 30, cpu``."""
    how = describe(row.get("details"))
    if not how or row.get("current") is None:
        return ""
    return f'<br><small class="how">{escape(how.strip("()"))}</small>'


def _latency_figure(row: Mapping[str, Any], names: Names = _NAMES) -> str:
    current = histogram_of(row, "hdr")
    baseline = histogram_of(row, "baseline_hdr")
    if current is None and baseline is None:
        return ""
    count = max(h.count for h in (current, baseline) if h is not None)
    x_max = float(nines(count))
    curves = []
    if baseline is not None:
        curves.append(
            Curve(names[0], percentile_curve(baseline, x_max), "baseline", baseline.count)
        )
    if current is not None:
        curves.append(
            Curve(
                names[1],
                percentile_curve(current, x_max),
                f"current {_cls(row['verdict'])}",
                current.count,
            )
        )
    budgets = [
        (str(b["budget"]), float(b["limit"]))
        for b in row.get("budgets", [])
        if b.get("budget") in BUDGET_QUANTILES or b.get("budget") == "max"
    ]
    label = metric_label(row)
    svg = percentile_plot_svg(
        curves, title=f"{row['name']}: latency by percentile", budgets=budgets
    )
    parts = []
    for name, hist in ((names[1], current), (names[0], baseline)):
        if hist is not None:
            parts.append(
                f"{name}: n = {hist.count}, p50 {format_duration(hist.percentile(50))}, "
                f"p99 {format_duration(hist.percentile(99))}, max {format_duration(hist.max)}"
            )
    caption = f"<b>{escape(label)}</b> — " + escape("; ".join(parts))
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _memory_figure(row: Mapping[str, Any], names: Names = _NAMES) -> str:
    bars: list[tuple[str, float, str]] = []
    if row.get("baseline") is not None:
        bars.append((names[0], float(row["baseline"]), "baseline"))
    if row.get("current") is not None:
        bars.append((names[1], float(row["current"]), _cls(str(row["verdict"]))))
    budget = next(
        (float(b["limit"]) for b in row.get("budgets", []) if b.get("budget") in ("memory", "rss")),
        None,
    )
    kind = "RSS peak" if row.get("role") == "rss" else "Python-heap peak"
    svg = memory_bars_svg(bars, title=f"{row['name']}: {kind}", budget=budget)
    if not svg:
        return ""
    caption = f"<b>{escape(str(row['name']))}</b> — {kind}"
    if row.get("change") is not None:
        caption += f" ({escape(change_text(row))})"
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _queries_block(row: Mapping[str, Any], names: Names = _NAMES) -> str:
    statements = statement_rows(row)
    base = value_text(row.get("baseline"), "count")
    cur = value_text(row.get("current"), "count")
    out = [f"<h3>SQL statements of {escape(str(row['name']))}: {escape(base)} → {escape(cur)}</h3>"]
    if statements:
        body = []
        for fp, old, new in statements:
            delta = new - old
            css = "delta-up" if delta > 0 else "delta-down" if delta < 0 else ""
            shown = f"{delta:+d}" if delta else "="
            body.append(
                f'<tr><td class="fp">{escape(fp)}</td><td class="num">{old}</td>'
                f'<td class="num">{new}</td><td class="num {css}">{shown}</td></tr>'
            )
        out.append(
            '<div class="scroll"><table class="statements"><tr><th>statement</th>'
            f"<th>{escape(names[0])}</th><th>{escape(names[1])}</th><th>diff</th></tr>"
            + "".join(body)
            + "</table></div>"
        )
    diff = statement_diff(row) if row.get("verdict") != "ok" else ""
    if diff:
        lines = []
        for line in diff.splitlines():
            css = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
            lines.append(f'<span class="{css}">{escape(line)}</span>' if css else escape(line))
        out.append(
            "<details><summary>statement diff</summary><pre>"
            + "\n".join(lines)
            + "</pre></details>"
        )
    return "".join(out)


def _explain(row: Mapping[str, Any]) -> str:
    details = row.get("details")
    text = details.get("explain") if isinstance(details, Mapping) else None
    if not text or (
        row.get("verdict") == "ok" and all(b.get("passed", True) for b in row.get("budgets", []))
    ):
        return ""
    return (
        f"<details><summary>details of {escape(str(row['name']))}</summary>"
        f"<pre>{escape(str(text))}</pre></details>"
    )


#: what each kind of profile file is opened with
_ARTIFACT_KINDS = {"pstats": "cProfile .prof (snakeviz, pstats)", "speedscope": "speedscope"}


def _link(path: str, links: Mapping[str, Any]) -> str:
    """A profile file as the page links it: relative to the page when both the rootdir (what
    the paths are relative to) and the page's own location are known."""
    rootdir, page = links.get("rootdir"), links.get("page")
    if rootdir and page is not None:
        target = Path(str(rootdir)) / path
        return Path(os.path.relpath(target, Path(page).parent)).as_posix()
    return path


def _via(function: Mapping[str, Any]) -> str:
    """The caller that pays for most of a function's time."""
    if not function.get("via"):
        return ""
    share = float(function.get("via_share", 0.0)) * 100
    return f' <small class="how">← {escape(str(function["via"]))} ({share:.0f} %)</small>'


def _profile_block(profile: Any, links: Mapping[str, Any]) -> str:
    """Where the time went: the test's top functions, the files, the diff and lines=."""
    if not isinstance(profile, Mapping):
        return ""
    total = float(profile.get("total") or 0.0)
    rows = []
    for function in profile.get("functions") or []:
        own = float(function.get("own", 0.0))
        share = own / total * 100 if total > 0 else 0.0
        rows.append(
            f'<tr><td class="num">{escape(format_duration(own))}</td>'
            f'<td class="num">{share:.0f} %</td>'
            f'<td class="num">{escape(format_duration(float(function.get("cumulative", 0.0))))}'
            f'</td><td class="num">{int(function.get("calls", 0)):,}</td>'
            f'<td class="fp">{escape(str(function.get("file")))}:{int(function.get("line", 0))}'
            f" <b>{escape(str(function.get('function')))}</b>{_via(function)}</td></tr>"
        )
    library = float(profile.get("library") or 0.0)
    share = library / total * 100 if total > 0 else 0.0
    rows.append(
        f'<tr><td class="num">{escape(format_duration(library))}</td>'
        f'<td class="num">{share:.0f} %</td><td></td><td></td>'
        "<td>outside your code: libraries, pytest, the event loop, a load generator</td></tr>"
    )
    parts = [
        f"<h3>Where the time went: one more run under "
        f"{escape(str(profile.get('profiler', 'cProfile')))}, "
        f"{escape(format_duration(total))}; your code by own time</h3>",
        '<div class="scroll"><table class="profile"><tr><th>own</th><th>share</th>'
        "<th>cumulative</th><th>calls</th><th>function</th></tr>"
        + "".join(rows)
        + "</table></div>",
    ]
    files = []
    for key, title in (("artifacts", "this run"), ("against_artifacts", "the other revision")):
        for kind, path in sorted(dict(profile.get(key) or {}).items()):
            label = _ARTIFACT_KINDS.get(str(kind), str(kind))
            files.append(
                f'<a href="{escape(_link(str(path), links))}">{escape(label)}</a> ({title})'
            )
    if files:
        parts.append(f'<p class="meta">profile files: {" · ".join(files)}</p>')
    for key, summary in (("diff", "functions whose time grew the most"), ("lines", "line by line")):
        text = str(profile.get(key) or "")
        if text:
            parts.append(
                f"<details open><summary>{summary}</summary><pre>{escape(text)}</pre></details>"
            )
    return "".join(parts)


def _test_section(
    index: int,
    nodeid: str,
    test: Mapping[str, Any],
    names: Names = _NAMES,
    links: Mapping[str, Any] | None = None,
) -> str:
    status = status_of(test)
    rows: Sequence[Mapping[str, Any]] = test.get("metrics", [])
    outcome = str(test.get("outcome", ""))
    head = (
        f'<section class="test {_cls(status)}" id="t{index}">'
        f"<h2>{_badge(status)} <code>{escape(nodeid)}</code>"
        f'<span class="meta">{escape(outcome)}</span></h2>'
    )
    parts = [head, _metric_table(rows, names)]
    figures = []
    for row in rows:
        if row.get("unit") == "s" and ("hdr" in row or "baseline_hdr" in row):
            figures.append(_latency_figure(row, names))
        elif row.get("role") in ("memory", "rss") and row.get("unit") == "bytes":
            figures.append(_memory_figure(row, names))
    figures = [f for f in figures if f]
    if figures:
        parts.append(f'<div class="plots">{"".join(figures)}</div>')
    for row in rows:
        if row.get("role") == "queries":
            parts.append(_queries_block(row, names))
    for row in rows:
        parts.append(_explain(row))
    parts.append(_profile_block(test.get("profile"), links or {}))
    parts.append("</section>")
    return "".join(parts)


def render_html(
    document: Mapping[str, Any],
    *,
    title: str = "Performance report",
    location: Path | None = None,
) -> str:
    """The HTML report of a report document; ``location``, where the page is written, makes
    its links to profile files relative to it."""
    links = {"rootdir": document.get("rootdir"), "page": location}
    tests = ordered_tests(document)
    totals: Mapping[str, int] = document.get("totals", {})
    env = str(document.get("environment", "default"))
    machine = document.get("machine") or {}
    machine_text = ", ".join(
        f"{k} {machine[k]}" for k in ("cpu", "cores", "platform", "python") if k in machine
    )
    badges = "".join(
        f"<li>{_badge(v, f'{totals.get(v, 0)} {v}', zero=not totals.get(v, 0))}</li>"
        for v in ("regressed", "undecided", "improved", "new", "not comparable", "missing", "ok")
        if v != "undecided" or totals.get(v, 0)  # a verdict most runs never see
    )
    nav_rows = []
    for index, (nodeid, test) in enumerate(tests):
        status = status_of(test)
        nav_rows.append(
            f'<tr><td><a href="#t{index}">{escape(nodeid)}</a></td>'
            f'<td>{_badge(status)}</td><td class="num">{len(test.get("metrics", []))}</td></tr>'
        )
    nav = (
        '<nav><div class="scroll"><table class="tests"><tr><th>test</th><th>status</th>'
        f"<th>metrics</th></tr>{''.join(nav_rows)}</table></div></nav>"
        if tests
        else "<p>No perf results in this report.</p>"
    )
    settings = document.get("settings", {})
    settings_text = ""
    if settings:
        settings_text = (
            f"tolerance {float(settings.get('tolerance', 0.1)) * 100:g} %, "
            f"α = {settings.get('alpha', 0.01)}, "
            f"floor {format_value(float(settings.get('min_delta', 0.001)), 's')}"
        )
    against = document.get("against") or {}
    names: Names = (str(against["label"]), "this checkout") if against.get("label") else _NAMES
    sections = "".join(
        _test_section(i, nodeid, test, names, links) for i, (nodeid, test) in enumerate(tests)
    )
    counts = {status: 0 for status in STATUS_ORDER}
    for _, test in tests:
        counts[status_of(test)] += 1
    failing = counts["regressed"] + counts["over budget"]
    headline = f"{failing} test(s) failing on performance" if failing else "no regressions"
    compared = (
        f"vs <code>{escape(str(against['label']))}</code> (measured in the same run)"
        if against.get("label")
        else f"environment <code>{escape(env)}</code>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)} — {escape(headline)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1>"
        f'<p class="meta">{escape(headline)} · {compared}'
        f" · {escape(str(document.get('created', '')))}</p>"
        f'<p class="meta">{escape(machine_text)}{" · " if machine_text and settings_text else ""}'
        f"{escape(settings_text)}</p>"
        f'<ul class="totals">{badges}</ul></header>'
        f"<main>{nav}{sections}</main>"
        f"<footer>pytest-bridgeperf {escape(__version__)} · percentile plots: x is the "
        "percentile on a log scale of 1/(1−q), as HdrHistogram plots; dashed grey is the "
        "baseline</footer>"
        "</body></html>\n"
    )
