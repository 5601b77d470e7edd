"""``perf_queries`` and ``@pytest.mark.perf(queries=N)`` as a user meets them: pytester runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

LAZY_LOAD = "SELECT books.id, books.title, books.author_id FROM books WHERE ? = books.author_id"

# A small ORM model on in-memory SQLite; AUTHORS (env var, read at run time) sets how many
# authors the N+1 loop walks, so a run can regress without touching the test code.
MODEL = """
import os
import pytest
from sqlalchemy import ForeignKey, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.orm import selectinload


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture
def engine():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    n = int(os.environ.get("AUTHORS", "4"))
    with Session(engine) as session:
        session.add_all(
            Author(id=i, name=f"a{i}", books=[Book(title=f"b{i}")]) for i in range(1, n + 1)
        )
        session.commit()
    yield engine
    engine.dispose()


def titles(engine, eager=False):
    query = select(Author).order_by(Author.id)
    if eager:
        query = query.options(selectinload(Author.books))
    with Session(engine) as session:
        return [book.title for author in session.scalars(query) for book in author.books]
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("AUTHORS", raising=False)
    monkeypatch.delenv("PERF_ENV", raising=False)
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(MODEL)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # In a subprocess: an in-process run restores sys.modules afterwards, dropping SQLAlchemy
    # modules it imported lazily, and SQLAlchemy's compiled parts break on the re-import.
    # pytest-randomly (installed for the neighbour tests) would shuffle the ordered output.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def test_assertions_pass_and_fail_with_numbered_statements(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_counts="""
        from conftest import titles

        def test_exact(perf_queries, engine):
            with perf_queries(engine) as q:
                titles(engine)
            q.assert_count(5)
            q.assert_max(5)
            assert q.count == 5 and len(q.statements) == 5
            assert sum(q.fingerprints.values()) == 5

        def test_too_many(perf_queries, engine):
            with perf_queries(engine) as q:
                titles(engine)
            q.assert_max(2)

        def test_wrong_count(perf_queries, engine):
            with perf_queries() as q:
                titles(engine)
            q.assert_count(1)
        """
    )
    result = _run(project)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected at most 2 SQL statements, 5 were executed (3 too many)",
            "*5 statements, 2 distinct:",
            "*1. ×1  SELECT authors.id, authors.name FROM authors ORDER BY authors.id",
            "*at conftest.py:*",
            f"*2. ×4  {LAZY_LOAD}",
            "*at conftest.py:*",
            "*AssertionError: expected exactly 1 SQL statement, 5 were executed",
        ]
    )


def test_n_plus_one_caught_and_fixed_with_selectinload(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_n_plus_one="""
        from sqlalchemy import select
        from sqlalchemy.orm import Session
        from conftest import Author, titles

        def test_lazy(perf_queries, engine):
            with perf_queries(engine) as q, Session(engine) as session:
                for author in session.scalars(select(Author)):
                    print(author.name, [book.title for book in author.books])
            q.assert_no_n_plus_one()

        def test_eager(perf_queries, engine):
            with perf_queries(engine) as q:
                found = titles(engine, eager=True)
            q.assert_no_n_plus_one()
            q.assert_count(2)
            assert found == ["b1", "b2", "b3", "b4"]

        def test_threshold(perf_queries, engine):
            with perf_queries(engine) as q:
                titles(engine)
            q.assert_no_n_plus_one(threshold=5)
        """
    )
    result = _run(project)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*N+1 queries: 1 statement(s) repeated from one call site (threshold 3):",
            "*×4 at test_n_plus_one.py:8",
            f"*{LAZY_LOAD}",
            "*selectinload*joinedload*raiseload*",
            "*5 statements, 2 distinct:",
        ]
    )


def test_marker_budget_counts_the_whole_body(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_budget="""
        import pytest
        from conftest import titles

        @pytest.mark.perf(queries=2)
        def test_eager_fits(engine):
            titles(engine, eager=True)

        @pytest.mark.perf(queries=2)
        def test_lazy_does_not(engine):
            titles(engine)

        @pytest.mark.perf(queries=7)
        def test_block_and_body(perf, perf_queries, engine):
            with perf_queries(engine) as q:
                titles(engine, eager=True)
            titles(engine)
            assert q.count == 2
        """
    )
    result = _run(project, "--perf", "--perf-baseline=b.json", "--perf-update")
    result.assert_outcomes(passed=2, failed=1)
    stored = json.loads((project.path / "b.json").read_text(encoding="utf-8"))
    text = json.dumps(stored)
    assert '"queries (test body)"' in text  # the body, next to the block's "queries"
    result.stdout.fnmatch_lines(
        [
            "*queries: queries 5 (budget ≤ 2)*",
            "*5 statements, 2 distinct:",
            f"*×4  {LAZY_LOAD}",
        ]
    )
    # without --perf the marked tests are skipped
    _run(project).assert_outcomes(skipped=3)


def test_baseline_records_fingerprints_and_diffs_a_regression(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(
        test_listing="""
        import pytest
        from conftest import titles

        @pytest.mark.perf
        def test_listing(perf_queries, engine):
            with perf_queries(engine, name="listing") as q:
                titles(engine)
        """
    )
    _run(project, "--perf", "--perf-update").assert_outcomes(passed=1)
    stored: Any = json.loads((project.path / "perf-baseline.json").read_text(encoding="utf-8"))
    text = json.dumps(stored)
    assert '"listing"' in text
    assert LAZY_LOAD in text

    _run(project, "--perf").assert_outcomes(passed=1)  # same count: ok

    monkeypatch.setenv("AUTHORS", "9")  # four more lazy loads
    result = _run(project, "--perf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*listing*regressed*",
            "*--- baseline (5 statements)",
            "*+++ this run (10 statements)",
            f"*-   4× {LAZY_LOAD}",
            f"*+   9× {LAZY_LOAD}",
            "*10 statements, 2 distinct:",
        ]
    )

    monkeypatch.setenv("AUTHORS", "2")  # fewer statements: an improvement, not a failure
    _run(project, "--perf").assert_outcomes(passed=1)


def test_pool_leak_fails_the_block(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_pool="""
        from sqlalchemy import create_engine, text

        def test_leak(perf_queries, tmp_path):
            engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
            with perf_queries(engine):
                conn = engine.connect()
                conn.execute(text("SELECT 1"))

        def test_closed(perf_queries, tmp_path):
            engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
            with perf_queries(engine) as q, engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            q.assert_count(1)
        """
    )
    result = _run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*connection pool: 1 connection(s) checked out inside the block were still checked*",
            "*pool QueuePool: size 5, checked in 0, checked out 1, overflow*",
            "*leaked: connection sqlite3.Connection 0x*",
            "*checked out at test_pool.py:6 by this block's thread (MainThread)*",
            "*test_pool.py:6 in test_leak",
            "*Leaked: close what you open*",
        ]
    )


def test_fixture_help_is_listed(project: pytest.Pytester) -> None:
    result = _run(project, "--fixtures")
    result.stdout.fnmatch_lines(["perf_queries*", "*SQL query budgets*"])
