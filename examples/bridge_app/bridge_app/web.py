"""The aiohttp application: routes, request parsing, JSON responses."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from .cache import TTLCache
from .db import database_url_from_env, make_engine, make_session_factory
from .seed import CONNECTOR_KINDS, create_schema, is_seeded, seed_database
from .services import (
    Pagination,
    compute_statistics,
    connector_metadata,
    list_dashboards,
)

__all__ = [
    "DashboardsLoader",
    "cache_key",
    "create_app",
    "engine_key",
    "session_factory_key",
]

DashboardsLoader = Callable[[Session, Pagination], dict[str, Any]]

engine_key = web.AppKey("engine", Engine)
session_factory_key = web.AppKey("session_factory", sessionmaker[Session])
#: The connector-metadata cache; ``app[cache_key].stats.hit_ratio`` is the guide's hit ratio.
cache_key = web.AppKey("connector_cache", TTLCache[str])
_loader_key: web.AppKey[DashboardsLoader] = web.AppKey("dashboards_loader")

DEFAULT_CACHE_TTL = 30.0


def create_app(
    database_url: str | None = None,
    *,
    engine: Engine | None = None,
    seed: bool = False,
    cache_ttl: float = DEFAULT_CACHE_TTL,
    cache_clock: Callable[[], float] = time.monotonic,
    dashboards_loader: DashboardsLoader = list_dashboards,
) -> web.Application:
    """The Bridge app.

    The database is ``engine`` if given (the caller keeps owning it), else a new engine for
    ``database_url`` (default: ``$BRIDGE_DATABASE_URL``, else SQLite in memory), disposed on
    cleanup. The schema is created if missing; ``seed=True`` inserts the demo data into an empty
    database. ``dashboards_loader`` lets the query-budget examples serve
    :func:`~bridge_app.services.list_dashboards_naive` instead.
    """
    if engine is not None and database_url is not None:
        raise ValueError("pass either database_url or engine, not both")
    owns_engine = engine is None
    if engine is None:
        engine = make_engine(database_url or database_url_from_env())
    create_schema(engine)
    if seed and not is_seeded(engine):
        seed_database(engine)

    app = web.Application()
    app[engine_key] = engine
    app[session_factory_key] = make_session_factory(engine)
    app[cache_key] = TTLCache[str](cache_ttl, clock=cache_clock)
    app[_loader_key] = dashboards_loader
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/connectors/metadata", connectors_metadata)
    app.router.add_get("/api/v1/analytics/statistics", statistics)
    app.router.add_get("/api/v1/dashboards", dashboards)
    if owns_engine:

        async def dispose(app: web.Application) -> None:
            app[engine_key].dispose()

        app.on_cleanup.append(dispose)
    return app


# The handlers call the synchronous session directly: SQLite answers these queries in well under
# a millisecond to a few milliseconds, less than a thread hand-off would cost. An app on a network
# database would use SQLAlchemy's asyncio extension instead.


async def healthz(request: web.Request) -> web.Response:
    try:
        with request.app[session_factory_key]() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return web.json_response({"status": "error", "database": str(exc)}, status=503)
    return web.json_response(
        {"status": "ok", "database": "ok", "cache": request.app[cache_key].stats.as_dict()}
    )


async def connectors_metadata(request: web.Request) -> web.Response:
    kind = request.query.get("kind") or None
    if kind is not None and kind not in CONNECTOR_KINDS:
        # Unknown values are refused rather than cached: otherwise any client could fill the
        # cache with keys of its choosing.
        raise _bad_request(f"unknown connector kind {kind!r}; known: {', '.join(CONNECTOR_KINDS)}")
    cache = request.app[cache_key]

    def compute() -> str:
        with request.app[session_factory_key]() as session:
            connectors = connector_metadata(session, kind)
        return json.dumps({"kind": kind, "count": len(connectors), "connectors": connectors})

    body, hit = cache.get_or_compute(("metadata", kind), compute)
    return web.Response(
        text=body, content_type="application/json", headers={"X-Cache": "HIT" if hit else "MISS"}
    )


async def statistics(request: web.Request) -> web.Response:
    group_by = request.query.get("group_by", "metric")
    if group_by not in ("metric", "connector"):
        raise _bad_request(f"group_by must be 'metric' or 'connector', got {group_by!r}")
    metric = request.query.get("metric") or None
    connector_id: int | None = None
    if raw := request.query.get("connector_id"):
        try:
            connector_id = int(raw)
        except ValueError:
            raise _bad_request(f"connector_id must be an integer, got {raw!r}") from None
    with request.app[session_factory_key]() as session:
        rows = compute_statistics(
            session,
            group_by="connector" if group_by == "connector" else "metric",
            metric=metric,
            connector_id=connector_id,
        )
    return web.json_response(
        {
            "group_by": group_by,
            "filters": {"metric": metric, "connector_id": connector_id},
            "statistics": rows,
        }
    )


async def dashboards(request: web.Request) -> web.Response:
    try:
        pagination = Pagination.parse(request.query.get("page"), request.query.get("page_size"))
    except ValueError as exc:
        raise _bad_request(str(exc)) from None
    with request.app[session_factory_key]() as session:
        page = request.app[_loader_key](session, pagination)
    return web.json_response(page)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
