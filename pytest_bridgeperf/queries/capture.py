"""Recording the SQL that SQLAlchemy sends, at the DBAPI cursor.

One process-wide hub owns the SQLAlchemy listeners and fans every statement out to the active
captures (nested blocks, blocks in threads); listeners exist only while a capture is active.

Why dialect-level ``do_execute`` hooks rather than ``before/after_cursor_execute``: both sit at
the DBAPI cursor call and see the same statements, but routing ``ConnectionEvents`` through
SQLAlchemy's joined dispatchers costs 3–4 µs per statement — about 30 % of the cheapest SQLite
SELECT — while a ``DialectEvents`` hook costs well under 1 µs. Wrapping the real call also times
it exactly and counts statements that fail. The test suite checks that both give the same count.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from types import CodeType, TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect, ExecuteStyle
from sqlalchemy.pool import Pool

from ..metrics import Recorder
from ..stats import LatencyHistogram
from ..units import UnitError, parse_duration
from . import dialect_hooks, sites
from .fingerprint import fingerprint, is_transaction_control, query_type
from .pool import DEFAULT_POOL_GRACE, Checkout, PoolWatch, current_task, pool_status
from .statements import (
    NPlusOne,
    Statement,
    describe_n_plus_one,
    find_n_plus_one,
    format_statements,
)

__all__ = [
    "DEFAULT_N_PLUS_ONE_THRESHOLD",
    "DEFAULT_POOL_GRACE",
    "PerfQueries",
    "QueryCapture",
    "pool_status",
    "statements_of",
]

#: ``assert_no_n_plus_one()`` fails when one line issues the same statement this many times.
DEFAULT_N_PLUS_ONE_THRESHOLD = 3

_INSERTMANYVALUES = ExecuteStyle.INSERTMANYVALUES

# What the hooks record: every statement adds seven items to its capture's list,
#   sql, parameter values, duration s, driver rowcount, flags, site code, site offset
# flat rather than as one tuple per statement: the tuples outlive the statement, and allocating
# fresh memory for them measured ~0.1 µs per statement on a busy machine. ``flags`` is the
# "batched" bool (an insertmanyvalues batch), or for the rarer executemany calls, failed
# statements and transaction events a tuple (batched, parameter sets, failed). The call site is
# the code object and instruction offset of the first user frame (None, 0 when there is none);
# :mod:`.sites` turns it into ``path:line`` only when someone reads it.
_FIELDS = 7
_Raw = tuple[Any, ...]
_Extend = Callable[[_Raw], None]


# ---------------------------------------------------------------------------------------------
# the hub: SQLAlchemy listeners shared by every active capture


class _Hub:
    """Who receives what. Statements go to the *recording* captures; pool events go to every
    capture still registered, including those waiting at their end for connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.captures: tuple[QueryCapture, ...] = ()  # replaced, never mutated: lock-free reads
        self._flags_before: dict[type, object] = {}
        self._hooked: list[Any] = []  # dialects given the statement hooks (dialect_hooks)
        self._tried: set[int] = set()  # ids of the dialects tried, while any capture is active

    def add(self, capture: QueryCapture) -> None:
        with self._lock:
            before = self.captures
            self.captures = (*before, capture)
            sites.configure({m for c in self.captures for m in c.library_modules})
            self._update(before, self.captures)
            self._route()
            for dialect in capture._dialects or ():
                self._hook(dialect)

    def stop_recording(self, capture: QueryCapture) -> None:
        with self._lock:
            capture._recording = False
            self._route()

    def remove(self, capture: QueryCapture) -> None:
        with self._lock:
            capture._recording = False
            before = self.captures
            self.captures = tuple(c for c in before if c is not capture)
            self._route()
            if not self.captures:
                for dialect in self._hooked:
                    dialect_hooks.uninstall(dialect, _DIALECT_HOOKS)
                self._hooked.clear()
                self._tried.clear()
            self._update(before, self.captures)

    def hook(self, dialect: Any) -> bool:
        """Give ``dialect`` the direct statement hooks if it can have them (once per dialect)."""
        if id(dialect) in self._tried:  # the listeners ask on every statement of such a dialect
            return False
        with self._lock:
            return self._hook(dialect) if self.captures else False

    def _hook(self, dialect: Any) -> bool:
        if id(dialect) in self._tried:
            return vars(dialect).get("do_execute") is _hooked_do_execute
        self._tried.add(id(dialect))
        if dialect_hooks.install(dialect, _DIALECT_HOOKS, _OUR_LISTENERS):
            self._hooked.append(dialect)
            return True
        return False

    def _route(self) -> None:
        """Rebuild :data:`_ROUTES` for the recording captures (under the lock)."""
        recording = [c for c in self.captures if c._recording]
        if len(recording) == 1:
            # the usual case, one block at a time: the hooks extend its list directly
            (only,) = recording
            _ROUTES[0] = (only._raw, only._dialects, {}, ())
            return
        everywhere = tuple(c._raw.extend for c in recording if c._dialects is None)
        scoped: dict[Any, tuple[_Extend, ...]] = {}
        for capture in recording:
            for dialect in capture._dialects or ():
                scoped[dialect] = (*scoped.get(dialect, everywhere), capture._raw.extend)
        _ROUTES[0] = (None, None, scoped, everywhere)

    def _update(self, before: Sequence[QueryCapture], after: Sequence[QueryCapture]) -> None:
        def wants(captures: Sequence[QueryCapture], what: str) -> bool:
            if what == "execute":
                return bool(captures)
            if what == "pool":
                return any(c.check_pool for c in captures)
            return any(c.include_transactions for c in captures)

        for what, listeners in _LISTENERS.items():
            had, has = wants(before, what), wants(after, what)
            if has and not had:
                for flagged in _FLAGGED[what]:
                    self._flags_before.setdefault(flagged, flagged.__dict__.get("_has_events"))
                for target, name, fn, kwargs in listeners:
                    event.listen(target, name, fn, **kwargs)
            elif had and not has:
                for target, name, fn, _ in listeners:
                    event.remove(target, name, fn)
                for flagged in _FLAGGED[what]:
                    dialect_hooks.clear_events_flag(flagged, self._flags_before.get(flagged))


