"""Overhead of ``perf_queries`` recording on the cheapest SQL there is.

In-memory SQLite through SQLAlchemy: ``SELECT 1`` through Core (the headline), a SELECT of one
row by primary key through Core and through the ORM, and a Core ``SELECT 1`` on a connection
checked out of the pool for each statement (the pool check's share). Each is measured without
recording, with ``perf_queries`` recording, and — for comparison — with the plain
``before/after_cursor_execute`` listeners most query counters use. For ``SELECT 1`` the
recording is also taken apart (``--breakdown``, on by default): SQLAlchemy's listener dispatch
alone, a direct dialect hook that only runs the statement, the same with the two clock reads,
and ``perf_queries`` forced onto the listener path.

Rounds interleave the variants (in a rotating order) so drift and other processes hit them
alike; each round's ratio is taken against that round's plain run. Times are the measuring
thread's CPU time (everything runs on it), so time stolen by other processes does not count —
but a busy machine still slows Python code down through shared caches, so the load average is
printed with the figures.

    python benchmarks/query_overhead.py [--statements N] [--rounds R] [--no-breakdown]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy
from sqlalchemy import Column, Integer, String, create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.orm import DeclarativeBase, Session

from pytest_bridgeperf.queries import QueryCapture
from pytest_bridgeperf.queries.dialect_hooks import clear_events_flag

TARGET = 1.10


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    name = Column(String(50))


# -- workloads: run n statements, return the thread CPU seconds they took --------------------------

SELECT_1 = text("SELECT 1")


def select_1(engine: Engine, n: int) -> float:
    with engine.connect() as conn:
        start = time.thread_time()
        for _ in range(n):
            conn.execute(SELECT_1).scalar()
        return time.thread_time() - start


def core_by_pk(engine: Engine, n: int) -> float:
    statement = select(Item.__table__.c.id, Item.__table__.c.name).where(Item.__table__.c.id == 1)
    with engine.connect() as conn:
        start = time.thread_time()
        for _ in range(n):
            conn.execute(statement).fetchall()
        return time.thread_time() - start


def orm_by_pk(engine: Engine, n: int) -> float:
    statement = select(Item).where(Item.id == 1)
    with Session(engine) as session:
        start = time.thread_time()
        for _ in range(n):
            session.execute(statement).scalars().all()
        return time.thread_time() - start


def connect_each(engine: Engine, n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        with engine.connect() as conn:
            conn.execute(SELECT_1).scalar()
    return time.thread_time() - start


WORKLOADS: dict[str, tuple[str, Callable[[Engine, int], float]]] = {
    "select1": ("Core conn.execute(text('SELECT 1')).scalar()", select_1),
    "core": ("Core conn.execute(select(...) by pk).fetchall()", core_by_pk),
    "orm": ("ORM session.execute(select(Model) by pk).scalars().all()", orm_by_pk),
    "connect": ("with engine.connect(): SELECT 1 (a pool checkout each)", connect_each),
}


# -- variants: a context manager set up around one measurement -------------------------------------


@contextmanager
def plain(engine: Engine, n: int) -> Iterator[None]:
    yield


@contextmanager
def perf_queries(engine: Engine, n: int) -> Iterator[None]:
    with QueryCapture(engine) as q:
        yield
    assert q.count == n, (q.count, n)


@contextmanager
def perf_queries_via_listeners(engine: Engine, n: int) -> Iterator[None]:
    # another DialectEvents listener on the engine keeps the direct hooks off its dialect
    def handle_error(context: Any) -> None:
        pass

    event.listen(engine, "handle_error", handle_error)
    try:
        with QueryCapture(engine) as q:
            yield
        assert "do_execute" not in vars(engine.dialect)
        assert q.count == n, (q.count, n)
    finally:
        event.remove(engine, "handle_error", handle_error)


@contextmanager
def cursor_events(engine: Engine, n: int) -> Iterator[None]:
    seen: list[tuple[str, float]] = []
    starts: dict[object, float] = {}

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        starts[cursor] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((statement, time.perf_counter() - starts.pop(cursor)))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert len(seen) == n


@contextmanager
def listener_only(engine: Engine, n: int) -> Iterator[None]:
    """SQLAlchemy's DialectEvents dispatch to a listener that only runs the statement."""

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        context.dialect.do_execute(cursor, statement, parameters, context)
        return True

    before = Dialect.__dict__.get("_has_events")
    event.listen(engine, "do_execute", do_execute)
    try:
        yield
    finally:
        event.remove(engine, "do_execute", do_execute)
        del engine.dialect.__dict__["_has_events"]  # set on the instance by the listener
        clear_events_flag(Dialect, before)


