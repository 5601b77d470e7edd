"""Statement durations reach the OpenMetrics report but never the baseline."""

from __future__ import annotations

import json

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

TEST = """
import sqlalchemy as sa
import pytest

@pytest.mark.perf
def test_two_selects_and_an_insert(perf_queries):
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    with perf_queries(engine) as q, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        conn.execute(sa.text("SELECT x FROM t"))
        conn.execute(sa.text("SELECT x FROM t WHERE x = 1"))
    assert q.count == 3
"""


def test_db_query_durations_in_openmetrics_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_q=TEST)
    result = pytester.runpytest_subprocess(
        "--perf", "--perf-update", "--perf-openmetrics=metrics.txt", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1)
    families = {
        f.name: f
        for f in text_string_to_metric_families((pytester.path / "metrics.txt").read_text())
    }
    durations = families["bridge_db_query_duration_seconds"]
    counts = {
        s.labels["query_type"]: s.value for s in durations.samples if s.name.endswith("_count")
    }
    assert counts == {"INSERT": 1, "SELECT": 2}
    assert all(
        s.labels["test"] == "test_q.py::test_two_selects_and_an_insert" for s in durations.samples
    )
    stored = json.loads((pytester.path / "perf-baseline.json").read_text())
    entry = stored["environments"]["default"]["tests"]["test_q.py::test_two_selects_and_an_insert"]
    details = entry["metrics"]["queries"]["details"]
    assert set(details) == {"fingerprints"}