_HUB = _Hub()

#: ``_ROUTES[0]``: where the hooks put a statement. With one recording capture (the usual case):
#: ``(its list, the dialects it is scoped to or None, {}, ())``, so a statement costs one
#: list extension; otherwise ``(None, None, dialect → extenders of the captures scoped to it
#: or to every engine, extenders of the captures recording every engine)``. Rebuilt whenever a
#: capture starts or stops. Routing through a dictionary and a loop of bound methods measured
#: ~1,000 CPU instructions per statement more than the single list.
_ROUTES: list[
    tuple[
        list[Any] | None, frozenset[Any] | None, dict[Any, tuple[_Extend, ...]], tuple[_Extend, ...]
    ]
] = [(None, None, {}, ())]

# The statement hooks read these on every statement (see sites.RECENT for the call-site guess).
_getframe = sys._getframe
_RECENT = sites.RECENT
_slow_site = sites.call_site


def capturing() -> bool:
    """Whether a capture (a ``perf_queries`` block, a marker's body count) is active."""
    return bool(_HUB.captures)


def _deliver(entry: _Raw, dialect: Any) -> None:
    raw, dialects, routes, everywhere = _ROUTES[0]
    if raw is not None:
        if dialects is None or dialect in dialects:
            raw += entry
        return
    for extend in routes.get(dialect, everywhere):
        extend(entry)


def _site_at(levels: int) -> sites.RawSite | None:
    """The call site of the statement hook ``levels`` frames above the caller (0: the caller)."""
    for depth, code, offset in _RECENT[0]:
        try:
            frame = _getframe(depth + levels + 1)
        except ValueError:  # a shallower stack than that site's
            continue
        if frame.f_code is code and frame.f_lasti == offset:
            return code, offset
    return _slow_site(levels + 1, learn=True)


