"""Overhead of ``perf_queries`` recording on the cheapest SQL there is.

An in-memory SQLite SELECT of one row by primary key, through SQLAlchemy Core and through the
ORM, measured without recording, with ``perf_queries`` recording, and — for comparison — with
the plain ``before/after_cursor_execute`` listeners most query counters use. Variants are
interleaved round by round in one process so drift hits them alike; the best round counts.
Times are the measuring thread's CPU time (everything runs on it), so other processes competing
for the CPU do not blur the comparison.

    python benchmarks/query_overhead.py [--statements N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session

from pytest_bridgeperf.queries import QueryCapture


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    name = Column(String(50))


def core_loop(engine: Engine, n: int) -> float:
    statement = select(Item.__table__.c.id, Item.__table__.c.name).where(Item.__table__.c.id == 1)
    with engine.connect() as conn:
        start = time.thread_time()
        for _ in range(n):
            conn.execute(statement).fetchall()
        return time.thread_time() - start


def orm_loop(engine: Engine, n: int) -> float:
    statement = select(Item).where(Item.id == 1)
    with Session(engine) as session:
        start = time.thread_time()
        for _ in range(n):
            session.execute(statement).scalars().all()
        return time.thread_time() - start


def plain(loop: Callable[[Engine, int], float], engine: Engine, n: int) -> float:
    return loop(engine, n)


def recorded(loop: Callable[[Engine, int], float], engine: Engine, n: int) -> float:
    with QueryCapture(engine) as q:
        elapsed = loop(engine, n)
    assert q.count == n, (q.count, n)
    return elapsed


def cursor_events(loop: Callable[[Engine, int], float], engine: Engine, n: int) -> float:
    seen: list[tuple[str, float]] = []
    starts: dict[object, float] = {}

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        starts[cursor] = time.thread_time()

    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, time.thread_time() - starts.pop(cursor)))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        elapsed = loop(engine, n)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert len(seen) == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    n = args.statements

    # One engine per variant: SQLAlchemy keeps an engine's "has events" flag once set.
    engines: dict[str, Engine] = {}
    for name in ("plain", "perf_queries", "cursor events"):
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Item(id=1, name="one"))
            session.commit()
        engines[name] = engine
    variants = {"plain": plain, "perf_queries": recorded, "cursor events": cursor_events}

    loops = {"core": core_loop, "orm": orm_loop}

    # "plain" runs interleaved with the others; "plain (untouched)" runs before any capture ever
    # did, to show that a capture leaves nothing behind (SQLAlchemy's listener flags included).
    pristine: dict[str, float] = {}
    for label, loop in loops.items():
        loop(engines["plain"], min(n, 1000))
        pristine[label] = min(loop(engines["plain"], n) / n for _ in range(args.rounds))

    print(f"In-memory SQLite SELECT by primary key, {n} statements x {args.rounds} rounds")
    print(f"{'path':<6} {'variant':<19} {'µs/statement':>13} {'+µs':>6} {'vs plain':>9}")
    for label, loop in loops.items():
        best = {name: float("inf") for name in variants}
        for name, run in variants.items():  # warm-up: caches, compiled statements
            run(loop, engines[name], min(n, 1000))
        gc.collect()
        for _ in range(args.rounds):
            for name, run in variants.items():
                best[name] = min(best[name], run(loop, engines[name], n) / n)
        rows = {"plain (untouched)": pristine[label], **best}
        for name, value in rows.items():
            extra = (value - best["plain"]) * 1e6
            ratio = value / best["plain"]
            print(f"{label:<6} {name:<19} {value * 1e6:>13.2f} {extra:>+6.2f} {ratio:>8.3f}x")
    print("target: perf_queries <= 1.10x plain")


if __name__ == "__main__":
    main()
