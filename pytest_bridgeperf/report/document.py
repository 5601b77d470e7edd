"""The report document every output is built from: the ``--perf-report`` JSON.

Loading (with errors that name the file and the problem), the order reports show tests in, labels
and cells that all writers share, and atomic writing. No pytest.

A document looks like::

    {"tool": "pytest-bridgeperf", "schema": 1, "environment": "default", "machine": {...},
     "settings": {...}, "totals": {"ok": 3, ...},
     "tests": {"<nodeid>": {"outcome": "passed", "tolerance": 0.1,
                            "metrics": [<row>, ...]}}}

where a row carries ``name unit stat verdict current baseline change p_value basis budgets`` and,
when measured, ``summary hdr samples rounds details role better n`` (``baseline_*`` for the stored
side) and, when a confidence interval decided a timing verdict, ``interval`` (``low high`` relative
changes, ``null`` when unbounded on that side, ``confidence method``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..compare import VERDICTS
from ..stats import LatencyHistogram
from ..units import format_change, format_value

__all__ = [
    "STATUS_ORDER",
    "ReportError",
    "budget_text",
    "histogram_of",
    "load_report",
    "metric_label",
    "ordered_tests",
    "statement_diff",
    "status_of",
    "validate_report",
    "value_text",
    "write_text",
]

TOOL = "pytest-bridgeperf"
SCHEMA = 1

#: How a test is classified, most urgent first: reports list tests in this order.
STATUS_ORDER = (
    "regressed",
    "over budget",
    "missing",
    "undecided",
    "improved",
    "new",
    "not comparable",
    "ok",
)


class ReportError(Exception):
    """A report file cannot be used; the message is one line naming the file and the problem."""


# ---------------------------------------------------------------------------------------------
# loading


def load_report(path: Path) -> dict[str, Any]:
    """Read and validate a ``--perf-report`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not a report file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return validate_report(document, str(path))


def validate_report(document: Any, source: str = "report") -> dict[str, Any]:
    """Check the parts of a report document the writers rely on; returns it unchanged."""
    if not isinstance(document, dict) or document.get("tool") != TOOL:
        raise ReportError(
            f'{source}: not a pytest-bridgeperf report (no "tool": "{TOOL}" at the top level); '
            "write one with pytest --perf --perf-report=PATH"
        )
    if "environments" in document and "tests" not in document:
        raise ReportError(
            f"{source}: a baseline file, not a report; write a report with "
            "pytest --perf --perf-report=PATH"
        )
    schema = document.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise ReportError(f"{source}: schema: expected a whole number, got {schema!r}")
    if schema > SCHEMA:
        raise ReportError(
            f"{source}: written by a newer pytest-bridgeperf (schema {schema}); this version "
            f"understands schema {SCHEMA} — upgrade pytest-bridgeperf"
        )
    tests = document.get("tests")
    if not isinstance(tests, dict):
        raise ReportError(f"{source}: tests: expected an object")
    for nodeid, test in tests.items():
        where = f"{source}: tests[{nodeid!r}]"
        if not isinstance(test, dict) or not isinstance(test.get("metrics"), list):
            raise ReportError(f"{where}: expected an object with a metrics list")
        for index, row in enumerate(test["metrics"]):
            if not isinstance(row, dict):
                raise ReportError(f"{where}.metrics[{index}]: expected an object")
            if not isinstance(row.get("name"), str):
                raise ReportError(f"{where}.metrics[{index}].name: expected a string")
            if row.get("verdict") not in VERDICTS:
                raise ReportError(
                    f"{where}.metrics[{index}].verdict: expected one of {', '.join(VERDICTS)}, "
                    f"got {row.get('verdict')!r}"
                )
            for key in ("current", "baseline", "change"):
                value = row.get(key)
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                ):
                    raise ReportError(
                        f"{where}.metrics[{index}].{key}: expected a number, got {value!r}"
                    )
    return document


# ---------------------------------------------------------------------------------------------
# reading


def status_of(test: Mapping[str, Any]) -> str:
    """The most urgent of a test's metric verdicts (``over budget`` for a broken budget)."""
    rows: Sequence[Mapping[str, Any]] = test.get("metrics", [])
    seen = {row.get("verdict") for row in rows}
    if any(not b.get("passed", True) for row in rows for b in row.get("budgets", [])):
        seen.add("over budget")
    for status in STATUS_ORDER:
        if status in seen:
            return status
    return "ok"


def ordered_tests(document: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Tests, most urgent first (regressions, broken budgets, missing, improved, new, ok), then
    by node id."""
    rank = {status: index for index, status in enumerate(STATUS_ORDER)}
    tests: dict[str, dict[str, Any]] = document.get("tests", {})
    return sorted(tests.items(), key=lambda item: (rank[status_of(item[1])], item[0]))


def metric_label(row: Mapping[str, Any]) -> str:
    """``GET /x latency p95``: the metric name plus the compared statistic of a distribution."""
    stat = row.get("stat") or "value"
    return str(row["name"]) if stat == "value" else f"{row['name']} {stat}"


def value_text(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format_value(value, unit)


def change_text(row: Mapping[str, Any]) -> str:
    change = row.get("change")
    if change is None:
        return "+∞ %" if row.get("baseline") == 0 and row.get("current") else ""
    return format_change(change)


def budget_text(row: Mapping[str, Any], mark: bool = True) -> str:
    """``p95 ≤ 500 ms ✓, p99 ≤ 1 s ✗`` for the budgets checked against this metric."""
    parts = []
    for check in row.get("budgets", []):
        unit = "s" if check["budget"] in _LATENCY_BUDGETS else row.get("unit", "")
        op = "≥" if check["budget"] == "rps" else "≤"
        text = f"{check['budget']} {op} {format_value(check['limit'], unit)}"
        if mark:
            text += " ✓" if check["passed"] else " ✗"
        parts.append(text)
    return ", ".join(parts)


_LATENCY_BUDGETS = frozenset(("p50", "p90", "p95", "p99", "p999", "max", "mean"))


def histogram_of(row: Mapping[str, Any], key: str = "hdr") -> LatencyHistogram | None:
    """The decoded histogram stored under ``key`` (``hdr`` or ``baseline_hdr``), if any."""
    text = row.get(key)
    if not isinstance(text, str) or not text:
        return None
    try:
        hist = LatencyHistogram.decode(text)
    except ValueError:
        return None
    return hist if hist.count else None


def fingerprints_of(details: Any) -> dict[str, int] | None:
    """The fingerprint multiset of a ``queries`` metric's details."""
    if not isinstance(details, Mapping):
        return None
    fps = details.get("fingerprints")
    if not isinstance(fps, Mapping):
        return None
    result: dict[str, int] = {}
    for fp, count in fps.items():
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            result[str(fp)] = int(count)
    return result


def statement_diff(row: Mapping[str, Any]) -> str:
    """The statement diff of a ``queries`` metric against its baseline: the queries package's
    ``fingerprint_diff`` when it is there, else a plain multiset diff. Empty when unchanged."""
    before, after = row.get("baseline_details"), row.get("details")
    if fingerprints_of(before) is None or fingerprints_of(after) is None:
        return ""
    try:
        from ..queries import fingerprint_diff

        return str(fingerprint_diff(before, after))  # type: ignore[arg-type]
    except Exception:  # a diff is a courtesy: without the queries package, or if it fails, ours
        pass
    return _multiset_diff(fingerprints_of(before) or {}, fingerprints_of(after) or {})


def _multiset_diff(before: Mapping[str, int], after: Mapping[str, int]) -> str:
    if dict(before) == dict(after):
        return ""
    lines = [
        f"--- baseline ({sum(before.values())} statements)",
        f"+++ this run ({sum(after.values())} statements)",
    ]
    for fp in sorted(set(before) | set(after)):
        old, new = before.get(fp, 0), after.get(fp, 0)
        if old == new:
            lines.append(f" {old:>4}× {fp}")
            continue
        if old:
            lines.append(f"-{old:>4}× {fp}")
        if new:
            lines.append(f"+{new:>4}× {fp}")
    return "\n".join(lines)


def statement_rows(row: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """``(fingerprint, baseline count, current count)`` of a ``queries`` metric, changed first."""
    before = fingerprints_of(row.get("baseline_details")) or {}
    after = fingerprints_of(row.get("details")) or {}
    rows = [(fp, before.get(fp, 0), after.get(fp, 0)) for fp in set(before) | set(after)]
    rows.sort(key=lambda r: (r[1] == r[2], -abs(r[2] - r[1]), r[0]))
    return rows


def rows_with_role(
    tests: Iterable[tuple[str, Mapping[str, Any]]], roles: Iterable[str]
) -> list[tuple[str, Mapping[str, Any]]]:
    wanted = set(roles)
    return [
        (nodeid, row)
        for nodeid, test in tests
        for row in test.get("metrics", [])
        if row.get("role") in wanted
    ]


# ---------------------------------------------------------------------------------------------
# writing


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file that is then ``os.replace``d."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def dumps_json(document: Mapping[str, Any]) -> str:
    """Sorted keys, 2-space indent, trailing newline: a file people can diff."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
