"""Pool hygiene against real SQLAlchemy pools: the grace period, leaked vs in use, async engines.

No test sleeps to make a result come out: a thread or task that returns its connection "after
the block" waits for the block to start waiting (``PoolWatch.waiting``), and time bounds are
generous ones that only a wrong mechanism would exceed (say why where they appear).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from pytest_bridgeperf.queries import QueryCapture

# A grace period no correct run waits out: a wait that ends on a checkin takes milliseconds, so
# finishing in well under this proves the block was woken rather than timed out, even on a
# machine busy enough to stall a thread for seconds.
LONG_GRACE = 60.0
WOKEN_WITHIN = 30.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.db'}", pool_size=3)
    assert isinstance(engine.pool, QueuePool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


def _line(marker: str) -> str:
    source = Path(__file__).read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(source, 1) if marker in line and "_line(" not in line)
    return f"tests/test_queries_pool.py:{number}"


def _exit(block: QueryCapture) -> tuple[float, str | None]:
    """Leave ``block``; how long that took and the failure message, if any."""
    start = time.monotonic()
    try:
        block.__exit__(None, None, None)
    except AssertionError as failure:
        return time.monotonic() - start, str(failure)
    return time.monotonic() - start, None


def test_connection_returned_by_another_thread_after_the_block(engine: Engine) -> None:
    # A request handled on a server thread: the response is out (the test's client returns),
    # and the request-scoped session is closed a moment later.
    block = QueryCapture(engine, pool_grace=LONG_GRACE)
    block.__enter__()
    responded = threading.Event()

    def handle_request() -> None:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            responded.set()
            block._pool_watch.waiting.wait(timeout=LONG_GRACE)  # the block has ended
            session.execute(text("SELECT 2"))  # after the block: not counted

    server = threading.Thread(target=handle_request, name="request-1")
    server.start()
    assert responded.wait(timeout=LONG_GRACE)
    took, failure = _exit(block)
    server.join()
    assert failure is None
    assert took < WOKEN_WITHIN
    assert [s.sql for s in block.statements] == ["SELECT 1"]


def test_thread_still_running_is_in_use_not_leaked(engine: Engine) -> None:
    release = threading.Event()
    checked_out = threading.Event()

    def serve() -> None:
        with engine.connect() as conn:  # THREAD-CHECKOUT
            conn.execute(text("SELECT 1"))
            checked_out.set()
            release.wait(timeout=LONG_GRACE)

    block = QueryCapture(engine, pool_grace=0.2)
    block.__enter__()
    server = threading.Thread(target=serve, name="slow-request")
    server.start()
    try:
        assert checked_out.wait(timeout=LONG_GRACE)
        took, failure = _exit(block)
    finally:
        release.set()
        server.join()
    assert failure is not None
    assert took >= 0.2  # it did wait its grace period for the thread
    assert "(1 in use; waited 0.2" in failure
    assert "in use: connection sqlite3.Connection 0x" in failure
    assert (
        f"checked out at {_line('# THREAD-CHECKOUT')} on thread 'slow-request', still running "
        "the code that checked it out"
    ) in failure
    assert f"{_line('# THREAD-CHECKOUT')} in serve" in failure
    assert "the block ended while work it started was still running" in failure
    assert "pool_grace=SECONDS" in failure
    assert "Leaked:" not in failure


def test_leak_on_the_block_thread_fails_without_waiting(engine: Engine) -> None:
    block = QueryCapture(engine, pool_grace=LONG_GRACE)
    block.__enter__()
    leaked = _open_and_forget(engine)
    took, failure = _exit(block)
    assert failure is not None
    assert took < WOKEN_WITHIN  # nothing else could return it: no grace period
    connection_id = f"0x{id(leaked.connection.dbapi_connection):x}"
    assert f"leaked: connection sqlite3.Connection {connection_id}, inside an open transaction" in (
        failure
    )
    assert "pool QueuePool: size 3, checked in 0, checked out 1" in failure
    assert f"({engine.url})" in failure
    # the call site, then the user frames that led there
    assert f"checked out at {_line('# OPEN-AND-FORGET')} by this block's thread" in failure
    stack = [line.strip() for line in failure.splitlines() if " in " in line and ".py:" in line]
    assert stack[:2] == [
        f"{_line('# OPEN-AND-FORGET')} in _open_and_forget",
        f"{_line('leaked = _open_and_forget(engine)')} in "
        "test_leak_on_the_block_thread_fails_without_waiting",
    ]
    assert "Leaked: close what you open" in failure
    leaked.close()


def _open_and_forget(engine: Engine) -> Connection:
    conn = engine.connect()  # OPEN-AND-FORGET
    conn.execute(text("INSERT INTO t VALUES (1)"))  # the driver now reports a transaction
    return conn


def test_finished_thread_that_kept_its_connection_is_a_leak(engine: Engine) -> None:
    kept: list[Connection] = []

    def job() -> None:
        conn = engine.connect()  # JOB-CHECKOUT
        conn.execute(text("SELECT 1"))
        kept.append(conn)

    block = QueryCapture(engine, pool_grace=LONG_GRACE)
    block.__enter__()
    worker = threading.Thread(target=job, name="job")
    worker.start()
    worker.join()
    took, failure = _exit(block)
    assert failure is not None
    assert took < WOKEN_WITHIN  # a finished thread returns nothing: no waiting for it
    assert f"checked out at {_line('# JOB-CHECKOUT')} on thread 'job', which finished" in failure
    assert "leaked: connection" in failure
    kept[0].close()


def test_idle_pool_worker_that_kept_its_connection_is_a_leak(engine: Engine) -> None:
    kept: list[Connection] = []

    def handler() -> None:
        conn = engine.connect()  # HANDLER-CHECKOUT
        conn.execute(text("SELECT 1"))
        kept.append(conn)

    with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
        pool.submit(lambda: None).result()  # the worker thread exists and stays alive
        block = QueryCapture(engine, pool_grace=0.2)
        block.__enter__()
        pool.submit(handler).result()
        took, failure = _exit(block)
    assert failure is not None
    assert took >= 0.2  # an alive thread might still return it: the block waited
    assert "leaked: connection" in failure
    assert f"checked out at {_line('# HANDLER-CHECKOUT')} on thread 'worker_0', which is " in (
        failure
    )
    assert "no longer runs the code that checked it out" in failure
    kept[0].close()


def test_pool_grace_is_validated() -> None:
    with pytest.raises(ValueError, match=r"perf_queries\(pool_grace='soon'\)"):
        QueryCapture(pool_grace="soon")
    assert QueryCapture(pool_grace="250ms").pool_grace == pytest.approx(0.25)


# -- async engines ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def async_engine(tmp_path: Path) -> Any:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}", pool_size=3)
    async with engine.connect():  # the first connect (dialect initialisation) outside blocks
        pass
    yield engine
    await engine.dispose()


@pytest.mark.asyncio
async def test_async_with_waits_for_a_task_of_its_own_loop(async_engine: Any) -> None:
    block = QueryCapture(async_engine, pool_grace=LONG_GRACE)
    started = asyncio.Event()

    async def request() -> None:
        async with async_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            started.set()
            while not block._pool_watch.waiting.is_set():  # until the block's end waits
                await asyncio.sleep(0)

    start = time.monotonic()
    async with block:
        task = asyncio.create_task(request(), name="request-7")
        await started.wait()
    took = time.monotonic() - start
    await task
    assert took < WOKEN_WITHIN
    assert block.count == 1


@pytest.mark.asyncio
async def test_plain_with_cannot_wait_for_its_own_loop(async_engine: Any) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def request() -> None:
        async with async_engine.connect() as conn:  # TASK-CHECKOUT
            await conn.execute(text("SELECT 1"))
            started.set()
            await release.wait()

    block = QueryCapture(async_engine, pool_grace=LONG_GRACE)
    block.__enter__()
    task = asyncio.create_task(request(), name="request-8")
    await started.wait()
    took, failure = _exit(block)
    release.set()
    await task
    assert failure is not None
    assert took < WOKEN_WITHIN  # waiting would freeze the loop the task needs: no waiting
    assert "in use: connection aiosqlite.Connection 0x" in failure
    assert f"checked out at {_line('# TASK-CHECKOUT')} by task 'request-8', which had not" in (
        failure
    )
    assert "use `async with perf_queries(...)`" in failure


@pytest.mark.asyncio
async def test_async_leak_names_the_test_line(async_engine: Any) -> None:
    block = QueryCapture(async_engine)
    block.__enter__()
    conn: AsyncConnection = await async_engine.connect()  # ASYNC-LEAK
    await conn.execute(text("SELECT 1"))
    _, failure = _exit(block)
    await conn.close()
    assert failure is not None
    assert "leaked: connection aiosqlite.Connection 0x" in failure
    assert f"checked out at {_line('# ASYNC-LEAK')} by this block's task" in failure
    assert "AsyncAdaptedQueuePool: size 3, checked in 0, checked out 1" in failure
