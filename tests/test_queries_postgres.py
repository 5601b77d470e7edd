"""perf_queries against a real PostgreSQL server: psycopg 3 (sync) and asyncpg (async).

The server comes from ``.ci/postgres.sh`` (``eval "$(.ci/postgres.sh)"``), which exports
BRIDGEPERF_TEST_POSTGRES and BRIDGEPERF_TEST_POSTGRES_LOG. Counts are checked against
SQLAlchemy's own cursor events and against the statements the server logged
(``log_statement=all``) for the test's connection.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import ForeignKey, String, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncSession, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from pytest_bridgeperf.queries import QueryCapture, fingerprint, is_transaction_control

ENV = "BRIDGEPERF_TEST_POSTGRES"


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(ENV)
    if url:
        return url
    reason = f'PostgreSQL not configured: run `eval "$(.ci/postgres.sh)"` to set {ENV}'
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so these tests must run)", pytrace=False)
    pytest.skip(reason)


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture(scope="module")
def schema(postgres_url: str) -> Iterator[str]:
    """A schema of its own (tables authors, books, seeded), dropped afterwards."""
    name = f"bridgeperf_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    engine = _sync_engine(postgres_url, name)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            Author(
                id=i, name=f"a{i}", books=[Book(id=10 * i + j, title=f"b{i}.{j}") for j in (1, 2)]
            )
            for i in range(1, 6)
        )
        session.commit()
    engine.dispose()
    yield name
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
    admin.dispose()


def _sync_engine(url: str, schema: str) -> Engine:
    return create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"),
        pool_size=1,
        max_overflow=0,
        connect_args={"options": f"-c search_path={schema}"},
    )


class ServerLog:
    """Statements the server logged for one backend since ``mark()``."""

    LINE = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): (.*)")

    def __init__(self) -> None:
        path = os.environ.get(f"{ENV}_LOG")
        self.path = Path(path) if path else None
        self.offset = 0

    def mark(self) -> None:
        if self.path is not None:
            self.offset = self.path.stat().st_size

    def statements(self, pid: int) -> list[str] | None:
        if self.path is None:
            return None
        with self.path.open("rb") as f:
            f.seek(self.offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
        found = []
        for line in lines:
            match = self.LINE.search(line)
            if match and int(match.group(1)) == pid:
                sql = match.group(2)
                # psycopg deallocates its prepared statements itself after a rollback
                if not is_transaction_control(fingerprint(sql)) and sql != "DEALLOCATE ALL":
                    found.append(sql)
        return found


def test_sync_counts_match_cursor_events_and_server_log(postgres_url: str, schema: str) -> None:
    engine = _sync_engine(postgres_url, schema)
    with engine.connect() as conn:  # first connect (dialect initialisation) outside the block
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    cursor_events: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: cursor_events.append(args[2]))
    log = ServerLog()
    log.mark()
    with QueryCapture(engine) as q, Session(engine) as session:
        authors = session.scalars(select(Author).order_by(Author.id)).all()
        titles = [book.title for author in authors for book in author.books]  # N+1
        session.add_all(Book(id=1000 + i, title=f"new{i}", author_id=1) for i in range(3))
        session.flush()
        session.rollback()
    assert len(titles) == 10
    assert q.count == 1 + 5 + 1  # select, five lazy loads, one executemany of three rows
    assert q.count == len(cursor_events)
    (batch,) = [s for s in q.statements if s.executemany]
    assert batch.fingerprint.startswith("INSERT INTO books (id, title, author_id) VALUES")
    assert batch.parameter_sets == 3
    logged = log.statements(pid)
    if logged is not None:
        # psycopg's executemany runs the statement once per parameter set on the server
        assert len(logged) == sum(s.parameter_sets for s in q.statements), logged
    (finding,) = q.n_plus_one()
    assert finding.count == 5
    assert finding.call_site.startswith("tests/test_queries_postgres.py:")
    assert finding.fingerprint == (
        "SELECT books.id, books.title, books.author_id FROM books "
        "WHERE ?::INTEGER = books.author_id"
    )
    engine.dispose()


def test_sync_selectinload_fix_and_first_connect_not_counted(
    postgres_url: str, schema: str
) -> None:
    engine = _sync_engine(postgres_url, schema)
    # A fresh engine connects inside the block: SQLAlchemy's dialect set-up queries are not
    # the code under test and must not count.
    with QueryCapture(engine) as q, Session(engine) as session:
        query = select(Author).options(selectinload(Author.books)).order_by(Author.id)
        titles = [book.title for author in session.scalars(query) for book in author.books]
    assert len(titles) == 10
    q.assert_count(2)
    q.assert_no_n_plus_one()
    assert q.fingerprints == {
        "SELECT authors.id, authors.name FROM authors ORDER BY authors.id": 1,
        "SELECT books.author_id, books.id, books.title FROM books "
        "WHERE books.author_id IN (...)": 1,
    }
    engine.dispose()


@pytest.mark.asyncio
async def test_async_engine_counts_lazy_loads_with_call_sites(
    postgres_url: str, schema: str
) -> None:
    engine = create_async_engine(
        postgres_url.replace("postgresql://", "postgresql+asyncpg://"),
        pool_size=1,
        max_overflow=0,
        connect_args={"server_settings": {"search_path": schema}},
    )
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    cursor_events: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: cursor_events.append(a[2]))
    log = ServerLog()
    log.mark()
    titles: list[str] = []
    with QueryCapture(engine) as q:
        async with AsyncSession(engine) as session:
            for author in (await session.scalars(select(Author).order_by(Author.id))).all():
                books = await author.awaitable_attrs.books  # LAZY
                titles.extend(book.title for book in books)
    assert len(titles) == 10
    assert q.count == 6 == len(cursor_events)
    logged = log.statements(pid)
    if logged is not None:
        assert len(logged) == q.count, logged
    # the call site is found through the greenlet SQLAlchemy runs the DBAPI call in
    with pytest.raises(AssertionError) as failure:
        q.assert_no_n_plus_one()
    message = str(failure.value)
    source = Path(__file__).read_text(encoding="utf-8").splitlines()
    line = next(i for i, text_ in enumerate(source, 1) if "# LAZY" in text_)
    assert f"×5 at tests/test_queries_postgres.py:{line}" in message
    await engine.dispose()


@pytest.mark.asyncio
async def test_async_pool_leak(postgres_url: str, schema: str) -> None:
    engine = create_async_engine(
        postgres_url.replace("postgresql://", "postgresql+asyncpg://"), pool_size=2
    )
    async with engine.connect():
        pass
    capture = QueryCapture(engine)
    capture.__enter__()
    conn = await engine.connect()
    await conn.execute(text("SELECT 1"))
    with pytest.raises(
        AssertionError, match=r"QueuePool: size 2, checked in 0, checked out 1"
    ) as failure:
        capture.__exit__(None, None, None)
    pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    # which connection: the driver's, and the server process serving it
    assert "leaked: connection asyncpg.Connection 0x" in str(failure.value)
    assert f", server process {pid}" in str(failure.value)
    assert "checked out at tests/test_queries_postgres.py:" in str(failure.value)
    await conn.close()
    await engine.dispose()


def test_missing_server_skips_locally_and_fails_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_pg="""
        from test_queries_postgres import postgres_url  # noqa: F401

        def test_needs_server(postgres_url):
            pass
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    local = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    local.assert_outcomes(skipped=1)
    local.stdout.fnmatch_lines(["*PostgreSQL not configured: run `eval*.ci/postgres.sh*"])
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    ci.assert_outcomes(errors=1)
    ci.stdout.fnmatch_lines(["*CI is set, so these tests must run*"])
    assert ci.ret != 0
