"""The Markdown summary (``--perf-markdown``; also appended to ``$GITHUB_STEP_SUMMARY``).

Regressions (and broken budgets) first, each with its metric table and, for query counts, the
statement diff; then improvements, new metrics, and a count of what is ok. GitHub renders it in
the job summary and in pull-request comments. No pytest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..measure import describe
from ..units import format_duration
from .document import (
    budget_text,
    change_text,
    metric_label,
    ordered_tests,
    statement_diff,
    status_of,
    value_text,
)

__all__ = ["STEP_SUMMARY_ENV", "append_step_summary", "render_markdown"]

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

#: GitHub refuses step summaries over 1 MiB; stay well below it.
MAX_CHARS = 900_000
#: Rows of the (collapsed) "ok" table before it is cut short.
MAX_OK_ROWS = 300

_ICONS = {
    "regressed": "🔴",
    "over budget": "🔴",
    "missing": "🟠",
    "improved": "🟢",
    "new": "🆕",
    "not comparable": "🟡",
    "undecided": "🟡",
    "ok": "✅",
}


def _cell(text: object) -> str:
    """A table cell: pipes escaped, line breaks flattened."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def _code(text: str) -> str:
    """Inline code that survives backticks in the text."""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _current(row: Mapping[str, Any]) -> str:
    """This run's value, and for a timed function how it was measured: ``12.3 µs (1,000 × 30,
    cpu)``."""
    text = value_text(row.get("current"), row.get("unit", ""))
    how = describe(row.get("details"))
    return f"{text} {how}" if how and row.get("current") is not None else text


#: what the two sides of a comparison are called: (the reference, this run)
_NAMES = ("baseline", "this run")


def _metric_table(rows: list[Mapping[str, Any]], names: tuple[str, str] = _NAMES) -> list[str]:
    lines = [
        f"| metric | {names[0]} | {names[1]} | change | verdict | budget | basis |",
        "| --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for row in rows:
        unit = row.get("unit", "")
        verdict = row["verdict"]
        shown = f"**{verdict}**" if verdict in ("regressed", "missing") else verdict
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    metric_label(row),
                    value_text(row.get("baseline"), unit),
                    _current(row),
                    change_text(row),
                    shown,
                    budget_text(row),
                    row.get("basis", ""),
                )
            )
            + " |"
        )
    return lines


