"""Fixtures of the FastAPI example.

``database_url`` (session)
    ``$FASTAPI_APP_TEST_DATABASE_URL`` if set (a PostgreSQL URL, say), else a SQLite file in the
    session's temporary directory, seeded once (20 users × 30 projects × 4 tasks).
``app_factory``
    ``AppFactory(create_app, database_url)``: what ``perf_load`` serves — a new app, with its
    own engine and its lifespan run, for every load run.
``login``
    The ``on_start`` of the load tests: each virtual user logs in as one of the demo users and
    keeps its token; requests send it as ``Authorization: Bearer {token}``.
``session``
    A SQLAlchemy ``Session`` on the seeded database (for tests of the service functions).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi_app import PASSWORD, create_app, make_engine, seed
from sqlalchemy.orm import Session

from pytest_bridgeperf import AppFactory, VirtualUser

TEST_DATABASE_URL_ENV = "FASTAPI_APP_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if not url:
        path: Path = tmp_path_factory.mktemp("fastapi_app") / "app.db"
        url = f"sqlite:///{path}"
    engine = make_engine(url)
    seed(engine)
    engine.dispose()
    return url


@pytest.fixture
def app_factory(database_url: str) -> AppFactory:
    return AppFactory(create_app, database_url)


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with Session(engine) as session:
        yield session
    engine.dispose()


async def login(user: VirtualUser) -> dict[str, Any]:
    response = await user.post(
        "/login", json={"username": f"user{user.index % 20}", "password": PASSWORD}
    )
    assert response.status == 200, response.text
    return {"token": response.json()["token"]}


@pytest.fixture(name="login")
def login_fixture() -> Any:
    return login
