"""Query budgets of every Bridge endpoint, with ``perf_queries``.

Each test drives the real app over HTTP (aiohttp's test client on 127.0.0.1) and counts the SQL
statements the request handler sends. The counts are exact and machine-independent, so they run
in every ``pytest`` run, not only under ``--perf``: one extra query per row is a bug now, not a
slowdown to notice in a dashboard later.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from bridge_app import list_dashboards_naive
from sqlalchemy import Engine

from pytest_bridgeperf.queries import PerfQueries

Client = TestClient[web.Request, web.Application]


async def test_healthz_is_one_statement(
    client: Client, engine: Engine, perf_queries: PerfQueries
) -> None:
    with perf_queries(engine) as q:
        response = await client.get("/healthz")
    assert response.status == 200
    q.assert_count(1)
    assert list(q.fingerprints) == ["SELECT ?"]


async def test_connector_metadata_is_one_grouped_query_then_cached(
    client: Client, engine: Engine, perf_queries: PerfQueries
) -> None:
    with perf_queries(engine, name="metadata miss") as miss:
        first = await client.get("/api/v1/connectors/metadata")
    with perf_queries(engine, name="metadata hit") as hit:
        second = await client.get("/api/v1/connectors/metadata")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    miss.assert_count(1)  # connectors joined with their measurement counts: no per-connector query
    hit.assert_count(0)  # served from the TTL cache


@pytest.mark.parametrize("query", ["", "?group_by=connector", "?metric=cpu_usage&connector_id=3"])
async def test_statistics_is_one_statement_whatever_the_grouping(
    client: Client, engine: Engine, perf_queries: PerfQueries, query: str
) -> None:
    with perf_queries(engine) as q:
        response = await client.get(f"/api/v1/analytics/statistics{query}")
    assert response.status == 200
    q.assert_count(1)  # percentiles computed with window functions, in the database


@pytest.mark.parametrize("page_size", [5, 20, 100])
async def test_dashboards_page_is_three_statements_whatever_its_size(
    client: Client, engine: Engine, perf_queries: PerfQueries, page_size: int
) -> None:
    with perf_queries(engine) as q:
        response = await client.get(f"/api/v1/dashboards?page=2&page_size={page_size}")
    body = await response.json()
    assert len(body["data"]) == page_size
    q.assert_no_n_plus_one()
    q.assert_count(3)  # the page, its total, and every widget of the page in one IN (...) query


async def test_dashboards_n_plus_one_is_caught(
    app_factory: Callable[..., web.Application], engine: Engine, perf_queries: PerfQueries
) -> None:
    """The naive loader (widgets lazy-loaded per dashboard) returns the same page, and the
    budget catches it: this is the regression the selectinload in ``list_dashboards`` prevents."""
    async with TestClient(
        TestServer(app_factory(dashboards_loader=list_dashboards_naive), host="127.0.0.1")
    ) as naive:
        with perf_queries(engine, name="naive dashboards") as q:
            response = await naive.get("/api/v1/dashboards?page_size=10")
        body = await response.json()
    assert len(body["data"]) == 10
    assert q.count == 12  # the page, its total, and one widget query per dashboard
    with pytest.raises(AssertionError) as failure:
        q.assert_no_n_plus_one()
    message = str(failure.value)
    # the call site is the app's line that touches ``dashboard.widgets``, not SQLAlchemy's
    assert re.search(r"×10 at (\S+/)?bridge_app/services\.py:\d+", message), message
    assert "FROM widgets WHERE ? = widgets.dashboard_id" in message
    assert "selectinload" in message


# The marker bounds the whole test body; under --perf the count is also compared with the
# committed baseline, which then shows a fingerprint diff if the page ever needs more queries.
@pytest.mark.perf(queries=3)
async def test_dashboards_page_query_budget(client: Client) -> None:
    response = await client.get("/api/v1/dashboards?page_size=50")
    body: dict[str, Any] = await response.json()
    assert len(body["data"]) == 50
