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

import importlib.util
import os
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from time import perf_counter
from types import CodeType, FrameType, TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import Dialect, ExecuteStyle
from sqlalchemy.pool import Pool

from ..metrics import Recorder
from ..stats import LatencyHistogram
from .fingerprint import fingerprint, is_transaction_control, query_type
from .statements import (
    NPlusOne,
    Statement,
    describe_n_plus_one,
    find_n_plus_one,
    format_statements,
)

__all__ = [
    "DEFAULT_N_PLUS_ONE_THRESHOLD",
    "PerfQueries",
    "QueryCapture",
    "pool_status",
    "statements_of",
]

#: ``assert_no_n_plus_one()`` fails when one line issues the same statement this many times.
DEFAULT_N_PLUS_ONE_THRESHOLD = 3

_INSERTMANYVALUES = ExecuteStyle.INSERTMANYVALUES

# (sql, parameter values, parameter sets, duration s, driver rowcount, batched, site, failed)
_Raw = tuple[str, int, int, float, int, bool, "_RawSite | None", bool]


# ---------------------------------------------------------------------------------------------
# call sites


def _library_prefixes() -> tuple[str, ...]:
    """Directories and files whose frames are not "user code"."""
    prefixes: list[str] = []
    for name in (
        "sqlalchemy",
        "asyncio",
        "_pytest",
        "pytest",
        "pluggy",
        "pytest_asyncio",
        "greenlet",
        "concurrent",
        "pytest_bridgeperf",
    ):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        for location in spec.submodule_search_locations or ():
            prefixes.append(os.path.join(os.path.realpath(location), ""))
            prefixes.append(os.path.join(location, ""))
        if spec.origin and not spec.submodule_search_locations:
            prefixes.append(spec.origin)
    for module in ("contextlib", "threading", "functools"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            prefixes.append(spec.origin)
    prefixes.append("<")  # <frozen importlib._bootstrap>, SQLAlchemy's generated <string> code
    return tuple(dict.fromkeys(prefixes))


_LIBRARY_PREFIXES = _library_prefixes()
_is_library_file: dict[str, bool] = {}
_getframe = sys._getframe
# Depth (from _call_site) of the first user frame last time; most statements come through the
# same path, so checking that guess costs two frames instead of walking all of SQLAlchemy's.
_depth_guess = 0

# A call site as captured on the hot path: the code object and the byte offset of the
# instruction; the line number is only worked out when someone reads it.
_RawSite = tuple[CodeType, int]


def _library(filename: str) -> bool:
    library = _is_library_file.get(filename)
    if library is None:
        library = _is_library_file[filename] = filename.startswith(_LIBRARY_PREFIXES)
    return library


def _call_site() -> _RawSite | None:
    """The first frame of user code calling into the database (called by the hooks)."""
    global _depth_guess
    guess = _depth_guess
    if guess:
        # the hot path: two dictionary lookups, inlined (a call costs as much as the lookup)
        try:
            below = _getframe(guess - 1)
        except ValueError:
            below = None
        if below is not None and _is_library_file.get(below.f_code.co_filename):
            guessed = below.f_back
            if guessed is not None:
                code = guessed.f_code
                if _is_library_file.get(code.co_filename) is False:
                    return code, guessed.f_lasti
    frame: FrameType | None = _getframe(2)
    depth = 2
    while frame is not None:
        code = frame.f_code
        if not _library(code.co_filename):
            _depth_guess = depth
            return code, frame.f_lasti
        frame = frame.f_back
        depth += 1
    # An AsyncEngine runs the DBAPI call in a greenlet whose own stack ends in SQLAlchemy; the
    # awaiting coroutine is suspended in a parent greenlet.
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None
    parent = greenlet.getcurrent().parent
    while parent is not None:
        suspended: FrameType | None = parent.gr_frame
        while suspended is not None:
            code = suspended.f_code
            if not _library(code.co_filename):
                return code, suspended.f_lasti
            suspended = suspended.f_back
        parent = parent.parent
    return None


_display_paths: dict[str, str] = {}
_lines: dict[_RawSite, int] = {}


def _line(site: _RawSite) -> int:
    line = _lines.get(site)
    if line is None:
        code, offset = site
        line = code.co_firstlineno
        for start, end, number in code.co_lines():
            if start <= offset < end:
                line = number if number is not None else line
                break
        _lines[site] = line
    return line


def _display(site: _RawSite | None) -> str | None:
    if site is None:
        return None
    filename = site[0].co_filename
    shown = _display_paths.get(filename)
    if shown is None:
        shown = filename
        try:
            relative = os.path.relpath(filename)
        except ValueError:  # another drive on Windows
            relative = filename
        if not relative.startswith(".."):
            shown = relative
        _display_paths[filename] = shown
    return f"{shown}:{_line(site)}"


# ---------------------------------------------------------------------------------------------
# the hub: SQLAlchemy listeners shared by every active capture


class _Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.captures: tuple[QueryCapture, ...] = ()  # replaced, never mutated: lock-free reads
        self._flags_before: dict[type, object] = {}

    def add(self, capture: QueryCapture) -> None:
        with self._lock:
            before = self.captures
            self.captures = (*before, capture)
            self._update(before, self.captures)

    def remove(self, capture: QueryCapture) -> None:
        with self._lock:
            before = self.captures
            self.captures = tuple(c for c in before if c is not capture)
            self._update(before, self.captures)

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
                    _clear_events_flag(flagged, self._flags_before.get(flagged))


def _clear_events_flag(cls: type, before: object) -> None:
    """Undo the ``_has_events`` class flag SQLAlchemy sets on the first listener.

    SQLAlchemy never clears it, so after one capture every later statement of every engine would
    still walk (empty) listener collections: for connection events that costs 3–4 µs per
    statement, which would make the timings of tests that run after a capture depend on test
    order. The flag is cleared only if it was clear before the first capture and no class-level
    listener of that kind (ours or anyone's) is left.
    """
    if before not in (None, False) or cls.__dict__.get("_has_events") is not True:
        return
    try:
        dispatch: Any = cls.dispatch  # type: ignore[attr-defined]
        for name in dispatch._event_names:
            if any(getattr(dispatch, name)._clslevel.values()):
                return
    except (AttributeError, TypeError):  # another SQLAlchemy: leave its flag alone
        return
    type.__setattr__(cls, "_has_events", False)


_HUB = _Hub()


def capturing() -> bool:
    """Whether a capture (a ``perf_queries`` block, a marker's body count) is active."""
    return bool(_HUB.captures)


def _deliver(entry: _Raw, dialect: Any) -> None:
    for capture in _HUB.captures:
        dialects = capture._dialects
        if dialects is None or dialect in dialects:
            capture._raw.append(entry)


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
    entry = (statement, params, sets, perf_counter() - start, -1, batched, _call_site(), True)
    _deliver(entry, None if context is None else context.dialect)


# The three hooks below run for every statement while a capture is active: keep them flat.
# ``context.root_connection._allow_autobegin`` is False only for the connection SQLAlchemy uses
# to initialise a dialect on an engine's first connect; those statements happen in whichever
# test connects first, so counting them would make counts depend on test order.


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    start = perf_counter()
    try:
        if context is None:
            cursor.execute(statement, parameters)
        else:
            context.dialect.do_execute(cursor, statement, parameters, context)
    except BaseException:
        _failed(statement, len(parameters) if parameters else 0, 1, context, start, False)
        raise
    duration = perf_counter() - start
    if context is None:
        dialect = None
        batched = False
    else:
        if not context.root_connection._allow_autobegin:
            return True
        dialect = context.dialect
        batched = context.execute_style is _INSERTMANYVALUES
    try:
        rows = cursor.rowcount
    except Exception:
        rows = -1
    entry = (
        statement,
        len(parameters) if parameters else 0,
        1,
        duration,
        rows,
        batched,
        _call_site(),
        False,
    )
    for capture in _HUB.captures:
        dialects = capture._dialects
        if dialects is None or dialect in dialects:
            capture._raw.append(entry)
    return True  # the statement ran: SQLAlchemy must not run it again


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    start = perf_counter()
    try:
        if context is None:
            cursor.execute(statement)
        else:
            context.dialect.do_execute_no_params(cursor, statement, context)
    except BaseException:
        _failed(statement, 0, 1, context, start, False)
        raise
    duration = perf_counter() - start
    if context is not None and not context.root_connection._allow_autobegin:
        return True
    entry = (statement, 0, 1, duration, _rowcount(cursor), False, _call_site(), False)
    _deliver(entry, None if context is None else context.dialect)
    return True


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    start = perf_counter()
    count = sum(len(p) for p in parameters) if parameters else 0
    try:
        if context is None:
            cursor.executemany(statement, parameters)
        else:
            context.dialect.do_executemany(cursor, statement, parameters, context)
    except BaseException:
        _failed(statement, count, len(parameters) if parameters else 0, context, start, True)
        raise
    duration = perf_counter() - start
    if context is not None and not context.root_connection._allow_autobegin:
        return True
    sets = len(parameters) if parameters else 0
    entry = (statement, count, sets, duration, _rowcount(cursor), True, _call_site(), False)
    _deliver(entry, None if context is None else context.dialect)
    return True


def _transaction_event(sql: str) -> Any:
    def on_event(conn: Connection, *args: Any) -> None:
        if not conn._allow_autobegin:
            return
        entry: _Raw = (sql, 0, 1, 0.0, -1, False, _call_site(), False)
        dialect = conn.dialect
        for capture in _HUB.captures:
            if capture.include_transactions and (
                capture._dialects is None or dialect in capture._dialects
            ):
                capture._raw.append(entry)

    on_event.__name__ = f"bridgeperf_{sql.lower()}"
    return on_event


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    pool = getattr(proxy, "_pool", None)
    site: _RawSite | None = None
    looked = False  # the call site is only worked out when some capture wants it
    for capture in _HUB.captures:
        if capture.check_pool and (
            capture._engines is None or any(engine.pool is pool for engine in capture._engines)
        ):
            if not looked:
                site, looked = _call_site(), True
            capture._checked_out[record] = (pool, site)


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    for capture in _HUB.captures:
        if capture._checked_out:
            capture._checked_out.pop(record, None)


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
            except Exception:  # pragma: no cover - a pool class without that notion
                continue
    if not parts:
        return str(pool.status())
    return f"{type(pool).__name__}: " + ", ".join(parts)


def statements_of(raw: Sequence[Any]) -> list[Statement]:
    """Statements from the entries the hooks recorded (a capture's, or a sink's)."""
    out = []
    for sql, params, sets, duration, rows, batched, site, failed in raw:
        fp = fingerprint(sql)
        out.append(
            Statement(
                sql=sql,
                fingerprint=fp,
                params=params,
                parameter_sets=sets,
                duration=duration,
                rows=rows if isinstance(rows, int) and rows >= 0 else None,
                executemany=batched,
                call_site=_display(site),
                transaction_control=is_transaction_control(fp),
                failed=failed,
            )
        )
    return out


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
        _body: bool = False,
        sink: list[Any] | None = None,
    ) -> None:
        resolved = tuple(_as_engine(engine) for engine in engines)
        self._engines: tuple[Engine, ...] | None = resolved or None
        self._dialects = frozenset(e.dialect for e in resolved) if resolved else None
        self.recorder = recorder
        self.name = name
        self.include_transactions = include_transactions
        self.check_pool = check_pool
        self._body = _body
        # where the hooks put each statement; a sink of its own (perrequest.py's) may route them
        # elsewhere — to the request being served — instead of keeping them
        self._raw: list[_Raw] = sink if sink is not None else []
        self._materialised: list[Statement] = []
        self._consumed = 0
        self._checked_out: dict[Any, tuple[Any, _RawSite | None]] = {}
        self._state = "new"
        self.metric_name: str | None = None

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> QueryCapture:
        if self._state != "new":
            raise RuntimeError("a query capture can only be entered once; make a new one")
        self._state = "active"
        _HUB.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        __tracebackhide__ = True
        _HUB.remove(self)
        self._state = "done"
        if exc_type is not None:
            return
        if self.recorder is not None:
            self._record(self.recorder)
        if self.check_pool and self._checked_out:
            raise AssertionError(self._leak_message())

    async def __aenter__(self) -> QueryCapture:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- results --------------------------------------------------------------------------

    def _all(self) -> list[Statement]:
        raw = self._raw
        end = len(raw)
        if self._consumed < end:
            self._materialised.extend(statements_of(raw[self._consumed : end]))
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

    def _leak_message(self) -> str:
        by_pool: dict[int, tuple[Any, list[str | None]]] = {}
        for pool, raw_site in self._checked_out.values():
            by_pool.setdefault(id(pool), (pool, []))[1].append(_display(raw_site))
        total = len(self._checked_out)
        lines = [
            f"connection pool: {total} connection(s) checked out inside the block "
            "were still checked out when it ended"
        ]
        for pool, sites in by_pool.values():
            lines.append(f"  pool {pool_status(pool)}")
            for site, count in Counter(s or "<unknown call site>" for s in sites).most_common():
                lines.append(f"    ×{count} checked out at {site}")
        lines.append(
            "Close what you open (`with Session(engine) as session:`, "
            "`with engine.connect() as conn:`, close results); pass check_pool=False if the "
            "connection is meant to outlive the block."
        )
        lines.append(self.explain())
        return "\n".join(lines)

    def __repr__(self) -> str:
        scope = "all engines" if self._engines is None else f"{len(self._engines)} engine(s)"
        return f"<QueryCapture {self._state}, {scope}: {self.count} statement(s)>"


def _noun(count: int) -> str:
    return "statement" if count == 1 else "statements"


class PerfQueries:
    """The ``perf_queries`` fixture: ``with perf_queries(*engines, **options) as q:``."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder

    def __call__(
        self,
        *engines: Any,
        name: str | None = None,
        include_transactions: bool = False,
        check_pool: bool = True,
    ) -> QueryCapture:
        """Capture the statements of ``engines`` (default: every engine) inside a ``with`` block.

        The block records a ``queries`` metric (or ``name``) compared with the baseline;
        ``include_transactions`` also counts BEGIN/COMMIT/ROLLBACK/SAVEPOINT; ``check_pool``
        fails the block when a connection checked out inside it is still checked out at exit.
        """
        return QueryCapture(
            *engines,
            recorder=self.recorder,
            name=name,
            include_transactions=include_transactions,
            check_pool=check_pool,
        )

    def __repr__(self) -> str:
        return "<perf_queries>"
