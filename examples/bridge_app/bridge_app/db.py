"""Engine and session factory for SQLite, in memory or in a file."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "database_url_from_env",
    "make_engine",
    "make_session_factory",
]

#: Environment variable naming the database, e.g. ``sqlite:///bridge.db``.
DATABASE_URL_ENV = "BRIDGE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite://"  # in memory


def database_url_from_env() -> str:
    return os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def _is_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url


def make_engine(database_url: str, *, echo: bool = False) -> Engine:
    """An engine for ``database_url``.

    An in-memory SQLite database lives and dies with its connection, so every session must share
    one connection (``StaticPool``), also across threads. A file database uses the default pool:
    one connection per thread, which is what a load generator running the server in another
    thread needs.
    """
    if not database_url.startswith("sqlite"):
        raise ValueError(f"bridge_app supports SQLite only, got {database_url!r}")
    kwargs: dict[str, Any] = {"echo": echo, "connect_args": {"check_same_thread": False}}
    if _is_memory(database_url):
        kwargs["poolclass"] = StaticPool
    engine = create_engine(database_url, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # Handlers serialise results before the session closes; nothing is read after commit.
    return sessionmaker(engine, expire_on_commit=False)
