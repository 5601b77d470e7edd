"""Perf tests of the Bridge app that need nothing but the core ``perf`` fixture and marker.

Run with ``pytest --perf examples/bridge_app``; without ``--perf`` they are skipped. Budgets are
absolute limits, deliberately generous (an order of magnitude above what a laptop measures): they
catch the disasters, while the committed baseline catches the drifts.

The timings are CPU time of the test's thread (``time.thread_time``), not wall-clock time. SQLite
runs in-process, so the CPU time is the work a call costs, and it barely moves when other
processes compete for the cores: on a 2-core VM saturated by two busy loops the wall-clock median
of the statistics query tripled (18 ms -> 58 ms) while its CPU-time median moved by 1 %. Wall-clock
latency under concurrency is what the load tests (``perf_load``) measure.

What the neighbours still do is slow everyone's memory accesses for a second or two at a time:
the CPU-time median of the allocation-heavy dashboard page jumped by up to 50 % between
back-to-back runs beside other test suites. So the samples are spread over ~2 s and the compared
statistic is the minimum -- the call that ran undisturbed, which is what the code costs (the
reasoning of ``timeit``). Over ten such runs the minimum varied by 1 % (statistics) and 14 %
(dashboard page).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from bridge_app import (
    MAX_PAGE_SIZE,
    Pagination,
    cache_key,
    compute_statistics,
    list_dashboards,
)
from sqlalchemy.orm import Session

from pytest_bridgeperf import Recorder

Client = TestClient[web.Request, web.Application]

WARMUP = 3  # first calls compile SQL, fill SQLite's page cache and SQLAlchemy's statement cache
SAMPLES = 30
PAUSE = 0.05  # seconds between samples: spreads them over the neighbours' busy and quiet spells
#: The guide's alert threshold: below this hit ratio the cache is not earning its keep.
MIN_CACHE_HIT_RATIO = 0.7


def cpu_time_samples(func: Callable[[], Any], n: int = SAMPLES) -> list[float]:
    """CPU seconds of this thread for each of ``n`` calls of ``func``, after a warm-up.

    Like ``timeit``, the garbage collector is off during a timed call: a collection's cost lands
    on whichever call happens to trigger it.
    """
    for _ in range(WARMUP):
        func()
    samples = []
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(n):
            time.sleep(PAUSE)
            gc.disable()
            start = time.thread_time()
            func()
            samples.append(time.thread_time() - start)
            if gc_was_enabled:
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


# 20 %: a wide margin over the 1 % spread of A/A reruns, still catching a +30 % slowdown.
@pytest.mark.perf(p95="250ms", tolerance="20%")
def test_statistics_computation(perf: Recorder, session: Session) -> None:
    """count/mean/min/max/p50/p95/p99 per metric over 10,000 measurements, in one SQL statement."""
    rows = compute_statistics(session)
    assert sum(row["count"] for row in rows) == 10_000
    perf.record("statistics", cpu_time_samples(lambda: compute_statistics(session)), stat="min")


# The allocation-heavy page is the most sensitive to the neighbours (its A/A minimum spread 14 %);
# 50 % keeps reruns green and catches the N+1 loader (4x). The fine guards of this page are its
# payload bytes below (exact) and its statement count (the query-budget tests).
@pytest.mark.perf(p95="300ms", tolerance="50%")
def test_dashboards_page_of_100(perf: Recorder, session: Session) -> None:
    """One capped page (a client asked for 1,000): dashboards + widgets loaded and serialised."""
    pagination = Pagination.parse("1", "1000")
    assert pagination.page_size == MAX_PAGE_SIZE

    def page_json() -> str:
        return json.dumps(list_dashboards(session, pagination))

    perf.record("dashboards page of 100", cpu_time_samples(page_json), stat="min")


@pytest.mark.perf
async def test_dashboards_page_size_capped_over_http(perf: Recorder, client: Client) -> None:
    """A client asking for 1,000 dashboards gets 100, widgets included."""
    response = await client.get("/api/v1/dashboards?page=1&page_size=1000")
    assert response.status == 200
    body = await response.read()
    page = json.loads(body)
    assert page["pagination"]["page_size"] == MAX_PAGE_SIZE
    assert page["pagination"]["clamped"] is True
    assert len(page["data"]) == MAX_PAGE_SIZE
    assert all(len(dashboard["widgets"]) == 5 for dashboard in page["data"])
    # The payload is deterministic (seeded data), so its size is compared exactly: a field added
    # to every widget shows up here as a regression to review.
    perf.record("dashboards page bytes", len(body), unit="bytes")


@pytest.mark.perf
async def test_connector_cache_hit_ratio(
    perf: Recorder, client: Client, app: web.Application, clock: Any
) -> None:
    """A dashboard-refresh traffic mix over two cache TTL windows: 60 metadata requests, 6 distinct
    keys, every key missed once per window -> 48 hits / 60 lookups = 0.8."""
    queries = ["", "", "?kind=postgres", "", "?kind=mysql", "?kind=s3", "", "?kind=bigquery"]
    queries += ["?kind=http", ""]
    ttl = app[cache_key].ttl
    for window in range(2):
        for i in range(30):
            response = await client.get(f"/api/v1/connectors/metadata{queries[i % len(queries)]}")
            assert response.status == 200
            await response.read()
        if window == 0:
            clock.advance(ttl)  # every entry expires: the next window starts cold
    stats = app[cache_key].stats
    assert stats.requests == 60
    ratio = stats.hit_ratio
    perf.record("connector cache hit ratio", ratio, unit="ratio", better="higher")
    assert ratio >= MIN_CACHE_HIT_RATIO, (
        f"connector cache hit ratio {ratio:.2f} is below the guide's {MIN_CACHE_HIT_RATIO}: "
        f"{stats.hits} hits, {stats.misses} misses"
    )
