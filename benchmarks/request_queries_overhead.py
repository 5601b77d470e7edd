"""What attributing SQL to requests costs per statement and per request.

    python benchmarks/request_queries_overhead.py [--rounds 15] [--statements 5000]

In-memory SQLite, a Core ``SELECT`` of one row by primary key (the cheapest statement: the
worst case for relative overhead), CPU time of this thread, best of interleaved rounds:

* plain — no capture;
* ``perf_queries`` — an ordinary capture block;
* request tap — ``RequestQueryTap`` active and the statements inside a request's context (what
  ``perf_load(app, queries=True)`` does), plus, per request of 5 statements, ``enter``/``leave``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from pytest_bridgeperf.queries.capture import QueryCapture
from pytest_bridgeperf.queries.perrequest import RequestQueryTap


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--statements", type=int, default=5000)
    args = parser.parse_args()
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(sa.text("create table t (id integer primary key, v text)"))
        conn.execute(sa.text("insert into t values (1, 'x')"))
    query = sa.text("select v from t where id = 1")
    n = args.statements

    def plain(conn: sa.Connection) -> float:
        start = time.thread_time()
        for _ in range(n):
            conn.execute(query).fetchall()
        return time.thread_time() - start

    def captured(conn: sa.Connection) -> float:
        with QueryCapture(engine, check_pool=False):
            return plain(conn)

    def tapped(conn: sa.Connection) -> float:
        with RequestQueryTap(engine) as tap:
            start = time.thread_time()
            for _ in range(n // 5):
                handle = tap.enter()
                for _ in range(5):
                    conn.execute(query).fetchall()
                tap.leave(handle, "GET /x")
            return time.thread_time() - start

    best = {"plain": 1e9, "perf_queries": 1e9, "request tap": 1e9}
    with engine.connect() as conn:
        plain(conn)
        for _ in range(args.rounds):
            for name, fn in (("plain", plain), ("perf_queries", captured), ("request tap", tapped)):
                best[name] = min(best[name], fn(conn))
    base = best["plain"] / n * 1e6
    for name, seconds in best.items():
        per = seconds / n * 1e6
        print(f"{name:<14} {per:6.2f} µs per statement  (+{per - base:.2f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