def _rowcount(cursor: Any) -> int:
    try:
        rows = cursor.rowcount
    except Exception:
        return -1
    return rows if isinstance(rows, int) else -1


def _failed(
    statement: str, params: int, sets: int, context: Any, start: float, batched: bool
) -> None:
    if context is not None and not context.root_connection._allow_autobegin:
        return
    site = sites.call_site(2)
    code, offset = site if site is not None else (None, 0)
    duration = perf_counter() - start
    entry = (statement, params, duration, -1, (batched, sets, True), code, offset)
    _deliver(entry, None if context is None else context.dialect)


# -- the direct hooks: SQLAlchemy calls them as the dialect's methods (dialect_hooks.install) ----
# They run for every statement while a capture is active: keep them flat. Each attribute
# lookup, call and stored item is a measurable part of the ~0.5 µs they add; the README's
# "Cost" section has the breakdown, benchmarks/query_overhead.py measures it.
# ``context.root_connection._allow_autobegin`` is False only for the connection SQLAlchemy uses
# to initialise a dialect on an engine's first connect; those statements happen in whichever
# test connects first, so counting them would make counts depend on test order.


def _hooked_do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
    start = perf_counter()
    try:
        cursor.execute(statement, parameters)  # what DefaultDialect.do_execute does
    except BaseException:
        _failed(statement, len(parameters) if parameters else 0, 1, context, start, False)
        raise
    duration = perf_counter() - start
    if context is None:
        dialect = None
        batched = False
    elif context.root_connection._allow_autobegin:
        dialect = context.dialect
        batched = context.execute_style is _INSERTMANYVALUES
    else:
        return
    try:
        rows = cursor.rowcount
    except Exception:
        rows = -1
    # the call site, inlined (a function call costs as much as the check): is this statement
    # coming from one of the last few lines that sent one?
    code: CodeType | None
    for depth, code, offset in _RECENT[0]:
        try:
            frame = _getframe(depth)
        except ValueError:  # a shallower stack than that site's
            continue
        if frame.f_code is code and frame.f_lasti == offset:
            break
    else:
        site = _slow_site(0, learn=True)
        code, offset = site if site is not None else (None, 0)
    entry = (
        statement,
        len(parameters) if parameters else 0,
        duration,
        rows,
        batched,
        code,
        offset,
    )
    raw, dialects, routes, everywhere = _ROUTES[0]
    if raw is not None:
        if dialects is None or dialect in dialects:
            raw += entry
        return
    for extend in routes.get(dialect, everywhere):
        extend(entry)


def _hooked_do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> None:
    start = perf_counter()
    try:
        if context is None:
            cursor.execute(statement)
        else:  # the dialect class's own method: it may differ from SQLAlchemy's default
            type(context.dialect).do_execute_no_params(context.dialect, cursor, statement, context)
    except BaseException:
        _failed(statement, 0, 1, context, start, False)
        raise
    duration = perf_counter() - start
    if context is not None and not context.root_connection._allow_autobegin:
        return
    site = _site_at(0)
    code, offset = site if site is not None else (None, 0)
    entry = (statement, 0, duration, _rowcount(cursor), False, code, offset)
    _deliver(entry, None if context is None else context.dialect)


def _hooked_do_executemany(
    cursor: Any, statement: str, parameters: Any, context: Any = None
) -> None:
    start = perf_counter()
    count = sum(len(p) for p in parameters) if parameters else 0
    sets = len(parameters) if parameters else 0
    try:
        if context is None:
            cursor.executemany(statement, parameters)
        else:  # psycopg2, mysqlclient, pyodbc and cx_Oracle have their own
            dialect = context.dialect
            type(dialect).do_executemany(dialect, cursor, statement, parameters, context)
    except BaseException:
        _failed(statement, count, sets, context, start, True)
        raise
    duration = perf_counter() - start
    if context is not None and not context.root_connection._allow_autobegin:
        return
    site = _site_at(0)
    code, offset = site if site is not None else (None, 0)
    entry = (statement, count, duration, _rowcount(cursor), (True, sets, False), code, offset)
    _deliver(entry, None if context is None else context.dialect)