def _flat_table(
    entries: list[tuple[str, Mapping[str, Any]]],
    limit: int | None = None,
    names: tuple[str, str] = _NAMES,
) -> list[str]:
    lines = [
        f"| test | metric | {names[0]} | {names[1]} | change |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for count, (nodeid, row) in enumerate(entries):
        if limit is not None and count >= limit:
            lines.append(f"| … {len(entries) - limit} more | | | | |")
            break
        unit = row.get("unit", "")
        lines.append(
            "| "
            + " | ".join(
                (
                    _cell(_code(nodeid)),
                    _cell(metric_label(row)),
                    _cell(value_text(row.get("baseline"), unit)),
                    _cell(_current(row)),
                    _cell(change_text(row)),
                )
            )
            + " |"
        )
    return lines


def render_markdown(document: Mapping[str, Any], *, title: str = "Performance") -> str:
    """The summary of a report document as GitHub-flavoured Markdown."""
    tests = ordered_tests(document)
    env = document.get("environment", "default")
    totals: Mapping[str, int] = document.get("totals", {})
    failing = [(n, t) for n, t in tests if status_of(t) in ("regressed", "over budget")]
    by_verdict: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for nodeid, test in tests:
        for row in test.get("metrics", []):
            by_verdict.setdefault(row["verdict"], []).append((nodeid, row))

    def count(verdict: str) -> int:
        return int(totals.get(verdict, len(by_verdict.get(verdict, []))))

    icon = "🔴" if failing else "✅"
    headline = (
        f"{count('regressed')} regressed · {count('improved')} improved · {count('new')} new · "
        f"{count('ok')} ok"
    )
    extra = [
        f"{count(v)} {v}" for v in ("undecided", "not comparable", "missing") if count(v)
    ]  # shown only when there are any
    over_budget = sum(status_of(t) == "over budget" for _, t in tests)
    if over_budget:
        extra.insert(0, f"{over_budget} test(s) over budget")
    if extra:
        headline += " · " + " · ".join(extra)
    out = [f"## {icon} {title}: {headline}", ""]
    against = document.get("against") or {}
    names = (_cell(str(against["label"])), "this checkout") if against.get("label") else _NAMES
    compared = (
        f"Compared with {_code(str(against.get('label')))} measured in the same run"
        if against.get("label")
        else f"Environment {_code(str(env))}"
    )
    out.append(
        f"{compared}, {len(tests)} perf test(s), "
        f"tolerance {float(document.get('settings', {}).get('tolerance', 0.1)) * 100:g} %."
    )
    out.append("")

    if failing:
        out += ["### Regressions", ""]
        for nodeid, test in failing:
            status = status_of(test)
            out.append(f"#### {_ICONS[status]} {_code(nodeid)} — {status}")
            out.append("")
            out += _metric_table(test.get("metrics", []), names)
            out.append("")
            for row in test.get("metrics", []):
                if row.get("role") != "queries" or row["verdict"] == "ok":
                    continue
                diff = statement_diff(row)
                if not diff:
                    continue
                base = value_text(row.get("baseline"), "count")
                cur = value_text(row.get("current"), "count")
                out += [
                    "<details open><summary>SQL statements of "
                    f"<code>{_html(metric_label(row))}</code>: {base} → {cur}</summary>",
                    "",
                    "```diff",
                    diff.replace("```", "`‌``"),
                    "```",
                    "",
                    "</details>",
                    "",
                ]
            out += _profile_section(test.get("profile"))
    else:
        out += ["No regressions.", ""]

    for verdict, heading in (
        ("undecided", "Undecided (the confidence interval spans the tolerance)"),
        ("improved", "Improvements"),
        ("new", "New metrics (no baseline yet)"),
        ("not comparable", "Not comparable (baseline from another machine)"),
        ("missing", "Missing (in the baseline, not measured)"),
    ):
        entries = by_verdict.get(verdict, [])
        if not entries:
            continue
        out += [f"### {heading}", ""]
        if verdict == "undecided":
            out += [
                'Neither a regression nor "ok" could be shown: more samples (or rounds) would '
                "decide. These do not fail the run.",
                "",
            ]
        if verdict == "improved":
            out += [
                "The baseline is stale for these: refresh it with `pytest --perf --perf-update`.",
                "",
            ]
        out += _flat_table(entries, limit=MAX_OK_ROWS, names=names)
        out.append("")

    ok = by_verdict.get("ok", [])
    if ok:
        out += [
            f"<details><summary>{len(ok)} metric(s) ok</summary>",
            "",
            *_flat_table(ok, limit=MAX_OK_ROWS, names=names),
            "",
            "</details>",
            "",
        ]
    text = "\n".join(out).rstrip() + "\n"
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit("\n", 1)[0] + "\n\n… (cut short: see the full report)\n"
    return text


#: functions of a regressed test's profile listed in the summary
PROFILE_TOP = 3


def _profile_section(profile: Any) -> list[str]:
    """Where the time went: the top functions of the test's profile, and the profile diff."""
    if not isinstance(profile, Mapping) or not profile.get("functions"):
        return []
    total = float(profile.get("total") or 0.0)
    out = [
        f"Where the time went (one more run under {profile.get('profiler', 'cProfile')}, "
        f"{format_duration(total)}), your code by own time:",
        "",
    ]
    for number, function in enumerate(profile["functions"][:PROFILE_TOP], 1):
        where = f"{function.get('file')}:{function.get('line')} {function.get('function')}"
        via = f", called from {_code(str(function['via']))}" if function.get("via") else ""
        share = float(function.get("own", 0.0)) / total * 100 if total > 0 else 0.0
        out.append(
            f"{number}. {_code(where)} — own {format_duration(float(function.get('own', 0.0)))}"
            f" ({share:.0f} %), {int(function.get('calls', 0)):,} calls{via}"
        )
    out.append("")
    diff = str(profile.get("diff") or "")
    if diff:
        out += [
            "<details><summary>functions whose time grew the most</summary>",
            "",
            "```",
            diff.replace("```", "`‌``"),
            "```",
            "",
            "</details>",
            "",
        ]
    return out


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def append_step_summary(text: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Append ``text`` to the GitHub Actions job summary when ``$GITHUB_STEP_SUMMARY`` is set;
    returns the file written, or None."""
    target = environ.get(STEP_SUMMARY_ENV, "").strip()
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
        fh.write("\n")
    return path
