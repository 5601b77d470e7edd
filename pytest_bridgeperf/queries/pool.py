"""Connection-pool hygiene: connections a block checked out and had not returned when it ended.

Pure Python (no SQLAlchemy import): :mod:`.capture` feeds the pool's checkout and checkin
events in. At the block's end a connection still checked out by work that may yet return it —
another thread that is still alive, another asyncio task that has not finished — gets a short
grace period: the block waits on the checkin events (woken by each one, re-checking every
:data:`POLL` seconds whether the holders are still running) until nothing it can wait for is
left or the deadline passes. An application commonly closes its request-scoped session just
after the response is sent, a moment after the test's client call returned.

What is left is either **in use** (the thread or task that checked it out is still running the
code that did) or **leaked** (that code finished — the block's own code, a finished task or
thread, an idle pool worker — and kept the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from . import sites

__all__ = ["DEFAULT_POOL_GRACE", "Checkout", "PoolWatch", "pool_status"]

#: Seconds a block waits at its end for connections that other threads or tasks still hold.
DEFAULT_POOL_GRACE = 1.0
#: How often the wait re-checks whether the holders are still running; a checkin wakes it at
#: once. A holder that ends without returning its connection costs at most this much waiting.
POLL = 0.05

IN_USE, LEAKED = "in use", "leaked"


def pool_status(pool: Any) -> str:
    """``QueuePool: size 5, checked in 4, checked out 1, overflow -4`` (what the pool knows)."""
    parts = []
    for label, method in (
        ("size", "size"),
        ("checked in", "checkedin"),
        ("checked out", "checkedout"),
        ("overflow", "overflow"),
    ):
        function = getattr(pool, method, None)
        if callable(function):
            try:
                parts.append(f"{label} {function()}")
            except Exception:  # a pool class without that notion
                continue
    if not parts:
        return str(pool.status())
    return f"{type(pool).__name__}: " + ", ".join(parts)


def current_task() -> asyncio.Task[Any] | None:
    """The asyncio task running this code, if an event loop runs in this thread."""
    # asyncio.current_task() raises without a running loop, which costs ~1 µs on every
    # checkout of a synchronous application; _get_running_loop (in asyncio.events.__all__)
    # answers None instead
    loop = asyncio._get_running_loop()
    if loop is None:
        return None
    return asyncio.current_task(loop)


@dataclass(slots=True)
class Checkout:
    """One connection checked out inside a block, and who checked it out."""

    pool: Any
    connection: Any  # the DBAPI connection
    stack: tuple[sites.RawSite, ...]  # from the call site outwards; [0] is the call site
    thread: threading.Thread
    task: asyncio.Task[Any] | None

    @property
    def site(self) -> str:
        return (sites.display(self.stack[0]) if self.stack else None) or "<unknown call site>"

    def running(self) -> bool:
        """Whether the thread that checked it out still runs any frame of the checkout stack."""
        if not self.thread.is_alive() or self.thread.ident is None:
            return False
        top = sys._current_frames().get(self.thread.ident)
        return sites.frames_contain(top, (code for code, _ in self.stack))


def _ours(
    checkout: Checkout,
    thread: threading.Thread,
    task: asyncio.Task[Any] | None,
) -> bool:
    """Checked out by the code that runs the block itself (its thread, its task)."""
    if checkout.task is not None:
        return checkout.task is task
    return checkout.thread is thread


def _waitable(
    checkout: Checkout,
    thread: threading.Thread,
    task: asyncio.Task[Any] | None,
    loop_runs: bool,
) -> bool:
    """Whether someone still running may return it while the block waits.

    ``loop_runs``: the waiting code lets this thread's event loop run (``async with``); a
    blocking wait would freeze the loop, and with it every task of the loop.
    """
    if _ours(checkout, thread, task):
        return False
    if checkout.task is not None:
        if checkout.task.done():
            return False
        if checkout.thread is thread:  # a task of the loop this thread runs
            return loop_runs
        return True
    return checkout.thread.is_alive()


def _driver(connection: Any) -> Any:
    # SQLAlchemy's asyncio adapters wrap the driver's connection
    return getattr(connection, "driver_connection", None) or connection


def _connection_label(connection: Any) -> str:
    driver = _driver(connection)
    label = f"{type(driver).__module__.split('.')[0]}.{type(driver).__name__} 0x{id(driver):x}"
    readers: tuple[Callable[[], object], ...] = (
        lambda: driver.info.backend_pid,  # psycopg 3
        lambda: driver.get_server_pid(),  # asyncpg
        lambda: driver.get_backend_pid(),  # psycopg2
    )
    for read in readers:
        try:
            pid = read()
        except Exception:
            continue
        if isinstance(pid, int):
            return f"{label}, server process {pid}"
    return label


def _in_transaction(connection: Any) -> bool | None:
    """What the driver says about an open transaction (None: it does not say)."""
    driver = _driver(connection)
    try:
        status = driver.info.transaction_status  # psycopg 3: IDLE 0, ACTIVE 1, INTRANS 2, INERROR 3
        return int(status) in (2, 3)
    except Exception:
        pass
    for name in ("is_in_transaction", "in_transaction"):  # asyncpg; sqlite3 and aiosqlite
        try:
            value = getattr(driver, name)
            value = value() if callable(value) else value
        except Exception:
            continue
        if isinstance(value, bool):
            return value
    return None


class PoolWatch:
    """The connections one block checked out and has not seen returned."""

    def __init__(self, label: Callable[[Any], str] | None = None) -> None:
        #: the connections out: pool record → who checked it out. The pool's listeners add and
        #: remove entries directly (single dictionary operations, atomic in CPython): checkouts
        #: and checkins are frequent, and locking there measured ~1 µs each on a busy machine.
        self.out: dict[Any, Checkout] = {}
        #: whether the block's end is waiting: only then does a checkin call :meth:`wake`
        self.settling = False
        self._changed = threading.Condition(threading.Lock())
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._label = label
        #: set when the block starts waiting for connections (tests use it to return one then)
        self.waiting = threading.Event()
        self.waited = 0.0

    def wake(self) -> None:
        """A connection came back while the block's end waits: re-check."""
        with self._changed:
            self._changed.notify_all()
            wakers, self._wakers = self._wakers, []
        for loop, future in wakers:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there
                loop.call_soon_threadsafe(_wake, future)

    def __bool__(self) -> bool:
        return bool(self.out)

    def pending(self) -> list[Checkout]:
        return list(self.out.values())

    # -- the end of the block ---------------------------------------------------------------

    def settle(self, grace: float) -> list[Checkout]:
        """Wait (blocking) up to ``grace`` seconds for connections that others may return."""
        thread, task = threading.current_thread(), current_task()
        start = monotonic()
        deadline = start + grace
        with self._changed:
            # a checkin that misses this flag was before the check below, which sees it; the
            # POLL timeout bounds any other race
            self.settling = True
            self.waiting.set()
            while True:
                if not any(_waitable(c, thread, task, False) for c in self.pending()):
                    break
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(min(remaining, POLL))
            self.waited = monotonic() - start
            return self.pending()

    async def asettle(self, grace: float) -> list[Checkout]:
        """:meth:`settle` for ``async with``: the event loop keeps running while it waits."""
        thread, task = threading.current_thread(), current_task()
        loop = asyncio.get_running_loop()
        start = monotonic()
        deadline = start + grace
        self.settling = True
        self.waiting.set()
        while True:
            with self._changed:
                if not any(_waitable(c, thread, task, True) for c in self.pending()):
                    break
                remaining = deadline - monotonic()
                if remaining <= 0:
                    break
                future: asyncio.Future[None] = loop.create_future()
                self._wakers.append((loop, future))
            await asyncio.wait([future], timeout=min(remaining, POLL))
        self.waited = monotonic() - start
        return self.pending()

    def message(self, left: Iterable[Checkout], *, asynchronous: bool) -> str:
        """Why each connection in ``left`` is still checked out, grouped by pool."""
        thread, task = threading.current_thread(), current_task()
        left = list(left)
        verdicts = {id(c): _verdict(c, thread, task) for c in left}
        counts = Counter(verdict for verdict, _ in verdicts.values())
        summary = ", ".join(f"{counts[v]} {v}" for v in (LEAKED, IN_USE) if counts[v])
        waited = f"; waited {self.waited:.2f} s for them" if self.waited >= 0.01 else ""
        lines = [
            f"connection pool: {len(left)} connection(s) checked out inside the block were "
            f"still checked out when it ended ({summary}{waited})"
        ]
        by_pool: dict[int, list[Checkout]] = {}
        for checkout in left:
            by_pool.setdefault(id(checkout.pool), []).append(checkout)
        for checkouts in by_pool.values():
            first = checkouts[0]
            label = self._label(first.pool) if self._label is not None else ""
            where = f" ({label})" if label else ""
            lines.append(f"  pool {pool_status(first.pool)}{where}")
            for checkout in checkouts:
                verdict, why = verdicts[id(checkout)]
                transaction = (
                    ", inside an open transaction" if _in_transaction(checkout.connection) else ""
                )
                connection = _connection_label(checkout.connection)
                lines.append(f"    {verdict}: connection {connection}{transaction}")
                lines.append(f"      checked out at {checkout.site} {why}")
                for frame in sites.display_stack(checkout.stack):
                    lines.append(f"        {frame}")
        if counts[LEAKED]:
            lines.append(
                "Leaked: close what you open (`with Session(engine) as session:`, "
                "`with engine.connect() as conn:`, close or consume results); pass "
                "check_pool=False if the connection is meant to outlive the block (a "
                "fixture's session)."
            )
        if counts[IN_USE]:
            advice = (
                "In use: the block ended while work it started was still running, so that "
                "work's statements after the block are not counted either. Wait for it inside "
                "the block (join the thread, await the task, let the server finish its "
                "in-flight requests), give it longer with pool_grace=SECONDS, or pass "
                "check_pool=False."
            )
            if not asynchronous and any(
                c.task is not None and c.thread is thread and not c.task.done() for c in left
            ):
                advice += (
                    " A plain `with` block cannot wait for tasks of its own event loop: use "
                    "`async with perf_queries(...)`."
                )
            lines.append(advice)
        return "\n".join(lines)


def _verdict(
    checkout: Checkout, thread: threading.Thread, task: asyncio.Task[Any] | None
) -> tuple[str, str]:
    if _ours(checkout, thread, task):
        holder = f"task {task.get_name()!r}" if task is not None else "thread"
        return LEAKED, f"by this block's {holder} ({thread.name}), which left the block holding it"
    other = checkout.task
    if other is not None:
        if not other.done():
            return IN_USE, f"by task {other.get_name()!r}, which had not finished"
        return LEAKED, f"by task {other.get_name()!r}, which finished and kept it"
    name = checkout.thread.name
    if not checkout.thread.is_alive():
        return LEAKED, f"on thread {name!r}, which finished and kept it"
    if checkout.running():
        return IN_USE, f"on thread {name!r}, still running the code that checked it out"
    return (
        LEAKED,
        f"on thread {name!r}, which is alive but no longer runs the code that checked it out "
        "(a pool worker between requests, say): that code finished and kept it",
    )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
