"""Fixtures of the Bridge example, shared by every test module under ``tests/``.

The seeded database is built once per session (seeding takes ~0.5 s); everything stateful that a
test may change -- the app, its cache, its clock -- is per test.

Session-scoped:

``database_url``
    ``$BRIDGE_TEST_DATABASE_URL`` if set (e.g. ``sqlite://`` for in memory), else a SQLite file in
    the session's temporary directory. The file is the default because its engine pools one
    connection per thread, so a load generator may serve the app from another thread.
``engine``
    SQLAlchemy ``Engine`` on that database, seeded with the deterministic demo data
    (:class:`bridge_app.SeedCounts`: 20 connectors, 200 dashboards x 5 widgets, 10,000
    measurements). Treat it as read-only; a test that writes must undo its writes.
``session_factory``
    ``sessionmaker`` bound to ``engine``.

Per test:

``session``
    A ``Session`` from ``session_factory``, rolled back and closed after the test.
``clock``
    :class:`ManualClock` driving the app's cache TTL: time stands still unless the test calls
    ``clock.advance(seconds)``, so cache hits and misses are deterministic.
``app_factory``
    ``app_factory(**kwargs) -> aiohttp.web.Application``: :func:`bridge_app.create_app` on the
    shared ``engine`` and ``clock``; keyword arguments pass through (e.g.
    ``dashboards_loader=list_dashboards_naive``, ``cache_ttl=5``).
``app``
    ``app_factory()``: a fresh, not yet started application with an empty cache. Hand it to a
    load generator (``perf_load(app, ...)``) *or* to ``client``, not both: an aiohttp
    application can be started once.
``client``
    ``aiohttp.test_utils.TestClient`` serving ``app`` on 127.0.0.1 (async fixture; use it from
    ``async def`` tests, which pytest-asyncio runs in auto mode).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from bridge_app import create_app, make_engine, make_session_factory, seed_database
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

TEST_DATABASE_URL_ENV = "BRIDGE_TEST_DATABASE_URL"


class ManualClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        return url
    path: Path = tmp_path_factory.mktemp("bridge_db") / "bridge.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    seed_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as session:
        yield session
        session.rollback()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app_factory(engine: Engine, clock: ManualClock) -> Callable[..., web.Application]:
    def factory(**kwargs: Any) -> web.Application:
        kwargs.setdefault("cache_clock", clock)
        return create_app(engine=engine, **kwargs)

    return factory


@pytest.fixture
def app(app_factory: Callable[..., web.Application]) -> web.Application:
    return app_factory()


@pytest.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client