_DIALECT_HOOKS: dict[str, Callable[..., None]] = {
    "do_execute": _hooked_do_execute,
    "do_execute_no_params": _hooked_do_execute_no_params,
    "do_executemany": _hooked_do_executemany,
}


# -- the event listeners: the dialects without direct hooks, and finding the dialects -----------
# A capture of every engine cannot know the dialects in advance: the first statement of each
# arrives here, gives its dialect the direct hooks where it can, and later ones go there.


def _recorded(
    run: Callable[..., Any],
    args: tuple[Any, ...],
    context: Any,
    params: int,
    flags: Any,
) -> None:
    """Run a dialect method for a listener below, recording the statement."""
    statement = args[1]
    start = perf_counter()
    try:
        run(*args)
    except BaseException:
        batched, sets = (flags[0], flags[1]) if isinstance(flags, tuple) else (flags, 1)
        _failed(statement, params, sets, context, start, batched)
        raise
    duration = perf_counter() - start
    if not context.root_connection._allow_autobegin:
        return
    site = _site_at(2)  # our caller's caller is the listener SQLAlchemy called
    code, offset = site if site is not None else (None, 0)
    entry = (statement, params, duration, _rowcount(args[0]), flags, code, offset)
    _deliver(entry, context.dialect)


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if context is None:  # not from SQLAlchemy 2's execution path: let it run unrecorded
        return False
    dialect = context.dialect
    run = dialect.do_execute
    if run is _hooked_do_execute or _HUB.hook(dialect):
        # hooked meanwhile (by another thread, or now): the direct hook records it
        _hooked_do_execute(cursor, statement, parameters, context)
        return True
    params = len(parameters) if parameters else 0
    batched = context.execute_style is _INSERTMANYVALUES
    _recorded(run, (cursor, statement, parameters, context), context, params, batched)
    return True  # the statement ran: SQLAlchemy must not run it again


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    if context is None:  # not from SQLAlchemy 2's execution path: let it run unrecorded
        return False
    dialect = context.dialect
    run = dialect.do_execute_no_params
    if run is _hooked_do_execute_no_params or _HUB.hook(dialect):
        _hooked_do_execute_no_params(cursor, statement, context)
        return True
    _recorded(run, (cursor, statement, context), context, 0, False)
    return True


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if context is None:  # not from SQLAlchemy 2's execution path: let it run unrecorded
        return False
    dialect = context.dialect
    run = dialect.do_executemany
    if run is _hooked_do_executemany or _HUB.hook(dialect):
        _hooked_do_executemany(cursor, statement, parameters, context)
        return True
    count = sum(len(p) for p in parameters) if parameters else 0
    sets = len(parameters) if parameters else 0
    _recorded(run, (cursor, statement, parameters, context), context, count, (True, sets, False))
    return True


def _transaction_event(sql: str) -> Any:
    def on_event(conn: Connection, *args: Any) -> None:
        if not conn._allow_autobegin:
            return
        site = sites.call_site(1)
        code, offset = site if site is not None else (None, 0)
        entry: _Raw = (sql, 0, 0.0, -1, (False, 1, False), code, offset)
        dialect = conn.dialect
        for capture in _HUB.captures:
            if (
                capture._recording
                and capture.include_transactions
                and (capture._dialects is None or dialect in capture._dialects)
            ):
                capture._raw.extend(entry)

    on_event.__name__ = f"bridgeperf_{sql.lower()}"
    return on_event


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    pool = getattr(proxy, "_pool", None)
    checkout: Checkout | None = None  # who checked it out: worked out only if a capture wants it
    for capture in _HUB.captures:
        if capture.check_pool and (capture._pools is None or pool in capture._pools):
            if checkout is None:
                checkout = Checkout(
                    pool,
                    dbapi_connection,
                    sites.short_stack(1),
                    threading.current_thread(),
                    current_task(),
                )
            capture._pool_watch.out[record] = checkout


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    for capture in _HUB.captures:
        watch = capture._pool_watch
        if watch.out.pop(record, None) is not None and watch.settling:
            watch.wake()


