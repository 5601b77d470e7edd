"""The two places where recording touches SQLAlchemy below its public event API.

Both are kept here, small, and covered by ``tests/test_queries_dialect_hooks.py``, which fails
loudly when a SQLAlchemy release changes what they rely on:

- :func:`clear_events_flag`: SQLAlchemy sets a class's ``_has_events`` flag on the first
  listener and never clears it.
- :func:`install` / :func:`uninstall`: the statement hooks placed on a dialect *instance* as its
  ``do_execute`` / ``do_execute_no_params`` / ``do_executemany`` methods, with the instance's
  ``_has_events`` set to False, so that SQLAlchemy calls them directly instead of dispatching
  the ``DialectEvents`` of the same names to listeners. Dispatching costs more than the whole
  recording does (measured on ``SELECT 1`` through Core: 0.1 µs on an idle machine, 0.3–0.5 µs
  on a busy one, 1–4 % of the statement). A dialect is only given the hooks when its class
  keeps SQLAlchemy's own ``do_execute`` (which is ``cursor.execute(statement, parameters)``),
  nothing else replaced those methods on the instance, and no ``DialectEvents`` listener other
  than ours applies to it — a ``do_connect`` or ``handle_error`` listener must keep running.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy.engine.default import DefaultDialect

__all__ = ["HOOKED", "clear_events_flag", "install", "uninstall"]

#: The dialect methods that run a statement, and what SQLAlchemy's own implementation does.
HOOKED = ("do_execute", "do_execute_no_params", "do_executemany")
_FLAG = "_has_events"


def clear_events_flag(cls: type, before: object) -> None:
    """Undo the ``_has_events`` class flag SQLAlchemy sets on the first listener.

    SQLAlchemy never clears it, so after one capture every later statement of every engine would
    still walk (empty) listener collections: for connection events that costs 3–4 µs per
    statement, which would make the timings of tests that run after a capture depend on test
    order. The flag is cleared only if it was clear before the first capture and no class-level
    listener of that kind (ours or anyone's) is left.
    """
    if before not in (None, False) or cls.__dict__.get(_FLAG) is not True:
        return
    try:
        dispatch: Any = cls.dispatch  # type: ignore[attr-defined]
        for name in dispatch._event_names:
            if any(getattr(dispatch, name)._clslevel.values()):
                return
    except (AttributeError, TypeError):  # another SQLAlchemy: leave its flag alone
        return
    type.__setattr__(cls, _FLAG, False)


def _foreign_listeners(dialect: Any, ours: Collection[object]) -> bool:
    """Whether any ``DialectEvents`` listener other than ``ours`` applies to ``dialect``."""
    try:
        dispatch = dialect.dispatch
        for name in dispatch._event_names:
            if any(fn not in ours for fn in getattr(dispatch, name)):
                return True
    except (AttributeError, TypeError):  # another SQLAlchemy: assume the worst
        return True
    return False


def install(
    dialect: Any, hooks: Mapping[str, Callable[..., Any]], ours: Collection[object]
) -> bool:
    """Give ``dialect`` the statement ``hooks`` as instance methods; False when it must not."""
    if type(dialect).do_execute is not DefaultDialect.do_execute:
        return False
    state = vars(dialect)
    if any(name in state for name in (*HOOKED, _FLAG)):
        return False  # someone else replaced them, or has instance-level listeners
    if _foreign_listeners(dialect, ours):
        return False
    for name in HOOKED:
        state[name] = hooks[name]
    state[_FLAG] = False
    return True


def uninstall(dialect: Any, hooks: Mapping[str, Callable[..., Any]]) -> None:
    """Take the hooks off a dialect :func:`install` gave them to (what is not ours stays)."""
    state = vars(dialect)
    for name in HOOKED:
        if state.get(name) is hooks[name]:
            del state[name]
    # SQLAlchemy sets the instance flag to True when a listener is added to this dialect
    # meanwhile; that one stays
    if state.get(_FLAG) is False:
        del state[_FLAG]
