"""The SQLAlchemy capture against real SQLite: counts, statement details, scoping, pool hygiene."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    ForeignKey,
    String,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from pytest_bridgeperf.metrics import Recorder
from pytest_bridgeperf.queries import QueryCapture
from pytest_bridgeperf.queries import capture as capture_module


class Base(DeclarativeBase):
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


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(
            Author(id=i, name=f"a{i}", books=[Book(title=f"b{i}.{j}") for j in range(2)])
            for i in range(1, 6)
        )
        session.commit()
    yield engine
    engine.dispose()


def _line_of(marker: str) -> int:
    source, start = inspect.getsourcelines(inspect.currentframe().f_back.f_code)  # type: ignore[union-attr]
    for offset, line in enumerate(source):
        if marker in line:
            return start + offset
    raise AssertionError(marker)


def test_counts_equal_sqlalchemy_cursor_events_and_sqlite_trace(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    traced: list[str] = []
    cursor_events: list[str] = []

    @event.listens_for(engine, "connect")
    def trace(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(traced.append)

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        cursor_events.append(statement)

    Base.metadata.create_all(engine)
    traced.clear()
    cursor_events.clear()
    with QueryCapture(engine, include_transactions=False) as q, Session(engine) as session:
        session.add_all(Author(id=i, name=f"a{i}") for i in range(1, 4))  # executemany
        session.flush()
        session.add_all(Book(title=f"t{i}", author_id=1) for i in range(3))  # insertmanyvalues
        session.flush()
        for author in session.scalars(select(Author)):  # 1 + 3 lazy loads
            _ = author.books
        session.execute(update(Author).where(Author.id == 1).values(name="x"))
        with session.begin_nested():  # SAVEPOINT / RELEASE
            session.execute(text("SELECT 1"))
        session.execute(delete(Book).where(Book.id > 100))
        session.commit()

    assert q.count == len([s for s in cursor_events if not s.startswith(("SAVEPOINT", "RELEASE"))])
    assert len(q.statements) + 2 == len(cursor_events)  # + SAVEPOINT, RELEASE
    # SQLite's own trace: every statement it ran, minus the BEGIN/COMMIT pysqlite adds itself;
    # executemany runs the statement once per parameter set.
    ran = [s for s in traced if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))]
    executemany_rows = sum(
        s.params // 2 - 1
        for s in q.statements
        if s.executemany and s.sql.startswith("INSERT INTO authors")
    )
    assert q.count + executemany_rows == len(ran)


def test_statement_details(engine: Engine) -> None:
    with QueryCapture(engine) as q, engine.begin() as conn:
        conn.execute(select(Author.name).where(Author.id.in_([1, 2, 3])))  # SITE-SELECT
        conn.execute(update(Author).where(Author.id < 3).values(name="z"))
        conn.execute(insert(Author), [{"id": 10, "name": "p"}, {"id": 11, "name": "q"}])
    first, second, third = q.statements
    here = __file__.replace(".pyc", ".py")
    assert first.fingerprint == "SELECT authors.name FROM authors WHERE authors.id IN (...)"
    assert first.params == 3
    assert first.call_site is not None
    assert first.call_site.endswith(f"{here.rsplit('/', 1)[-1]}:{_line_of('# SITE-SELECT')}")
    assert first.duration > 0
    assert not first.executemany
    assert second.rows == 2  # an UPDATE's rowcount is known
    assert (third.executemany, third.params, third.rows) == (True, 4, 2)
    assert q.fingerprints[first.fingerprint] == 1
    assert q.duration == pytest.approx(sum(s.duration for s in q.statements))


def test_transaction_control_excluded_unless_included(engine: Engine) -> None:
    def work() -> None:
        with Session(engine) as session:
            session.execute(select(Author.id))
            with session.begin_nested():
                session.execute(select(Book.id))
            session.commit()

    flags_before = (Engine.__dict__.get("_has_events"), Dialect.__dict__.get("_has_events"))
    with QueryCapture(engine) as default:
        work()
    with QueryCapture(engine, include_transactions=True) as included:
        work()
    # SQLAlchemy's "has listeners" flags are cleared again: statements after a capture (other
    # tests' timings) do not pay for the event dispatch
    assert (Engine.__dict__.get("_has_events"), Dialect.__dict__.get("_has_events")) == flags_before
    assert default.count == 2
    assert "transaction-control statement(s) not counted" in default.explain()
    assert list(included.fingerprints) == [
        "BEGIN",
        "SELECT authors.id FROM authors",
        "SAVEPOINT",
        "SELECT books.id FROM books",
        "RELEASE SAVEPOINT",
        "COMMIT",
    ]
    assert included.count == 6


def test_n_plus_one_caught_and_fixed_with_selectinload(engine: Engine) -> None:
    titles = []
    with QueryCapture(engine) as lazy, Session(engine) as session:
        for author in session.scalars(select(Author)):
            titles.extend(book.title for book in author.books)  # N+1
    with pytest.raises(AssertionError) as failure:
        lazy.assert_no_n_plus_one()
    message = str(failure.value)
    assert "×5 at " in message
    assert f":{_line_of('# N+1')}" in message
    assert (
        "SELECT books.id, books.title, books.author_id FROM books WHERE ? = books.author_id"
        in message
    )
    for remedy in ("selectinload", "joinedload", "raiseload"):
        assert remedy in message
    assert "6 statements, 2 distinct:" in message

    with QueryCapture(engine) as eager, Session(engine) as session:
        query = select(Author).options(selectinload(Author.books))
        fixed = [book.title for author in session.scalars(query) for book in author.books]
    eager.assert_no_n_plus_one()
    eager.assert_count(2)
    assert fixed == titles
    with pytest.raises(AssertionError, match=r"\(threshold 5\)"):
        lazy.assert_no_n_plus_one(threshold=5)
    lazy.assert_no_n_plus_one(threshold=6)  # five lazy loads: under a threshold of six


def test_assertion_messages_list_statements(engine: Engine) -> None:
    with QueryCapture(engine) as q, engine.connect() as conn:
        for i in range(3):
            conn.execute(select(Author.name).where(Author.id == i))
        conn.execute(select(Book.title))
    q.assert_count(4)
    q.assert_max(4)
    with pytest.raises(AssertionError) as exact:
        q.assert_count(2)
    assert str(exact.value).splitlines()[:3] == [
        "expected exactly 2 SQL statements, 4 were executed",
        "4 statements, 2 distinct:",
        "  1. ×3  SELECT authors.name FROM authors WHERE authors.id = ?",
    ]
    with pytest.raises(
        AssertionError, match=r"expected at most 3 SQL statements, 4 were executed \(1 too many\)"
    ):
        q.assert_max(3)
    with pytest.raises(ValueError, match="at least 2"):
        q.assert_no_n_plus_one(threshold=1)


def test_scoping_engines_nesting_and_threads(engine: Engine) -> None:
    other = create_engine("sqlite://")
    with QueryCapture() as everything, QueryCapture(engine) as only_engine:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            with QueryCapture(engine.execution_options(isolation_level="AUTOCOMMIT")) as inner:
                conn.execute(text("SELECT 2"))
        with other.connect() as conn:
            conn.execute(text("SELECT 3"))

        def in_thread() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 4"))

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
    assert [s.sql for s in everything.statements] == [
        "SELECT 1",
        "SELECT 2",
        "SELECT 3",
        "SELECT 4",
    ]
    assert [s.sql for s in only_engine.statements] == ["SELECT 1", "SELECT 2", "SELECT 4"]
    assert [s.sql for s in inner.statements] == ["SELECT 2"]
    # after the blocks: nothing recorded, no listener left behind
    with engine.connect() as conn:
        conn.execute(text("SELECT 5"))
    assert everything.count == 4
    assert not event.contains(Engine, "do_execute", capture_module._do_execute)
    assert capture_module._HUB.captures == ()


def raise_missing(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT * FROM missing"))


def test_failed_statement_is_counted_and_block_records_nothing(engine: Engine) -> None:
    recorder = Recorder()
    q = QueryCapture(engine, recorder=recorder)
    with q, engine.connect() as conn, pytest.raises(Exception, match="no such table"):
        conn.execute(text("SELECT * FROM missing"))
    q2 = QueryCapture(recorder=recorder)
    with pytest.raises(Exception, match="no such table"), q2:  # ends with an exception
        raise_missing(engine)
    assert q2.count == 1
    (statement,) = q.statements
    assert statement.failed
    assert list(recorder.metrics) == ["queries"]  # the first block ended normally
    assert "failed: 1" in q.explain()


def test_records_metric_with_fingerprints(engine: Engine) -> None:
    recorder = Recorder()
    for _ in range(2):
        with QueryCapture(engine, recorder=recorder), engine.connect() as conn:
            conn.execute(select(Author.id).where(Author.id == 1))
            conn.execute(select(Author.id).where(Author.id == 2))
    with QueryCapture(engine, recorder=recorder, name="listing"), engine.connect() as conn:
        conn.execute(select(Book.id))
    assert list(recorder.metrics) == ["queries", "queries-2", "listing"]
    metric = recorder.metrics["queries"]
    assert (metric.value, metric.unit, metric.role, metric.noisy) == (2, "count", "queries", False)
    assert metric.details["fingerprints"] == {
        "SELECT authors.id FROM authors WHERE authors.id = ?": 2
    }
    assert metric.details["explain"].startswith("2 statements, 1 distinct:")
    with (
        pytest.raises(ValueError, match="already recorded"),
        QueryCapture(recorder=recorder, name="listing"),
    ):
        pass


def test_pool_leak_detected_with_pool_status(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.sqlite'}", pool_size=3)
    held_before = engine.connect()  # checked out before the block: not the block's business
    block = QueryCapture(engine)
    block.__enter__()
    leaked = engine.connect()  # LEAK
    leaked.execute(text("SELECT 1"))
    with engine.connect() as fine:
        fine.execute(text("SELECT 2"))
    with pytest.raises(AssertionError) as failure:
        block.__exit__(None, None, None)
    message = str(failure.value)
    assert "1 connection(s) checked out inside the block were still checked out" in message
    assert "(1 leaked)" in message
    assert "pool QueuePool: size 3, checked in 1, checked out 2, overflow " in message
    connection_id = id(leaked.connection.dbapi_connection)
    assert f"leaked: connection sqlite3.Connection 0x{connection_id:x}" in message
    site = f"tests/test_queries_capture.py:{_line_of('# LEAK')}"
    assert f"checked out at {site} by this block's thread (MainThread)" in message
    assert f"{site} in test_pool_leak_detected_with_pool_status" in message
    assert "check_pool=False" in message
    leaked.close()

    with QueryCapture(engine, check_pool=False):
        leaked = engine.connect()
    leaked.close()
    with QueryCapture(engine), Session(engine) as session:  # returned inside the block: fine
        session.execute(text("SELECT 1"))
    held_before.close()


def test_misuse_is_reported() -> None:
    with pytest.raises(TypeError, match="takes SQLAlchemy engines"):
        QueryCapture("sqlite://")
    capture = QueryCapture()
    with capture:
        pass
    with pytest.raises(RuntimeError, match="only be entered once"), capture:
        pass