# Classes whose ``_has_events`` flag SQLAlchemy sets when our listeners of that kind are added.
_FLAGGED: dict[str, tuple[type, ...]] = {
    "execute": (Dialect,),
    "pool": (),
    "transactions": (Engine,),
}

_LISTENERS: dict[str, list[tuple[Any, str, Any, dict[str, Any]]]] = {
    "execute": [
        (Engine, "do_execute", _do_execute, {}),
        (Engine, "do_execute_no_params", _do_execute_no_params, {}),
        (Engine, "do_executemany", _do_executemany, {}),
    ],
    "pool": [
        (Pool, "checkout", _on_checkout, {}),
        (Pool, "checkin", _on_checkin, {}),
        (Pool, "detach", _on_checkin, {}),
    ],
    "transactions": [
        (Engine, "begin", _transaction_event("BEGIN"), {}),
        (Engine, "commit", _transaction_event("COMMIT"), {}),
        (Engine, "rollback", _transaction_event("ROLLBACK"), {}),
    ],
}
#: Our dialect-event listeners: they do not stop a dialect from getting the direct hooks.
_OUR_LISTENERS = frozenset(fn for _, _, fn, _ in _LISTENERS["execute"])


# ---------------------------------------------------------------------------------------------
# captures


def _as_engine(target: Any) -> Engine:
    if isinstance(target, Engine):
        return target
    if isinstance(target, Connection):
        return target.engine
    sync_engine = getattr(target, "sync_engine", None)  # AsyncEngine, AsyncConnection
    if isinstance(sync_engine, Engine):
        return sync_engine
    bind = getattr(target, "bind", None)  # Session / AsyncSession bound to one engine
    if bind is not None and bind is not target:
        return _as_engine(bind)
    raise TypeError(
        f"perf_queries() takes SQLAlchemy engines (Engine, AsyncEngine, Connection), "
        f"got {type(target).__name__}"
    )


def statements_of(entries: Iterable[_Raw]) -> list[Statement]:
    """Statements from hook entries kept one tuple per statement (a sink's, see
    :mod:`.perrequest`); a capture's own flat list is read by :meth:`QueryCapture.statements`."""
    return [_statement(*entry) for entry in entries]


def _statement(
    sql: str, params: Any, duration: float, rows: Any, flags: Any, code: Any, offset: int
) -> Statement:
    batched, sets, failed = flags if isinstance(flags, tuple) else (flags, 1, False)
    fp = fingerprint(sql)
    return Statement(
        sql=sql,
        fingerprint=fp,
        params=params,
        parameter_sets=sets,
        duration=duration,
        rows=rows if isinstance(rows, int) and rows >= 0 else None,
        executemany=batched,
        call_site=None if code is None else sites.display((code, offset)),
        transaction_control=is_transaction_control(fp),
        failed=failed,
    )


