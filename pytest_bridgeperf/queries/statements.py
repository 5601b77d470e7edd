"""Recorded statements and how people read them: grouped listings, N+1 findings, baseline diffs.

Pure Python (no SQLAlchemy): the plugin calls :func:`fingerprint_diff` on stored baselines.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NPlusOne",
    "Statement",
    "find_n_plus_one",
    "fingerprint_diff",
    "format_statements",
]

#: How many fingerprint groups a listing shows before it summarises the rest.
LISTING_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Statement:
    """One round trip to the database, as the DBAPI cursor saw it."""

    sql: str
    fingerprint: str
    params: int  # bound parameter values sent (all parameter sets of an executemany)
    duration: float  # seconds spent in the DBAPI call
    rows: int | None  # rows affected / returned when the driver knows it, else None
    executemany: bool  # an executemany call or an insertmanyvalues batch
    call_site: str | None  # first frame in user code, ``path:line`` (relative to the cwd)
    transaction_control: bool = False  # BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE
    failed: bool = False  # the driver raised
    parameter_sets: int = 1  # parameter sets of an executemany call (the server runs each)

    def __str__(self) -> str:
        return self.sql


@dataclass(frozen=True)
class NPlusOne:
    """The same statement shape issued repeatedly from one line of user code."""

    fingerprint: str
    call_site: str
    count: int


def _group(statements: Sequence[Statement]) -> list[tuple[str, list[Statement]]]:
    groups: dict[str, list[Statement]] = {}
    for statement in statements:
        groups.setdefault(statement.fingerprint, []).append(statement)
    return list(groups.items())


def format_statements(statements: Sequence[Statement], *, title: str | None = None) -> str:
    """Numbered fingerprint groups (first-seen order) with their counts and call sites.

    Deterministic for deterministic code: no timings, relative paths; it is stored in baselines.
    """
    groups = _group(statements)
    distinct = len(groups)
    noun = "statement" if len(statements) == 1 else "statements"
    header = title or f"{len(statements)} {noun}, {distinct} distinct"
    if not statements:
        return f"{header}: none"
    lines = [f"{header}:"]
    width = len(str(min(distinct, LISTING_LIMIT)))
    indent = " " * (width + 6)
    for number, (fp, members) in enumerate(groups[:LISTING_LIMIT], start=1):
        lines.append(f"  {number:>{width}}. ×{len(members)}  {fp}")
        sites = Counter(s.call_site or "<unknown call site>" for s in members)
        for site, count in sites.most_common():
            lines.append(f"{indent}{'×' + str(count) + ' ' if len(sites) > 1 else ''}at {site}")
        batches = sum(1 for s in members if s.executemany)
        if batches:
            lines.append(f"{indent}executemany / batched: {batches} round trip(s)")
        failed = sum(1 for s in members if s.failed)
        if failed:
            lines.append(f"{indent}failed: {failed}")
    if distinct > LISTING_LIMIT:
        rest = sum(len(members) for _, members in groups[LISTING_LIMIT:])
        lines.append(
            f"  … and {distinct - LISTING_LIMIT} more distinct statement(s) ({rest} in all)"
        )
    return "\n".join(lines)


def find_n_plus_one(statements: Iterable[Statement], threshold: int) -> list[NPlusOne]:
    """Same fingerprint from the same call site at least ``threshold`` times.

    Batched executions (executemany, insertmanyvalues) are one bulk operation, not a loop of
    queries, so they never count. Worst first.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for statement in statements:
        if statement.executemany or statement.transaction_control:
            continue
        counts[(statement.fingerprint, statement.call_site or "<unknown call site>")] += 1
    found = [NPlusOne(fp, site, n) for (fp, site), n in counts.items() if n >= threshold]
    found.sort(key=lambda item: (-item.count, item.call_site, item.fingerprint))
    return found


def describe_n_plus_one(findings: Sequence[NPlusOne], threshold: int) -> str:
    lines = [
        f"N+1 queries: {len(findings)} statement(s) repeated from one call site "
        f"(threshold {threshold}):"
    ]
    for finding in findings:
        lines.append(f"  ×{finding.count} at {finding.call_site}")
        lines.append(f"      {finding.fingerprint}")
    lines.append(
        "Load the related rows in one query instead: add "
        "options(selectinload(Parent.children)) or joinedload(...) to the query that fetches the "
        "parents, or make the relationship lazy='raise' / use raiseload('*') to catch lazy loads "
        "early."
    )
    return "\n".join(lines)


def _fingerprint_lines(multiset: Mapping[str, Any]) -> list[str]:
    lines = []
    for fp in sorted(multiset):
        count = multiset[fp]
        lines.append(f"{count:>4}× {fp}")
    return lines


def fingerprint_diff(
    baseline_details: Mapping[str, Any], current_details: Mapping[str, Any]
) -> str:
    """A unified diff of two fingerprint multisets (``details["fingerprints"]`` of a ``queries``
    metric), one line per distinct statement with its count; empty when there is nothing to show.
    """
    before = baseline_details.get("fingerprints") if baseline_details else None
    after = current_details.get("fingerprints") if current_details else None
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return ""
    if dict(before) == dict(after):
        return ""
    old = _fingerprint_lines(before)
    new = _fingerprint_lines(after)
    diff = difflib.unified_diff(
        old,
        new,
        fromfile=f"baseline ({sum(int(v) for v in before.values())} statements)",
        tofile=f"this run ({sum(int(v) for v in after.values())} statements)",
        n=max(len(old), len(new)),
        lineterm="",
    )
    return "\n".join(diff)


def fingerprint_counts(statements: Iterable[Statement]) -> Counter[str]:
    return Counter(statement.fingerprint for statement in statements)
