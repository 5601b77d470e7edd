"""JUnit XML properties of a perf test (pytest's ``record_property`` / ``user_properties``).

CI servers show them next to the test case: per metric the compared value (SI units: seconds,
bytes, …), its baseline and change when there is one, and the verdict. No pytest here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .document import metric_label, status_of

__all__ = ["junit_properties"]


def junit_properties(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, object]]:
    """``("perf:<metric> <stat>", value)``, ``("perf:<metric> <stat> baseline", value)``,
    ``("perf:<metric> <stat> change", ratio)``, ``("perf:<metric> <stat> verdict", verdict)`` per
    metric, then ``("perf:verdict", <the test's most urgent verdict>)``."""
    rows = list(rows)
    properties: list[tuple[str, object]] = []
    for row in rows:
        key = f"perf:{metric_label(row)}"
        unit = row.get("unit")
        if row.get("current") is not None:
            properties.append((key, row["current"]))
            if unit:
                properties.append((f"{key} unit", unit))
        if row.get("baseline") is not None:
            properties.append((f"{key} baseline", row["baseline"]))
        if row.get("change") is not None:
            properties.append((f"{key} change", round(float(row["change"]), 6)))
        properties.append((f"{key} verdict", row["verdict"]))
    if rows:
        properties.append(("perf:verdict", status_of({"metrics": rows})))
    return properties