class QueryCapture:
    """The SQL statements issued while a ``with`` block runs.

    ``with perf_queries(engine) as q:`` — or ``QueryCapture(engine)`` outside pytest. No engine
    means every SQLAlchemy engine in the process; an ``AsyncEngine`` works too. Blocks nest and
    record statements from every thread.
    """

    def __init__(
        self,
        *engines: Any,
        recorder: Recorder | None = None,
        name: str | None = None,
        include_transactions: bool = False,
        check_pool: bool = True,
        pool_grace: float | str = DEFAULT_POOL_GRACE,
        library_modules: Sequence[str] = (),
        _body: bool = False,
        sink: list[Any] | None = None,
    ) -> None:
        resolved = tuple(_as_engine(engine) for engine in engines)
        self._engines: tuple[Engine, ...] | None = resolved or None
        self._dialects = frozenset(e.dialect for e in resolved) if resolved else None
        self._pools = frozenset(e.pool for e in resolved) if resolved else None
        self.recorder = recorder
        self.name = name
        self.include_transactions = include_transactions
        self.check_pool = check_pool
        try:
            self.pool_grace = parse_duration(pool_grace)
        except UnitError as exc:
            raise ValueError(f"perf_queries(pool_grace={pool_grace!r}): {exc}") from None
        if isinstance(library_modules, str):
            library_modules = library_modules.split()
        self.library_modules = tuple(sites.validate_module_name(m) for m in library_modules)
        self._body = _body
        # where the hooks put each statement (_FIELDS items each); a sink of its own
        # (perrequest.py's) may route them elsewhere — to the request being served — instead
        self._raw: list[Any] = sink if sink is not None else []
        self._materialised: list[Statement] = []
        self._consumed = 0
        self._recording = False
        self._pool_watch = PoolWatch(self._engine_label)
        self._state = "new"
        self.metric_name: str | None = None

    def _engine_label(self, pool: Any) -> str:
        for engine in self._engines or ():
            if engine.pool is pool:
                return engine.url.render_as_string(hide_password=True)
        return ""

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> QueryCapture:
        if self._state != "new":
            raise RuntimeError("a query capture can only be entered once; make a new one")
        self._state = "active"
        self._recording = True
        _HUB.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        # Statements stop counting at the block's end, even those of work it left running:
        # counts must not depend on how fast that work is. Pool events keep coming while the
        # block waits for connections to be returned.
        _HUB.stop_recording(self)
        left: list[Checkout] = []
        try:
            if exc_type is None and self.check_pool and self._pool_watch:
                left = self._pool_watch.settle(self.pool_grace)
        finally:
            _HUB.remove(self)
            self._state = "done"
        self._finish(exc_type, left, asynchronous=False)

    async def __aenter__(self) -> QueryCapture:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        _HUB.stop_recording(self)
        left: list[Checkout] = []
        try:
            if exc_type is None and self.check_pool and self._pool_watch:
                left = await self._pool_watch.asettle(self.pool_grace)
        finally:
            _HUB.remove(self)
            self._state = "done"
        self._finish(exc_type, left, asynchronous=True)

    def _finish(
        self, exc_type: type[BaseException] | None, left: list[Checkout], *, asynchronous: bool
    ) -> None:
        __tracebackhide__ = True
        if exc_type is not None:
            return
        if self.recorder is not None:
            self._record(self.recorder)
        if left:
            message = self._pool_watch.message(left, asynchronous=asynchronous)
            raise AssertionError(f"{message}\n{self.explain()}")

    # -- results --------------------------------------------------------------------------

    def _all(self) -> list[Statement]:
        raw = self._raw
        end = len(raw)  # a multiple of _FIELDS: each statement's items are added in one go
        if self._consumed < end:
            materialised = self._materialised
            for start in range(self._consumed, end, _FIELDS):
                materialised.append(_statement(*raw[start : start + _FIELDS]))
            self._consumed = end
        return self._materialised

    @property
    def statements(self) -> list[Statement]:
        """Every statement so far, in order (transaction control only if included)."""
        if self.include_transactions:
            return list(self._all())
        return [s for s in self._all() if not s.transaction_control]

    @property
    def count(self) -> int:
        """How many statements reached the database (round trips)."""
        return len(self.statements)

    @property
    def fingerprints(self) -> Counter[str]:
        """The multiset of statement fingerprints."""
        return Counter(s.fingerprint for s in self.statements)

    @property
    def duration(self) -> float:
        """Seconds spent in the DBAPI calls, summed."""
        return sum(s.duration for s in self.statements)

    def explain(self) -> str:
        """The numbered statement listing used in every failure message."""
        listing = format_statements(self.statements)
        if not self.include_transactions:
            excluded = sum(1 for s in self._all() if s.transaction_control)
            if excluded:
                listing += (
                    f"\n  ({excluded} transaction-control statement(s) not counted; "
                    "include_transactions=True counts them)"
                )
        return listing

    def n_plus_one(self, threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD) -> list[NPlusOne]:
        return find_n_plus_one(self.statements, threshold)

    # -- assertions -----------------------------------------------------------------------

    def assert_count(self, expected: int) -> None:
        """Exactly ``expected`` statements."""
        __tracebackhide__ = True  # pytest: the failure is the caller's line
        count = self.count
        if count != expected:
            raise AssertionError(
                f"expected exactly {expected} SQL {_noun(expected)}, "
                f"{count} {'was' if count == 1 else 'were'} executed\n{self.explain()}"
            )

    def assert_max(self, limit: int) -> None:
        """At most ``limit`` statements."""
        __tracebackhide__ = True  # pytest: the failure is the caller's line
        count = self.count
        if count > limit:
            raise AssertionError(
                f"expected at most {limit} SQL {_noun(limit)}, {count} were executed "
                f"({count - limit} too many)\n{self.explain()}"
            )

    def assert_no_n_plus_one(self, threshold: int = DEFAULT_N_PLUS_ONE_THRESHOLD) -> None:
        """No line of user code issues the same statement ``threshold`` or more times."""
        __tracebackhide__ = True  # pytest: the failure is the caller's line
        if threshold < 2:
            raise ValueError(f"threshold must be at least 2, got {threshold}")
        findings = self.n_plus_one(threshold)
        if findings:
            raise AssertionError(f"{describe_n_plus_one(findings, threshold)}\n{self.explain()}")

    # -- recording ------------------------------------------------------------------------

    def _metric_name(self, recorder: Recorder) -> str:
        if self.name is not None:
            return self.name
        if "queries" not in recorder.metrics:
            return "queries"
        if self._body:
            return "queries (test body)"
        number = 2
        while f"queries-{number}" in recorder.metrics:
            number += 1
        return f"queries-{number}"

    def _record(self, recorder: Recorder) -> None:
        name = self._metric_name(recorder)
        fingerprints = self.fingerprints
        durations: dict[str, LatencyHistogram] = {}
        for statement in self.statements:
            durations.setdefault(query_type(statement.fingerprint), LatencyHistogram()).record(
                statement.duration
            )
        recorder.record(
            name,
            self.count,
            unit="count",
            role="queries",
            noisy=False,
            details={
                "fingerprints": {fp: fingerprints[fp] for fp in sorted(fingerprints)},
                "explain": self.explain(),
                # per statement type, for reports (bridge_db_query_duration_seconds); not stored
                # in the baseline, where only the deterministic count and shapes belong
                "_durations": {kind: hist.encode() for kind, hist in sorted(durations.items())},
            },
        )
        self.metric_name = name

    def __repr__(self) -> str:
        scope = "all engines" if self._engines is None else f"{len(self._engines)} engine(s)"
        return f"<QueryCapture {self._state}, {scope}: {self.count} statement(s)>"


