"""SQL query budgets for SQLAlchemy: counts, fingerprints, N+1 detection, pool hygiene.

``fingerprint``, ``fingerprint_diff`` and ``Statement`` need no SQLAlchemy; the capture classes
import it on first use, so reading a baseline never pays for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .fingerprint import fingerprint, is_transaction_control
from .statements import NPlusOne, Statement, find_n_plus_one, fingerprint_diff, format_statements

if TYPE_CHECKING:
    from ..metrics import Budgets, Recorder
    from .capture import PerfQueries, QueryCapture

__all__ = [
    "NPlusOne",
    "PerfQueries",
    "QueryCapture",
    "Statement",
    "body_probe",
    "find_n_plus_one",
    "fingerprint",
    "fingerprint_diff",
    "format_statements",
    "is_transaction_control",
]

_LAZY = {
    "PerfQueries",
    "QueryCapture",
    "pool_status",
    "DEFAULT_N_PLUS_ONE_THRESHOLD",
    "DEFAULT_POOL_GRACE",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import capture

        return getattr(capture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def body_probe(
    budgets: Budgets, recorder: Recorder, mode: str, library_modules: Sequence[str] = ()
) -> contextlib.AbstractContextManager[None] | None:
    """``@pytest.mark.perf(queries=N)``: count every statement of the test body (all engines)
    and record it as the ``queries`` metric the budget applies to. Only runs that measure
    (``mode`` ``measure`` or ``confirm``) count; runs that explain another metric do not."""
    if budgets.queries is None or mode not in ("measure", "confirm"):
        return None
    from .capture import QueryCapture

    # Fixtures (a session held across the body) legitimately keep connections checked out
    # past the body, so the whole-body probe leaves pool hygiene to explicit blocks.
    capture = QueryCapture(
        recorder=recorder,
        check_pool=False,
        library_modules=library_modules,
        _body=True,
    )
    return _as_none_context(capture)


@contextlib.contextmanager
def _as_none_context(capture: QueryCapture) -> Any:
    with capture:
        yield None
