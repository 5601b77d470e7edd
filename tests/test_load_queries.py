"""SQL statements per request under load (``queries=True`` → ``result.queries``): a FastAPI +
SQLAlchemy app on real uvicorn, a real SQLite file, and an independent count per request from
SQLAlchemy's own ``before_cursor_execute`` event on the request's connection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")
sa = pytest.importorskip("sqlalchemy")

from sqlalchemy import ForeignKey, event, select  # noqa: E402
from sqlalchemy.orm import (  # noqa: E402
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from pytest_bridgeperf.load import LoadOptionError, run_load  # noqa: E402


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author", order_by="Book.id")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class Library:
    """The app, and what it counted itself: per request, the statements its connection ran."""

    def __init__(self, path: Path) -> None:
        self.engine = sa.create_engine(
            f"sqlite:///{path}", connect_args={"check_same_thread": False}
        )
        Base.metadata.create_all(self.engine)
        with Session(self.engine) as session:
            for a in range(10):
                session.add(Author(name=f"a{a}", books=[Book(title=f"b{a}-{b}") for b in range(3)]))
            session.commit()
        self.counted: list[int] = []
        app = fastapi.FastAPI()

        @app.get("/authors")
        def authors(n: int = 3, eager: bool = False) -> list[dict[str, Any]]:
            with Session(self.engine) as session:
                statements = [0]

                def count(*_: Any) -> None:
                    statements[0] += 1

                event.listen(session.connection(), "before_cursor_execute", count)
                query = select(Author).order_by(Author.id).limit(n)
                if eager:
                    query = query.options(selectinload(Author.books))
                rows = session.scalars(query).all()
                out = [{"name": a.name, "books": [b.title for b in a.books]} for a in rows]
                self.counted.append(statements[0])
                return out

        self.app = app


@pytest.fixture
def library(tmp_path: Path) -> Library:
    return Library(tmp_path / "library.sqlite")


def test_queries_per_request_equal_an_independent_count(library: Library) -> None:
    mix = [
        {"path": "/authors?n=1", "name": "one", "weight": 2},
        {"path": "/authors?n=3", "name": "three"},
        {"path": "/authors?n=5&eager=true", "name": "eager"},
    ]
    result = run_load(library.app, {"mix": mix, "users": 4, "requests": 120, "queries": True})
    assert result.status_counts == {200: 120}
    queries = result.queries
    assert queries is not None
    # requests=N sends exactly N and stops: every request the app handled was measured
    assert queries.requests == 120 == len(library.counted)
    assert queries.per_request == Counter(library.counted)
    assert queries.count == sum(library.counted)
    # the lazy loads: 1 + n statements; eager: 2 whatever n
    assert set(queries.per_request) == {2, 4}
    assert queries.max == 4
    endpoint = queries["GET /authors"]  # the route's template, not each URL
    assert endpoint.requests == 120
    book_select = [fp for fp in endpoint.fingerprints if fp.startswith("SELECT books.")]
    assert book_select, endpoint.fingerprints


def test_warm_up_is_excluded(library: Library) -> None:
    result = run_load(
        library.app,
        {"path": "/authors?n=2", "users": 2, "warmup": "0.3s", "duration": "0.4s", "queries": True},
    )
    queries = result.queries
    assert queries is not None
    # the app handled warm-up requests too; they are not in the count. The server starts a
    # request a little after the client sent it, so the edges of the window may differ by the
    # requests in flight there (one per user at each end)
    assert len(library.counted) > queries.requests
    assert result.count - 2 <= queries.requests <= result.count + result.unfinished + 2
    assert queries.max == 3


def test_an_injected_n_plus_one_is_caught_under_load(library: Library) -> None:
    result = run_load(
        library.app,
        {
            "mix": [
                {"path": "/authors?n=6", "name": "lazy"},
                {"path": "/authors?n=6&eager=1", "name": "eager"},
            ],
            "users": 3,
            "requests": 60,
            "queries": True,
        },
    )
    assert result.queries is not None
    findings = result.queries.n_plus_one()
    assert len(findings) == 1
    finding = findings[0]
    assert finding.endpoint == "GET /authors"
    assert finding.count == 6  # one lazy load per author, in one request
    assert finding.requests == 30  # the lazy half of the mix
    assert finding.fingerprint.startswith("SELECT books.")
    assert finding.call_site is not None
    assert finding.call_site.startswith("tests/test_load_queries.py:")
    n_plus_one = r"(?s)N\+1 queries under load.*GET /authors: up to ×6 per request"
    with pytest.raises(AssertionError, match=n_plus_one):
        result.queries.assert_no_n_plus_one()
    with pytest.raises(AssertionError, match="a request issued 7 SQL statements, more than 5"):
        result.queries.assert_max(5)
    result.check("queries_per_request < 8")
    with pytest.raises(AssertionError, match=r"(?s)queries_per_request < 5.*measured 7"):
        result.check("queries_per_request < 5")


def test_statements_outside_requests_are_not_attributed(library: Library) -> None:
    def warm_the_test_side() -> None:  # the test's own statements while the app serves
        with Session(library.engine) as session:
            session.scalars(select(Author)).all()

    result = run_load(
        library.app,
        {
            "path": "/authors?n=1",
            "requests": 20,
            "queries": True,
            "on_start": lambda user: warm_the_test_side(),
        },
    )
    assert result.queries is not None
    assert result.queries.count == sum(library.counted) == 40


def test_queries_cannot_see_into_a_child_process(library: Library) -> None:
    with pytest.raises(LoadOptionError, match=r"neither result.queries nor perf_queries nor"):
        run_load(library.app, {"serve": "process", "queries": True, "requests": 1})


def test_the_marker_budget_applies_to_every_app_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import fastapi, pytest, sqlalchemy as sa

        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                                  connect_args={"check_same_thread": False})
        app = fastapi.FastAPI()

        @app.get("/three")
        def three():
            with engine.connect() as conn:
                for _ in range(3):
                    conn.execute(sa.text("select 1"))
            return "ok"

        @pytest.mark.perf(queries_per_request=2)
        def test_over(perf_load):
            perf_load(app, path="/three", requests=10)

        @pytest.mark.perf(queries_per_request=3)
        def test_within(perf_load):
            result = perf_load(app, path="/three", requests=10)
            assert result.queries.max == 3

        @pytest.mark.perf(queries_per_request=3)
        def test_in_a_child(perf_load):
            perf_load(app, path="/three", requests=10, serve="process")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--perf")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*GET /three queries_per_request: queries_per_request 3 (budget ≤ 2)*",
            "*queries_per_request= budget counts SQL per request: serve='process' runs the app*",
        ]
    )


def _memory_engine() -> Any:
    return sa.create_engine(
        "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
    )


def test_flask_and_aiohttp_requests_are_attributed_too() -> None:
    flask = pytest.importorskip("flask")
    from aiohttp import web

    engine = _memory_engine()

    def two_statements() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
            conn.execute(sa.text("select 2"))

    wsgi = flask.Flask("attributed")

    @wsgi.get("/items/<int:item>")
    def item(item: int) -> str:
        two_statements()
        return "ok"

    result = run_load(wsgi, {"path": "/items/3", "requests": 30, "users": 3, "queries": True})
    assert result.queries is not None
    assert result.queries.per_request == Counter({2: 30})
    assert list(result.queries.by_endpoint) == ["GET /items/<int:item>"]

    async def handler(request: Any) -> Any:
        two_statements()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/things/{id}", handler)
    result = run_load(app, {"path": "/things/1", "requests": 30, "queries": True})
    assert result.serve == "loop"
    assert result.queries is not None
    assert result.queries.per_request == Counter({2: 30})
    assert list(result.queries.by_endpoint) == ["GET /things/{id}"]


def test_a_perf_queries_block_around_a_child_process_run_is_warned(library: Library) -> None:
    from pytest_bridgeperf import AppFactory
    from pytest_bridgeperf.queries import QueryCapture

    with QueryCapture(check_pool=False) as q, pytest.warns(UserWarning, match="cannot see"):
        run_load(AppFactory(_plain_app), {"serve": "process", "requests": 3})
    assert q.count == 0  # the child's statements: not this process's


def _plain_app() -> Any:
    app = fastapi.FastAPI()

    @app.get("/")
    async def root() -> str:
        return "ok"

    return app