def _noun(count: int) -> str:
    return "statement" if count == 1 else "statements"


class PerfQueries:
    """The ``perf_queries`` fixture: ``with perf_queries(*engines, **options) as q:``.

    ``library_modules``: the user's own modules (ini ``perf_library_modules``) whose frames are
    skipped like SQLAlchemy's when looking for a statement's call site.
    """

    def __init__(
        self, recorder: Recorder | None = None, *, library_modules: Sequence[str] = ()
    ) -> None:
        self.recorder = recorder
        self.library_modules = tuple(library_modules)

    def __call__(
        self,
        *engines: Any,
        name: str | None = None,
        include_transactions: bool = False,
        check_pool: bool = True,
        pool_grace: float | str = DEFAULT_POOL_GRACE,
    ) -> QueryCapture:
        """Capture the statements of ``engines`` (default: every engine) inside a ``with`` block.

        The block records a ``queries`` metric (or ``name``) compared with the baseline;
        ``include_transactions`` also counts BEGIN/COMMIT/ROLLBACK/SAVEPOINT; ``check_pool``
        fails the block when a connection checked out inside it is still checked out at exit,
        after waiting up to ``pool_grace`` (seconds or ``"500ms"``) for other threads and tasks
        that still hold one to return it.
        """
        return QueryCapture(
            *engines,
            recorder=self.recorder,
            name=name,
            include_transactions=include_transactions,
            check_pool=check_pool,
            pool_grace=pool_grace,
            library_modules=self.library_modules,
        )

    def __repr__(self) -> str:
        return "<perf_queries>"
