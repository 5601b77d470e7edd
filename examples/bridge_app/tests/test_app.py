"""Functional tests of every Bridge endpoint, through a real server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from bridge_app import (
    MAX_PAGE_SIZE,
    Measurement,
    Pagination,
    TTLCache,
    cache_key,
    compute_statistics,
    create_app,
    list_dashboards,
    list_dashboards_naive,
    make_engine,
    seed_database,
)
from bridge_app.seed import CONNECTOR_KINDS, METRICS
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

Client = TestClient[web.Request, web.Application]
EXAMPLE_DIR = Path(__file__).resolve().parents[1]


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def before_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before_execute)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before_execute)


def nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(math.ceil(q / 100 * len(sorted_values)), 1) - 1]


# --- /healthz ---------------------------------------------------------------------------------


async def test_healthz(client: Client) -> None:
    body = await get_json(client, "/healthz")
    assert body == {
        "status": "ok",
        "database": "ok",
        "cache": {"hits": 0, "misses": 0, "size": 0, "hit_ratio": 0.0},
    }


# --- /api/v1/connectors/metadata --------------------------------------------------------------


async def test_connector_metadata_lists_every_connector(client: Client) -> None:
    body = await get_json(client, "/api/v1/connectors/metadata")
    assert body["kind"] is None
    assert body["count"] == 20
    connectors = body["connectors"]
    assert [c["id"] for c in connectors] == list(range(1, 21))
    assert set(connectors[0]) == {
        "id",
        "name",
        "kind",
        "status",
        "version",
        "created_at",
        "measurement_count",
        "last_recorded_at",
    }
    assert connectors[0]["name"] == "connector-001"
    assert {c["kind"] for c in connectors} == set(CONNECTOR_KINDS)
    assert sum(c["measurement_count"] for c in connectors) == 10_000


async def test_connector_metadata_filters_by_kind(client: Client) -> None:
    body = await get_json(client, "/api/v1/connectors/metadata?kind=postgres")
    assert body["kind"] == "postgres"
    assert [c["id"] for c in body["connectors"]] == [1, 6, 11, 16]
    assert {c["kind"] for c in body["connectors"]} == {"postgres"}


async def test_connector_metadata_refuses_unknown_kind(
    client: Client, app: web.Application
) -> None:
    body = await get_json(client, "/api/v1/connectors/metadata?kind=oracle", status=400)
    assert "unknown connector kind 'oracle'" in body["error"]
    assert len(app[cache_key]) == 0  # nothing cached for a refused key


async def test_connector_metadata_is_cached_per_kind(client: Client, app: web.Application) -> None:
    seen = []
    for path in ("", "", "?kind=s3", "?kind=s3", ""):
        response = await client.get(f"/api/v1/connectors/metadata{path}")
        assert response.status == 200
        seen.append(response.headers["X-Cache"])
    assert seen == ["MISS", "HIT", "MISS", "HIT", "HIT"]
    stats = app[cache_key].stats
    assert (stats.hits, stats.misses, stats.size) == (3, 2, 2)
    health = await get_json(client, "/healthz")
    assert health["cache"] == {"hits": 3, "misses": 2, "size": 2, "hit_ratio": 0.6}


async def test_connector_metadata_cache_expires_after_ttl(
    app_factory: Callable[..., web.Application], clock: Any
) -> None:
    app = app_factory(cache_ttl=5.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        path = "/api/v1/connectors/metadata"
        assert (await client.get(path)).headers["X-Cache"] == "MISS"
        clock.advance(4.9)
        assert (await client.get(path)).headers["X-Cache"] == "HIT"
        clock.advance(0.2)
        assert (await client.get(path)).headers["X-Cache"] == "MISS"


# --- /api/v1/analytics/statistics -------------------------------------------------------------


async def test_statistics_by_metric(client: Client, session: Session) -> None:
    body = await get_json(client, "/api/v1/analytics/statistics")
    assert body["group_by"] == "metric"
    assert body["filters"] == {"metric": None, "connector_id": None}
    rows = body["statistics"]
    assert [r["metric"] for r in rows] == sorted(METRICS)
    assert sum(r["count"] for r in rows) == 10_000
    values: dict[str, list[float]] = defaultdict(list)
    for metric, value in session.execute(select(Measurement.metric, Measurement.value)):
        values[metric].append(value)
    for row in rows:
        expected = sorted(values[row["metric"]])
        assert row["count"] == len(expected)
        assert row["min"] == expected[0]
        assert row["max"] == expected[-1]
        assert row["mean"] == pytest.approx(math.fsum(expected) / len(expected), abs=1e-6)
        for q in (50, 95, 99):
            assert row[f"p{q}"] == nearest_rank(expected, q), (row["metric"], q)
        assert row["min"] <= row["p50"] <= row["p95"] <= row["p99"] <= row["max"]


async def test_statistics_by_connector(client: Client) -> None:
    body = await get_json(client, "/api/v1/analytics/statistics?group_by=connector")
    rows = body["statistics"]
    assert len(rows) == 20 * len(METRICS)
    keys = [(r["connector_id"], r["metric"]) for r in rows]
    assert keys == sorted(keys)
    assert sum(r["count"] for r in rows) == 10_000


async def test_statistics_filters(client: Client) -> None:
    body = await get_json(
        client, "/api/v1/analytics/statistics?metric=sync_latency_ms&connector_id=3"
    )
    assert body["filters"] == {"metric": "sync_latency_ms", "connector_id": 3}
    [row] = body["statistics"]
    assert row["metric"] == "sync_latency_ms"
    assert 0 < row["count"] < 2_500
    empty = await get_json(client, "/api/v1/analytics/statistics?metric=no_such_metric")
    assert empty["statistics"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("group_by=owner", "group_by must be 'metric' or 'connector'"),
        ("connector_id=three", "connector_id must be an integer"),
    ],
)
async def test_statistics_rejects_bad_parameters(client: Client, query: str, message: str) -> None:
    body = await get_json(client, f"/api/v1/analytics/statistics?{query}", status=400)
    assert message in body["error"]


# --- /api/v1/dashboards -----------------------------------------------------------------------


async def test_dashboards_first_page_defaults(client: Client) -> None:
    body = await get_json(client, "/api/v1/dashboards")
    assert body["pagination"] == {
        "page": 1,
        "page_size": 20,
        "requested_page_size": 20,
        "clamped": False,
        "total_count": 200,
        "total_pages": 10,
        "has_next": True,
        "has_prev": False,
    }
    data = body["data"]
    assert [d["id"] for d in data] == list(range(1, 21))
    assert set(data[0]) == {"id", "name", "owner", "created_at", "widgets"}
    for dashboard in data:
        widgets = dashboard["widgets"]
        assert [w["position"] for w in widgets] == [0, 1, 2, 3, 4]
        assert set(widgets[0]) == {"id", "kind", "title", "position", "connector_id"}
        assert widgets[0]["title"] == f"Widget {dashboard['id']}.0"


async def test_dashboards_pages_follow_each_other(client: Client) -> None:
    second = await get_json(client, "/api/v1/dashboards?page=2&page_size=30")
    assert [d["id"] for d in second["data"]] == list(range(31, 61))
    assert second["pagination"]["has_prev"] is True
    last = await get_json(client, "/api/v1/dashboards?page=7&page_size=30")
    assert [d["id"] for d in last["data"]] == list(range(181, 201))
    assert last["pagination"]["total_pages"] == 7
    assert last["pagination"]["has_next"] is False
    beyond = await get_json(client, "/api/v1/dashboards?page=8&page_size=30")
    assert beyond["data"] == []


@pytest.mark.parametrize(
    ("requested", "served", "clamped"), [(100, 100, False), (101, 100, True), (10_000, 100, True)]
)
async def test_dashboards_page_size_is_clamped_to_100(
    client: Client, requested: int, served: int, clamped: bool
) -> None:
    body = await get_json(client, f"/api/v1/dashboards?page_size={requested}")
    assert len(body["data"]) == served == MAX_PAGE_SIZE
    assert body["pagination"]["page_size"] == served
    assert body["pagination"]["requested_page_size"] == requested
    assert body["pagination"]["clamped"] is clamped
    assert body["pagination"]["total_pages"] == 2


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "page must be at least 1"),
        ("page=-3", "page must be at least 1"),
        ("page_size=0", "page_size must be at least 1"),
        ("page=abc", "page must be an integer"),
        ("page_size=1.5", "page_size must be an integer"),
    ],
)
async def test_dashboards_rejects_bad_pagination(client: Client, query: str, message: str) -> None:
    body = await get_json(client, f"/api/v1/dashboards?{query}", status=400)
    assert message in body["error"]


def test_naive_and_selectin_loaders_agree_but_naive_issues_n_plus_one(
    engine: Engine, session_factory: Any
) -> None:
    pagination = Pagination.parse("2", "25")
    with session_factory() as session, count_statements(engine) as efficient_sql:
        efficient = list_dashboards(session, pagination)
    with session_factory() as session, count_statements(engine) as naive_sql:
        naive = list_dashboards_naive(session, pagination)
    assert naive == efficient
    assert len(efficient_sql) == 3  # page, widgets IN (...), count
    assert len(naive_sql) == 2 + 25  # page, one widget query per dashboard, count


async def test_app_can_serve_the_naive_loader(app_factory: Callable[..., web.Application]) -> None:
    app = app_factory(dashboards_loader=list_dashboards_naive)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = await get_json(client, "/api/v1/dashboards?page_size=5")
    assert [len(d["widgets"]) for d in body["data"]] == [5] * 5


# --- app factory, seeding, the cache ------------------------------------------------------------


async def test_create_app_in_memory_with_seed() -> None:
    app = create_app("sqlite://", seed=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = await get_json(client, "/api/v1/dashboards?page=10")
        assert body["pagination"]["total_count"] == 200


async def test_create_app_reads_database_url_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{db}")
    app = create_app()  # empty database: schema only
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = await get_json(client, "/api/v1/connectors/metadata")
        assert body["count"] == 0
    assert db.exists()


def test_create_app_rejects_ambiguous_or_foreign_databases(engine: Engine) -> None:
    with pytest.raises(ValueError, match="either database_url or engine"):
        create_app("sqlite://", engine=engine)
    with pytest.raises(ValueError, match="SQLite only"):
        create_app("postgresql://127.0.0.1/bridge")


def test_seed_is_deterministic(session: Session) -> None:
    other = make_engine("sqlite://")
    seed_database(other)
    with Session(other) as fresh:
        assert compute_statistics(fresh, group_by="connector") == compute_statistics(
            session, group_by="connector"
        )
        assert list_dashboards(fresh, Pagination(3, 50, 50)) == list_dashboards(
            session, Pagination(3, 50, 50)
        )
    other.dispose()


def test_ttl_cache_expiry_eviction_and_ratio() -> None:
    now = [0.0]
    cache = TTLCache[str](ttl=10, maxsize=2, clock=lambda: now[0])
    assert cache.stats.hit_ratio == 0.0
    assert cache.get_or_compute("a", lambda: "A") == ("A", False)
    assert cache.get_or_compute("a", lambda: "other") == ("A", True)
    cache.set("b", "B")
    cache.get("a")  # a becomes the most recently used
    cache.set("c", "C")  # evicts b
    assert cache.get("b") is None
    assert cache.get("c") == "C"
    now[0] = 10.0
    assert cache.get("a") is None  # expired exactly at ttl
    assert len(cache) == 1
    stats = cache.stats
    assert (stats.hits, stats.misses) == (3, 3)
    assert stats.hit_ratio == 0.5
    with pytest.raises(ValueError, match="ttl"):
        TTLCache[str](ttl=0)
    with pytest.raises(ValueError, match="maxsize"):
        TTLCache[str](ttl=1, maxsize=0)


# --- python -m bridge_app ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_main_serves_the_seeded_app_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE_DIR)}
    env.pop("BRIDGE_DATABASE_URL", None)
    command = [sys.executable, "-m", "bridge_app", "--port", str(port)]
    command += ["--database-url", f"sqlite:///{tmp_path / 'main.db'}"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/v1/dashboards?page_size=1"
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.load(response)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"python -m bridge_app did not come up:\n{stderr}")
                time.sleep(0.1)
        assert body["pagination"]["total_count"] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
