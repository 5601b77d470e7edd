"""What the statement hooks rely on in SQLAlchemy, beyond its public event API.

If a SQLAlchemy release changes any of this, these tests fail first and say what moved; the
code that relies on it is ``pytest_bridgeperf/queries/dialect_hooks.py``.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import column, create_engine, event, insert, table, text
from sqlalchemy.engine import Engine
from sqlalchemy.engine.default import DefaultDialect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import OperationalError

from pytest_bridgeperf.queries import QueryCapture
from pytest_bridgeperf.queries import capture as capture_module
from pytest_bridgeperf.queries.dialect_hooks import HOOKED


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


def _hooked(engine: Engine) -> bool:
    return vars(engine.dialect).get("do_execute") is capture_module._hooked_do_execute


def test_sqlalchemy_runs_statements_the_way_the_hooks_assume() -> None:
    # the hooks replace DefaultDialect's methods with ones that do the same, timed
    for name, call in (
        ("do_execute", "cursor.execute(statement, parameters)"),
        ("do_execute_no_params", "cursor.execute(statement)"),
        ("do_executemany", "cursor.executemany(statement, parameters)"),
    ):
        body = textwrap.dedent(inspect.getsource(getattr(DefaultDialect, name)))
        assert body.strip().splitlines()[1:] == [f"    {call}"], body
    # and Connection calls them on the dialect, past the listeners, when its flag is off
    source = inspect.getsource(capture_module.Connection._exec_single_context)
    assert "if self.dialect._has_events:" in source
    assert "self.dialect.do_execute(" in source
    assert set(HOOKED) == {"do_execute", "do_execute_no_params", "do_executemany"}


def test_hooks_on_the_dialect_record_each_statement_once(engine: Engine) -> None:
    with QueryCapture(engine) as q, engine.begin() as conn:
        assert _hooked(engine)
        assert vars(engine.dialect)["_has_events"] is False
        for i in range(3):
            conn.execute(text("SELECT :x"), {"x": i})
        conn.execute(insert(table("t", column("x"))), [{"x": 1}, {"x": 2}])
        conn.exec_driver_sql("SELECT 1", execution_options={"no_parameters": True})
    assert [s.fingerprint for s in q.statements][:3] == ["SELECT ?"] * 3
    assert q.statements[-2].executemany
    assert q.statements[-2].parameter_sets == 2
    assert q.statements[-1].sql == "SELECT 1"
    # gone with the block, and SQLAlchemy back to its own methods
    assert not any(name in vars(engine.dialect) for name in (*HOOKED, "_has_events"))
    assert Dialect.__dict__.get("_has_events") in (None, False)


def test_another_dialect_listener_keeps_the_hooks_off(engine: Engine) -> None:
    errors: list[Any] = []

    def handle_error(context: Any) -> None:
        errors.append(context.original_exception)

    event.listen(engine, "handle_error", handle_error)
    try:
        with QueryCapture(engine) as q, engine.connect() as conn:
            assert not _hooked(engine)
            conn.execute(text("SELECT 1"))
            with pytest.raises(OperationalError):
                conn.execute(text("SELECT * FROM missing"))
    finally:
        event.remove(engine, "handle_error", handle_error)
    assert [s.sql for s in q.statements] == ["SELECT 1", "SELECT * FROM missing"]
    assert q.statements[1].failed
    assert len(errors) == 1  # the other listener still ran


def test_listener_added_while_hooked_does_not_double_count(engine: Engine) -> None:
    errors: list[Any] = []

    def handle_error(context: Any) -> None:
        errors.append(context.original_exception)

    with QueryCapture(engine) as q, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert _hooked(engine)
        event.listen(engine, "handle_error", handle_error)
        try:
            # SQLAlchemy turned the dialect's flag back on: its listeners run again, ours
            # hands the statement to the hook, which records it once
            assert vars(engine.dialect)["_has_events"] is True
            conn.execute(text("SELECT 2"))
            with pytest.raises(OperationalError):
                conn.execute(text("SELECT * FROM missing"))
        finally:
            event.remove(engine, "handle_error", handle_error)
    assert [s.sql for s in q.statements] == ["SELECT 1", "SELECT 2", "SELECT * FROM missing"]
    assert len(errors) == 1
    assert vars(engine.dialect).get("_has_events") is True  # SQLAlchemy's, left alone
    assert "do_execute" not in vars(engine.dialect)


def test_dialect_class_with_its_own_executemany_keeps_it(engine: Engine) -> None:
    calls: list[int] = []
    dialect_class = type(engine.dialect)

    class CountingDialect(dialect_class):  # type: ignore[valid-type, misc]
        def do_executemany(
            self, cursor: Any, statement: str, parameters: Any, context: Any = None
        ) -> None:
            calls.append(len(parameters))
            super().do_executemany(cursor, statement, parameters, context)

    engine.dialect.__class__ = CountingDialect
    try:
        with QueryCapture(engine) as q, engine.begin() as conn:
            assert _hooked(engine)
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    finally:
        engine.dialect.__class__ = dialect_class
    assert calls == [3]
    (statement,) = q.statements
    assert (statement.executemany, statement.parameter_sets) == (True, 3)