def _direct_hook(timed: bool) -> Callable[[Engine, int], Any]:
    @contextmanager
    def variant(engine: Engine, n: int) -> Iterator[None]:
        perf_counter = time.perf_counter

        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
            if timed:
                start = perf_counter()
                cursor.execute(statement, parameters)
                perf_counter() - start
            else:
                cursor.execute(statement, parameters)

        engine.dialect.__dict__["do_execute"] = do_execute
        try:
            yield
        finally:
            del engine.dialect.__dict__["do_execute"]

    return variant


VARIANTS: dict[str, Callable[[Engine, int], Any]] = {
    "plain": plain,
    "perf_queries": perf_queries,
    "cursor events": cursor_events,
}
BREAKDOWN: dict[str, Callable[[Engine, int], Any]] = {
    "listener only": listener_only,
    "direct hook only": _direct_hook(timed=False),
    "direct hook + clock": _direct_hook(timed=True),
    "perf_queries via listeners": perf_queries_via_listeners,
}


def _engine() -> Engine:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Item(id=1, name="one"))
        session.commit()
    return engine


def measure(
    workload: Callable[[Engine, int], float],
    variants: dict[str, Callable[[Engine, int], Any]],
    n: int,
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds per statement of each variant, one value per round, rounds interleaved."""
    engines = {name: _engine() for name in variants}  # one each: no state shared between them
    names = list(variants)
    for name in names:  # warm-up: caches, compiled statements, the first connect
        with variants[name](engines[name], min(n, 500)):
            workload(engines[name], min(n, 500))
    results: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:  # rotate: no variant always runs first
            gc.collect()
            with variants[name](engines[name], n):
                elapsed = workload(engines[name], n)
            results[name].append(elapsed / n)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--statements", type=int, default=3000, help="per measurement")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--workloads", default="select1,core,orm,connect")
    parser.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    args = parser.parse_args()
    n, rounds = args.statements, args.rounds

    load_before = os.getloadavg()
    print(
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}"
    )
    print(f"in-memory SQLite, {n} statements per measurement, {rounds} interleaved rounds;")
    print("ratio: each round's variant / the same round's plain, median [min–max]")
    headline: list[float] = []
    for key in args.workloads.split(","):
        label, workload = WORKLOADS[key]
        variants = dict(VARIANTS)
        if key == "select1" and args.breakdown:
            variants.update(BREAKDOWN)
        results = measure(workload, variants, n, rounds)
        base = results["plain"]
        base_median = statistics.median(base)
        print(f"\n{label}")
        print(f"  {'variant':<28} {'µs/statement':>12} {'+µs':>7}   ratio (median [min–max])")
        for name, values in results.items():
            ratios = [v / b for v, b in zip(values, base, strict=False)]
            median = statistics.median(values)
            print(
                f"  {name:<28} {median * 1e6:>12.2f} {(median - base_median) * 1e6:>+7.2f}   "
                f"{statistics.median(ratios):.3f} [{min(ratios):.3f}–{max(ratios):.3f}]"
            )
            if key == "select1" and name == "perf_queries":
                headline = ratios
    # A finished capture must leave nothing behind that later statements pay for (they would
    # make other tests' timings depend on test order)
    probe = _engine()
    with QueryCapture(probe), probe.connect() as conn:
        conn.execute(SELECT_1).scalar()
    left = [
        name
        for name, flagged in (
            ("Dialect._has_events", Dialect.__dict__.get("_has_events")),
            ("Engine._has_events", Engine.__dict__.get("_has_events")),
            ("dialect hooks", any(k in vars(probe.dialect) for k in ("do_execute", "_has_events"))),
        )
        if flagged
    ]
    print(f"\nafter the captures, left behind: {', '.join(left) or 'nothing'}")
    load_after = os.getloadavg()
    print(f"\nload average at the end {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if headline:
        verdict = "met" if statistics.median(headline) <= TARGET else "NOT met"
        print(
            f"target perf_queries <= {TARGET:.2f}x plain on SELECT 1 (median of rounds): "
            f"{verdict} ({statistics.median(headline):.3f}x)"
        )


if __name__ == "__main__":
    main()
